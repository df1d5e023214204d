"""Ledger layer: balanced journal entries and lines per tenant-month, validated by the pandera contract."""

import datetime as dt

import dagster as dg
import pandas as pd

from ledger_pipeline import clock
from ledger_pipeline.assets.metadata import (
    add_month_metadata,
    describe_window,
    lineage,
    month_keys,
    month_slice,
    preview,
    rejections_table,
    table_result_metadata,
    table_spec_metadata,
)
from ledger_pipeline.assets.publishing import publish_after_failure, publish_before_blocking_failure, publish_if_last
from ledger_pipeline.charts import load_charts
from ledger_pipeline.ledger.journal import build_journal
from ledger_pipeline.ledger.mapping import load_mapping
from ledger_pipeline.ledger.schemas import JournalLines, validate_lines, validated_entries
from ledger_pipeline.ledger.sink import entries_from_frames
from ledger_pipeline.partitions import closed_window, monthly_partitions
from ledger_pipeline.rates import publish_rates
from ledger_pipeline.resources import R2aDatabase, WarehouseResource
from ledger_pipeline.settings import load_settings
from ledger_pipeline.state.ledger import save_window
from ledger_pipeline.warehouse.schema import minor_sql
from ledger_pipeline.warehouse.store import replace_rows, transaction, window_where

# The journal reads the charts (gl_accounts: the operational database's, charts.py) once the close's first step made
# them fresh (gl_accounts_fresh).
DEPS = ["r2a_pl_monthly", "gl_accounts", "gl_accounts_fresh"]
DETAIL_SQL = f"""SELECT tenant_id, period, category, subcategory, {minor_sql('amount', 'currency')} AS amount_minor,
                        currency, source_rows FROM r2a.pl_monthly_detail WHERE {window_where()}"""
CHART_COLUMNS = ["tenant_id", "account_id", "number", "name", "archived"]  # what build_journal resolves against
_AMOUNT = [("r2a_pl_monthly", "revenue"), ("r2a_pl_monthly", "cogs"), ("r2a_pl_monthly", "expenses")]
# Column lineage, on the definitions (the asset page's Columns and lineage views) and on every materialization.
ENTRIES_LINEAGE = lineage({
    "tenant_id": [("r2a_pl_monthly", "tenant_id")], "period": [("r2a_pl_monthly", "period")],
    "total_debit": _AMOUNT, "total_credit": _AMOUNT, "net_income": [("r2a_pl_monthly", "net_income")],
    "source_rows": [("r2a_pl_monthly", "source_rows")],
})
LINES_LINEAGE = lineage({
    "debit": _AMOUNT, "credit": _AMOUNT,
    "account_id": [("gl_accounts", "account_id")], "account_number": [("gl_accounts", "number")],
    "account_name": [("gl_accounts", "name")], "category": [("r2a_pl_monthly", "revenue")],
})


def check_window(context: dg.AssetCheckExecutionContext, column: str = "period") -> tuple[str, list]:
    """(SQL condition, params) restricting a check to its run's partition window; everything outside one."""
    window = run_window(context)
    return (window_where(column), list(window)) if window else ("TRUE", [])


def run_window(context: dg.AssetCheckExecutionContext) -> tuple[dt.date, dt.date] | None:
    """The partition window of the run a check executes in (single or ranged), None outside a partitioned run."""
    tags = context.run.tags
    start = tags.get("dagster/asset_partition_range_start") or tags.get("dagster/partition")
    end = tags.get("dagster/asset_partition_range_end") or start
    if not start:
        return None
    # A month's key names its dates whatever the first month and timezone of the partitions (the run's window in
    # local business dates, as closed_window gives the assets), so no partitions definition is needed here.
    return clock.parse_month(start), clock.add_months(clock.parse_month(end), 1)


