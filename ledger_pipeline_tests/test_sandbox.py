"""The sandbox over real HTTP. Jurnal: every endpoint, Jurnal's errors, tokens, rate limits, faults, persistence.
Every emulator through the shared request path (sandboxes/base.py): faults and malformed bodies in each vendor's own
shape, writes as each emulator counts them, token-endpoint failures, and the fixed windows on the scaled clock."""

from __future__ import annotations

import time

import httpx
import pytest

from ledger_pipeline.sandboxes.jurnal import API, SandboxLimits
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.settings import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET


def authorize(http: httpx.Client, login: str) -> dict:
    r = http.get("/auth", params={"client_id": SANDBOX_CLIENT_ID, "response_type": "code", "login_hint": login,
                                  "redirect_uri": "http://127.0.0.1:9/cb", "state": "s1"})
    assert r.status_code == 302
    loc = httpx.URL(r.headers["location"])
    assert loc.params["state"] == "s1"
    return token(http, grant_type="authorization_code", code=loc.params["code"]).json()


def token(http: httpx.Client, **payload: str) -> httpx.Response:
    return http.post("/auth/oauth2/token",
                     json={"client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET, **payload})


class Api:
    def __init__(self, base: str, access: str):
        self.http = httpx.Client(base_url=base + API, headers={"Authorization": f"Bearer {access}"}, timeout=5)

    def accounts(self, **params: str) -> list[dict]:
        return self.http.get("/accounts", params=params).json()["accounts"]

    def account_id(self, number: str) -> int:
        return next(a["id"] for a in self.accounts() if a["number"] == number)


def entry(api: Api, custom_id: str, date: str = "31-01-2025", debit: str = "1500.50", **extra: object) -> dict:
    return {"journal_entry": {
        "transaction_date": date, "custom_id": custom_id, "memo": "R2a Monthly P&L - 2025-01",
        "transaction_account_lines_attributes": [
            {"account_id": api.account_id("3-30100"), "debit": debit, "description": "net"},
            {"account_name": "Pendapatan", "credit": debit, "description": "sales"},
        ], **extra}}


@pytest.fixture
def server(tmp_path):  # noqa: ANN001, ANN201
    with SandboxServer(tmp_path / "sb.sqlite", limits=SandboxLimits(enabled=False)) as s:
        yield s


@pytest.fixture
def api(server) -> Api:  # noqa: ANN001
    http = httpx.Client(base_url=server.url)
    return Api(server.url, authorize(http, "pt-maju")["access_token"])


def test_journal_entry_endpoints(server, api: Api) -> None:  # noqa: ANN001
    assert len(api.accounts()) >= 30
    r = api.http.post("/journal_entries", json=entry(api, "je-1"))
    assert r.status_code == 201, r.text
    created = r.json()["journal_entry"]
    assert created["transaction_date"] == "31/01/2025" and created["custom_id"] == "je-1"
    assert created["total_debit"] == created["total_credit"] == 1500.5
    assert len(created["transaction_account_lines"]) == 2
    # look up by id and by custom_id
    assert api.http.get(f"/journal_entries/{created['id']}").json()["journal_entry"]["custom_id"] == "je-1"
    assert api.http.get("/journal_entries/je-1").json()["journal_entry"]["id"] == created["id"]
    assert api.http.get("/journal_entries/nope").status_code == 404
    # ISO dates accepted on write
    assert api.http.post("/journal_entries", json=entry(api, "je-2", date="2025-02-28")).status_code == 201
    # list: pages, filters
    for i in range(3, 8):
        api.http.post("/journal_entries", json=entry(api, f"je-{i}", date="15-03-2025"))
    page = api.http.get("/journal_entries", params={"page_size": 3, "page": 2}).json()
    assert page["total_count"] == 7 and page["total_pages"] == 3 and len(page["journal_entries"]) == 3
    march = api.http.get("/journal_entries", params={"start_date": "01-03-2025", "end_date": "31-03-2025"}).json()
    assert march["total_count"] == 5
    by_no = api.http.get("/journal_entries", params={"transaction_no": created["transaction_no"]}).json()
    assert [e["id"] for e in by_no["journal_entries"]] == [created["id"]]
    # PATCH (Mekari's Swagger): transaction_date and transaction_no required; a line with id changes that line, one
    # without id is added; the undocumented _destroy is dropped (the line stays); must still balance
    lines = created["transaction_account_lines"]
    changes = [{"id": lines[0]["id"], "account_id": api.account_id("3-30100"), "debit": "2000", "credit": 0},
               {"id": lines[1]["id"], "account_name": "Pendapatan", "debit": 0, "credit": "1500"},
               {"account_name": "Pendapatan Jasa", "debit": 0, "credit": "500"}]
    required = api.http.patch(f"/journal_entries/{created['id']}", json={"journal_entry": {
        "memo": "changed", "transaction_account_lines_attributes": changes}})
    assert required.status_code == 422 and set(required.json()) == {"transaction_date", "transaction_no"}
    patch = {"journal_entry": {"memo": "changed", "transaction_date": "2025-01-31",
                               "transaction_no": created["transaction_no"], "tag_name": ["r2a"],
                               "transaction_account_lines_attributes": changes}}
    r = api.http.patch(f"/journal_entries/{created['id']}", json=patch)
    assert r.status_code == 200, r.text
    updated = r.json()["journal_entry"]
    assert updated["memo"] == "changed" and updated["total_debit"] == 2000 and len(
        updated["transaction_account_lines"]) == 3 and updated["tags_string"] == "r2a"
    destroyed = {"journal_entry": {**patch["journal_entry"], "transaction_account_lines_attributes": [
        {"id": updated["transaction_account_lines"][2]["id"], "_destroy": True}]}}
    assert len(api.http.patch(f"/journal_entries/{created['id']}", json=destroyed).json()["journal_entry"][
        "transaction_account_lines"]) == 3, "_destroy is not part of Jurnal's documented API: the line stays"
    assert api.http.delete(f"/journal_entries/{created['id']}").status_code == 204
    assert api.http.get("/journal_entries/je-1").status_code == 404
    # batch_create: a status per item
    r = api.http.post("/journal_entries/batch_create", json={"journal_entries": [
        entry(api, "b-1"), entry(api, "je-2"), entry(api, "b-2", debit="1.001")]})
    assert r.status_code == 200
    statuses = [i["journal_entry"]["status"] for i in r.json()["journal_entries"]]
    assert statuses == [201, 409, 422]
    too_many = {"journal_entries": [entry(api, f"x{i}") for i in range(101)]}
    assert api.http.post("/journal_entries/batch_create", json=too_many).status_code == 422
    # inspection
    everything = httpx.get(f"{server.url}/_sandbox/journal_entries").json()
    assert {e["company_login"] for e in everything["journal_entries"]} == {"pt-maju"}


@pytest.mark.parametrize("mutate, status, words", [
    (lambda b, a: b["journal_entry"]["transaction_account_lines_attributes"][0].update(debit="1"), 422, "balance"),
    (lambda b, a: b["journal_entry"]["transaction_account_lines_attributes"][1].update(account_name="Nope"), 422,
     "Nope not exist"),
    (lambda b, a: b["journal_entry"]["transaction_account_lines_attributes"][0].update(debit="1.005"), 422,
     "decimal"),
    (lambda b, a: b["journal_entry"].update(custom_id="dup"), 422, "already"),
])
def test_validation_errors(api: Api, mutate, status: int, words: str) -> None:  # noqa: ANN001
    api.http.post("/journal_entries", json=entry(api, "dup"))
    body = entry(api, "fresh")
    mutate(body, api)
    r = api.http.post("/journal_entries", json=body)
    assert r.status_code == status and words in r.text, r.text


def test_archived_account_lock_auth_and_malformed(server, api: Api) -> None:  # noqa: ANN001
    httpx.post(f"{server.url}/_sandbox/companies/pt-maju/accounts", json={"number": "4-40000", "archived": True})
    r = api.http.post("/journal_entries", json=entry(api, "a1"))
    assert r.status_code == 422 and "not exist" in r.text
    assert any(a["archive"] for a in api.accounts()) and not any(a["archive"] for a in api.accounts(
        include_archive="false"))
    httpx.post(f"{server.url}/_sandbox/companies/pt-maju/accounts", json={"number": "4-40000", "archived": False})
    httpx.post(f"{server.url}/_sandbox/companies/pt-maju/lock_date", json={"lock_date": "2025-01-31"})
    r = api.http.post("/journal_entries", json=entry(api, "a2"))
    assert r.status_code == 422 and "locked" in r.text
    assert api.http.post("/journal_entries", json=entry(api, "a3", date="01-02-2025")).status_code == 201
    bad = httpx.get(f"{server.url}{API}/accounts", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    r = api.http.post("/journal_entries", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_token_expiry_rotation_and_revocation(tmp_path) -> None:  # noqa: ANN001
    with SandboxServer(tmp_path / "sb.sqlite", access_ttl=1) as server:
        http = httpx.Client(base_url=server.url)
        tokens = authorize(http, "pt-a")
        api = Api(server.url, tokens["access_token"])
        assert api.http.get("/accounts").status_code == 200
        time.sleep(1.2)
        assert api.http.get("/accounts").status_code == 401, "access tokens expire"
        fresh = token(http, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert fresh.status_code == 200 and fresh.json()["refresh_token"] != tokens["refresh_token"]
        replay = token(http, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", "refresh tokens are single use"
        api = Api(server.url, fresh.json()["access_token"])
        assert api.http.get("/accounts").status_code == 200
        http.post("/auth/oauth2/revoke", json={"token": fresh.json()["refresh_token"]})
        assert api.http.get("/accounts").status_code == 401
        again = token(http, grant_type="refresh_token", refresh_token=fresh.json()["refresh_token"])
        assert again.json()["error"] == "invalid_grant"


def test_rate_limits_at_scaled_clock(tmp_path) -> None:  # noqa: ANN001
    # scale 60: 30 per second per token, 40 per second per IP
    with SandboxServer(tmp_path / "sb.sqlite", limits=SandboxLimits(scale=60)) as server:
        http = httpx.Client(base_url=server.url)
        a = Api(server.url, authorize(http, "pt-a")["access_token"])
        b = Api(server.url, authorize(http, "pt-b")["access_token"])
        time.sleep(1 - time.time() % 1 + 0.05)  # start of a scaled minute
        codes = [a.http.get("/accounts").status_code for _ in range(32)]
        assert codes.count(200) == 30 and codes[-1] == 429
        r = a.http.get("/accounts")
        assert r.json() == {"message": "API rate limit exceeded"}
        assert r.headers["x-ratelimit-limit-minute"] == "30" and r.headers["x-ratelimit-remaining-minute"] == "0"
        codes_b = [b.http.get("/accounts").status_code for _ in range(12)]
        assert codes_b.count(200) == 10, "the other 10 of the IP's 40 per minute"
        time.sleep(1.05)
        assert a.http.get("/accounts").status_code == 200, "counters reset each (scaled) minute"
        stats = httpx.get(f"{server.url}/_sandbox/stats").json()
        assert stats["rate_limited"] >= 5


def test_fault_injection(server, api: Api) -> None:  # noqa: ANN001
    faults = f"{server.url}/_sandbox/faults"
    httpx.post(faults, json={"error_rate": 1.0, "error_statuses": [503]})
    assert api.http.get("/accounts").status_code == 503
    httpx.post(faults, json={"drop_before_rate": 1.0})
    with pytest.raises(httpx.TransportError):
        api.http.post("/journal_entries", json=entry(api, "d1"))
    httpx.post(faults, json={})
    assert api.http.get("/journal_entries/d1").status_code == 404, "dropped before processing: nothing written"
    httpx.post(faults, json={"drop_after_commit_rate": 1.0})
    with pytest.raises(httpx.TransportError):
        api.http.post("/journal_entries", json=entry(api, "d2"))
    httpx.post(faults, json={})
    assert api.http.get("/journal_entries/d2").status_code == 200, "dropped after commit: the write happened"
    httpx.post(faults, json={"error_after_commit_rate": 1.0, "writes_only": True})
    assert api.http.post("/journal_entries", json=entry(api, "d3")).status_code in (500, 502, 503)
    assert api.http.get("/journal_entries/d3").status_code == 200
    httpx.post(faults, json={"unauthorized_rate": 1.0})
    assert api.http.get("/accounts").status_code == 401
    httpx.post(faults, json={"slow_rate": 1.0, "slow_seconds": 1.0})
    with pytest.raises(httpx.ReadTimeout):
        api.http.get("/accounts", timeout=0.3)
    httpx.post(faults, json={"latency_ms": 200})
    t0 = time.time()
    api.http.get("/accounts")
    assert time.time() - t0 >= 0.2
    # deterministic under a seed
    httpx.post(faults, json={"seed": 4, "error_rate": 0.5})
    first = [api.http.get("/accounts").status_code for _ in range(20)]
    httpx.post(faults, json={"seed": 4, "error_rate": 0.5})
    assert [api.http.get("/accounts").status_code for _ in range(20)] == first
    assert 200 in first and any(code >= 500 for code in first)


def test_state_survives_restart(tmp_path) -> None:  # noqa: ANN001
    with SandboxServer(tmp_path / "sb.sqlite") as server:
        http = httpx.Client(base_url=server.url)
        tokens = authorize(http, "pt-keep")
        api = Api(server.url, tokens["access_token"])
        assert api.http.post("/journal_entries", json=entry(api, "keep")).status_code == 201
        api.http.close()
    with SandboxServer(tmp_path / "sb.sqlite") as server:
        api = Api(server.url, tokens["access_token"])
        assert api.http.get("/journal_entries/keep").status_code == 200
        assert token(httpx.Client(base_url=server.url), grant_type="refresh_token",
                     refresh_token=tokens["refresh_token"]).status_code == 200


# -- every emulator through the shared request path (sandboxes/base.py) ------------------------------------------
def _redirect_params(r: httpx.Response) -> dict:
    assert r.status_code == 302, r.text
    return dict(httpx.URL(r.headers["location"]).params)


def _connect(server: SandboxServer, system: str, login: str) -> tuple[httpx.Client, str, str, dict]:
    """(a client authenticated as `login` in `system`, a read path, a write path, a write body)."""
    from ledger_pipeline.sandboxes import quickbooks as qbo
    from ledger_pipeline.sandboxes import rootfi, zoho

    http, cb = httpx.Client(base_url=server.url, timeout=10), "http://127.0.0.1:9/cb"
    if system == "jurnal":
        access = authorize(http, login)["access_token"]
        api = httpx.Client(base_url=server.url + API, headers={"Authorization": f"Bearer {access}"}, timeout=10)
        return api, "/accounts", "/journal_entries", {"journal_entry": {}}
    if system == "aden":
        token = http.post(f"/_sandbox/aden/companies/{login}/jwt").json()["token"]
        api = httpx.Client(base_url=f"{server.url}/aden/service/general-ledger",
                           headers={"Authorization": f"jwt {token}"}, timeout=10)
        return api, "/accounts", "/journal-entries", {}
    if system == "quickbooks":
        got = _redirect_params(http.get("/quickbooks/connect/oauth2", params={
            "client_id": qbo.CLIENT_ID, "response_type": "code", "scope": qbo.SCOPE, "redirect_uri": cb,
            "login_hint": login, "state": "s"}))
        tokens = http.post("/quickbooks/oauth2/v1/tokens/bearer", auth=(qbo.CLIENT_ID, qbo.CLIENT_SECRET), data={
            "grant_type": "authorization_code", "code": got["code"], "redirect_uri": cb}).json()
        api = httpx.Client(base_url=f"{server.url}/quickbooks/v3/company/{got['realmId']}",
                           headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10)
        return api, "/query?query=select * from Account", "/journalentry", {}
    if system == "zoho":
        got = _redirect_params(http.get("/zoho/oauth/v2/auth", params={
            "client_id": zoho.SANDBOX_CLIENT_ID, "response_type": "code", "redirect_uri": cb, "login_hint": login,
            "access_type": "offline"}))
        tokens = http.post("/zoho/oauth/v2/token", data={
            "grant_type": "authorization_code", "code": got["code"], "redirect_uri": cb,
            "client_id": zoho.SANDBOX_CLIENT_ID, "client_secret": zoho.SANDBOX_CLIENT_SECRET}).json()
        headers = {"Authorization": f"Zoho-oauthtoken {tokens['access_token']}"}
        org = httpx.get(f"{server.url}/zoho/books/v3/organizations", headers=headers).json()
        org_id = org["organizations"][0]["organization_id"]
        api = httpx.Client(base_url=f"{server.url}/zoho/books/v3", params={"organization_id": org_id},
                           headers=headers, timeout=10)
        api.refresh_token = tokens["refresh_token"]  # type: ignore[attr-defined]
        return api, "/chartofaccounts", "/journals", {}
    company = _redirect_params(http.get("/rootfi/link", params={"login_hint": login, "redirect_uri": cb}))
    api = httpx.Client(base_url=f"{server.url}/rootfi", headers={"api_key": rootfi.SANDBOX_API_KEY}, timeout=10)
    return api, f"/accounting/journal_entries/0?company_id={company['company_id']}", "/accounting/journal_entries", {
        "company_id": int(company["company_id"])}


# each vendor's own error shape -> its code (jurnal: the error text)
SHAPES = {
    "jurnal": lambda b: b.get("error"),
    "aden": lambda b: b["error"]["code"],
    "quickbooks": lambda b: (b.get("Fault") or b.get("fault"))["type"],
    "zoho": lambda b: b["code"],
    "rootfi": lambda b: b["error"]["code"],
}
EXPECTED = {  # (malformed body, injected 5xx, injected 401) in each vendor's words
    "jurnal": ("Malformed JSON", "Internal Server Error", "Invalid authentication credentials"),
    "aden": ("VALIDATION_ERROR", "INTERNAL_ERROR", "UNAUTHORIZED"),
    "quickbooks": ("ValidationFault", "SystemFault", "AUTHENTICATION"),
    "zoho": (4, 5, 57),
    "rootfi": ("VALIDATION_ERROR", "INTERNAL_SERVER_ERROR", "UNAUTHORIZED"),
}


@pytest.mark.parametrize("system", list(EXPECTED))
def test_every_emulator_answers_shared_failures_in_its_own_shape(server, system: str) -> None:  # noqa: ANN001
    api, read, write, _ = _connect(server, system, "pt-shape")
    other, other_read, _, _ = _connect(server, "jurnal" if system != "jurnal" else "aden", "pt-other")
    faults = f"{server.url}/_sandbox/faults"
    bad = api.post(write, content=b'{"not json', headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and SHAPES[system](bad.json()) == EXPECTED[system][0], bad.text
    httpx.post(faults, json={"error_rate": 1.0, "error_statuses": [503], "systems": [system]})
    down = api.get(read)
    assert down.status_code == 503 and SHAPES[system](down.json()) == EXPECTED[system][1], down.text
    assert other.get(other_read).status_code == 200, "faults reach only the systems named"
    httpx.post(faults, json={"unauthorized_rate": 1.0, "systems": [system]})
    refused = api.get(read)
    assert refused.status_code == 401 and SHAPES[system](refused.json()) == EXPECTED[system][2], refused.text
    httpx.post(faults, json={"drop_before_rate": 1.0, "systems": [system]})
    with pytest.raises(httpx.TransportError):
        api.get(read)
    httpx.post(faults, json={})
    rows = httpx.get(f"{server.url}/_sandbox/stats").json()["requests"]
    mine = {r["status"]: r["count"] for r in rows if r["system"] == system and not r["endpoint"].endswith("auth")}
    assert mine.get(400, 0) >= 1 and mine.get(503) == 1 and mine.get(401) == 1 and mine.get("dropped") == 1


def test_each_emulator_says_which_requests_are_writes(server) -> None:  # noqa: ANN001
    """QuickBooks' POST /query and Rootfi's POST .../all are reads: in /_sandbox/stats and for `writes_only`."""
    qbo, _, qbo_write, _ = _connect(server, "quickbooks", "pt-w")
    rootfi, _, _, rootfi_body = _connect(server, "rootfi", "pt-w")
    httpx.post(f"{server.url}/_sandbox/stats/reset")
    httpx.post(f"{server.url}/_sandbox/faults", json={"error_rate": 1.0, "writes_only": True})
    query = qbo.post("/query", content=b"select * from Account MAXRESULTS 5",
                     headers={"Content-Type": "application/text"})
    assert query.status_code == 200 and len(query.json()["QueryResponse"]["Account"]) == 5, "a read: no fault"
    assert rootfi.post("/accounting/accounts/all", json={**rootfi_body, "take": 5}).status_code == 200
    assert qbo.post(qbo_write, json={"Line": []}).status_code >= 500, "a write: faulted"
    httpx.post(f"{server.url}/_sandbox/faults", json={})
    stats = httpx.get(f"{server.url}/_sandbox/stats").json()
    assert stats["by_system"]["quickbooks"] == {"api_requests": 2, "api_writes": 1, "rate_limited": 0}
    assert stats["by_system"]["rootfi"] == {"api_requests": 1, "api_writes": 0, "rate_limited": 0}
    assert stats["api_requests"] == 3 and stats["api_writes"] == 1
    httpx.post(f"{server.url}/_sandbox/stats/reset")
    assert httpx.get(f"{server.url}/_sandbox/stats").json()["api_writes"] == 0


def test_token_failures_reach_every_oauth_system_named(server) -> None:  # noqa: ANN001
    from ledger_pipeline.sandboxes import zoho

    api, _, _, _ = _connect(server, "zoho", "pt-tok")
    http = httpx.Client(base_url=server.url)
    jurnal = authorize(http, "pt-tok")
    httpx.post(f"{server.url}/_sandbox/faults", json={"token_failure": "5xx", "systems": ["zoho"]})
    refresh = {"grant_type": "refresh_token", "refresh_token": api.refresh_token,  # type: ignore[attr-defined]
               "client_id": zoho.SANDBOX_CLIENT_ID, "client_secret": zoho.SANDBOX_CLIENT_SECRET}
    assert http.post("/zoho/oauth/v2/token", data=refresh).status_code == 503
    assert token(http, grant_type="refresh_token", refresh_token=jurnal["refresh_token"]).status_code == 200, (
        "Jurnal is not named")
    httpx.post(f"{server.url}/_sandbox/faults", json={})
    again = http.post("/zoho/oauth/v2/token", data=refresh)
    assert again.status_code == 200 and "access_token" in again.json() and "refresh_token" not in again.json()


def test_fixed_windows_on_the_scaled_clock() -> None:
    from ledger_pipeline.sandboxes.base import Windows

    limits = SandboxLimits(scale=60)  # a scaled minute is one real second
    w = Windows(limits)
    t0 = 1_000_000.0  # the start of a scaled minute (1e6 * 60 is a multiple of 60)
    quotas = [("a", 3, 60), ("ip", 4, 60)]
    assert [w.take(quotas, now=t0 + i / 10) for i in range(3)] == [0.0, 0.0, 0.0]
    wait = w.take(quotas, now=t0 + 0.5)
    assert wait == pytest.approx(0.5), "refused until the scaled minute ends (real seconds)"
    assert w.used("a", 60, now=t0 + 0.5) == 3, "a refused request is not counted"
    assert w.take([("b", 3, 60), ("ip", 4, 60)], now=t0 + 0.6) == 0.0
    assert w.take([("b", 3, 60), ("ip", 4, 60)], now=t0 + 0.7) > 0, "the shared quota is spent"
    assert w.take(quotas, now=t0 + 1.0) == 0.0, "a new window"
    assert w.take([("batch", 10, 60, 8)], now=t0) == 0.0 and w.take([("batch", 10, 60, 3)], now=t0) > 0
    limits.enabled = False
    assert all(w.take(quotas, now=t0 + 1.1) == 0.0 for _ in range(10)) and w.used("a", 60, now=t0 + 1.1) == 11
