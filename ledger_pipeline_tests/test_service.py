"""The connection service over HTTP (httpx, no browser): `serve` in a thread on loopback against the sandbox, the
operational database on SQLite, links minted with the documented algorithm. Every security case of issue 24 gets
its page and changes nothing; a revoked tenant shows as needs re-auth with a link that works; many tenants connect
at once. The browser runs of the same flow are in test_service_browser.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import html
import logging
import threading
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import time_machine
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import select

from ledger_pipeline.cli import main
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.service import links
from ledger_pipeline.service.config import ServiceConfig, ServiceConfigError, load_service_config
from ledger_pipeline.service.server import ServiceServer
from ledger_pipeline.service.store import ops_engine
from ledger_pipeline.service.testing import aden_token, approve_at_provider, connect, page, start
from ledger_pipeline.settings import load_settings
from ledger_pipeline.state.vault import Integration

SECRET = "test-link-secret-0123456789-abcdefghijklmnop"
OPERATOR = "test-operator-token-0123456789-abcdefghijkl"
REDIRECT_SYSTEMS = ["jurnal", "quickbooks", "zoho", "rootfi"]


@pytest.fixture
def service(settings, sandbox, monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv("LEDGER_LINK_SECRET", SECRET)
    cfg = ServiceConfig(public_url="", link_secret=SECRET, operator_token=OPERATOR, rate_limit="5000/minute")
    with ServiceServer(load_settings(), cfg) as server:
        monkeypatch.setenv("LEDGER_PUBLIC_URL", server.url)
        yield server


def mint(server: ServiceServer, tenant: str, system: str, **kw) -> str:  # noqa: ANN003
    return links.mint(server.url, SECRET, tenant, system, **kw)


def integration(tenant: str, system: str):  # noqa: ANN201
    engine = ops_engine(load_settings().ops_database_url)
    with engine.connect() as conn:
        return conn.execute(select(Integration).where(Integration.tenant_id == tenant,
                                                      Integration.source_system == system)).first()


def tokens_of(row) -> tuple[str, str]:  # noqa: ANN001
    fernet = Fernet(load_settings().encryption_key.encode())
    return fernet.decrypt(row.access_token.encode()).decode(), fernet.decrypt(row.refresh_token.encode()).decode()


def test_link_algorithm_is_the_documented_one() -> None:
    """R2a's backend mints links from the docstring alone: pin the HMAC message and the URL shape."""
    url = links.mint("https://connect.example.com", SECRET, "t/00 1?", "zoho", ttl=3600, now=1_700_000_000,
                     nonce="abcdefghijklmnop")
    parts = urlsplit(url)
    assert parts.path == "/connect/zoho"
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    message = b"ledger-link-v1\nzoho\nt/00 1?\n1700003600\nabcdefghijklmnop\n"
    assert q == {"tenant": "t/00 1?", "exp": "1700003600", "nonce": "abcdefghijklmnop",
                 "sig": hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()}
    assert links.verify(SECRET, "zoho", q, now=1_700_000_000).tenant_id == "t/00 1?"
    for field, value in [("tenant", "t00002"), ("exp", "1700009999"), ("nonce", "bbcdefghijklmnop"),
                         ("flags", "new-company"), ("sig", "0" * 64)]:
        with pytest.raises(links.LinkError) as err:
            links.verify(SECRET, "zoho", {**q, field: value}, now=1_700_000_000)
        assert err.value.kind == "forged"
    with pytest.raises(links.LinkError) as err:
        links.verify(SECRET, "jurnal", q, now=1_700_000_000)  # signed for zoho
    assert err.value.kind == "forged"
    with pytest.raises(links.LinkError) as err:
        links.verify(SECRET, "zoho", q, now=1_700_003_600)
    assert err.value.kind == "expired"
    with pytest.raises(ValueError, match="control characters"):
        links.mint("https://x", SECRET, "t\n1", "zoho")
    with pytest.raises(ValueError, match="30 days"):
        links.mint("https://x", SECRET, "t1", "zoho", ttl=31 * 86400)


