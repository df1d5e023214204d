"""Per-partition truth (issue 25, point 3): a range run (single-run backfill) puts each month's own numbers on that
month's partition (entries, rejections, postings by system and state, every tenant-month), the run's window under
run_window."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline_tests.helpers import CLOSE, connect, materialize, materialize_gl, query


def test_a_range_run_reports_each_month_on_its_own_partition(settings, sandbox) -> None:  # noqa: ANN001
    seeding.seed(make_engine(settings.r2a_database_url), 4, 3, dt.date(2025, 1, 1), seed=11)
    with make_engine(settings.r2a_database_url).connect() as c:
        tenants = [r[0] for r in c.execute(text("SELECT tenant_id FROM tenants ORDER BY 1"))]
    connect(tenants)
    materialize_gl()
    result = materialize(CLOSE, "2025-01-01", "2025-03-01", raise_on_error=False)
    assert result.success
    by = {(e.asset_key.path[-1], e.partition): e.materialization.metadata
          for e in result.get_asset_materialization_events()}
    months = ["2025-01-01", "2025-02-01", "2025-03-01"]
    for key in months:
        entries = by[("journal_entries", key)]
        own = query(settings, "SELECT COUNT(*) FROM ledger.journal_entries WHERE period = ?", [key])[0][0]
        assert entries["dagster/row_count"].value == own, (key, "the month's own entries, not the window's")
        assert entries["window"].value == key[:7] and entries["run_window"].value == "2025-01 .. 2025-03"
        posting = by[("postings", key)]
        rows = query(settings, "SELECT tenant_id, status FROM accounting.postings WHERE period = ?", [key])
        assert posting["dagster/row_count"].value == len(rows)
        assert posting["window"].value == key[:7]
        assert sum(posting["posted_by_system"].value.values()) == sum(s == "posted" for _, s in rows)
        assert posting["done"].value == {"create": len(rows)}, "what the run wrote for this month alone"
        assert posting["done_in_run"].value["create"] == sum(
            len(query(settings, "SELECT 1 FROM accounting.postings WHERE period = ?", [k])) for k in months)
        table = posting["tenant_months"].value.records
        assert {r.data["period"] for r in table} == {key[:10]}, "only this month's tenant-months"
        assert {r.data["tenant_id"] for r in table} == {t for t, _ in rows}
        recon = by[("reconciliation", key)]
        own_recon = query(settings, "SELECT tenant_id, status FROM accounting.reconciliation WHERE period = ?", [key])
        assert recon["window"].value == key[:7] and recon["dagster/row_count"].value == len(own_recon)
        recon_rows = [r.data for r in recon["tenant_months"].value.records]
        assert {(r["tenant_id"], r["reconciliation"]) for r in recon_rows} == set(own_recon)
        assert {r["period"] for r in recon_rows} == {key[:10]}
        assert all(r["posting"] == "posted" for r in recon_rows if r["reconciliation"] == "match"), recon_rows
    total = query(settings, "SELECT COUNT(*) FROM ledger.journal_entries")[0][0]
    assert sum(by[("journal_entries", k)]["dagster/row_count"].value for k in months) == total
