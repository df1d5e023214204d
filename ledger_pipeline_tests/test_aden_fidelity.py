"""Aden against its published docs (docs.adenhq.com), one test per fidelity row (shared/reference/fidelity.md rows 1,
2, 3 and 10) and per client duty of the brief: awkward tenant ids end to end, two requests per fresh entry with periods
cached across runs, and an update refused because the entry moved on in Aden. All over real HTTP (the sandbox)."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import text

from ledger_pipeline.ledger.sink import custom_id_for
from ledger_pipeline.money import loads_exact
from ledger_pipeline.posting import PostingEngine
from ledger_pipeline.reconcile import reconcile_tenant
from ledger_pipeline.sandboxes.aden import API, ENTRY_ID_RULE
from ledger_pipeline.settings import load_settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.systems import OpenOptions, open_connection
from ledger_pipeline.systems.aden.sink import AdenKeyMismatch, aden_key, revision_key
from ledger_pipeline_tests.helpers import MemoryStore
from ledger_pipeline_tests.test_system_aden import FEB, JAN, MAR, WINDOW, Env, aden_env, entry, live, run, stub


@pytest.fixture
def env(settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:  # noqa: ANN001
    yield from aden_env(settings, monkeypatch)


def jwt_for(env: Env, login: str) -> str:
    """The sandbox's administrator issues the company's JWT (the login in the body: it may hold a "/")."""
    resp = env.http.post("/_sandbox/aden/companies/-/jwt", json={"company_login": login})
    assert resp.status_code == 200, resp.text
    return resp.json()["token"]


def api(env: Env, token: str) -> httpx.Client:
    return httpx.Client(base_url=env.server.url + API, headers={"Authorization": f"jwt {token}"}, timeout=10)


class Recorder:
    """Every request the client sends and every answer it gets (httpx event hooks: observed, not replaced)."""

    def __init__(self, http: httpx.Client):
        self.sent: list[httpx.Request] = []
        http.event_hooks["request"].append(self.sent.append)

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.url.raw_path.decode()) for r in self.sent]

    def clear(self) -> None:
        self.sent.clear()


@pytest.fixture
def rec(env: Env) -> Iterator[Recorder]:
    r = Recorder(env.conn.client.http)
    yield r
    env.conn.client.http.event_hooks["request"].remove(r.sent.append)


# -- row 1: periods -----------------------------------------------------------------------------------------------
def test_periods_live_at_accounting_periods_with_period_id_and_is_closed(env: Env) -> None:
    """docs.adenhq.com/api-reference/general-ledger/accounting-periods/list: `period_id`, `is_closed`."""
    with api(env, jwt_for(env, "p1")) as gl:
        assert gl.get("/posting-periods").status_code == 404
        page = gl.get("/accounting-periods", params={"fiscal_year_id": "FY2025", "is_closed": "false"}).json()
        assert page["pagination"]["total"] == 12 and page["pagination"]["has_more"] is False
        jan = page["data"][0]
        assert {k: jan[k] for k in ("period_name", "fiscal_year_id", "start_date", "end_date", "quarter",
                                    "is_adjustment_period", "is_closed")} == {
            "period_name": "January 2025", "fiscal_year_id": "FY2025", "start_date": "2025-01-01",
            "end_date": "2025-01-31", "quarter": 1, "is_adjustment_period": False, "is_closed": False}
        assert gl.get(f"/accounting-periods/{jan['period_id']}").json()["period_id"] == jan["period_id"]
        env.control("p1", "lock_date", {"lock_date": "2025-01-31"})
        closed = gl.get("/accounting-periods", params={"is_closed": "true", "start_date": "2025-01-01"}).json()
        assert [p["period_name"] for p in closed["data"]] == ["January 2025"]
    # the client resolves periods there: a closed month is "locked", the open one posts
    env.connect(["p1"])
    store = MemoryStore()
    out = run(env, store, "p1", [entry("p1", JAN, 500_00, 100_00, 100_00), entry("p1", FEB, 600_00, 100_00, 100_00)])
    assert out.counts == {"create": 1} and [(c, k) for c, _, k in out.failures] == [(custom_id_for("p1", JAN),
                                                                                     "locked")]


# -- row 2: filters ---------------------------------------------------------------------------------------------
def test_only_documented_filters_and_a_hit_is_never_trusted(env: Env, rec: Recorder) -> None:
    """docs.adenhq.com/api-reference/general-ledger/journal-entries/list documents status, entry_type, start_date,
    end_date, posting_period_id, limit, offset: an `entry_id` filter is ignored, so the client checks every hit."""
    env.connect(["f1", "f2"])
    e1, e2 = entry("f1", JAN, 500_00, 100_00, 100_00), entry("f1", FEB, 700_00, 100_00, 100_00)
    store = MemoryStore()
    assert run(env, store, "f1", [e1, e2]).counts == {"create": 2}
    token = jwt_for(env, "f1")
    with api(env, token) as gl:
        ignored = gl.get("/journal-entries", params={"entry_id": aden_key(e2.custom_id)}).json()["data"]
        assert [r["journal_entry_id"] for r in ignored] == [e1.custom_id, e2.custom_id]  # the filter did nothing
        feb = gl.get("/journal-entries", params={"start_date": "2025-02-01", "end_date": "2025-02-28"}).json()
        assert [r["journal_entry_id"] for r in feb["data"]] == [e2.custom_id] and "lines" not in feb["data"][0]
    # what the client sends: documented parameters only
    rec.clear()
    assert [x.custom_id for x in env.conn.sink.list_period("f1", *WINDOW)] == [e1.custom_id, e2.custom_id]
    documented = {"status", "entry_type", "start_date", "end_date", "posting_period_id", "limit", "offset"}
    assert all(set(r.url.params) <= documented for r in rec.sent if r.url.path.endswith("/journal-entries"))

    # a server ignoring every filter and listing other companies' entries first; company f2 even holds an entry
    # under f1's key for March: f1 must neither adopt it nor write to it
    e3 = entry("f1", MAR, 800_00, 100_00, 100_00)
    env.control("f2", "entries", {"create": {
        "entry_id": aden_key(e3.custom_id), "tran_date": "2025-03-31", "memo": "f2's own entry", "currency": "IDR",
        "lines": [{"line_number": 1, "account_id": "6-60101", "debit": 9, "credit": 0},
                  {"line_number": 2, "account_id": "1-10001", "debit": 0, "credit": 9}]}})
    env.control("f1", "quirks", {"ignore_filters": True, "server_ids": True})
    env.conn.sink.cache.set_addressing("f1", "server_id")  # as a tenant whose creates answered server ids
    before_f2 = env.entries("f2")
    assert env.conn.sink.find("f1", e3.custom_id) is None  # f2's entry is listed with f1's key: not adopted
    assert run(env, store, "f1", [e1, e2, e3]).counts == {"skip": 2, "create": 1}
    mine = env.entries("f1")
    assert [x["custom_id"] for x in mine] == [e1.custom_id, e2.custom_id, aden_key(e3.custom_id)]
    found = env.conn.sink.find("f1", e3.custom_id)
    assert found is not None and found.remote_id == mine[2]["id"] and found.matches(e3)
    e3b = entry("f1", MAR, 800_00, 150_00, 100_00)
    assert env.conn.sink.update("f1", stub(found), e3b).matches(e3b)
    listed = env.conn.sink.list_period("f1", *WINDOW)  # others' entries come first and ignore the dates
    assert sorted(x.custom_id for x in listed) == sorted([e1.custom_id, e2.custom_id, e3.custom_id])
    assert {r.status for r in reconcile_tenant("f1", [e1, e2, e3b], listed)} == {"match"}
    assert env.entries("f2") == before_f2  # never touched

    # a look-up answered with another entry (a stale or wrong id in the posting state): a named error, no write
    env.reset_stats()
    wrong = dict(found.extra, journal_entry_id=mine[0]["id"])  # e1's address under e3's key
    with pytest.raises(AdenKeyMismatch, match="not ours"):
        env.conn.sink.update("f1", replace(stub(found), extra=wrong), e3)
    assert env.stats()["api_writes"] == 0


# -- row 3: bare answers, entry ids, lines --------------------------------------------------------------------------
def test_answers_are_bare_and_entries_are_addressed_by_their_entry_id(env: Env) -> None:
    """Quickstart: create with entry_id "JE-2024-001"; workflow/update pages: bare answers addressed by
    journal_entry_id of that form; lines line_number/account_id/debit/credit/memo."""
    with api(env, jwt_for(env, "b1")) as gl:
        body = {"entry_id": "JE-2024-001", "tran_date": "2025-01-15", "memo": "Office supplies",
                "lines": [{"line_number": 1, "account_id": "6-60101", "debit": 500, "credit": 0, "memo": "exp"},
                          {"line_number": 2, "account_id": "1-10001", "debit": 0, "credit": 500, "memo": "cash"}]}
        created = gl.post("/journal-entries", json=body)  # no posting_period_id, as in the quickstart
        assert created.status_code == 201
        e = created.json()
        assert "data" not in e and e["journal_entry_id"] == "JE-2024-001" and e["status"] == "Draft"
        assert [set(ln) for ln in e["lines"]] == [{"line_number", "account_id", "debit", "credit", "memo"}] * 2
        got = gl.get("/journal-entries/JE-2024-001").json()
        assert got["journal_entry_id"] == "JE-2024-001" and got["total_debit"] == 500
        sub = gl.post("/journal-entries/JE-2024-001/submit-for-approval", headers={"X-Idempotency-Key": "k1"}).json()
        assert set(sub) >= {"journal_entry_id", "status", "required_approval_level", "submitted_at"}
        assert "data" not in sub and sub["status"] == "Posted"  # no threshold: level 0, approved and auto-posted
    # the other reading (the server assigns its own ids and echoes entry_id): the client works the same
    env.connect(["b2"])
    env.control("b2", "quirks", {"server_ids": True})
    store = MemoryStore()
    e1 = entry("b2", JAN, 900_00, 300_00, 200_00)
    assert run(env, store, "b2", [e1]).counts == {"create": 1}
    [held] = env.entries("b2")
    assert held["id"].startswith("je_") and held["custom_id"] == e1.custom_id
    assert store.rows[e1.custom_id].remote_id == held["id"]
    fresh = open_connection("aden", load_settings(), OpenOptions(env.conn.vault.engine.url.render_as_string(False),
                                                                  1000, 0.01, 5))
    try:  # a new process without posting state finds it through a listing, checking the key
        found = fresh.sink.find("b2", e1.custom_id)
        assert found is not None and found.remote_id == held["id"] and found.matches(e1)
    finally:
        fresh.close()
    e2 = entry("b2", JAN, 900_00, 300_00, 250_00)  # late data on a posted entry: reversed and re-posted
    assert run(env, store, "b2", [e2]).counts == {"update": 1}
    rows = env.entries("b2")
    assert [x["custom_id"] for x in live(rows)] == [revision_key(e1.custom_id, 2)]
    assert [x["status"] for x in rows] == ["Posted"] * 3


# -- row 10: credentials --------------------------------------------------------------------------------------------
def test_connect_takes_the_admin_issued_jwt_from_a_file_or_stdin(env: Env, settings) -> None:  # noqa: ANN001
    """quickstart / mcp-server/configuration: "contact your Aden administrator to obtain ... a JWT token". No OAuth."""
    for path in ("/aden/admin/authorize", "/aden/admin/token", "/aden/admin/token/introspect"):
        assert env.http.post(path).status_code in (404, 405)
    cli = [sys.executable, "-m", "ledger_pipeline.cli", "connect", "--system", "aden"]
    environ = {**os.environ, "LEDGER_SANDBOX_URL": env.server.url}
    token_file = settings.data_dir / "c1.jwt"
    token_file.write_text(jwt_for(env, "c1") + "\n")
    out = subprocess.run([*cli, "--tenant", "c1", "--token-file", str(token_file)], env=environ,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "connected 1 tenant(s) to aden" in out.stdout, out.stdout + out.stderr
    token2 = jwt_for(env, "c2")
    out = subprocess.run([*cli, "--tenant", "c2", "--token-file", "-"], input=token2, env=environ,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert token2 not in out.stdout + out.stderr
    with make_ops_engine(settings.ops_database_url).connect() as conn:
        stored = conn.execute(text("SELECT tenant_id, access_token, extra FROM integrations WHERE source_system = "
                                   "'aden' ORDER BY tenant_id")).fetchall()
    assert [r[0] for r in stored] == ["c1", "c2"] and token2 not in stored[1][1]  # encrypted at rest
    assert "aden_cache" in stored[1][2]  # connect proved the token by reading the periods (cached)
    bad = subprocess.run([*cli, "--tenant", "c3", "--token-file", "-"], input="not-a-jwt", env=environ,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "not a JWT" in bad.stderr
    missing = subprocess.run([*cli, "--tenant", "c3"], env=environ, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "--token-file" in missing.stderr
    # the connected tenants post; a revoked JWT ends in needs_reauth with what to do
    conn = open_connection("aden", load_settings(), OpenOptions(settings.ops_database_url, 1000, 0.01, 5))
    try:
        store = MemoryStore()
        engine_env = Env(env.server, conn, env.http)
        assert run(engine_env, store, "c1", [entry("c1", JAN, 500_00, 100_00, 100_00)]).counts == {"create": 1}
        env.control("c2", "revoke", {})
        out = run(engine_env, store, "c2", [entry("c2", JAN, 500_00, 100_00, 100_00)])
        [(_, why, kind)] = out.failures
        assert kind == "needs_reauth" and "--token-file" in why and "administrator" in why
        assert conn.vault.statuses()["c2"][0] == "needs_reauth"
    finally:
        conn.close()


def test_idempotency_key_on_every_write_and_approval_action(env: Env, rec: Recorder) -> None:
    """development page: X-Idempotency-Key "recommended for mutations"; workflow page: on approval actions."""
    env.connect(["i1"])
    env.control("i1", "approval_threshold", {"approval_threshold": "1.00"})
    store = MemoryStore()
    e1 = entry("i1", JAN, 500_00, 100_00, 100_00)
    assert run(env, store, "i1", [e1]).counts == {"awaiting_approval": 1}
    env.conn.sink.update("i1", stub(env.conn.sink.find("i1", e1.custom_id)), entry("i1", JAN, 600_00, 100_00, 50_00))
    env.conn.sink.delete("i1", stub(env.conn.sink.find("i1", e1.custom_id)))
    writes = [r for r in rec.sent if r.method != "GET"]
    assert {r.url.path.rsplit("/", 1)[-1] for r in writes} >= {"journal-entries", "submit-for-approval",
                                                                "request-change", "void"}
    assert all(r.headers.get("x-idempotency-key", "").startswith("r2a-") for r in writes)
    assert all(r.headers["authorization"].startswith("jwt ") for r in rec.sent)


# -- identifiers ------------------------------------------------------------------------------------------------
AWKWARD = ["acme/emea", "a#b?c%d e", "café-ü", "x" * 60, "q/../%2F"]


def test_awkward_tenant_ids_work_end_to_end(env: Env, rec: Recorder) -> None:
    """Slash, hash, ?, %, spaces, non-ASCII and long ids: URL-encoded path segments; keys within the assumed rule."""
    keys = {t: aden_key(custom_id_for(t, JAN)) for t in AWKWARD}
    assert len(set(keys.values())) == len(AWKWARD) and all(ENTRY_ID_RULE.fullmatch(k) for k in keys.values())
    assert all(ENTRY_ID_RULE.fullmatch(revision_key(custom_id_for(t, JAN), 12) + "-REV") for t in AWKWARD)
    assert aden_key(custom_id_for("acme/emea", JAN)) == aden_key(custom_id_for("acme/emea", JAN))  # stable
    assert aden_key("r2a-pl-a/b-202501") != aden_key("r2a-pl-a_b-202501") != aden_key("r2a-pl-a#b-202501")
    env.connect(AWKWARD)
    store = MemoryStore()
    for i, t in enumerate(AWKWARD):
        es = [entry(t, JAN, 500_00 + i, 100_00, 100_00), entry(t, FEB, 600_00 + i, 100_00, 100_00)]
        assert run(env, store, t, es).counts == {"create": 2}, t
        assert [x["custom_id"] for x in env.entries(t)] == [aden_key(e.custom_id) for e in es]
        assert env.conn.sink.find(t, es[0].custom_id).matches(es[0])
        assert env.conn.sink.find(t, custom_id_for(t, MAR)) is None  # 404: not found, never "unreachable"
        recon = reconcile_tenant(t, es, env.conn.sink.list_period(t, *WINDOW))
        assert {r.status for r in recon} == {"match"}, recon
        env.reset_stats()
        assert run(env, store, t, es).counts == {"skip": 2} and env.stats()["api_requests"] == 0
    # every id travelled as one encoded segment
    assert all("//" not in p and " " not in p and "#" not in p for _, p in rec.calls())
    with api(env, jwt_for(env, "acme/emea")) as gl:
        missing = gl.get("/journal-entries/" + "a%2Fb%23c")
        assert missing.status_code == 404 and missing.json()["error"]["details"]["value"] == "a/b#c"


# -- requests per entry and the period cache ------------------------------------------------------------------------
def test_two_requests_per_fresh_entry_and_periods_cached_across_runs(env: Env, rec: Recorder) -> None:
    env.connect(["r1"])  # connect reads the periods once (and proves the token)
    store = MemoryStore()
    months = [dt.date(2025, m, 1) for m in range(1, 6)]
    es = [entry("r1", m, 500_00 + i, 100_00, 100_00) for i, m in enumerate(months)]

    def post(conn, upto: int):  # noqa: ANN001, ANN202 - the first `upto` months, as one run sees them
        engine = PostingEngine(conn.sink, store, backoff=0.01)
        return engine.post_tenant("r1", es[:upto], store.state("r1"), (months[0], dt.date(2025, 6, 1)))

    def next_run():  # noqa: ANN202 - a new process: nothing in memory, the cache comes from the database
        return open_connection("aden", load_settings(), OpenOptions(env.conn.vault.engine.url.render_as_string(False),
                                                                     1000, 0.01, 5))
    env.reset_stats()
    rec.clear()
    assert post(env.conn, 3).counts == {"create": 3}
    assert env.stats()["api_requests"] == 6  # create + submit each, no period read
    assert Counter(p.rsplit("/", 1)[-1] for _, p in rec.calls()) == {"journal-entries": 3, "submit-for-approval": 3}
    conn = next_run()
    try:
        env.reset_stats()
        assert post(conn, 4).counts == {"skip": 3, "create": 1} and env.stats()["api_requests"] == 2
    finally:
        conn.close()
    # May is closed in Aden since the cache was filled: the refused create re-reads the periods once
    env.control("r1", "periods", {"month": "2025-05", "is_closed": True})
    conn = next_run()
    try:
        env.reset_stats()
        out = post(conn, 5)
        assert [k for _, _, k in out.failures] == ["locked"] and env.stats()["api_requests"] == 2  # POST, periods
        env.reset_stats()
        post(conn, 5)  # same process: the "closed" it just read is trusted
        assert env.stats()["api_requests"] == 0
    finally:
        conn.close()
    # reopened: the next process does not trust its cached "closed", re-reads once, then posts
    env.control("r1", "periods", {"month": "2025-05", "is_closed": False})
    conn = next_run()
    try:
        env.reset_stats()
        assert post(conn, 5).counts == {"skip": 4, "create": 1} and env.stats()["api_requests"] == 3
    finally:
        conn.close()


# -- an update refused because the entry moved on in Aden ------------------------------------------------------------
def test_update_refused_after_a_remote_change_is_reread_and_retried_once(env: Env, rec: Recorder) -> None:
    env.connect(["u1"])
    env.control("u1", "approval_threshold", {"approval_threshold": "1.00"})
    e1 = entry("u1", JAN, 800_00, 100_00, 100_00)
    [res] = env.conn.sink.create("u1", [e1])
    env.control("u1", "approvals", {"entry_id": e1.custom_id, "action": "request_change", "reason": "split COGS"})
    # the company's user resubmits the entry just before our update lands: the PUT is refused (409)
    env.control("u1", "entries", {"custom_id": e1.custom_id, "before_next_update": "submit"})
    e2 = entry("u1", JAN, 900_00, 100_00, 100_00)
    rec.clear()
    r2 = env.conn.sink.update("u1", stub(res.remote), e2)
    assert r2.matches(e2) and r2.state == "awaiting_approval" and r2.remote_id == res.remote.remote_id
    verbs = [(m, p.rsplit("/", 1)[-1]) for m, p in rec.calls()]
    jeid = res.remote.remote_id
    assert verbs == [("GET", jeid), ("PUT", jeid), ("GET", jeid), ("POST", "request-change"), ("PUT", jeid),
                     ("POST", "submit-for-approval")]
    [only] = env.entries("u1")
    assert only["status"] == "Pending Approval" and Decimal(str(only["total_debit"])) == Decimal("900.00")


def test_list_answers_and_errors_keep_their_documented_envelopes(env: Env) -> None:
    with api(env, jwt_for(env, "l1")) as gl:
        page = loads_exact(gl.get("/accounts", params={"limit": 5, "offset": 5}).content)
        assert set(page) == {"data", "pagination"} and page["pagination"]["has_more"] is True
        err = gl.post("/journal-entries", json={"entry_id": "bad id!", "tran_date": "2025-01-01", "lines": []})
        assert err.status_code == 400 and err.json() == {"error": {
            "code": "VALIDATION_ERROR", "message": "entry_id is required: 1 to 50 characters of A-Z a-z 0-9 . _ -",
            "details": {"field": "entry_id", "value": "bad id!"}}}
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,50}", aden_key("x" * 200))
