"""The ledger assets through Dagster: rejections isolated per tenant, the blocking balance check, completeness,
lineage metadata; and the Jurnal connection on Postgres."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import httpx
from sqlalchemy import update

from ledger_pipeline.charts import chart_checks
from ledger_pipeline.definitions import ASSETS, CHECKS
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.settings import load_settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.models import GlIngestStatus
from ledger_pipeline.warehouse.store import Warehouse
from ledger_pipeline_tests.helpers import (
    connect,
    materialize,
    materialize_gl,
    query,
    range_tags,
    resources,
    sandbox_entries,
    sandbox_stats,
    session,
)

JOURNAL = ["r2a_pl_monthly", "journal_entries", "journal_lines"]


def test_a_tenant_with_an_archived_account_is_rejected_alone(settings, sandbox) -> None:  # noqa: ANN001
    seeding.seed(make_engine(settings.r2a_database_url), 5, 1, dt.date(2025, 1, 1))
    tenants = [f"t{i:05d}" for i in range(1, 6)]
    connect(tenants)
    httpx.post(f"{sandbox.url}/_sandbox/companies/t00002/accounts", json={"number": "6-60101", "archived": True})
    materialize_gl()
    result = materialize(JOURNAL, "2025-01-01")
    assert result.success
    rejected = query(settings, "SELECT tenant_id, stage, detail FROM ledger.rejections")
    assert [(t, s) for t, s, _ in rejected] == [("t00002", "map")]
    assert "6-60101" in rejected[0][2] and "archived" in rejected[0][2]
    built = {r[0] for r in query(settings, "SELECT tenant_id FROM ledger.journal_entries")}
    assert built == set(tenants) - {"t00002"}
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"journal_balances": True, "journal_complete": True, "connections_ready": True}
    meta = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    lineage = meta["journal_entries"]["dagster/column_lineage"].value
    assert lineage.deps_by_column["total_debit"][0].asset_key == dg.AssetKey("r2a_pl_monthly")
    assert meta["journal_entries"]["all_balanced"].value is True
    assert meta["journal_lines"]["rejected_tenant_months"].value == 1
    [rejection] = [r.data for r in meta["journal_entries"]["rejections"].value.records]  # in full, with its fix
    assert rejection["tenant_id"] == "t00002" and "6-60101" in rejection["detail"]
    assert "account mapping" in rejection["fix"] and "`ledger-pipeline run --month 2025-01`" in rejection["fix"]


def test_balance_check_fails_on_an_unbalanced_frame(settings, sandbox) -> None:  # noqa: ANN001
    seeding.seed(make_engine(settings.r2a_database_url), 3, 1, dt.date(2025, 1, 1))
    connect(["t00001", "t00002", "t00003"])
    materialize_gl()
    materialize(JOURNAL, "2025-01-01")
    s = load_settings()
    with Warehouse(s.work_warehouse_path, s.warehouse_path).connect() as con:  # someone edits a line by hand
        con.execute("UPDATE ledger.journal_lines SET debit = debit + 1 WHERE custom_id = 'r2a-pl-t00002-202501' "
                    "AND debit > 0 AND line_no = (SELECT MIN(line_no) FROM ledger.journal_lines "
                    "WHERE custom_id = 'r2a-pl-t00002-202501' AND debit > 0)")
    result = dg.materialize([*ASSETS, *CHECKS], selection=dg.AssetSelection.checks_for_assets("journal_lines"),
                            resources=resources(s), instance=dg.DagsterInstance.ephemeral(),
                            tags=range_tags("2025-01-01"), raise_on_error=False)
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "journal_balances")
    assert not evaluation.passed
    assert evaluation.metadata["unbalanced_entries"].value == 1
    assert "r2a-pl-t00002-202501" in evaluation.description


def test_jurnal_connection_on_postgres(settings, sandbox, pg_url: str) -> None:  # noqa: ANN001
    seeding.seed(make_engine(pg_url), 3, 1, dt.date(2025, 1, 1))
    connect(["t00001", "t00002", "t00003"], r2a_url=pg_url)
    sess = session(pg_url)
    try:
        assert sess.vault.connected_tenants() == ["t00001", "t00002", "t00003"]
        stale = sess.vault.access_token("t00001", lambda rt: sess.oauth.refresh("t00001", rt))
        fresh = sess.vault.access_token("t00001", lambda rt: sess.oauth.refresh("t00001", rt), stale=stale)
        assert fresh != stale, "a refused token is refreshed (SELECT ... FOR UPDATE on Postgres)"
    finally:
        sess.close()
    materialize_gl(pg_url)
    assert materialize([*JOURNAL, "postings", "reconciliation"], "2025-01-01", r2a_url=pg_url).success
    assert set(query(settings, "SELECT status FROM jurnal.reconciliation")) == {("match",)}


def test_blocking_balance_check_stops_posting_in_a_real_run(settings, sandbox) -> None:  # noqa: ANN001
    seeding.seed(make_engine(settings.r2a_database_url), 3, 1, dt.date(2025, 1, 1))
    connect(["t00001", "t00002", "t00003"])
    materialize_gl()
    materialize(JOURNAL, "2025-01-01")
    s = load_settings()
    with Warehouse(s.work_warehouse_path, s.warehouse_path).connect() as con:  # an unbalanced line slips in
        con.execute("UPDATE ledger.journal_lines SET credit = credit + 1 WHERE custom_id = 'r2a-pl-t00003-202501' "
                    "AND credit > 0 AND line_no = (SELECT MIN(line_no) FROM ledger.journal_lines "
                    "WHERE custom_id = 'r2a-pl-t00003-202501' AND credit > 0)")
    result = dg.materialize(
        [*ASSETS, *CHECKS], resources=resources(s), instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.checks_for_assets("journal_lines") | dg.AssetSelection.assets("postings"),
        tags=range_tags("2025-01-01"), raise_on_error=False)
    assert not result.success
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "journal_balances")
    assert not evaluation.passed and "r2a-pl-t00003-202501" in evaluation.description
    assert not [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["postings"]]
    assert sandbox_stats(sandbox.url)["api_writes"] == 0 and not sandbox_entries(sandbox.url)


def test_the_close_refreshes_only_stale_charts_and_names_every_tenants_chart(settings, sandbox) -> None:  # noqa: ANN001
    """gl_accounts_fresh, the close's first step (monthly, in monthly_close_job instead of the unpartitioned
    gl_accounts): only charts older than the max age are fetched again; every connected tenant's chart status is in
    its metadata, a revoked grant with its reason (never nested) and the command that fixes it."""
    seeding.seed(make_engine(settings.r2a_database_url), 3, 1, dt.date(2025, 1, 1))
    connect(["t00001", "t00002", "t00003"])
    materialize_gl()
    with make_ops_engine(settings.ops_database_url).begin() as conn:  # two charts fetched 2 days ago
        conn.execute(update(GlIngestStatus).where(GlIngestStatus.tenant_id.in_(["t00002", "t00003"]))
                     .values(checked_at=dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=48)))
    httpx.post(f"{sandbox.url}/_sandbox/companies/t00003/revoke")
    result = materialize(["gl_accounts_fresh", *JOURNAL], "2025-01-01")
    meta = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    fresh = meta["gl_accounts_fresh"]
    assert (fresh["tenants_fetched"].value, fresh["tenants_failed"].value, fresh["tenants_fresh_skipped"].value) == (
        1, 1, 1)
    assert fresh["window"].value == "2025-01" and fresh["run_window"].value == "2025-01"
    rows = {r.data["tenant_id"]: r.data for r in fresh["tenants"].value.records}
    assert {t: r["chart"] for t, r in rows.items()} == {"t00001": "kept (fresh)", "t00002": "fetched",
                                                        "t00003": "needs_reauth"}
    assert "re-authori" in rows["t00003"]["reason"] and "tenant t00003:" not in rows["t00003"]["reason"]
    assert rows["t00003"]["fix"] == "`ledger-pipeline connect --tenant t00003 --system jurnal`"
    assert [r.data["tenant_id"] for r in fresh["failures"].value.records] == ["t00003"]
    ok = dict(query(settings, "SELECT tenant_id, MAX(checked_at) FROM accounting.gl_ingest_status "
                              "WHERE status = 'ok' GROUP BY 1"))
    assert ok["t00002"] > ok["t00001"], "the stale chart was fetched again, the fresh one left"
    checks = chart_checks(make_ops_engine(settings.ops_database_url))  # what the next close decides from
    assert dict(zip(checks["tenant_id"], checks["checked_at"], strict=True)) == ok, "DuckDB holds a copy"
    assert meta["journal_entries"]["dagster/row_count"].value == 3, "the journal built on the charts it had"