def test_service_config_names_what_to_fix() -> None:
    with pytest.raises(ServiceConfigError, match="LEDGER_PUBLIC_URL"):
        load_service_config({"LEDGER_LINK_SECRET": SECRET})
    with pytest.raises(ServiceConfigError, match="LEDGER_LINK_SECRET"):
        load_service_config({"LEDGER_PUBLIC_URL": "https://c.example.com", "LEDGER_LINK_SECRET": "short"})
    with pytest.raises(ServiceConfigError, match="LEDGER_TRUSTED_PROXIES"):
        load_service_config({"LEDGER_PUBLIC_URL": "https://c.example.com", "LEDGER_LINK_SECRET": SECRET,
                             "LEDGER_TRUSTED_PROXIES": "10.0.0.1, proxy.local"})
    cfg = load_service_config({"LEDGER_PUBLIC_URL": "https://c.example.com/", "LEDGER_LINK_SECRET": SECRET,
                               "LEDGER_TRUSTED_PROXIES": "10.0.0.1, 10.1.0.0/16"})
    assert cfg.callback_url("quickbooks") == "https://c.example.com/callback/quickbooks"
    assert cfg.trusted_proxies == "10.0.0.1,10.1.0.0/16" and cfg.secure_cookies


@pytest.mark.parametrize("system", [*REDIRECT_SYSTEMS, "aden"])
def test_a_tenant_connects_through_a_link(service, sandbox, system, caplog) -> None:  # noqa: ANN001
    """Open the link, approve on the provider's consent page, land on our page naming tenant and company; the
    credentials are stored encrypted and work; nothing secret reaches a page, a log line or a URL we print."""
    caplog.set_level(logging.INFO)
    tenant = f"t-{system}-1"
    link = mint(service, tenant, system)
    seen: list[str] = []
    with httpx.Client(timeout=30, event_hooks={"response": [lambda r: r.read()]}) as http:
        http.event_hooks["response"].append(lambda r: seen.append(f"{r.url}\n{r.headers}\n{r.text}"))
        if system == "aden":
            token = aden_token(sandbox.url, tenant)
            result = connect(http, link, token=token)
        else:
            result = connect(http, link)
    assert result.status == 200 and result.title == "Connected", result.text
    assert result.field("tenant") == tenant
    row = integration(tenant, system)
    assert row is not None and row.status == "connected" and row.company_id
    assert result.text.count(row.company_id) >= 1
    access, refresh = tokens_of(row)
    if system != "rootfi":  # Rootfi keeps only the linked company (its API key is the account's)
        assert access and row.access_token != access
        for text in [*seen, caplog.text]:
            assert access not in text and refresh not in text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("ledger_pipeline", "uvicorn")))
    assert "connected: tenant=" in ours
    assert "sig=" not in ours and "code=" not in ours and "state=" not in ours and "?" not in ours
    # the credentials work: the chart reads through the system's own client
    from ledger_pipeline.systems import OpenOptions, open_connection

    s = load_settings()
    connection = open_connection(system, s, OpenOptions(s.ops_database_url, s.rate_limit_scale, 0.01, 5))
    try:
        assert connection.fetch_chart(tenant)
    finally:
        connection.close()


def test_a_replayed_link_or_callback_changes_nothing(service) -> None:  # noqa: ANN001
    link = mint(service, "t-replay", "jurnal")
    with httpx.Client(timeout=30) as http:
        first = start(http, link)
        callback = approve_at_provider(http, first.headers["location"])
        assert page(http.get(callback)).title == "Connected"
        version = integration("t-replay", "jurnal").token_version
        again = page(http.get(callback))
        assert again.status == 400 and again.title == "Unknown or already used authorisation"
        reopened = page(http.get(link))
        assert reopened.status == 410 and reopened.title == "This link was already used"
        assert "Nothing was changed" in reopened.text
        posted = start(http, link)
        assert posted.status_code == 410
    assert integration("t-replay", "jurnal").token_version == version


def test_a_forged_or_expired_link_is_refused(service) -> None:  # noqa: ANN001
    link = mint(service, "t-forge", "quickbooks")
    parts = urlsplit(link)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    forged = [urlunsplit(parts._replace(query=urlencode({**q, "tenant": "t-victim"}))),
              urlunsplit(parts._replace(query=urlencode({**q, "sig": "f" * 64}))),
              urlunsplit(parts._replace(path="/connect/zoho")),
              urlunsplit(parts._replace(query=urlencode({k: v for k, v in q.items() if k != "nonce"}))),
              links.mint(service.url, "another-secret-0123456789-0123456789", "t-forge", "quickbooks")]
    with httpx.Client(timeout=30) as http:
        for url in forged:
            got = page(http.get(url))
            assert got.status == 403 and got.title == "This link is not valid", url
            assert start(http, url).status_code == 403
        expired = mint(service, "t-forge", "quickbooks", ttl=60, now=dt.datetime(2024, 1, 1).timestamp())
        got = page(http.get(expired))
        assert got.status == 410 and got.title == "This link has expired"
        assert page(http.get(f"{service.url}/connect/sap?tenant=x")).status == 404
    assert integration("t-forge", "quickbooks") is None and integration("t-victim", "quickbooks") is None


