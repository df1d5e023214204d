"""QuickBooks Online's own behaviour over HTTP against its sandbox: OAuth with realmId and rotating refresh tokens,
batch posting, the SyncToken (kept across processes, stale ones re-read), requestid replay, refusals classified,
chart paging with inactive accounts, the per-realm concurrency bound. What every system does alike (post, re-run,
late data, fault drill, revoked grant, closed books) is in test_contract.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from ledger_pipeline.ledger.sink import CanonicalEntry, CanonicalLine, SinkError, custom_id_for, memo_for
from ledger_pipeline.posting import PostingEngine, TenantOutcome
from ledger_pipeline.sandboxes.base import SandboxLimits
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.settings import Settings, load_settings
from ledger_pipeline.systems import ChartAccount, OpenOptions
from ledger_pipeline.systems.quickbooks import QuickBooksConnection
from ledger_pipeline.systems.quickbooks.sink import request_id
from ledger_pipeline.testing.systems import MemoryStore as MemStore
from ledger_pipeline.testing.systems import assert_exactly_once, connect_tenants, sandbox_server

MONTHS = [dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 3, 1)]
WINDOW = (dt.date(2025, 1, 1), dt.date(2025, 4, 1))


def _start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: object) -> SandboxServer:
    """A started sandbox with the environment pointed at it (for callers that stop it themselves)."""
    server = SandboxServer(tmp_path / "sb.sqlite", **kw).start()  # type: ignore[arg-type]
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    return server


@pytest.fixture
def qbo(settings: Settings, tmp_path: Path) -> Iterator[SandboxServer]:
    with sandbox_server(tmp_path / "sb.sqlite") as (server, _box):
        yield server


def open_conn(page_size: int = 1000) -> QuickBooksConnection:
    s = load_settings()
    return QuickBooksConnection(s, OpenOptions(database_url=s.ops_database_url, rate_limit_scale=1000,
                                               backoff_initial=0.01, timeout=5), page_size=page_size)


connect = connect_tenants  # (conn, tenants): each through QuickBooks' OAuth flow against the sandbox


def entries_for(tenant: str, chart: list[ChartAccount], months: list[dt.date] = MONTHS,
                bump: dict[dt.date, int] | None = None) -> list[CanonicalEntry]:
    """Balanced month entries: revenue credit, COGS and salaries debit, net income to retained earnings."""
    ids = {a.number: a.account_id for a in chart}
    seed = int(hashlib.sha256(tenant.encode()).hexdigest()[:6], 16)
    out = []
    for m in months:
        revenue = 1_000_000 + seed % 50_000 + m.month * 1_001 + (bump or {}).get(m, 0)
        cogs, salaries = revenue * 2 // 5, 250_037
        net = revenue - cogs - salaries
        lines = [("4-40000", 0, revenue, "Revenue"), ("5-50000", cogs, 0, "COGS"), ("6-60101", salaries, 0, "Gaji"),
                 ("3-30100", net, 0, "Net income")]
        canon = tuple(CanonicalLine(i + 1, ids[n], n, d, c, desc) for i, (n, d, c, desc) in enumerate(lines))
        last = (m.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
        content = hashlib.sha256(repr([(ln.account_id, ln.debit_minor, ln.credit_minor) for ln in canon]).encode())
        out.append(CanonicalEntry(tenant, m, custom_id_for(tenant, m), last, memo_for(m), "IDR",
                                  content.hexdigest()[:16], canon))
    return out


def post(conn: QuickBooksConnection, store: MemStore, tenant: str, entries: list[CanonicalEntry]) -> TenantOutcome:
    return PostingEngine(conn.sink, store, backoff=0.01).post_tenant(tenant, entries, store.state(tenant), WINDOW)


def remote_entries(url: str, login: str | None = None) -> list[dict]:
    params = {"system": "quickbooks", **({"login": login} if login else {})}
    return httpx.get(f"{url}/_sandbox/journal_entries", params=params).json()["journal_entries"]


def stats(url: str) -> dict:
    return httpx.get(f"{url}/_sandbox/stats").json()


def control(url: str, login: str, action: str, body: dict | None = None) -> dict:
    resp = httpx.post(f"{url}/_sandbox/quickbooks/companies/{login}/{action}", json=body or {})
    resp.raise_for_status()
    return resp.json()


def assert_exactly_posted(url: str, entries: list[CanonicalEntry]) -> None:
    """Each entry once in QuickBooks with our date, totals and lines; nothing else of ours for these tenants."""
    assert_exactly_once(url, "quickbooks", entries, tenants={e.tenant_id for e in entries})


def test_months_go_as_one_batch_and_the_sync_token_survives_a_new_process(settings, qbo) -> None:  # noqa: ANN001
    conn = open_conn()
    try:
        connect(conn, ["t1"])
        assert conn.vault.details("t1")[0], "the realmId from the redirect is the company id"
        entries = entries_for("t1", conn.fetch_chart("t1"))
        store = MemStore()
        httpx.post(f"{qbo.url}/_sandbox/stats/reset")
        out = post(conn, store, "t1", entries)
        assert out.counts == {"create": 3} and not out.failures
        s = stats(qbo.url)
        assert s["by_system"]["quickbooks"]["api_writes"] == 1, "a tenant's three months go as one /batch call"
        assert any(r["endpoint"].endswith("/batch") and r["status"] == 200 for r in s["requests"])
        assert_exactly_posted(qbo.url, entries)
        assert all(len(r["doc_number"]) <= 21 and r["private_note"].startswith(r["custom_id"])
                   for r in remote_entries(qbo.url))

        late = entries_for("t1", conn.fetch_chart("t1"), bump={MONTHS[1]: 12_345})
        httpx.post(f"{qbo.url}/_sandbox/stats/reset")
        out = post(conn, store, "t1", late)
        assert out.counts == {"skip": 2, "update": 1} and not out.failures
        assert stats(qbo.url)["by_system"]["quickbooks"]["api_writes"] == 1
        assert_exactly_posted(qbo.url, late)
        feb = [r for r in remote_entries(qbo.url) if r["custom_id"] == late[1].custom_id][0]
        assert feb["sync_token"] == "1" and feb["id"] == store.rows[late[1].custom_id].remote_id, "updated in place"

        # a fresh process: the SyncToken comes back from the posting state's hint (RemoteEntry.extra)
        fresh = open_conn()
        try:
            again = entries_for("t1", conn.fetch_chart("t1"), bump={MONTHS[1]: 99})
            out = post(fresh, store, "t1", again)
            assert out.counts == {"skip": 2, "update": 1}
            assert_exactly_posted(qbo.url, again)
        finally:
            fresh.close()
    finally:
        conn.close()


def test_stale_sync_token_rereads_and_retries(settings, qbo) -> None:  # noqa: ANN001
    conn = open_conn()
    try:
        connect(conn, ["t1"])
        chart = conn.fetch_chart("t1")
        store = MemStore()
        post(conn, store, "t1", entries_for("t1", chart))
        cid = custom_id_for("t1", MONTHS[0])
        touched = control(qbo.url, "t1", "entries", {"custom_id": cid, "touch": True})  # a person edits it
        assert touched["sync_token"] == "1"
        late = entries_for("t1", chart, bump={MONTHS[0]: 777})
        httpx.post(f"{qbo.url}/_sandbox/stats/reset")
        out = post(conn, store, "t1", late)
        assert out.counts == {"skip": 2, "update": 1} and not out.failures
        rows = stats(qbo.url)["requests"]
        posts = {r["status"]: r["count"] for r in rows if r["endpoint"].endswith("/journalentry")}
        assert posts == {200: 1}, "the engine re-reads before it updates: the fresh SyncToken, no 5010"
        assert any(r["endpoint"].endswith("/journalentry/{id}") and r["method"] == "GET" for r in rows), "re-read"
        assert_exactly_posted(qbo.url, late)
        jan = [r for r in remote_entries(qbo.url) if r["custom_id"] == cid]
        assert len(jan) == 1 and jan[0]["sync_token"] == "2"
        # a person's edit between our read and our write: the sink's update hits 5010, re-reads and retries
        stale = conn.sink.find("t1", cid, {"Id": jan[0]["id"]})
        control(qbo.url, "t1", "entries", {"custom_id": cid, "touch": True})
        again = entries_for("t1", chart, bump={MONTHS[0]: 778})
        httpx.post(f"{qbo.url}/_sandbox/stats/reset")
        conn.sink.update("t1", stale, next(e for e in again if e.custom_id == cid))
        posts = {r["status"]: r["count"] for r in stats(qbo.url)["requests"] if r["endpoint"].endswith("/journalentry")}
        assert posts == {400: 1, 200: 1}, "the first update hit 5010, the retry with the fresh SyncToken passed"
        assert_exactly_posted(qbo.url, again)
    finally:
        conn.close()


def test_requestid_replay_returns_the_original_response(settings, qbo) -> None:  # noqa: ANN001
    conn = open_conn()
    try:
        connect(conn, ["t1", "t2"])
        entry = entries_for("t1", conn.fetch_chart("t1"))[0]
        httpx.post(f"{qbo.url}/_sandbox/faults", json={"drop_after_commit_rate": 1.0, "writes_only": True})
        with pytest.raises(SinkError) as err:
            conn.sink.create("t1", [entry])
        assert err.value.kind == "uncertain"
        first = remote_entries(qbo.url, "t1")
        assert len(first) == 1, "committed once; the client's retries with the same requestid changed nothing"
        assert control(qbo.url, "t1", "requests")["replayed"] >= 1
        httpx.post(f"{qbo.url}/_sandbox/faults", json={})
        result = conn.sink.create("t1", [entry])[0]
        assert result.remote is not None and result.remote.remote_id == first[0]["id"], "the original response"
        assert result.remote.matches(entry) and len(remote_entries(qbo.url, "t1")) == 1
        store = MemStore()
        out = post(conn, store, "t1", [entry])  # the engine's create carries the same requestid
        assert out.counts == {"create": 1} and len(remote_entries(qbo.url, "t1")) == 1

        # a person deletes the entry; a later look-up finds it gone and the re-create gets a new requestid (the
        # first create's would replay a response naming the deleted entry)
        control(qbo.url, "t1", "entries", {"custom_id": entry.custom_id, "delete": True})
        store.rows[entry.custom_id] = replace(store.rows[entry.custom_id], status="pending", action="update")
        out = post(conn, store, "t1", [entry])
        again = remote_entries(qbo.url, "t1")
        assert out.counts == {"create": 1} and len(again) == 1 and again[0]["id"] != first[0]["id"]
        assert store.rows[entry.custom_id].remote_id == again[0]["id"]

        # a batch: the whole response is replayed too
        batch = entries_for("t2", conn.fetch_chart("t2"))
        httpx.post(f"{qbo.url}/_sandbox/faults", json={"drop_after_commit_rate": 1.0, "writes_only": True})
        with pytest.raises(SinkError):
            conn.sink.create("t2", batch)
        httpx.post(f"{qbo.url}/_sandbox/faults", json={})
        results = conn.sink.create("t2", batch)
        assert [r.remote.matches(e) for r, e in zip(results, batch, strict=True)] == [True] * 3
        assert len(remote_entries(qbo.url, "t2")) == 3
        assert request_id("create", "a", "h") == request_id("create", "a", "h") != request_id("update", "a", "h")
    finally:
        conn.close()


def test_inactive_account_and_unbalanced_entry_are_classified(settings, qbo) -> None:  # noqa: ANN001
    """QuickBooks' own refusals besides closed books (in test_contract.py), classified per entry."""
    conn = open_conn()
    try:
        connect(conn, ["tc"])
        chart = conn.fetch_chart("tc")
        e = entries_for("tc", chart)[0]
        control(qbo.url, "tc", "accounts", {"number": "6-60102", "archived": True})
        upah = next(a.account_id for a in chart if a.number == "6-60102")
        bad = [CanonicalLine(1, upah, "6-60102", 100, 0, "x"),
               CanonicalLine(2, e.lines[0].account_id, "4", 0, 100, "y")]
        inactive = CanonicalEntry("tc", MONTHS[0], "r2a-pl-tc-x", e.transaction_date, e.memo, "IDR", "h1", tuple(bad))
        assert conn.sink.create("tc", [inactive])[0].error.kind == "account"
        unbalanced = CanonicalEntry("tc", MONTHS[0], "r2a-pl-tc-y", e.transaction_date, e.memo, "IDR", "h2",
                                    (bad[1], CanonicalLine(2, e.lines[1].account_id, "5", 99, 0, "z")))
        refused = conn.sink.create("tc", [unbalanced])[0].error
        assert refused.kind == "rejected" and "in balance" in refused.message
    finally:
        conn.close()


