"""Rootfi's own behaviour over HTTP against the sandbox: link flow, chart paging, the API key, upload jobs (one per
tenant, a status per item, still running at the end of a run), uncertain uploads resolved by listing, removal and
edits seen by reconciliation. What every system does alike (post, re-run, late data, fault drill, revoked grant,
closed period) is in test_contract.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from ledger_pipeline import posting
from ledger_pipeline.ledger.sink import CanonicalEntry, CanonicalLine, SinkError, custom_id_for, memo_for
from ledger_pipeline.posting import PostingEngine
from ledger_pipeline.reconcile import reconcile_tenant
from ledger_pipeline.sandboxes.rootfi import SANDBOX_API_KEY
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.systems.authflow import OAuthError, consume_state, new_state
from ledger_pipeline.systems.rootfi import RootfiConnection
from ledger_pipeline.testing.systems import MemoryStore as MemStore
from ledger_pipeline.testing.systems import assert_exactly_once as shared_assert_exactly_once
from ledger_pipeline.testing.systems import connect_tenants, open_system, sandbox_server

UPLOAD = ("POST", "/rootfi/api/write/journal_entries")
MONTHS = [dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 3, 1)]
WINDOW = (dt.date(2025, 1, 1), dt.date(2025, 4, 1))
ENGINE_HAS_PENDING = "submitted" in inspect.getsource(posting)


@pytest.fixture
def env(settings, tmp_path) -> Iterator[tuple[SandboxServer, RootfiConnection]]:  # noqa: ANN001
    with sandbox_server(tmp_path / "sb.sqlite") as (server, _box):
        conn = open_system("rootfi")
        try:
            yield server, conn
        finally:
            conn.close()


link = connect_tenants  # (conn, tenants): each through Rootfi's link flow against the sandbox


def control(server: SandboxServer, login: str, action: str, body: dict) -> dict:
    resp = httpx.post(f"{server.url}/_sandbox/rootfi/companies/{login}/{action}", json=body)
    resp.raise_for_status()
    return resp.json()


def remote_entries(server: SandboxServer) -> list[dict]:
    return httpx.get(f"{server.url}/_sandbox/journal_entries", params={"system": "rootfi"}).json()["journal_entries"]


def stats(server: SandboxServer) -> dict:
    return httpx.get(f"{server.url}/_sandbox/stats").json()


def calls(server: SandboxServer, method: str, endpoint: str) -> int:
    return sum(r["count"] for r in stats(server)["requests"]
               if r["system"] == "rootfi" and r["method"] == method and r["endpoint"] == endpoint)


def ids(conn: RootfiConnection, tenant_id: str) -> dict[str, str]:
    return {a.number: a.account_id for a in conn.fetch_chart(tenant_id) if not a.archived}


def make_entry(tenant_id: str, period: dt.date, acc: dict[str, str], bump: int = 0,
               account_override: str | None = None) -> CanonicalEntry:
    """A balanced entry: revenue credited, COGS, expense and the net-income clearing line debited."""
    seed = int(hashlib.sha256(f"{tenant_id}{period}".encode()).hexdigest()[:6], 16)
    revenue = 1_000_000_00 + seed % 9_999_999 + bump
    cogs, expense = revenue * 2 // 5 + 7, revenue // 4 + 3
    net = revenue - cogs - expense
    spec = [("4-40000", 0, revenue), ("5-50000", cogs, 0), ("6-60101", expense, 0), ("3-30100", net, 0)]
    lines = tuple(CanonicalLine(n, account_override if (account_override and n == 3) else acc[number], number, d, c,
                                f"line {n}") for n, (number, d, c) in enumerate(spec, 1))
    last = (period.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    digest = hashlib.sha256(repr([(ln.account_id, ln.debit_minor, ln.credit_minor) for ln in lines]).encode())
    return CanonicalEntry(tenant_id, period, custom_id_for(tenant_id, period), last, memo_for(period), "IDR",
                          digest.hexdigest()[:16], lines)


def assert_exactly_once(server: SandboxServer, entries: list[CanonicalEntry]) -> None:
    shared_assert_exactly_once(server.url, "rootfi", entries)


def test_link_flow_and_chart_with_paging(env, settings) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ["t1"])
    assert conn.vault.connected_tenants() == ["t1"]
    company_id, extra = conn.vault.details("t1")
    assert company_id and company_id.isdigit() and extra == {"linked_via": "rootfi_link"}
    state = new_state(conn.engine, "t9", "http://127.0.0.1:9/cb")
    assert consume_state(conn.engine, state) == ("t9", "http://127.0.0.1:9/cb")
    with pytest.raises(OAuthError, match="already used"):
        consume_state(conn.engine, state)  # the CSRF state is single use
    control(server, "t1", "accounts", {"number": "6-69999", "name": "Baru"})
    control(server, "t1", "accounts", {"number": "6-60218", "archived": True})
    conn.client.page_size = 7
    chart = conn.fetch_chart("t1")
    emu = server.emulators["rootfi"]
    expected = {(a["platform_id"], a["nominal_code"], a["name"], a["status"] == "ARCHIVED")
                for a in emu._accounts(int(company_id))}
    assert {(a.account_id, a.number, a.name, a.archived) for a in chart} == expected
    assert len(chart) == 39 and [a.number for a in chart if a.archived] == ["6-60218"]
    assert calls(server, "POST", "/rootfi/accounting/accounts/all") == 6, "39 accounts in pages of 7"
    with conn.engine.connect() as db:
        row = db.execute(text("SELECT access_token, company_id FROM integrations WHERE tenant_id='t1'")).one()
    assert row.company_id == company_id and SANDBOX_API_KEY not in str(row) and "api_key" not in repr(conn.client)


def test_rate_limit_and_bad_api_key(env, settings, monkeypatch) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ["t1"])
    company_id, _ = conn.vault.details("t1")
    httpx.post(f"{server.url}/_sandbox/limits", json={"scale": 1})
    try:
        with httpx.Client(base_url=f"{server.url}/rootfi", headers={"api_key": SANDBOX_API_KEY}) as http:
            for _ in range(130):  # 60/min per company (two windows at most)
                resp = http.post("/accounting/accounts/all", json={"company_id": int(company_id), "take": 1})
                if resp.status_code == 429:
                    break
        assert resp.status_code == 429 and float(resp.headers["retry-after"]) > 0
        assert resp.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    finally:
        httpx.post(f"{server.url}/_sandbox/limits", json={"scale": 1000})
    monkeypatch.setenv("ROOTFI_API_KEY", "not-the-key-0123456789")
    bad = open_system("rootfi")  # a new process with a wrong key, the same operational database
    try:
        with pytest.raises(SinkError) as err:
            bad.fetch_chart("t1")
    finally:
        bad.close()
    assert err.value.kind == "retryable" and "ROOTFI_API_KEY" in err.value.message
    assert "not-the-key" not in str(err.value) and conn.vault.statuses()["t1"][0] == "connected"


def test_one_upload_job_per_tenant_late_data_removal_and_edits(env) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ["t1", "t2"])
    store = MemStore()
    engine = PostingEngine(conn.sink, store, backoff=0.01)
    all_entries = []
    for t in ("t1", "t2"):
        acc = ids(conn, t)
        entries = [make_entry(t, p, acc) for p in MONTHS]
        all_entries += entries
        out = engine.post_tenant(t, entries, store.state(t), WINDOW)
        assert out.counts == {"create": 3} and not out.failures, (out.counts, out.failures)
    assert calls(server, *UPLOAD) == 2, "one upload job per tenant (all its months)"
    assert_exactly_once(server, all_entries)
    # late R2a rows change February of t1: updated in place, same rootfi_id
    old_id = store.rows[custom_id_for("t1", MONTHS[1])].remote_id
    late = make_entry("t1", MONTHS[1], ids(conn, "t1"), bump=12_345)
    t1 = [late if e.custom_id == late.custom_id else e for e in all_entries if e.tenant_id == "t1"]
    out = engine.post_tenant("t1", t1, store.state("t1"), WINDOW)
    assert out.counts == {"update": 1, "skip": 2} and not out.failures
    assert store.rows[late.custom_id].remote_id == old_id
    assert calls(server, "PUT", "/rootfi/api/write/journal_entries/{id}") == 1
    assert calls(server, *UPLOAD) == 2
    final = [late if e.custom_id == late.custom_id else e for e in all_entries]
    assert_exactly_once(server, final)
    # March of t2 disappears from the ledger: deleted remotely
    t2 = [e for e in all_entries if e.tenant_id == "t2"]
    out = engine.post_tenant("t2", t2[:2], store.state("t2"), WINDOW)
    assert out.counts == {"delete": 1, "skip": 2} and store.rows[t2[2].custom_id].status == "deleted"
    assert_exactly_once(server, [e for e in final if e.custom_id != t2[2].custom_id])
    # a person edits an entry on the platform: reconciliation over list_period sees it
    control(server, "t2", "entries", {"custom_id": t2[0].custom_id, "scale_line": 2})
    recon = {r.custom_id: r.status for r in reconcile_tenant("t2", t2[:2], conn.sink.list_period("t2", *WINDOW))}
    assert recon == {t2[0].custom_id: "amount_mismatch", t2[1].custom_id: "match"}
    assert stats(server)["by_system"]["rootfi"]["rate_limited"] == 0, "the client paces under the limits"


def test_batch_with_one_bad_item_posts_the_others(env) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ["t1", "t2"])
    acc = ids(conn, "t1")
    months = [*MONTHS, dt.date(2025, 4, 1)]
    entries = [make_entry("t1", p, acc, account_override="999999" if p == MONTHS[1] else None) for p in months]
    control(server, "t1", "fail_document_numbers", {"fail_document_numbers": [entries[2].custom_id]})
    results = {r.custom_id: r for r in conn.sink.create("t1", entries)}
    assert calls(server, *UPLOAD) == 1
    bad_account, refused = results[entries[1].custom_id], results[entries[2].custom_id]
    assert bad_account.remote is None and bad_account.error.kind == "account"
    assert "999999 does not exist" in bad_account.error.message
    assert refused.error.kind == "rejected" and "PLATFORM_ERROR" in refused.error.message
    for e in (entries[0], entries[3]):
        assert results[e.custom_id].remote.matches(e) and results[e.custom_id].remote.state == "posted"
    assert_exactly_once(server, [entries[0], entries[3]])
    # through the engine: the good months post, the bad one is reported with Rootfi's own words
    acc2 = ids(conn, "t2")
    bad = [make_entry("t2", p, acc2, account_override="999999" if p == MONTHS[0] else None) for p in MONTHS]
    store = MemStore()
    out = PostingEngine(conn.sink, store, backoff=0.01).post_tenant("t2", bad, {}, WINDOW)
    assert out.counts == {"create": 2}
    assert [(cid, kind, "does not exist" in msg) for cid, msg, kind in out.failures] == [
        (bad[0].custom_id, "account", True)]
    assert store.rows[bad[0].custom_id].status == "failed"


def test_job_still_running_is_resumed_without_duplicate(env) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ["t1"])
    acc = ids(conn, "t1")
    entries = [make_entry("t1", p, acc) for p in MONTHS]
    control(server, "t1", "job_delay_seconds", {"job_delay_seconds": 1.0})
    conn.sink.poll_budget = 0.2  # the run ends before the platform does
    results = conn.sink.create("t1", entries)
    assert all(r.pending and r.remote is None and r.error is None for r in results)
    hints = {r.custom_id: r.pending for r in results}
    assert len({h["upload_job_id"] for h in hints.values()}) == 1 and len({h["job_id"] for h in hints.values()}) == 3
    assert remote_entries(server) == []
    found = conn.sink.find("t1", entries[0].custom_id, hints[entries[0].custom_id])
    assert found.state == "processing" and found.remote_id == "" and "still processing" in found.state_detail
    lost = conn.sink.find("t1", entries[1].custom_id)  # no hint (a crash lost it): the in-flight job is found
    assert lost.state == "processing" and lost.extra == hints[entries[1].custom_id]
    time.sleep(1.1)
    for e in entries:  # the next run: poll the job first, nothing is sent again
        remote = conn.sink.find("t1", e.custom_id, hints[e.custom_id])
        assert remote.state == "posted" and remote.matches(e) and remote.remote_id
    assert calls(server, *UPLOAD) == 1
    assert_exactly_once(server, entries)


def test_failed_job_item_found_as_none(env) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ["t1"])
    e = make_entry("t1", MONTHS[0], ids(conn, "t1"))
    control(server, "t1", "jobs", {"job_delay_seconds": 0.5, "fail_next": 1})
    conn.sink.poll_budget = 0.05
    [res] = conn.sink.create("t1", [e])
    assert res.pending
    time.sleep(0.6)
    assert conn.sink.find("t1", e.custom_id, res.pending) is None, "failed -> the engine creates it again"
    control(server, "t1", "jobs", {"job_delay_seconds": 0})
    [res] = conn.sink.create("t1", [e])
    assert res.remote.matches(e)
    assert_exactly_once(server, [e])


@pytest.mark.skipif(not ENGINE_HAS_PENDING, reason="posting.py does not handle CreateResult.pending yet")
def test_engine_resumes_running_job_next_run(env) -> None:  # noqa: ANN001
    """Run 1 ends with the upload job still running (one item will fail); run 2 polls the job: two entries are
    adopted, the failed one is created again; run 3 writes nothing."""
    server, conn = env
    link(conn, ["t1"])
    entries = [make_entry("t1", p, ids(conn, "t1")) for p in MONTHS]
    control(server, "t1", "jobs", {"job_delay_seconds": 1.0, "fail_next": 1})
    conn.sink.poll_budget = 0.2
    store = MemStore()
    engine = PostingEngine(conn.sink, store, backoff=0.01)
    out = engine.post_tenant("t1", entries, store.state("t1"), WINDOW)
    assert out.counts == {"submitted": 3} and not out.failures
    assert {r.status for r in store.rows.values()} == {"submitted"}
    assert {r.remote_state["upload_job_id"] for r in store.rows.values()} != {None}
    assert remote_entries(server) == []
    time.sleep(1.1)
    control(server, "t1", "jobs", {"job_delay_seconds": 0})
    out = engine.post_tenant("t1", entries, store.state("t1"), WINDOW)
    assert sum(out.counts.values()) == 3 and out.counts.get("create") == 1 and not out.failures, out.counts
    assert {r.status for r in store.rows.values()} == {"posted"}
    assert calls(server, *UPLOAD) == 2, "the first job's two good items were adopted, only the failed one resent"
    assert_exactly_once(server, entries)
    before = stats(server)["by_system"]["rootfi"]["api_requests"]
    out = engine.post_tenant("t1", entries, store.state("t1"), WINDOW)
    assert out.counts == {"skip": 3} and stats(server)["by_system"]["rootfi"]["api_requests"] == before


def test_uncertain_upload_resolved_by_listing(env) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ["t1", "t2"])
    acc = ids(conn, "t1")
    e1 = make_entry("t1", MONTHS[0], acc)
    faults = {"drop_after_commit_rate": 1.0, "writes_only": True, "systems": ["rootfi"]}
    httpx.post(f"{server.url}/_sandbox/faults", json=faults)
    with pytest.raises(SinkError) as err:
        conn.sink.create("t1", [e1])
    assert err.value.kind == "uncertain"
    httpx.post(f"{server.url}/_sandbox/faults", json={})
    found = conn.sink.find("t1", e1.custom_id)
    assert found is not None and found.state == "posted" and found.matches(e1)
    # an upload still queued on the platform is not in the listing: find sees it in the company's jobs
    control(server, "t1", "job_delay_seconds", {"job_delay_seconds": 30})
    e2 = make_entry("t1", MONTHS[1], acc)
    httpx.post(f"{server.url}/_sandbox/faults", json=faults)
    with pytest.raises(SinkError, match="outcome is unknown"):
        conn.sink.create("t1", [e2])
    httpx.post(f"{server.url}/_sandbox/faults", json={})
    queued = conn.sink.find("t1", e2.custom_id)
    assert queued.state == "processing" and queued.extra["upload_job_id"]
    assert calls(server, *UPLOAD) == 2
    # through the engine (t2): the dropped upload is adopted after a look-up, never sent twice
    httpx.post(f"{server.url}/_sandbox/faults", json=faults)
    store = MemStore()
    e3 = make_entry("t2", MONTHS[0], ids(conn, "t2"))
    out = PostingEngine(conn.sink, store, backoff=0.01).post_tenant("t2", [e3], {}, WINDOW)
    httpx.post(f"{server.url}/_sandbox/faults", json={})
    assert out.counts == {"adopted": 1} and store.rows[e3.custom_id].status == "posted"
    assert calls(server, *UPLOAD) == 3
    assert Counter(e["custom_id"] for e in remote_entries(server)) == Counter({e1.custom_id: 1, e3.custom_id: 1})
