"""The Jurnal sandbox over real HTTP: every endpoint, Jurnal's errors, tokens, rate limits, faults, persistence."""

from __future__ import annotations

import time

import httpx
import pytest

from ledger_pipeline.sandboxes.jurnal import API, Limits
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
    with SandboxServer(tmp_path / "sb.sqlite", limits=Limits(enabled=False)) as s:
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
    with SandboxServer(tmp_path / "sb.sqlite", limits=Limits(scale=60)) as server:
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