def test_a_callback_started_for_another_tenant_is_refused(service) -> None:  # noqa: ANN001
    """Tenant A's answer opened in tenant B's browser (a forwarded or planted callback URL) is refused without
    using it up; A's own browser then completes."""
    with httpx.Client(timeout=30) as browser_a, httpx.Client(timeout=30) as browser_b:
        callback_a = approve_at_provider(browser_a, start(browser_a, mint(service, "t-a", "zoho")).headers["location"])
        start(browser_b, mint(service, "t-b", "zoho"))  # B is mid-flow for its own tenant
        refused = page(browser_b.get(callback_a))
        assert refused.status == 403 and refused.title == "This authorisation was started elsewhere"
        assert "Nothing was changed" in refused.text
        assert page(httpx.get(callback_a)).status == 403  # no browser at all
        assert integration("t-a", "zoho") is None and integration("t-b", "zoho") is None
        assert page(browser_a.get(callback_a)).title == "Connected"
    assert integration("t-a", "zoho").status == "connected" and integration("t-b", "zoho") is None


def test_an_expired_state_is_refused(service) -> None:  # noqa: ANN001
    link = mint(service, "t-slow", "jurnal")
    with httpx.Client(timeout=30) as http:
        callback = approve_at_provider(http, start(http, link).headers["location"])
        with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=11), tick=True):
            late = page(http.get(callback))
        assert late.status == 400 and late.title == "The authorisation took too long"
        assert integration("t-slow", "jurnal") is None
        assert connect(http, link).title == "Connected"  # the link was not used up: start again within 10 minutes


@pytest.mark.parametrize("system", REDIRECT_SYSTEMS)
def test_a_provider_error_gets_its_page(service, system) -> None:  # noqa: ANN001
    link = mint(service, f"t-deny-{system}", system)
    with httpx.Client(timeout=30) as http:
        denied = connect(http, link, decision="deny")
        assert denied.status == 400 and denied.title == "Access was declined", denied.text
        assert "access_denied" in denied.text and "Nothing was changed" in denied.text
        assert integration(f"t-deny-{system}", system) is None
        state = parse_qs(urlsplit(start(http, link).headers["location"]).query)["state"][0]
        odd = page(http.get(f"{service.url}/callback/{system}",
                            params={"error": "<script>x</script>", "state": state}))
        assert odd.status in (400, 403) and "<script>" not in odd.text
        assert connect(http, link).title == "Connected"  # approving afterwards works with the same link


def test_another_company_than_the_one_on_record_is_refused(service) -> None:  # noqa: ANN001
    """Re-authorising with the wrong company changes nothing; an operator's new-company link allows the move."""
    with httpx.Client(timeout=30) as http:
        assert connect(http, mint(service, "t-co", "quickbooks")).title == "Connected"
        realm = integration("t-co", "quickbooks").company_id

        def via_other_company(link: str):  # the user signs in to another company at Intuit
            location = start(http, link).headers["location"]
            parts = urlsplit(location)
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            other = urlunsplit(parts._replace(query=urlencode({**q, "login_hint": "someone-else"})))
            return page(http.get(approve_at_provider(http, other)))

        refused = via_other_company(mint(service, "t-co", "quickbooks"))
        assert refused.status == 409 and refused.title == "A different company" and realm in refused.text
        assert integration("t-co", "quickbooks").company_id == realm
        moved = via_other_company(mint(service, "t-co", "quickbooks", flags="new-company"))
        assert moved.title == "Connected"
        assert integration("t-co", "quickbooks").company_id != realm
        taken = via_other_company(mint(service, "t-co2", "quickbooks"))  # someone-else is t-co's company now
        assert taken.status == 409 and "another tenant" in taken.text
        assert integration("t-co2", "quickbooks") is None


