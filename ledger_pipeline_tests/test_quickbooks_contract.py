"""The QuickBooks sandbox driven over HTTP by clients nobody here wrote: Intuit's own `intuit-oauth` (AuthClient) and
the community's `python-quickbooks`, through their public APIs only.

intuit-oauth reads its endpoints from Intuit's OpenID discovery document and lets `environment` be that document's
URL (intuitlib.utils.get_discovery_doc), so it is pointed at the sandbox's `/.well-known/openid_sandbox_configuration`.
python-quickbooks builds every URL from `QuickBooks.api_url_v3` (`sandbox_api_url_v3` when the AuthClient says
'sandbox'), a class attribute set on the instance here. Nothing of ours is patched."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks import exceptions as qbx
from quickbooks.batch import batch_create
from quickbooks.objects.account import Account
from quickbooks.objects.base import Ref
from quickbooks.objects.journalentry import JournalEntry, JournalEntryLine, JournalEntryLineDetail

from ledger_pipeline.sandboxes.base import SandboxLimits
from ledger_pipeline.sandboxes.quickbooks import CLIENT_ID, CLIENT_SECRET
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.settings import Settings

REDIRECT = "http://127.0.0.1:9/intuit-callback"  # never called: the test reads the redirect's Location itself


@pytest.fixture
def server(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    # python-quickbooks' session is requests-oauthlib's, which refuses plain http unless told otherwise (oauthlib's
    # documented switch for local testing); the sandbox is plain http on loopback
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    with SandboxServer(tmp_path / "sb.sqlite", limits=SandboxLimits(scale=1000)) as srv:
        yield srv


def auth_client(base: str) -> AuthClient:
    return AuthClient(CLIENT_ID, CLIENT_SECRET, REDIRECT, f"{base}/.well-known/openid_sandbox_configuration")


def authorize(auth: AuthClient, company: str) -> tuple[str, str]:
    """The user approves in the browser (the sandbox auto-approves the login_hint company): (code, realmId)."""
    url = auth.get_authorization_url([Scopes.ACCOUNTING])
    resp = httpx.get(f"{url}&login_hint={company}", follow_redirects=False)
    assert resp.status_code == 302, resp.text
    back = parse_qs(urlsplit(resp.headers["location"]).query)
    assert back["state"] == [auth.state_token]
    return back["code"][0], back["realmId"][0]


def je_line(account_id: str, amount: str, posting: str, text: str) -> JournalEntryLine:
    line = JournalEntryLine()
    line.Amount, line.Description = Decimal(amount), text
    line.JournalEntryLineDetail = JournalEntryLineDetail()
    line.JournalEntryLineDetail.PostingType = posting
    ref = Ref()
    ref.value = account_id
    line.JournalEntryLineDetail.AccountRef = ref
    return line


def journal(doc: str, date: dt.date, debit_account: str, credit_account: str, amount: str) -> JournalEntry:
    je = JournalEntry()
    je.TxnDate, je.DocNumber, je.PrivateNote = date.isoformat(), doc, f"contract test {doc}"
    je.Line = [je_line(debit_account, amount, "Debit", "debit"), je_line(credit_account, amount, "Credit", "credit")]
    return je


def test_intuit_oauth_and_python_quickbooks_drive_the_sandbox(server: SandboxServer) -> None:
    base = f"{server.url}/quickbooks"
    auth = auth_client(base)
    assert auth.token_endpoint == f"{base}/oauth2/v1/tokens/bearer" and auth.auth_endpoint == f"{base}/connect/oauth2"

    # OAuth: code exchange (Basic client auth, form body), a used code refused, refresh with rotation, revoke
    code, realm = authorize(auth, "contract-co")
    auth.get_bearer_token(code, realm_id=realm)
    assert auth.access_token and auth.refresh_token and auth.realm_id == realm
    with pytest.raises(AuthClientError) as reused:
        auth.get_bearer_token(code, realm_id=realm)
    assert reused.value.status_code == 400 and b"invalid_grant" in reused.value.content
    first_refresh = auth.refresh_token
    auth.refresh()
    assert auth.refresh_token != first_refresh, "QuickBooks rotates refresh tokens"
    with pytest.raises(AuthClientError) as rotated:
        auth.refresh(refresh_token=first_refresh)
    assert rotated.value.status_code == 400 and b"invalid_grant" in rotated.value.content

    qb = QuickBooks(auth_client=auth, refresh_token=auth.refresh_token, company_id=realm, minorversion=75)
    qb.api_url_v3 = f"{base}/v3"  # python-quickbooks' base URL attribute (the production host otherwise)

    # the chart through POST /query (Content-Type application/text, python-quickbooks' only way to query)
    accounts = {a.AcctNum: str(a.Id) for a in Account.all(max_results=1000, qb=qb)}
    cash, revenue, cogs = accounts["1-10001"], accounts["4-40000"], accounts["5-50000"]

    # create with a requestid; a replay of the same requestid answers the original entry and adds nothing
    rid = str(uuid.uuid4())
    created = journal("CT-0001", dt.date(2025, 1, 31), cash, revenue, "1250.75").save(qb=qb, request_id=rid)
    again = journal("CT-0001", dt.date(2025, 1, 31), cash, revenue, "1250.75").save(qb=qb, request_id=rid)
    assert again.Id == created.Id and created.SyncToken == "0"

    # read
    read = JournalEntry.get(created.Id, qb=qb)
    assert read.DocNumber == "CT-0001" and Decimal(str(read.Line[0].Amount)) == Decimal("1250.75")

    # full update with the current SyncToken; the stale copy is then refused with 5010
    stale = JournalEntry.get(created.Id, qb=qb)
    read.PrivateNote = "edited by the contract test"
    read.Line = [je_line(cash, "1300.00", "Debit", "debit"), je_line(revenue, "1300.00", "Credit", "credit")]
    updated = read.save(qb=qb)
    assert updated.SyncToken == "1" and Decimal(str(updated.TotalAmt)) == Decimal("1300.00")
    with pytest.raises(qbx.QuickbooksException) as stale_err:
        stale.save(qb=qb)
    assert stale_err.value.error_code == 5010

    # query by GET (?query=) and by POST (application/text body)
    by_get = qb.get(f"{qb.api_url}/company/{realm}/query",
                    params={"query": "select * from JournalEntry where DocNumber = 'CT-0001'"})
    assert [e["Id"] for e in by_get["QueryResponse"]["JournalEntry"]] == [created.Id]
    by_post = JournalEntry.filter(DocNumber="CT-0001", qb=qb)
    assert [e.Id for e in by_post] == [created.Id] and by_post[0].SyncToken == "1"

    # batch: two entries in one /batch call, and a batch item QuickBooks refuses (unbalanced) comes back as a Fault
    ok = batch_create([journal("CT-0002", dt.date(2025, 2, 28), cogs, cash, "10.00"),
                       journal("CT-0003", dt.date(2025, 2, 28), cogs, cash, "20.00")], qb=qb)
    assert len(ok.successes) == 2 and not ok.faults
    bad = journal("CT-0004", dt.date(2025, 2, 28), cogs, cash, "30.00")
    bad.Line[1].Amount = Decimal("29.99")
    refused = batch_create([bad], qb=qb)
    assert not refused.successes and refused.faults[0].Error[0].code == "6000"
    assert JournalEntry.count("DocNumber = 'CT-0004'", qb=qb) == 0
    assert sorted(e.DocNumber for e in JournalEntry.all(qb=qb)) == ["CT-0001", "CT-0002", "CT-0003"]

    # delete; the deleted entry then reads as 610 Object Not Found
    current = JournalEntry.get(created.Id, qb=qb)
    current.delete(qb=qb)
    with pytest.raises(qbx.ObjectNotFoundException):
        JournalEntry.get(created.Id, qb=qb)

    # 403: a realm the grant does not cover, in the gateway's lower-case shape (python-quickbooks finds no "Fault")
    other = QuickBooks(auth_client=auth, refresh_token=auth.refresh_token, company_id="9341000000000000",
                       minorversion=75)
    other.api_url_v3 = qb.api_url_v3
    with pytest.raises(qbx.QuickbooksException) as forbidden:
        JournalEntry.all(qb=other)
    assert "403" in forbidden.value.message and '"code":"3100"' in forbidden.value.message.replace(" ", "")

    # revoke (the discovery document's revocation endpoint): the grant is gone for the API and for refresh
    assert auth.revoke(token=auth.refresh_token) is True
    with pytest.raises(qbx.AuthorizationException) as unauthorized:
        JournalEntry.all(qb=qb)
    body = httpx.Response(401, content=unauthorized.value.detail).json()
    assert body["fault"]["type"] == "AUTHENTICATION" and body["fault"]["error"][0]["code"] == "3200"
    with pytest.raises(AuthClientError):
        auth.refresh()


def test_query_accepts_application_text_posts(server: SandboxServer) -> None:
    """Row 11 of the fidelity review: `POST /query` with the query as an application/text body is a read."""
    base = f"{server.url}/quickbooks"
    auth = auth_client(base)
    code, realm = authorize(auth, "text-co")
    auth.get_bearer_token(code, realm_id=realm)
    httpx.post(f"{server.url}/_sandbox/stats/reset")
    resp = httpx.post(f"{base}/v3/company/{realm}/query", params={"minorversion": "75"},
                      content="select * from Account where Id = '1'",
                      headers={"Authorization": f"Bearer {auth.access_token}", "Content-Type": "application/text",
                               "Accept": "application/json"})
    assert resp.status_code == 200, resp.text
    assert [a["Id"] for a in resp.json()["QueryResponse"]["Account"]] == ["1"]
    bad = httpx.post(f"{base}/v3/company/{realm}/query", content="selec nothing",
                     headers={"Authorization": f"Bearer {auth.access_token}", "Content-Type": "application/text"})
    assert bad.status_code == 400 and bad.json()["Fault"]["Error"][0]["code"] == "4000"
