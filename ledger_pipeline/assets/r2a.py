"""R2a layer: the monthly P&L extracted from R2a's database into DuckDB."""

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
from ledger_pipeline.assets.publishing import publish_after_failure, publish_if_last
from ledger_pipeline.partitions import closed_window, monthly_partitions
from ledger_pipeline.r2a.extract import extract
from ledger_pipeline.resources import R2aDatabase, WarehouseResource
from ledger_pipeline.settings import load_settings
from ledger_pipeline.warehouse.store import replace_rows, transaction, window_where

_SRC = [("r2a_transactions", "amount")]
PL_LINEAGE = lineage({
    "tenant_id": [("r2a_transactions", "tenant_id")], "period": [("r2a_transactions", "txn_date")],
    "revenue": _SRC, "cogs": _SRC, "expenses": _SRC, "net_income": _SRC,
    "source_rows": [("r2a_transactions", "id")], "currency": [("r2a_transactions", "currency")],
})

R2A_SOURCE = dg.AssetSpec(
    "r2a_transactions",
    description="R2a's r2a_transactions table (external source, read through SQLAlchemy).",
    group_name="r2a",
    kinds={"sql"},
)


@dg.asset(
    deps=[R2A_SOURCE],
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    hooks={publish_after_failure},
    group_name="r2a",
    kinds={"sql", "duckdb"},
    metadata={**table_spec_metadata("r2a.pl_monthly"), "dagster/column_lineage": PL_LINEAGE},
    description="Each tenant's monthly P&L (revenue, COGS, expenses, net income) with its category/subcategory "
    "detail in r2a.pl_monthly_detail. Tenant-months with bad source rows go to ledger.rejections (stage extract).",
)
def r2a_pl_monthly(context: dg.AssetExecutionContext, r2a: R2aDatabase,
                   warehouse: WarehouseResource) -> dg.MaterializeResult:
    start, end = closed_window(context)
    s = load_settings()
    if s.first_month_source.startswith("default"):  # embedded: the first close records the first month (clock.py)
        clock.record_first_month(s.data_dir, clock.parse_month(s.first_month))
    x = extract(r2a.engine, start, end)
    stamp = pd.Timestamp.now(tz="UTC").tz_localize(None)
    run = {"run_id": context.run_id}
    monthly = x.monthly.assign(**run, extracted_at=stamp)
    detail = x.detail.assign(**run)
    rejections = x.rejections.assign(**run, recorded_at=stamp)
    wh = warehouse.warehouse
    with wh.connect() as con, transaction(con):
        replace_rows(con, "r2a.pl_monthly", monthly, window_where(), [start, end])
        replace_rows(con, "r2a.pl_monthly_detail", detail, window_where(), [start, end])
        replace_rows(con, "ledger.rejections", rejections,  # rows with no usable date come back every run
                     f"stage = 'extract' AND ({window_where()} OR period IS NULL)", [start, end])
    publish_if_last(context, wh)
    if len(rejections):
        context.log.warning(
            f"{len(rejections)} tenant-month(s) rejected at extract: see ledger.rejections; first: "
            f"{rejections['detail'].iloc[0]}"
        )
    for key in month_keys(context):  # each month's own numbers on its own partition (range runs)
        own, own_rejections = month_slice(monthly, key), month_slice(rejections, key)
        add_month_metadata(context, {key: table_result_metadata("r2a.pl_monthly", own, {
            "window": key[:7], "run_window": describe_window(start, end),
            "tenants": int(own["tenant_id"].nunique()), "source_rows": int(own["source_rows"].sum()),
            "rejected_tenant_months": len(own_rejections),
            "rejections_preview": preview(own_rejections[["tenant_id", "period", "reason"]]),
            "rejections": rejections_table(own_rejections)})})
    return dg.MaterializeResult(
        metadata=table_result_metadata(
            "r2a.pl_monthly",
            monthly,
            {
                "window": describe_window(start, end),
                "tenants": int(monthly["tenant_id"].nunique()),
                "source_rows": int(monthly["source_rows"].sum()),
                "detail_rows": len(detail),
                "rejected_tenant_months": len(rejections),
                "rejections_preview": preview(rejections[["tenant_id", "period", "reason"]]),
                "rejections": rejections_table(rejections),
                "dagster/column_lineage": PL_LINEAGE,
            },
        )
    )
