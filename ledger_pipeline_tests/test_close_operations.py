"""The close as operators live it: the request budget, resuming a stopped run, one tenant's token failure, the
mass-delete guard, a chart refreshed for one tenant, and drift found by the reconciliation job."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import httpx
from sqlalchemy import delete, select, text, update

from ledger_pipeline import clock
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import R2aTransaction, make_engine
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.ledger import load_window
from ledger_pipeline.state.models import GlAccount, Integration
from ledger_pipeline_tests.helpers import (
    CLOSE,
    connect,
    materialize,
    materialize_drift,
    materialize_gl,
    query,
    reset_stats,
    sandbox_entries,
    sandbox_stats,
)
from ledger_pipeline_tests.test_posting import assert_exactly_once


def seeded(settings, tenants: int, months: int, start: dt.date = dt.date(2025, 1, 1)) -> list[str]:  # noqa: ANN001
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, tenants, months, start, seed=5)
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT tenant_id FROM tenants ORDER BY 1"))]
    connect(ids)
    return ids


def active_tenants(settings, period: str) -> int:  # noqa: ANN001
    return query(settings, "SELECT COUNT(DISTINCT tenant_id) FROM ledger.journal_entries WHERE period = ?",
                 [period])[0][0]


def test_a_fresh_month_costs_one_request_per_tenant_and_a_rerun_none(settings, sandbox) -> None:  # noqa: ANN001
    seeded(settings, 30, 2)
    materialize_gl()  # the daily GL job ran before the close
    materialize(CLOSE, "2025-01-01")  # last month's close
    reset_stats(sandbox.url)
    assert materialize(CLOSE, "2025-02-01").success  # a fresh month
    stats = sandbox_stats(sandbox.url)
    tenants = active_tenants(settings, "2025-02-01")
    assert tenants >= 25
    assert stats["api_requests"] <= 1.1 * tenants, (stats["api_requests"], tenants)
    assert stats["rate_limited"] == 0
    assert set(query(settings, "SELECT status FROM accounting.reconciliation WHERE period = '2025-02-01'")) == {
        ("match",)}, "a verified create answer counts as reconciled"
    reset_stats(sandbox.url)
    assert materialize(CLOSE, "2025-02-01").success
    assert sandbox_stats(sandbox.url)["api_requests"] == 0, "an unchanged re-run spends no request"
    assert_exactly_once(settings, sandbox.url)


def test_a_stopped_run_resumes_where_it_stopped_with_no_repeated_write(settings, sandbox) -> None:  # noqa: ANN001
    tenants = seeded(settings, 100, 1)  # 100 tenants at 75 ms a write: the same posting time as 300 at 25 ms
    materialize_gl()
    materialize(["r2a_pl_monthly", "journal_entries", "journal_lines"], "2025-01-01")
    total = active_tenants(settings, "2025-01-01")
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={"latency_ms": 75, "writes_only": True})
    reset_stats(sandbox.url)
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home)}
    proc = subprocess.Popen([sys.executable, "-m", "ledger_pipeline.cli", "run", "--month", "2025-01"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while len(sandbox_entries(sandbox.url)) < total // 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_writes = sandbox_stats(sandbox.url)["api_writes"]
    present = {e["company_login"] for e in sandbox_entries(sandbox.url)}
    assert total // 2 <= len(present) < total, "killed in the middle"
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={})
    reset_stats(sandbox.url)
    rerun = subprocess.run([sys.executable, "-m", "ledger_pipeline.cli", "run", "--month", "2025-01"], env=env,
                           capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]  # the dead run's slots are cleared
    rerun_writes = sandbox_stats(sandbox.url)["api_writes"]
    assert rerun_writes == total - len(present), "only the tenants not yet posted were written"
    assert first_writes + rerun_writes <= total + 1, "at most the one write in flight at the kill is looked up"
    assert_exactly_once(settings, sandbox.url)
    assert len(tenants) == 100


def test_a_failing_token_endpoint_fails_that_tenant_only(settings, sandbox) -> None:  # noqa: ANN001
    tenants = seeded(settings, 4, 1)
    victim = tenants[1]
    materialize_gl()  # charts are fresh; posting is the first request that needs a new token
    engine = make_ops_engine(settings.ops_database_url)
    with engine.begin() as conn:  # its access token has expired: the next request refreshes it
        conn.execute(update(Integration).where(Integration.tenant_id == victim).values(
            expires_at=dt.datetime(2020, 1, 1)))
    for failure in ("5xx", "garbage", "drop"):
        httpx.post(f"{sandbox.url}/_sandbox/faults", json={"token_failure": failure,
                                                            "token_failure_logins": [victim]})
        result = materialize(CLOSE, "2025-01-01", raise_on_error=False)
        assert not result.success
        message = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
                       ).step_failure_data.error.message
        assert victim in message and "1 tenant(s) failed" in message, message
        rows = dict(query(settings, "SELECT tenant_id, status || ': ' || COALESCE(error, '') FROM "
                                    "accounting.postings"))
        assert victim not in rows or "refreshing the jurnal token failed" in rows[victim]
        assert all(rows[t].startswith("posted") for t in tenants if t != victim)
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={})
    assert materialize(CLOSE, "2025-01-01").success
    assert_exactly_once(settings, sandbox.url)


def test_mass_delete_is_refused_then_allowed_by_config(settings, sandbox) -> None:  # noqa: ANN001
    seeded(settings, 30, 1)
    materialize(CLOSE, "2025-01-01")
    posted = len(sandbox_entries(sandbox.url))
    engine = make_engine(settings.r2a_database_url)
    with engine.begin() as conn:  # R2a pointed at a truncated table
        conn.execute(delete(R2aTransaction))
    reset_stats(sandbox.url)
    result = materialize(CLOSE, "2025-01-01", raise_on_error=False)
    assert not result.success
    message = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error.message
    assert f"refused to delete {posted} of the window's {posted} posted entries" in message
    assert "allow_mass_delete" in message
    assert sandbox_stats(sandbox.url)["api_writes"] == 0 and len(sandbox_entries(sandbox.url)) == posted
    config = {"ops": {"postings": {"config": {"allow_mass_delete": True}}}}
    assert materialize(CLOSE, "2025-01-01", run_config=config).success
    assert not sandbox_entries(sandbox.url)
    assert set(query(settings, "SELECT status FROM accounting.postings")) == {("deleted",)}


def test_a_stale_chart_is_refreshed_for_that_tenant_alone_and_retried_once(settings, sandbox) -> None:  # noqa: ANN001
    tenants = seeded(settings, 5, 1)
    victim = tenants[2]
    materialize_gl()
    ops = make_ops_engine(settings.ops_database_url)
    with ops.begin() as conn:  # the stored chart (the charts' one home) predates Jurnal re-creating the account
        real = conn.execute(select(GlAccount.account_id).where(GlAccount.tenant_id == victim,
                                                               GlAccount.number == "4-40000")).scalar_one()
        conn.execute(update(GlAccount).where(GlAccount.tenant_id == victim, GlAccount.number == "4-40000")
                     .values(account_id="999999"))
    reset_stats(sandbox.url)
    assert materialize(CLOSE, "2025-01-01").success
    stats = sandbox_stats(sandbox.url)
    charts = sum(r["count"] for r in stats["requests"] if r["endpoint"].endswith("/accounts"))
    assert charts == 1, "only the failing tenant's chart was read again"
    assert_exactly_once(settings, sandbox.url)
    # the operational database holds the chart read again and the entry's current ids; DuckDB's copy follows
    entry = load_window(ops, dt.date(2025, 1, 1), dt.date(2025, 2, 1), [victim])[0][victim][0]
    assert {ln.account_id for ln in entry.lines if ln.account_number == "4-40000"} == {real}
    with ops.connect() as conn:
        assert conn.execute(select(GlAccount.account_id).where(
            GlAccount.tenant_id == victim, GlAccount.number == "4-40000")).scalar_one() == real
    copy = "SELECT DISTINCT account_id FROM {} WHERE tenant_id = ? AND {} = '4-40000'"
    assert query(settings, copy.format("accounting.gl_accounts", "number"), [victim]) == [(real,)]
    assert query(settings, copy.format("ledger.journal_lines", "account_number"), [victim]) == [(real,)]
    # an account archived in the tenant's chart: reported naming it, nothing posted for the month
    other = tenants[3]
    httpx.post(f"{sandbox.url}/_sandbox/companies/{other}/accounts", json={"number": "4-40000", "archived": True})
    with make_engine(settings.r2a_database_url).begin() as conn:
        conn.execute(R2aTransaction.__table__.insert(), [{
            "tenant_id": other, "txn_date": dt.date(2025, 1, 15), "category": "revenue", "subcategory": "sales",
            "amount": 1000, "currency": "IDR"}])
    result = materialize(CLOSE, "2025-01-01", raise_on_error=False)
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "postings_complete")
    assert result.success and not check.passed and other in check.description, "permanent: reported, not retried"
    error = query(settings, "SELECT error FROM accounting.postings WHERE tenant_id = ?", [other])[0][0]
    assert "4-40000" in error and "archived" in error


def test_drift_job_finds_every_kind_of_drift(settings, sandbox) -> None:  # noqa: ANN001
    last = clock.last_complete_month()  # the drift job's window is computed by the same clock
    tenants = seeded(settings, 6, 1, last)
    key = last.isoformat()
    materialize(CLOSE, key)
    month = f"{last:%Y%m}"
    edited, deleted, duplicated, revoked, extra = tenants[:5]
    url = f"{sandbox.url}/_sandbox/companies"
    httpx.post(f"{url}/{edited}/entries", json={"custom_id": f"r2a-pl-{edited}-{month}", "scale_line": 2})
    httpx.post(f"{url}/{deleted}/entries", json={"custom_id": f"r2a-pl-{deleted}-{month}", "delete": True})
    def typed_by_hand(tenant: str, **fields: str) -> None:  # a copy of the tenant's entry, keyed in by a person
        copy = next(e for e in sandbox_entries(sandbox.url, tenant))
        lines = [{"account_id": ln["account"]["id"], **({"debit": str(ln["debit"])} if ln["debit"] else
                                                         {"credit": str(ln["credit"])})}
                 for ln in copy["transaction_account_lines"]]
        resp = httpx.post(f"{url}/{tenant}/entries", json={"create": {
            "transaction_date": copy["transaction_date"].replace("/", "-"), "memo": copy["memo"],
            "transaction_account_lines_attributes": lines, **fields}})
        assert resp.status_code == 200, resp.text

    typed_by_hand(duplicated)
    typed_by_hand(extra, custom_id=f"r2a-pl-{extra}-190001", memo="typed by hand")
    httpx.post(f"{url}/{revoked}/revoke")
    reset_stats(sandbox.url)
    assert materialize_drift().success
    assert sandbox_stats(sandbox.url)["api_writes"] == 0
    status = dict(query(settings, "SELECT tenant_id || '/' || status, COUNT(*) FROM accounting.reconciliation "
                                  "WHERE checked_by = 'remote_read' GROUP BY 1"))
    assert status[f"{edited}/amount_mismatch"] == 1
    assert status[f"{deleted}/missing_remote"] == 1
    assert status[f"{duplicated}/duplicate_remote"] == 1
    assert status[f"{revoked}/not_checked"] == 1
    assert status[f"{extra}/unexpected_remote"] == 1 and status[f"{extra}/match"] == 1
    assert status[f"{tenants[5]}/match"] == 1
    # the budget: one request per run checks one tenant, least recently checked first
    assert materialize_drift(max_requests=1).success
    assert sandbox_stats(sandbox.url)["api_requests"] <= 7
