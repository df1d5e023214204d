"""Posting across several hosts (production profile): month x shard partitions, one Celery worker per shard.

- `tenant_shards` (month, default queue): gives every tenant of the month without a shard the least-loaded one.
- `shard_postings` (month x shard, the shard's own queue and worker): posts only that shard's tenants, exactly like
  `postings` (the same `post_window`), reading and writing only the operational database: no DuckDB, no file
  of another host. Its metadata names the worker (Celery node, queue, source address, data directory).
- `published_postings` (month, default queue, after every shard of the month): the analysts' DuckDB copy of the
  posting state (`accounting.postings`) and the reconciliation from that state (`accounting.reconciliation`).

Partition count: months x shards stays small. Dagster advises at most 25,000 partitions per asset (100,000 in the
1.13 docstrings); ten years of months on 16 shards is 1,920, and the default 4 shards give 48 a year.
"""

import datetime as dt
import os
import socket

import dagster as dg
from sqlalchemy import Engine, select

from ledger_pipeline.assets.accounting import (
    POSTINGS_CHECK,
    PostingConfig,
    all_match,
    connected_systems,
    post_window,
    posting_result,
    postings_check,
    reconciliation_from_state,
    remote_reads,
    utc_now,
)
from ledger_pipeline.assets.metadata import describe_window, preview, table_result_metadata, table_spec_metadata
from ledger_pipeline.charts import rechart_for
from ledger_pipeline.partitions import closed_window, monthly_partitions
from ledger_pipeline.resources import AccountingResource, R2aDatabase, WarehouseResource
from ledger_pipeline.settings import load_settings
from ledger_pipeline.shards import assign_new, counts, shard_keys, tenants_of
from ledger_pipeline.state.models import LedgerEntry
from ledger_pipeline.state.postings import SqlPostingStore
from ledger_pipeline.systems import Connections
from ledger_pipeline.warehouse.store import replace_rows, transaction, window_where

SHARD_DIMENSION = "shard"
MONTH_DIMENSION = "month"
SHARD_TAG = f"dagster/partition/{SHARD_DIMENSION}"  # set by Dagster on every month x shard run
WORKER_TAGS = ("celery_worker", "celery_queue", "source_address")  # recorded as ledger/<name> run tags

SHARDS = shard_keys(load_settings().shards)
shard_partitions = dg.MultiPartitionsDefinition({
    MONTH_DIMENSION: monthly_partitions,
    SHARD_DIMENSION: dg.StaticPartitionsDefinition(SHARDS),
})
BY_MONTH = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=MONTH_DIMENSION)


def window_tenants(r2a: R2aDatabase, start: dt.date, end: dt.date) -> list[str]:
    """Tenants with an entry (or a held month) in the window, plus every connected tenant."""
    with r2a.ops_engine.connect() as conn:
        found = set(conn.execute(select(LedgerEntry.tenant_id).distinct()
                                 .where(LedgerEntry.period >= start, LedgerEntry.period < end)).scalars())
    return sorted(found | set(connected_systems(r2a)))


def worker_identity() -> dict[str, str]:
    """Where this step runs: host, pid, source address, private data dir, and the Celery node and queue."""
    s = load_settings()
    ident = {"host": socket.gethostname(), "pid": str(os.getpid()), "source_address": s.source_address or "default",
             "data_dir": str(s.data_dir.resolve())}
    try:
        from celery import current_task
    except ImportError:  # the embedded profile has no Celery
        return ident
    request = current_task.request if current_task else None
    if request is not None and request.id:
        ident["celery_worker"] = str(request.hostname)
        ident["celery_queue"] = str((request.delivery_info or {}).get("routing_key", "")).split(".")[0]
    return ident


def shard_rechart(ops_engine: Engine, connections: Connections, run_id: str | None = None):  # noqa: ANN201
    """The chart retry for a shard worker: the one chart retry (charts.rechart_for), which needs only the operational
    database. The analysts' DuckDB copy of the chart catches up at the next charts refresh on the default queue."""
    return rechart_for(ops_engine, connections, run_id)


@dg.asset(
    deps=["journal_entries", "journal_lines"], partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(), group_name="accounting", kinds={"sql"},
    description="Assigns each tenant of the month that has no shard yet to the least-loaded shard (operational "
                "database, `shard_assignments`). Assignments are stable: a tenant moves only through "
                "`ledger-pipeline shards --rebalance`.",
)
def tenant_shards(context: dg.AssetExecutionContext, r2a: R2aDatabase) -> dg.MaterializeResult:
    start, end = closed_window(context)
    new = assign_new(r2a.ops_engine, window_tenants(r2a, start, end), SHARDS)
    per_shard = counts(r2a.ops_engine, SHARDS)
    context.log.info(f"{len(new)} new tenant(s) assigned; tenants per shard: {per_shard}")
    return dg.MaterializeResult(metadata={"window": describe_window(start, end), "newly_assigned": len(new),
                                          "tenants_per_shard": dg.MetadataValue.json(per_shard)})


