"""Aden's own behaviour over real HTTP against the sandbox: auth, chart paging, the approval workflow as posting
states, reversals of posted entries (also in a period closed since), period checks, idempotency keys, 429s.
What every system does alike (post, re-run, late data, fault drill, revoked grant, closed period) is in
test_contract.py."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest

from ledger_pipeline.ledger.sink import CanonicalEntry, CanonicalLine, RemoteEntry, custom_id_for, memo_for
from ledger_pipeline.posting import PostingEngine
from ledger_pipeline.reconcile import reconcile_tenant
from ledger_pipeline.sandboxes.chart import DEFAULT_CHART
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.settings import Settings
from ledger_pipeline.systems.aden import AdenConnection
from ledger_pipeline.testing.systems import MemoryStore as MemStore
from ledger_pipeline.testing.systems import Sandbox, connect_tenants, open_system, sandbox_server

JAN, FEB, MAR, APR = (dt.date(2025, m, 1) for m in (1, 2, 3, 4))
WINDOW = (JAN, APR)


@dataclass
class Env:
    server: SandboxServer
    conn: AdenConnection
    http: httpx.Client  # base_url: the sandbox

    @functools.cached_property
    def box(self) -> Sandbox:
        return Sandbox(self.server.url, self.http)

    def control(self, login: str, action: str, body: dict) -> dict:
        return self.box.control("aden", login, action, body)

    def entries(self, login: str | None = None) -> list[dict]:
        return self.box.entries("aden", login)

    def stats(self) -> dict:
        return self.box.stats("aden")

    def reset_stats(self) -> None:
        self.box.reset_stats()

    def connect(self, tenants: list[str]) -> None:
        connect_tenants(self.conn, tenants)


@pytest.fixture
def env(settings: Settings) -> Iterator[Env]:
    yield from aden_env(settings)


def aden_env(settings: Settings, monkeypatch: pytest.MonkeyPatch | None = None) -> Iterator[Env]:
    """The sandbox (limits time-scaled x1000) and an Aden connection to it (the body of the `env` fixtures; the
    environment is restored on exit, `monkeypatch` is accepted for the callers that pass it)."""
    with sandbox_server(settings.data_dir / "sb.sqlite") as (server, box):
        conn = open_system("aden")
        try:
            yield Env(server, conn, box.http)
        finally:
            conn.close()


def entry(tenant: str, period: dt.date, revenue: int, cogs: int, expense: int) -> CanonicalEntry:
    """A balanced P&L entry (minor units); accounts are Aden chart codes (the default chart's numbers)."""
    net = revenue - cogs - expense
    raw = [("5-50000", cogs, 0, "COGS"), ("6-60101", expense, 0, "Salaries"), ("4-40000", 0, revenue, "Revenue"),
           ("1-10001", max(net, 0), max(-net, 0), "Net income clearing")]
    lines = tuple(CanonicalLine(i + 1, acc, acc, d, c, desc) for i, (acc, d, c, desc) in enumerate(raw))
    last = (period.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    digest = hashlib.sha256(repr((last, [(ln.account_id, ln.debit_minor, ln.credit_minor) for ln in lines]))
                            .encode()).hexdigest()[:16]
    return CanonicalEntry(tenant, period, custom_id_for(tenant, period), last, memo_for(period), "IDR", digest, lines)


def run(env: Env, store: MemStore, tenant: str, entries: list[CanonicalEntry]):  # noqa: ANN201
    engine = PostingEngine(env.conn.sink, store, backoff=0.01)
    return engine.post_tenant(tenant, entries, store.state(tenant), WINDOW)


def net_by_account(entries: list[dict]) -> Counter:
    """Debit minus credit per account over Posted entries (originals, reversals and revisions alike)."""
    out: Counter = Counter()
    for e in entries:
        if e["status"] == "Posted":
            for ln in e["transaction_account_lines"]:
                out[ln["account"]["id"]] += int((Decimal(str(ln["debit"])) - Decimal(str(ln["credit"]))) * 100)
    return out


def expected_net(e: CanonicalEntry) -> Counter:
    out: Counter = Counter()
    for ln in e.lines:
        out[ln.account_id] += ln.debit_minor - ln.credit_minor
    return out


def live(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e["live"]]


def stub(remote: RemoteEntry) -> RemoteEntry:
    """What the engine rebuilds from its posting state: ids and extra, no lines."""
    return RemoteEntry(remote.remote_id, remote.custom_id, remote.transaction_date, None, 0, 0, (),
                       extra=dict(remote.extra))


# -- auth and chart ---------------------------------------------------------------------------------------------
def test_connect_chart_paging_and_inactive_accounts(env: Env) -> None:
    env.connect(["t-chart"])
    env.control("t-chart", "accounts", {"number": "6-60218", "archived": True})
    env.control("t-chart", "accounts", {"number": "8-80500", "name": "Beban Lama", "archived": True})
    env.conn.client.page_size = 10
    env.reset_stats()
    chart = env.conn.fetch_chart("t-chart")
    assert len(chart) == len(DEFAULT_CHART) + 1 == 39
    by_id = {a.account_id: a for a in chart}
    assert by_id["6-60218"].archived and by_id["8-80500"].archived and not by_id["6-60101"].archived
    assert by_id["4-40000"].name == "Pendapatan" and by_id["4-40000"].category == "Revenue"
    assert [(a.number, a.name) for a in chart][: len(DEFAULT_CHART)] == [(n, m) for n, m, _ in DEFAULT_CHART]
    assert env.stats()["api_requests"] == 4  # limit=10: offsets 0, 10, 20, 30
    # the token is per tenant; a foreign or missing token is refused in Aden's error shape
    resp = env.http.get("/aden/service/general-ledger/accounts", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "UNAUTHORIZED"


# -- workflow states (sink level) -------------------------------------------------------------------------------
def test_below_threshold_posts_without_approval(env: Env) -> None:
    env.connect(["t1"])
    env.control("t1", "approval_threshold", {"approval_threshold": "1000000.00"})
    store = MemStore()
    e = entry("t1", JAN, 900_000_00, 300_000_00, 200_000_00)  # total debit 900,000.00 < 1,000,000.00
    out = run(env, store, "t1", [e])
    assert out.counts == {"create": 1} and not out.failures
    [remote] = env.entries("t1")
    assert remote["status"] == "Posted" and remote["custom_id"] == e.custom_id
    assert Decimal(str(remote["total_debit"])) == Decimal("900000.00")
    found = env.conn.sink.find("t1", e.custom_id)
    assert found.state == "posted" and found.matches(e)


def test_above_threshold_waits_then_approval_is_picked_up(env: Env) -> None:
    env.connect(["t2"])
    env.control("t2", "approval_threshold", {"approval_threshold": "1000000.00"})
    store = MemStore()
    e = entry("t2", JAN, 2_000_000_00, 900_000_00, 300_000_00)  # total debit 2,000,000.00
    out = run(env, store, "t2", [e])
    assert out.counts == {"awaiting_approval": 1} and not out.failures
    row = store.rows[e.custom_id]
    assert row.status == "awaiting_approval" and row.error.startswith("awaiting approval since ")
    assert [x["status"] for x in env.entries("t2")] == ["Pending Approval"]
    # still waiting: the next run only looks it up, never re-creates
    env.reset_stats()
    assert run(env, store, "t2", [e]).counts == {"awaiting_approval": 1}
    assert env.stats()["api_writes"] == 0
    # on hold is still awaiting, with the approver's note
    env.control("t2", "approvals", {"entry_id": e.custom_id, "action": "hold", "reason": "checking COGS"})
    held = env.conn.sink.find("t2", e.custom_id, row.remote_state)
    assert held.state == "awaiting_approval" and held.state_detail.startswith("on hold since")
    assert "checking COGS" in held.state_detail
    env.control("t2", "approvals", {"entry_id": e.custom_id, "action": "release"})
    env.control("t2", "approvals", {"entry_id": e.custom_id, "action": "approve"})  # approved -> auto-posted
    env.reset_stats()
    out = run(env, store, "t2", [e])
    assert out.counts == {"refresh": 1} and not out.failures
    assert store.rows[e.custom_id].status == "posted" and store.rows[e.custom_id].remote_id == row.remote_id
    assert env.stats()["api_writes"] == 0
    assert [x["status"] for x in env.entries("t2")] == ["Posted"]
    env.reset_stats()
    assert run(env, store, "t2", [e]).counts == {"skip": 1} and env.stats()["api_requests"] == 0


def test_rejected_entry_reports_the_approvers_reason(env: Env) -> None:
    env.connect(["t3"])
    env.control("t3", "approval_threshold", {"approval_threshold": "1.00"})
    store = MemStore()
    e = entry("t3", FEB, 500_00, 100_00, 100_00)
    assert run(env, store, "t3", [e]).counts == {"awaiting_approval": 1}
    env.control("t3", "approvals", {"entry_id": e.custom_id, "action": "reject",
                                    "reason": "salaries belong in the payroll entry"})
    out = run(env, store, "t3", [e])
    [(cid, why, kind)] = out.failures
    assert (cid, kind) == (e.custom_id, "rejected") and "salaries belong in the payroll entry" in why
    assert store.rows[cid].status == "rejected"
    env.reset_stats()
    assert run(env, store, "t3", [e]).counts == {"skip": 1} and env.stats()["api_requests"] == 0
    # corrected data goes back through the workflow on the same Aden entry (request-change, update, resubmit)
    fixed = entry("t3", FEB, 500_00, 100_00, 50_00)
    assert run(env, store, "t3", [fixed]).counts == {"awaiting_approval": 1}
    [only] = env.entries("t3")
    assert only["status"] == "Pending Approval" and only["id"] == store.rows[cid].remote_id
    assert Decimal(str(only["total_debit"])) == Decimal("500.00")


def test_pending_and_draft_entries_update_in_place(env: Env) -> None:
    env.connect(["t4"])
    env.control("t4", "approval_threshold", {"approval_threshold": "1.00"})
    e1 = entry("t4", JAN, 800_00, 100_00, 100_00)
    [res] = env.conn.sink.create("t4", [e1])
    # pending approval + late data: request-change, update, resubmit (same Aden entry)
    e2 = entry("t4", JAN, 900_00, 100_00, 100_00)
    r2 = env.conn.sink.update("t4", stub(res.remote), e2)
    assert r2.remote_id == res.remote.remote_id and r2.matches(e2) and r2.state == "awaiting_approval"
    # the approver sends it back to Draft; unchanged content stays there, changed content is updated + resubmitted
    env.control("t4", "approvals", {"entry_id": e2.custom_id, "action": "request_change", "reason": "split COGS"})
    back = env.conn.sink.find("t4", e2.custom_id, r2.extra)
    assert back.state == "awaiting_approval" and "sent back to Draft" in back.state_detail
    assert env.conn.sink.update("t4", stub(back), e2).extra["status"] == "Draft"
    e3 = entry("t4", JAN, 900_00, 150_00, 100_00)
    r3 = env.conn.sink.update("t4", stub(back), e3)
    assert r3.remote_id == res.remote.remote_id and r3.matches(e3)
    [only] = env.entries("t4")
    assert only["status"] == "Pending Approval" and Decimal(str(only["total_debit"])) == Decimal("900.00")


def test_late_data_on_posted_entry_reverses_and_reposts(env: Env) -> None:
    env.connect(["t5"])
    store = MemStore()
    e1 = entry("t5", JAN, 1_000_000_00, 400_000_00, 250_000_00)
    assert run(env, store, "t5", [e1]).counts == {"create": 1}
    first = env.conn.sink.find("t5", e1.custom_id)
    e2 = entry("t5", JAN, 1_000_000_00, 400_000_00, 327_000_00)  # a late expense row
    env.reset_stats()
    assert run(env, store, "t5", [e2]).counts == {"update": 1}
    assert env.stats()["api_writes"] == 4  # reverse, submit the reversal, create, submit
    r2 = env.conn.sink.find("t5", e1.custom_id, store.rows[e1.custom_id].remote_state)
    assert store.rows[e1.custom_id].remote_id == r2.remote_id and store.rows[e1.custom_id].status == "posted"
    assert r2.state == "posted" and r2.matches(e2) and r2.custom_id == e1.custom_id
    assert r2.extra["revision"] == 2 and r2.extra["entry_id"] == f"{e1.custom_id}.r2"
    assert r2.extra["reversed"] == [first.remote_id] and len(r2.extra["reversals"]) == 1
    rows = env.entries("t5")
    assert len(rows) == 3  # the original (reversed), its reversal, revision 2
    [rev] = [x for x in rows if x["reversal_of"]]
    assert rev["reversal_of"] == first.remote_id and rev["transaction_date"] == "2025-01-31"
    assert [x["custom_id"] for x in live(rows)] == [f"{e1.custom_id}.r2"]
    assert net_by_account(rows) == expected_net(e2)  # original + reversal + new = exactly the new lines
    env.reset_stats()
    assert run(env, store, "t5", [e2]).counts == {"skip": 1} and env.stats()["api_writes"] == 0
    # find follows the revisions (with the hint, and without), list_period normalises our id
    assert env.conn.sink.find("t5", e1.custom_id, r2.extra).remote_id == r2.remote_id
    assert env.conn.sink.find("t5", e1.custom_id).remote_id == r2.remote_id
    listed = env.conn.sink.list_period("t5", *WINDOW)
    assert [(x.custom_id, x.remote_id) for x in listed] == [(e1.custom_id, r2.remote_id)]
    assert {r.status for r in reconcile_tenant("t5", [e2], listed)} == {"match"}
    # an unchanged update is a no-op; removal reverses the live revision
    env.reset_stats()
    assert env.conn.sink.update("t5", stub(r2), e2).remote_id == r2.remote_id
    assert env.stats()["api_writes"] == 0
    env.conn.sink.delete("t5", stub(r2))
    assert env.conn.sink.find("t5", e1.custom_id, r2.extra) is None
    assert not live(env.entries("t5")) and not +net_by_account(env.entries("t5")) and not -net_by_account(
        env.entries("t5"))
    # the month comes back: revision 3
    r3 = env.conn.sink.create("t5", [e1])[0].remote
    assert r3.extra["revision"] == 3 and r3.state == "posted" and net_by_account(env.entries("t5")) == expected_net(e1)


def test_correction_in_a_period_closed_since_is_refused_and_changes_nothing(env: Env) -> None:
    """Aden's own: a posted entry is corrected by reversal, which a closed period refuses before any write (the
    closed-period refusal of a new entry and the revoked grant are in test_contract.py)."""
    env.connect(["t8"])
    store = MemStore()
    entries = [entry("t8", JAN, 500_00, 100_00, 100_00), entry("t8", FEB, 600_00, 100_00, 100_00)]
    assert run(env, store, "t8", entries).counts == {"create": 2}
    env.control("t8", "lock_date", {"lock_date": "2025-01-31"})
    before = env.entries("t8")
    out8 = run(env, store, "t8", [entry("t8", JAN, 700_00, 100_00, 100_00), entries[1]])
    [(cid, why, kind)] = out8.failures
    assert (cid, kind) == (custom_id_for("t8", JAN), "locked") and "cannot be corrected" in why
    assert "accounting period January 2025 is closed" in why and "reopen the period" in why
    assert env.entries("t8") == before


def test_period_check_date_outside_period_is_rejected(env: Env) -> None:
    env.connect(["t9"])
    periods = env.conn.client.pages("t9", "/accounting-periods")
    feb = next(p for p in periods if p["start_date"] == "2025-02-01")
    body = {"entry_id": "by-hand-1", "tran_date": "2025-01-15", "posting_period_id": feb["period_id"],
            "currency": "IDR", "memo": "x", "lines": [{"line_number": 1, "account_id": "6-60101", "debit": 5,
                                                       "credit": 0}, {"line_number": 2, "account_id": "1-10001",
                                                                      "debit": 0, "credit": 5}]}
    from ledger_pipeline.systems.aden.client import AdenError
    from ledger_pipeline.systems.aden.sink import classify

    with pytest.raises(AdenError) as info:
        env.conn.client.request("t9", "POST", "/journal-entries", body, idempotency_key="k1")
    err = classify(info.value)
    assert err.kind == "rejected" and "outside accounting period February 2025" in err.message
    assert info.value.body["error"]["details"] == {"field": "tran_date", "value": "2025-01-15"}


def test_idempotency_key_replays_the_original_response(env: Env) -> None:
    env.connect(["t10"])
    periods = env.conn.client.pages("t10", "/accounting-periods")
    jan = next(p for p in periods if p["start_date"] == "2025-01-01")
    body = {"entry_id": "k-1", "tran_date": "2025-01-10", "posting_period_id": jan["period_id"],
            "currency": "IDR", "memo": "x", "entry_type": "Standard",
            "lines": [{"line_number": 1, "account_id": "6-60101", "debit": Decimal("5.25"), "credit": 0},
                      {"line_number": 2, "account_id": "1-10001", "debit": 0, "credit": Decimal("5.25")}]}
    s1, d1, replayed1 = env.conn.client.request("t10", "POST", "/journal-entries", body, idempotency_key="same")
    s2, d2, replayed2 = env.conn.client.request("t10", "POST", "/journal-entries", body, idempotency_key="same")
    assert (s1, s2, replayed1, replayed2) == (201, 201, False, True) and d1 == d2
    assert d1["total_debit"] == Decimal("5.25")
    assert len(env.entries("t10")) == 1


def test_rate_limit_429_is_honoured_and_retried(env: Env) -> None:
    env.connect(["t11"])
    env.server.emulators["aden"].rate.per_minute = 3
    env.http.post("/_sandbox/limits", json={"scale": 100})  # 3 per 0.6 s: the 4th request in a window is refused
    env.reset_stats()
    for _ in range(8):
        assert len(env.conn.fetch_chart("t11")) == len(DEFAULT_CHART)
    stats = env.stats()
    assert stats["rate_limited"] > 0 and stats["api_requests"] - stats["rate_limited"] == 8
    resp = [r for r in env.http.get("/_sandbox/stats").json()["requests"] if r["status"] == 429]
    assert resp and all(r["system"] == "aden" for r in resp)

