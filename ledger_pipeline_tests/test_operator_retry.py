"""Permanent failures are not retried (issue 25, point 5): the retry policy by failure kind, a revoked grant and a
closed period reported once (a failing WARN check, every tenant's reason and fix in full) while every other tenant
posts and reconciles, the run-retry tag when no check reports them, a reconnect clearing the stale
`needs re-authorisation` row, and messages that never nest."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import httpx
import pandas as pd
import pytest
from sqlalchemy import text

from ledger_pipeline.assets.accounting import (
    RETRY_ON_FAILURE_TAG,
    TRANSIENT_KINDS,
    PostedWindow,
    failure_lines,
    fix_for,
    is_transient,
    own_words,
    posting_result,
    worth_retrying,
)
from ledger_pipeline.posting import TenantOutcome, WindowResult
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.settings import load_settings
from ledger_pipeline.warehouse.store import Warehouse
from ledger_pipeline_tests.helpers import (
    CLOSE,
    connect,
    materialize,
    materialize_gl,
    query,
)


@pytest.mark.parametrize(("kind", "transient"), [
    ("retryable", True), ("uncertain", True), ("needs_reauth", False), ("locked", False), ("rejected", False),
    ("account", False), ("deferred", False), ("duplicate", False), ("not_found", False)])
def test_only_transient_kinds_are_worth_a_run_retry(kind: str, transient: bool) -> None:
    assert is_transient(kind) is transient
    assert worth_retrying([kind]) is transient
    assert worth_retrying(["locked", kind]) is transient, "one transient failure is worth a retry"


def test_retry_policy_names_exactly_two_transient_kinds() -> None:
    assert frozenset({"retryable", "uncertain"}) == TRANSIENT_KINDS
    assert not worth_retrying([])


def test_messages_never_nest_and_name_their_fix() -> None:
    nested = ("tenant t1: tenant t1: jurnal connection needs re-authorisation (revoked); run "
              "`ledger-pipeline connect --tenant t1 --system jurnal`")
    plain = own_words("t1", nested)
    assert "tenant t1:" not in plain and plain.startswith("jurnal connection needs re-authorisation")
    assert own_words("t1", "tenant t10: x") == "tenant t10: x", "another tenant's name is kept"
    assert fix_for("failed (needs_reauth)", plain) == "`ledger-pipeline connect --tenant t1 --system jurnal`"
    assert "reopen" in fix_for("failed (locked)", "period closed")
    assert "source rows" in fix_for("rejected upstream", "[map] account 6-60101 archived")


def test_a_revoked_grant_is_one_log_message_per_tenant_not_one_per_month() -> None:
    revoked = "tenant t1: tenant t1: jurnal connection needs re-authorisation (revoked); run " \
              "`ledger-pipeline connect --tenant t1 --system jurnal`"
    failures = pd.DataFrame(
        [("jurnal", "t1", "r2a-pl-t1-202501", revoked, "needs_reauth"),
         ("jurnal", "t1", "r2a-pl-t1-202502", revoked, "needs_reauth"),
         ("quickbooks", "t2", "r2a-pl-t2-202501", "period closed", "locked")],
        columns=["system", "tenant_id", "custom_id", "error", "kind"])
    lines = failure_lines(failures)
    assert lines == [
        "tenant t1 (Jurnal.id (Mekari)) 2 entries (r2a-pl-t1-202501, r2a-pl-t1-202502): jurnal connection needs "
        "re-authorisation (revoked); run `ledger-pipeline connect --tenant t1 --system jurnal`",
        "tenant t2 (QuickBooks Online) r2a-pl-t2-202501: period closed"]
    assert failure_lines(failures.iloc[:0]) == []


def _setup(settings, n: int) -> list[str]:  # noqa: ANN001
    seeding.seed(make_engine(settings.r2a_database_url), n, 1, dt.date(2025, 1, 1), seed=11)
    with make_engine(settings.r2a_database_url).connect() as c:
        ids = [r[0] for r in c.execute(text("SELECT tenant_id FROM tenants ORDER BY 1"))]
    connect(ids)
    materialize_gl()
    return ids


def test_revoked_and_locked_are_reported_once_and_the_rest_reconciles(settings, sandbox) -> None:  # noqa: ANN001
    tenants = _setup(settings, 5)
    locked, revoked = tenants[1], tenants[2]
    httpx.post(f"{sandbox.url}/_sandbox/companies/{locked}/lock_date", json={"lock_date": "2025-03-31"})
    httpx.post(f"{sandbox.url}/_sandbox/companies/{revoked}/revoke")
    result = materialize(CLOSE, "2025-01-01", raise_on_error=False)
    assert result.success, "permanent causes only: the step records them, a WARN check reports them"
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "postings_complete")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert locked in check.description and revoked in check.description
    rows = {r["tenant_id"]: r for r in (rec.data for rec in check.metadata["problems"].value.records)}
    assert set(rows) == {locked, revoked}
    assert "connect --tenant" in rows[revoked]["fix"] and "reopen" in rows[locked]["fix"]
    assert f"tenant {revoked}:" not in rows[revoked]["detail"], "never nested"
    meta = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["postings"]["retry"].value == "no: permanent causes only"
    table = meta["postings"]["tenant_months"].value
    assert {r.data["tenant_id"] for r in table.records} == set(tenants), "every tenant findable"
    counts = meta["postings"]["status_counts_by_system"].value["jurnal"]
    assert counts["posted"] == 3 and sum(counts.values()) == 5, counts
    # one row per tenant-month with its posting state, reconciliation, reason and fix (reconciliation's table)
    both = {r.data["tenant_id"]: r.data for r in meta["reconciliation"]["tenant_months"].value.records}
    assert set(both) == set(tenants)
    assert both[revoked]["reconciliation"] == "missing_remote" and both[revoked]["posting"] in ("pending", "failed")
    assert "connect --tenant" in both[revoked]["fix"] and f"tenant {revoked}:" not in both[revoked]["reason"]
    recon = dict(query(settings, "SELECT tenant_id, status FROM accounting.reconciliation"))
    assert all(recon[t] == "match" for t in tenants if t not in (locked, revoked)), recon
    tags = result.dagster_run.tags
    assert tags.get(RETRY_ON_FAILURE_TAG) is None


@pytest.mark.parametrize(("kind", "checked", "success", "tag"), [
    ("needs_reauth", False, False, "false"),  # no check reports it: fail, but tell the retry daemon not to retry
    ("locked", True, True, None),  # the WARN check reports it: the asset materializes, downstream runs
    ("retryable", True, False, None),  # transient: fail, the run retry posts what is left
    ("uncertain", False, False, None),
])
def test_posting_result_follows_the_retry_policy(kind: str, checked: bool, success: bool, tag: str | None) -> None:
    posted = PostedWindow(dt.date(2025, 1, 1), dt.date(2025, 2, 1), WindowResult(outcomes=[
        ("jurnal", TenantOutcome("t1", {"create": 1}, [("r2a-pl-t1-202501", "tenant t1: tenant t1: no", kind)]))]),
        {"jurnal": 1}, {"t1": "jurnal"}, 0.1)
    postings = pd.DataFrame({"system": ["jurnal"], "tenant_id": ["t1"], "period": [dt.date(2025, 1, 1)],
                             "custom_id": ["r2a-pl-t1-202501"], "remote_id": [None], "status": ["failed"],
                             "error": ["tenant t1: tenant t1: no"]})

    @dg.asset
    def posting(context):  # noqa: ANN001, ANN202  (a string annotation is refused by dagster)
        return posting_result(context, posted, postings, False, reported_by_check=checked)

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([posting], instance=instance, raise_on_error=False)
    assert result.success is success
    assert instance.get_run_by_id(result.run_id).tags.get(RETRY_ON_FAILURE_TAG) == tag
    if not success:
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert "tenant t1: tenant t1" not in str(failure.step_failure_data.user_failure_data.metadata)


def test_a_reconnect_clears_the_stale_needs_reauthorisation_row(settings, sandbox) -> None:  # noqa: ANN001
    tenants = _setup(settings, 3)
    revoked = tenants[0]
    httpx.post(f"{sandbox.url}/_sandbox/companies/{revoked}/revoke")
    materialize(CLOSE, "2025-01-01", raise_on_error=False)
    s = load_settings()
    # what reconciliation_drift writes when a tenant's read is refused (checked_by remote_read, not_checked)
    with Warehouse(s.work_warehouse_path, s.warehouse_path).connect() as con:
        con.execute("UPDATE accounting.reconciliation SET status = 'not_checked', checked_by = 'remote_read', "
                    "checked_at = ?, detail = 'could not read Jurnal entries: tenant ' || tenant_id || "
                    "': jurnal connection needs re-authorisation (revoked)' WHERE tenant_id = ?",
                    [pd.Timestamp("2100-01-01"), revoked])
    connect([revoked])
    assert materialize(CLOSE, "2025-01-01").success
    status = dict(query(settings, "SELECT tenant_id, status || ' ' || COALESCE(detail, '') "
                                  "FROM accounting.reconciliation"))
    assert status[revoked].startswith("match"), status[revoked]
    assert "re-authorisation" not in status[revoked]