def test_forwarded_headers_only_from_trusted_proxies_and_rates_bounded(settings, sandbox) -> None:  # noqa: ANN001
    def burst(server: ServiceServer, addresses: list[str]) -> list[int]:
        return [httpx.get(f"{server.url}/", headers={"x-forwarded-for": a}).status_code for a in addresses]

    base = ServiceConfig(public_url="", link_secret=SECRET, rate_limit="3/minute")
    s = load_settings()
    with ServiceServer(s, base) as untrusted:  # a client cannot claim other addresses to dodge the limit
        assert burst(untrusted, ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"]) == [200] * 3 + [429]
        assert httpx.get(f"{untrusted.url}/healthz").status_code == 200
    trusted = ServiceConfig(public_url="", link_secret=SECRET, rate_limit="3/minute", trusted_proxies="127.0.0.1")
    with ServiceServer(s, trusted) as proxied:  # behind our proxy each real client has its own budget
        assert burst(proxied, ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"]) == [200] * 4
        assert burst(proxied, ["198.51.100.9"] * 4) == [200] * 3 + [429]


def test_request_bodies_are_bounded(service) -> None:  # noqa: ANN001
    link = mint(service, "t-big", "aden")
    q = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    big = httpx.post(f"{service.url}/connect/aden", data={**q, "token": "x" * 70_000})
    assert big.status_code == 413

    def chunks():  # noqa: ANN202 - no Content-Length: counted as it arrives
        yield urlencode(q).encode()
        for _ in range(20):
            yield b"&token=" + b"y" * 8192

    assert httpx.post(f"{service.url}/connect/aden", content=chunks(),
                      headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413
    assert integration("t-big", "aden") is None
    assert httpx.get(link).status_code == 200  # the link itself is untouched


def test_aden_refuses_a_bad_token_and_keeps_the_link(service, sandbox) -> None:  # noqa: ANN001
    link = mint(service, "t-aden-bad", "aden")
    with httpx.Client(timeout=30) as http:
        bad = connect(http, link, token="not-a-jwt")
        assert bad.status == 400 and "Nothing was changed" in bad.text and "not-a-jwt" not in bad.text
        assert integration("t-aden-bad", "aden") is None
        good = connect(http, link, token=aden_token(sandbox.url, "t-aden-bad"))
        assert good.title == "Connected"


def operator(server: ServiceServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers={"authorization": f"Bearer {OPERATOR}"})


def test_operator_page_needs_its_credential(service) -> None:  # noqa: ANN001
    with httpx.Client(base_url=service.url, timeout=30) as http:
        assert http.get("/operator").headers["location"] == "/operator/login"
        assert http.get("/operator", headers={"authorization": "Bearer wrong"}).status_code == 303
        assert http.post("/operator/login", data={"token": "wrong"}).status_code == 401
        signed_in = http.post("/operator/login", data={"token": OPERATOR})
        assert signed_in.status_code == 303 and "lp_operator" in signed_in.headers["set-cookie"]
        assert "HttpOnly" in signed_in.headers["set-cookie"] and "SameSite=strict" in signed_in.headers["set-cookie"]
        assert OPERATOR not in signed_in.headers["set-cookie"]
        assert page(http.get("/operator")).title == "Tenant connections"
        http.post("/operator/logout")
        http.cookies.clear()
        assert http.get("/operator").status_code == 303
        assert http.get("/operator", cookies={"lp_operator": "9999999999.forged"}).status_code == 303


def test_a_revoked_tenant_shows_needs_reauth_with_a_working_link(service, sandbox, settings) -> None:  # noqa: ANN001
    seeding.seed(make_engine(load_settings().r2a_database_url), 3, 1, dt.date(2024, 1, 1))
    with httpx.Client(timeout=30) as http:
        assert connect(http, mint(service, "t00001", "jurnal")).title == "Connected"
        assert connect(http, mint(service, "t00002", "zoho")).title == "Connected"
    httpx.post(f"{sandbox.url}/_sandbox/companies/t00001/revoke").raise_for_status()
    result = CliRunner().invoke(main, ["check", "--tenant", "t00001"])
    assert result.exit_code == 1 and "NOT READY" in result.output and "connect --link" in result.output
    with operator(service) as op:
        listing = op.get("/operator")
        rows = {r: s for r, s in _rows(listing.text)}
        assert rows == {"t00001": "needs re-auth", "t00002": "connected", "t00003": "never connected"}
        link = _row_link(listing.text, "t00001")
        assert link.startswith(f"{service.url}/connect/jurnal?")
        needs = op.get("/operator", params={"status": "needs re-auth"}).text
        assert [t for t, _ in _rows(needs)] == ["t00001"]
        check = page(op.post("/operator/check", data={"tenant": "t00002"}))
        assert check.field("verdict") == "all checks passed", check.text
    with httpx.Client(timeout=30) as http:
        assert connect(http, link).title == "Connected"
    with operator(service) as op:
        rows = dict(_rows(op.get("/operator").text))
        assert rows["t00001"] == "connected"
        minted = page(op.get("/operator/link", params={"tenant": "t00003", "system": "rootfi"}))
        assert minted.field("link").startswith(f"{service.url}/connect/rootfi?")
    status = CliRunner().invoke(main, ["connect", "--status"])
    assert status.exit_code == 0, status.output
    assert "t00003" in status.output and "never connected" in status.output and "2 connected" in status.output


def _rows(text: str) -> list[tuple[str, str]]:
    import re

    return re.findall(r'<tr data-tenant="([^"]+)" data-status="([^"]+)">', text)


def _row_link(text: str, tenant: str) -> str:
    import html
    import re

    row = text.split(f'<tr data-tenant="{tenant}"', 1)[1].split("</tr>", 1)[0]
    return html.unescape(re.search(r'<span class="link">([^<]+)</span>', row).group(1))


def test_many_tenants_connect_at_once(service, sandbox) -> None:  # noqa: ANN001
    plan = [(f"t-many-{i:02d}", system) for i, system in enumerate(REDIRECT_SYSTEMS * 4 + ["aden"] * 4)]
    tokens = {t: aden_token(sandbox.url, t) for t, system in plan if system == "aden"}
    results: dict[str, str] = {}

    def one(tenant: str, system: str) -> None:
        with httpx.Client(timeout=60) as http:
            results[tenant] = connect(http, mint(service, tenant, system), token=tokens.get(tenant),
                                      accept_html=system != "quickbooks").title

    threads = [threading.Thread(target=one, args=p) for p in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {t: "Connected" for t, _ in plan}
    for tenant, system in plan:
        assert integration(tenant, system).status == "connected"


def test_cli_link_and_serve_settings(service, monkeypatch) -> None:  # noqa: ANN001
    out = CliRunner().invoke(main, ["connect", "--link", "--tenant", "t-cli", "--system", "zoho", "--ttl-hours", "2"])
    assert out.exit_code == 0, out.output
    link = out.output.strip()
    assert link.startswith(f"{service.url}/connect/zoho?")
    q = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert links.verify(SECRET, "zoho", q).tenant_id == "t-cli"
    with httpx.Client(timeout=30) as http:
        assert connect(http, link).title == "Connected"
    monkeypatch.delenv("LEDGER_LINK_SECRET")
    refused = CliRunner().invoke(main, ["connect", "--link", "--tenant", "t-cli", "--system", "zoho"])
    assert refused.exit_code == 2 and "LEDGER_LINK_SECRET" in refused.output
    assert CliRunner().invoke(main, ["serve"]).exit_code == 2  # no secret: refused before listening


def test_the_operator_disconnects_a_tenant_and_a_new_link_reconnects_it(service, sandbox) -> None:  # noqa: ANN001
    seeding.seed(make_engine(load_settings().r2a_database_url), 2, 1, dt.date(2024, 1, 1))
    with httpx.Client(timeout=30) as http:
        assert connect(http, mint(service, "t00001", "zoho")).title == "Connected"
    company = integration("t00001", "zoho").company_id
    httpx.post(f"{sandbox.url}/_sandbox/zoho/companies/t00001/lock_date", json={"lock_date": "2099-12-31"})
    with operator(service) as op:  # the Check button checks the lock of the month the next close posts
        check = page(op.post("/operator/check", data={"tenant": "t00001"}))
        shown = html.unescape(check.text)
        assert check.field("verdict") == "failed" and "Zoho Books' transaction lock date is 2099-12-31" in shown
        assert "Transaction Locking" in shown
    httpx.post(f"{sandbox.url}/_sandbox/zoho/companies/t00001/lock_date", json={"lock_date": None})
    before = httpx.get(f"{sandbox.url}/_sandbox/stats").json()["api_requests"]
    with operator(service) as op:
        done = op.post("/operator/disconnect", data={"tenant": "t00001"}, follow_redirects=False)
        assert done.status_code == 303
        listing = op.get("/operator").text
        assert dict(_rows(listing))["t00001"] == "revoked" and "disconnected by the operator" in listing
        link = _row_link(listing, "t00001")
        assert op.post("/operator/disconnect", data={"tenant": "t00002"}).status_code == 404
    row = integration("t00001", "zoho")
    assert row.status == "revoked" and row.access_token is None and row.refresh_token is None
    assert row.company_id == company, "the company on record is kept: a reconnect carries on where it stopped"
    out = CliRunner().invoke(main, ["check", "--tenant", "t00001"])
    assert out.exit_code == 1 and "revoked" in out.output and "connect --link --tenant t00001" in out.output
    assert httpx.get(f"{sandbox.url}/_sandbox/stats").json()["api_requests"] == before, "nothing sent once revoked"
    status = CliRunner().invoke(main, ["connect", "--status"])
    assert "revoked" in status.output
    with httpx.Client(timeout=30) as http:
        assert connect(http, link).title == "Connected"
    assert integration("t00001", "zoho").status == "connected"