@dg.asset(
    deps=[dg.AssetDep("tenant_shards", partition_mapping=BY_MONTH)], partitions_def=shard_partitions,
    group_name="accounting", kinds={"api", "sql"}, metadata=table_spec_metadata("accounting.postings"),
    check_specs=[dg.AssetCheckSpec(
        POSTINGS_CHECK, asset="shard_postings",
        description="Every tenant-month of the shard's month is posted as our ledger says (the same check as "
                    "postings'). Fails (WARN: the rest is posted) naming each tenant-month that is not.")],
    description="Posts one shard's tenants for one month to their accounting systems exactly once (the same engine "
                "as postings, with the same chart retry for an entry whose account is missing), on the shard's "
                "own Celery queue and worker, from that worker's source address. "
                "Reads and writes only the operational database. One run per month x shard; the instance runs one "
                "run per shard at a time, so a tenant's token is only ever used by one worker.",
)
def shard_postings(context: dg.AssetExecutionContext, config: PostingConfig, r2a: R2aDatabase,
                   accounting: AccountingResource):  # noqa: ANN201 (a generator)
    if not context.has_partition_key:
        raise dg.Failure("shard_postings runs one month x shard per run (each on its shard's worker); launch it "
                         "without a single-run backfill policy")
    key = context.partition_key
    shard = key.keys_by_dimension[SHARD_DIMENSION] if isinstance(key, dg.MultiPartitionKey) else str(key)
    start, end = closed_window(context)
    assign_new(r2a.ops_engine, window_tenants(r2a, start, end), SHARDS)  # no-op after tenant_shards; never lost
    tenants = tenants_of(r2a.ops_engine, shard)
    where = worker_identity()
    # visible in the UI's run list, and what proves each shard ran on its own worker
    context.instance.add_run_tags(context.run_id, {f"ledger/{k}": where[k] for k in WORKER_TAGS if k in where})
    context.log.info(f"{shard}: {len(tenants)} tenant(s) on {where.get('celery_worker', where['host'])} "
                     f"from {where['source_address']} (data dir {where['data_dir']})")
    posted = post_window(context, config, r2a, accounting, start, end, tenants=tenants,
                         rechart=lambda connections: shard_rechart(r2a.ops_engine, connections, context.run_id))
    postings = SqlPostingStore(r2a.ops_engine).frame(start, end)
    postings = postings[postings["tenant_id"].isin(tenants)]
    if dg.AssetCheckKey(dg.AssetKey("shard_postings"), POSTINGS_CHECK) in context.selected_asset_check_keys:
        yield postings_check(r2a, posted)  # months rejected upstream named, their reason is in ledger.rejections
    yield posting_result(context, posted, postings, config.dry_run, extra={
        "shard": shard, "tenants": len(tenants), "worker": dg.MetadataValue.json(where),
        "source_address": where["source_address"], "celery_worker": where.get("celery_worker", ""),
    })


@dg.asset(
    deps=[dg.AssetDep("shard_postings", partition_mapping=BY_MONTH)], partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(), group_name="accounting", kinds={"duckdb"}, pool="duckdb",
    metadata=table_spec_metadata("accounting.reconciliation"),
    description="The analysts' copy, once every shard of the month is posted: accounting.postings from the "
                "operational posting state, and accounting.reconciliation from that state (no request; a newer read "
                "by reconciliation_drift is kept, as in reconciliation), published "
                "to LEDGER_WAREHOUSE. Runs on the default queue, the one host with the DuckDB files.",
)
def published_postings(context: dg.AssetExecutionContext, r2a: R2aDatabase,
                       warehouse: WarehouseResource) -> dg.MaterializeResult:
    start, end = closed_window(context)
    wh = warehouse.warehouse
    postings = SqlPostingStore(r2a.ops_engine).frame(start, end)
    with wh.connect() as con:  # a newer read by reconciliation_drift is kept, as in reconciliation
        reads = remote_reads(con, start, end)
    frame = reconciliation_from_state(r2a, start, end, context.run_id, reads)
    with wh.connect() as con, transaction(con):
        replace_rows(con, "accounting.postings", postings, window_where(), [start, end])
        replace_rows(con, "accounting.reconciliation", frame, window_where(), [start, end])
    wh.publish(run_id=context.run_id)
    return dg.MaterializeResult(metadata=table_result_metadata("accounting.reconciliation", frame, {
        "window": describe_window(start, end), "api_requests": 0, "postings": len(postings),
        "published_at": str(utc_now()),
        "posting_status": dg.MetadataValue.json(postings["status"].value_counts().to_dict()),
        "status_counts": dg.MetadataValue.json(frame["status"].value_counts().to_dict() if len(frame) else {}),
        "not_matching": preview(frame[frame["status"] != "match"][["system", "tenant_id", "period", "status",
                                                                    "detail"]]),
    }))


@dg.asset_check(asset="published_postings", pool="duckdb",
                description="Every entry of the window is in its accounting system exactly once with our amounts, "
                            "whichever shard posted it (status match).")
def published_all_match(context: dg.AssetCheckExecutionContext,
                        warehouse: WarehouseResource) -> dg.AssetCheckResult:
    return all_match(context, warehouse)
