"""Exactly-once posting over the sandbox, through Dagster: re-runs, late data, removal, chaos, SIGKILL, locks,
revocations, batch_create, dry run, reconciliation."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal

import dagster as dg
import httpx
from sqlalchemy import delete, text

from ledger_pipeline.progress import listen
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import R2aTransaction, make_engine
from ledger_pipeline_tests.helpers import (
    CLOSE,
    connect,
    materialize,
    materialize_gl,
    query,
    reset_stats,
    sandbox_entries,
    sandbox_stats,
)

START = dt.date(2025, 1, 1)


def setup(settings, tenants: int, months: int) -> list[str]:  # noqa: ANN001
    seeding.seed(make_engine(settings.r2a_database_url), tenants, months, START, seed=11)
    ids = [r[0] for r in make_engine(settings.r2a_database_url).connect().execute(
        text("SELECT tenant_id FROM tenants ORDER BY 1"))]
    connect(ids)
    return ids


def writes(url: str) -> int:
    return sandbox_stats(url)["api_writes"]


def assert_exactly_once(settings, url: str) -> None:  # noqa: ANN001
    """Every ledger entry is in Jurnal exactly once, with our lines and totals; nothing else of ours is there."""
    ours = {r[0]: r[1] for r in query(settings, "SELECT custom_id, total_debit FROM ledger.journal_entries")}
    remote = [e for e in sandbox_entries(url) if (e["custom_id"] or "").startswith("r2a-pl-")]
    counts = Counter(e["custom_id"] for e in remote)
    assert set(counts) == set(ours) and set(counts.values()) == {1}, counts.most_common(3)
    lines = Counter(r[0] for r in query(settings, "SELECT custom_id FROM ledger.journal_lines"))
    for e in remote:
        assert Decimal(str(e["total_debit"])) == ours[e["custom_id"]]
        assert len(e["transaction_account_lines"]) == lines[e["custom_id"]]


def test_post_rerun_late_data_and_removal(settings, sandbox) -> None:  # noqa: ANN001
    setup(settings, 6, 2)
    materialize(CLOSE, "2025-01-01", "2025-02-01")
    assert_exactly_once(settings, sandbox.url)
    n = query(settings, "SELECT COUNT(*) FROM ledger.journal_entries")[0][0]
    assert n >= 10 and query(settings, "SELECT COUNT(*) FROM jurnal.postings WHERE status = 'posted'")[0][0] == n
    statuses = set(query(settings, "SELECT status FROM jurnal.reconciliation"))
    assert statuses == {("match",)}

    reset_stats(sandbox.url)
    materialize(CLOSE, "2025-01-01", "2025-02-01")
    assert writes(sandbox.url) == 0, "an unchanged re-run makes no write call"

    engine = make_engine(settings.r2a_database_url)
    tenant = query(settings, "SELECT MIN(tenant_id) FROM ledger.journal_entries WHERE period = '2025-01-01'")[0][0]
    with engine.begin() as conn:  # a late row for January
        conn.execute(R2aTransaction.__table__.insert(), [{
            "tenant_id": tenant, "txn_date": dt.date(2025, 1, 30), "category": "expense", "subcategory": "marketing",
            "amount": Decimal("777000"), "currency": "IDR"}])
    reset_stats(sandbox.url)
    materialize(CLOSE, "2025-01-01")
    stats = sandbox_stats(sandbox.url)
    patches = sum(r["count"] for r in stats["requests"] if r["method"] == "PATCH")
    assert stats["api_writes"] == 1 and patches == 1, "changed month: one update in place"
    assert_exactly_once(settings, sandbox.url)

    with engine.begin() as conn:  # the tenant's January disappears from R2a
        conn.execute(delete(R2aTransaction).where(R2aTransaction.tenant_id == tenant,
                                                  R2aTransaction.txn_date < dt.date(2025, 2, 1)))
    materialize(CLOSE, "2025-01-01")
    assert not [e for e in sandbox_entries(sandbox.url, tenant) if e["custom_id"] == f"r2a-pl-{tenant}-202501"]
    assert query(settings, "SELECT status FROM jurnal.postings WHERE custom_id = ?",
                 [f"r2a-pl-{tenant}-202501"]) == [("deleted",)]
    assert_exactly_once(settings, sandbox.url)


def test_dry_run_plans_without_calling_jurnal(settings, sandbox) -> None:  # noqa: ANN001
    setup(settings, 3, 1)
    reset_stats(sandbox.url)
    materialize(["gl_accounts", "r2a_pl_monthly", "journal_entries", "journal_lines", "postings"],
                "2025-01-01", run_config={"ops": {"postings": {"config": {"dry_run": True}}}})
    stats = sandbox_stats(sandbox.url)
    assert stats["api_writes"] == 0 and not sandbox_entries(sandbox.url)
    plan = query(settings, "SELECT action, COUNT(*) FROM jurnal.posting_plan GROUP BY 1")
    assert plan == [("create", 3)]


def test_multi_month_backfill_uses_batch_create(settings, sandbox) -> None:  # noqa: ANN001
    setup(settings, 1, 12)
    reset_stats(sandbox.url)
    heard: list[str] = []
    stop = listen(lambda stage, p: heard.append(p.describe()))  # what the CLI's bar shows, in the same process
    try:
        result = materialize(CLOSE, "2025-01-01", "2025-12-01")
    finally:
        stop()
    stats = sandbox_stats(sandbox.url)
    batch = sum(r["count"] for r in stats["requests"] if r["endpoint"].endswith("batch_create"))
    entries = query(settings, "SELECT COUNT(*) FROM ledger.journal_entries")[0][0]
    assert batch == 1 and stats["api_writes"] == 1 and entries >= 10, (entries, stats)
    assert_exactly_once(settings, sandbox.url)
    # progress names the tenant's system and its own limit (x1000 here), in the CLI's bar and the run's log alike
    assert heard and heard[-1].startswith("1/1 tenants") and "ETA 0s (jurnal 1/1 " in heard[-1], heard
    assert "of 40,000 allowed per source address" in heard[-1] and "req/entry" in heard[-1], heard
    with dg.DagsterInstance.get() as instance:
        logged = [e.user_message for e in instance.all_logs(result.run_id) if "tenants, " in (e.user_message or "")]
    assert any(heard[-1] in m for m in logged), logged


def test_locked_and_revoked_tenants_reported_while_the_rest_post(settings, sandbox) -> None:  # noqa: ANN001
    tenants = setup(settings, 5, 1)
    locked, revoked = tenants[1], tenants[2]
    materialize_gl()  # both had their charts ingested before things went wrong
    httpx.post(f"{sandbox.url}/_sandbox/companies/{locked}/lock_date", json={"lock_date": "2025-03-31"})
    httpx.post(f"{sandbox.url}/_sandbox/companies/{revoked}/revoke")
    result = materialize(CLOSE, "2025-01-01", raise_on_error=False)
    assert result.success, "permanent causes only: reported by the WARN check, not retried (issue 25)"
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "postings_complete")
    message = check.description
    assert not check.passed and locked in message and revoked in message
    rows = dict(query(settings, "SELECT tenant_id, status || ': ' || COALESCE(error, '') FROM jurnal.postings"))
    assert "locked" in rows[locked] and "Kunci Periode" in rows[locked]
    assert "connect --tenant" in rows[revoked]
    others = [t for t in tenants if t not in (locked, revoked)]
    assert all(rows[t].startswith("posted") for t in others)
    # unlock, reconnect, re-run: only the two are retried
    httpx.post(f"{sandbox.url}/_sandbox/companies/{locked}/lock_date", json={"lock_date": None})
    connect([revoked])
    reset_stats(sandbox.url)
    assert materialize(CLOSE, "2025-01-01").success
    assert writes(sandbox.url) == 2
    assert_exactly_once(settings, sandbox.url)


def test_chaos_200_tenant_months_exactly_once(settings, sandbox) -> None:  # noqa: ANN001
    setup(settings, 50, 4)
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={
        "seed": 7, "error_rate": 0.2, "error_after_commit_rate": 0.05, "drop_after_commit_rate": 0.05,
        "unauthorized_rate": 0.03})
    for key in ("2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01"):  # four monthly closes
        result = materialize(CLOSE, key, raise_on_error=False)
        assert result.success, f"{key}: retries and look-ups absorb the faults within the run"
    faulted = sandbox_stats(sandbox.url)["requests"]
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={})
    assert sum(r["count"] for r in faulted if r["status"] == "dropped") >= 3
    assert sum(r["count"] for r in faulted if r["status"] in (500, 502, 503)) >= 20
    assert sum(r["count"] for r in faulted if r["status"] == 401) >= 3
    assert query(settings, "SELECT COUNT(*) FROM ledger.journal_entries")[0][0] >= 190
    assert_exactly_once(settings, sandbox.url)
    materialize(CLOSE, "2025-01-01", "2025-04-01")
    assert set(query(settings, "SELECT status FROM jurnal.reconciliation")) == {("match",)}


# SIGKILL mid-posting then a rerun, exactly once: test_runs.py::test_sigkill_mid_posting_then_next_run_clears_it_and_
# books_are_exact runs the same command (`run --month 2025-01 --to 2025-02`), kills it mid-posting and asserts all
# this test asserted (rerun exits 0, killed before the end, exactly once, reconciliation all match) and more.