@dg.multi_asset(
    specs=[
        dg.AssetSpec("journal_entries", deps=DEPS, group_name="ledger", kinds={"pandas", "duckdb"},
                     metadata={**table_spec_metadata("ledger.journal_entries"),
                               "dagster/column_lineage": ENTRIES_LINEAGE},
                     description="One balanced journal entry per tenant-month (ledger.journal_entries)."),
        dg.AssetSpec("journal_lines", deps=DEPS, group_name="ledger", kinds={"pandera", "duckdb"},
                     metadata={**table_spec_metadata("ledger.journal_lines"), "dagster/column_lineage": LINES_LINEAGE,
                               "contract": dg.MetadataValue.md(f"pandera model `{JournalLines.__name__}`")},
                     description="The entries' lines, validated by the JournalLines pandera contract; failing "
                                 "entries go to ledger.rejections (stage validate)."),
    ],
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    hooks={publish_after_failure},
)
def journal(context: dg.AssetExecutionContext, r2a: R2aDatabase, warehouse: WarehouseResource):  # noqa: ANN201
    start, end = closed_window(context)
    wh = warehouse.warehouse
    with wh.connect() as con:
        detail = con.execute(DETAIL_SQL, [start, end]).fetchdf()
    accounts = load_charts(r2a.ops_engine, columns=CHART_COLUMNS)  # the charts' one home, not the analysts' copy
    build = build_journal(detail, accounts, load_mapping(load_settings().account_mapping_path))
    lines, invalid = validate_lines(build.lines, start, end)
    entries = validated_entries(lines, build.entries)
    stamp = pd.Timestamp.now(tz="UTC").tz_localize(None)
    run = {"run_id": context.run_id}
    found = [f for f in (build.rejections, invalid) if len(f)] or [build.rejections]
    rejections = pd.concat(found, ignore_index=True).assign(**run, recorded_at=stamp)
    with wh.connect() as con, transaction(con):
        replace_rows(con, "ledger.journal_entries", entries.assign(**run, built_at=stamp), window_where(),
                     [start, end])
        replace_rows(con, "ledger.journal_lines", lines.assign(**run), window_where(), [start, end])
        replace_rows(con, "ledger.rejections", rejections,
                     window_where() + " AND stage IN ('map', 'validate')", [start, end])
        publish_rates(con, r2a.ops_engine)  # ledger.exchange_rates: the rates posting will use, for analysts
        held = con.execute(f"SELECT tenant_id, period FROM ledger.rejections WHERE {window_where()}",
                           [start, end]).fetchdf()
    # what posting needs, where every posting worker can read it (the operational database)
    save_window(r2a.ops_engine, start, end, entries_from_frames(entries, lines), held, context.run_id)
    publish_if_last(context, wh)
    for _, r in rejections.head(20).iterrows():
        context.log.warning(f"rejected at {r['stage']}: {r['detail']}")
    balanced = bool((entries["total_debit_minor"] == entries["total_credit_minor"]).all())
    common = {
        "window": describe_window(start, end),
        "rejected_tenant_months": len(rejections),
        "no_activity_tenant_months": len(build.no_activity),
        "rejections_preview": preview(rejections[["tenant_id", "period", "stage", "reason"]]),
        "rejections": rejections_table(rejections),
    }
    for key in month_keys(context):  # each month's own numbers on its own partition (range runs)
        own_entries, own_lines = month_slice(entries, key), month_slice(lines, key)
        own_rejections = month_slice(rejections, key)
        month = dt.date.fromisoformat(key[:10])
        own = {"window": describe_window(month, clock.add_months(month, 1)),
               "run_window": describe_window(start, end),
               "rejected_tenant_months": len(own_rejections),
               "rejections": rejections_table(own_rejections)}
        add_month_metadata(context, {key: table_result_metadata("ledger.journal_entries", own_entries, {
            **own, "all_balanced": bool((own_entries["total_debit_minor"] == own_entries["total_credit_minor"]).all()),
        })}, asset_key="journal_entries")
        add_month_metadata(context, {key: table_result_metadata("ledger.journal_lines", own_lines, own)},
                           asset_key="journal_lines")
    yield dg.MaterializeResult(asset_key="journal_entries", metadata=table_result_metadata(
        "ledger.journal_entries", entries, {
            **common, "all_balanced": balanced,
            "dagster/column_lineage": ENTRIES_LINEAGE}))
    yield dg.MaterializeResult(asset_key="journal_lines", metadata=table_result_metadata(
        "ledger.journal_lines", lines, {
            **common,
            "dagster/column_lineage": LINES_LINEAGE}))


@dg.asset_check(asset="journal_lines", blocking=True, pool="duckdb",
                description="Every entry in the window balances exactly (debits = credits), has >= 2 lines, "
                            "and every line has exactly one positive side.")
def journal_balances(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    where, params = check_window(context, "l.period")
    with warehouse.warehouse.connect() as con:
        bad = con.execute(f"""
            SELECT l.tenant_id, l.period, l.custom_id, SUM(l.debit) AS debit, SUM(l.credit) AS credit,
                   COUNT(*) AS lines, COUNT(*) FILTER (WHERE (l.debit > 0) = (l.credit > 0)) AS two_sided
            FROM ledger.journal_lines l WHERE {where} GROUP BY ALL
            HAVING SUM(l.debit) <> SUM(l.credit) OR COUNT(*) < 2 OR two_sided > 0
            ORDER BY l.tenant_id, l.period""", params).fetchdf()
    if not bad.empty:  # blocking: posting is skipped, so what the run recorded is published here
        publish_before_blocking_failure(context, warehouse.warehouse)
    return dg.AssetCheckResult(
        passed=bad.empty,
        metadata={"unbalanced_entries": len(bad),
                  "window": describe_window(*params) if params else "all months", "failures": preview(bad)},
        description=None if bad.empty else f"{len(bad)} entries do not balance: " + ", ".join(bad["custom_id"][:10]),
    )


@dg.asset_check(asset="journal_entries", pool="duckdb",
                description="Nothing silently dropped: every R2a tenant-month with activity is either a journal "
                            "entry or a rejection.")
def journal_complete(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    where, params = check_window(context, "p.period")
    with warehouse.warehouse.connect() as con:
        missing = con.execute(f"""
            SELECT p.tenant_id, p.period FROM r2a.pl_monthly p
            WHERE {where}
              AND (p.revenue <> 0 OR p.cogs <> 0 OR p.expenses <> 0)
              AND NOT EXISTS (SELECT 1 FROM ledger.journal_entries e
                              WHERE e.tenant_id = p.tenant_id AND e.period = p.period)
              AND NOT EXISTS (SELECT 1 FROM ledger.rejections r
                              WHERE r.tenant_id = p.tenant_id AND r.period = p.period)
            ORDER BY 1, 2""", params).fetchdf()
    return dg.AssetCheckResult(passed=missing.empty, metadata={"unaccounted_tenant_months": len(missing),
                                                               "preview": preview(missing)})