def test_rotating_refresh_tokens_with_one_second_access_tokens(settings, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    server = _start(tmp_path, monkeypatch, limits=SandboxLimits(enabled=False), access_ttl=1)
    conn = open_conn()
    try:
        connect(conn, ["t1"])
        old_refresh = _refresh_token(conn, "t1")
        for _ in range(4):
            assert len(conn.fetch_chart("t1")) >= 30
            time.sleep(1.05)
        assert len(conn.fetch_chart("t1")) >= 30
        refreshes = sum(r["count"] for r in stats(server.url)["requests"] if r["status"] == "refresh_token")
        assert refreshes >= 3
        assert _refresh_token(conn, "t1") != old_refresh, "the newest is stored"
        replay = httpx.post(conn.oauth.token_endpoint, data={"grant_type": "refresh_token",
                                                             "refresh_token": old_refresh},
                            auth=(conn.oauth.client_id, conn.oauth.client_secret))
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", "a rotated token is dead"
        assert conn.vault.statuses()["t1"][0] == "connected"
    finally:
        conn.close()
        server.stop()


def _refresh_token(conn: QuickBooksConnection, tenant: str) -> str:
    with conn.vault.engine.connect() as db:
        cipher = db.execute(text("SELECT refresh_token FROM integrations WHERE tenant_id = :t AND "
                                 "source_system = 'quickbooks'"), {"t": tenant}).scalar_one()
    return conn.vault._dec(cipher, tenant)


def test_chart_pages_and_includes_inactive_accounts(settings, qbo) -> None:  # noqa: ANN001
    conn = open_conn(page_size=7)
    try:
        connect(conn, ["t1"])
        control(qbo.url, "t1", "accounts", {"number": "9-90000", "name": "Suspense", "archived": True})
        control(qbo.url, "t1", "accounts", {"number": "6-60102", "archived": True})
        control(qbo.url, "t1", "accounts", {"number": "6-60500", "name": "Asuransi"})
        httpx.post(f"{qbo.url}/_sandbox/stats/reset")
        chart = conn.fetch_chart("t1")
        emu = qbo.emulators["quickbooks"]
        realm = conn.vault.details("t1")[0]
        rows = emu.db.execute("SELECT id, acct_num, name, active FROM quickbooks_accounts WHERE realm_id = ?",
                              (realm,)).fetchall()
        assert {(a.account_id, a.number, a.name, a.archived) for a in chart} == {
            (r["id"], r["acct_num"], r["name"], not r["active"]) for r in rows}
        assert len(chart) == 40 and sum(a.archived for a in chart) == 2
        queries = sum(r["count"] for r in stats(qbo.url)["requests"] if r["endpoint"].endswith("/query"))
        assert queries == 6, "40 accounts in pages of 7: five full pages and a short one"
        active_only = conn.client.query("t1", "select * from Account MAXRESULTS 1000")["Account"]
        assert len(active_only) == 38, "a plain Account query lists active accounts only"
    finally:
        conn.close()


def test_concurrency_is_bounded_per_realm(settings, qbo) -> None:  # noqa: ANN001
    conn = open_conn()
    try:
        connect(conn, ["t1"])
        realm = conn.vault.details("t1")[0]
        token = conn.client.dialect.token("t1", None)
        httpx.post(f"{qbo.url}/_sandbox/faults", json={"latency_ms": 400})
        # the sandbox enforces QuickBooks' 10 in flight per realm ...
        statuses: list[int] = []
        barrier = threading.Barrier(14)
        http = httpx.Client(limits=httpx.Limits(max_connections=20))  # one client: no per-request setup cost

        def raw() -> None:
            barrier.wait()
            r = http.get(f"{qbo.url}/quickbooks/v3/company/{realm}/query",
                          params={"query": "select * from Account", "minorversion": "75"},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert r.json()["Fault"]["Error"][0]["code"] == "003001"

        threads = [threading.Thread(target=raw) for _ in range(14)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        http.close()
        assert statuses.count(429) == 4 and statuses.count(200) == 10
        # ... and the client never exceeds it, however many threads share it
        httpx.post(f"{qbo.url}/_sandbox/stats/reset")
        errors: list[Exception] = []

        def chart() -> None:
            try:
                conn.fetch_chart("t1")
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=chart) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and stats(qbo.url)["by_system"]["quickbooks"]["rate_limited"] == 0
    finally:
        conn.close()
