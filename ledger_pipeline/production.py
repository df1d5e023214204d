"""The production profile's Definitions (LEDGER_PROFILE=production; instance config in deploy/production/).

What runs where:
- default queue (`ledger-default`, the one worker that holds the DuckDB files): `prepare_month_job` (stale charts,
  extract, journal: writes the month's entries into the operational database) and `publish_month_job` (the
  analysts' copy);
- shard queues (`ledger-shard-N`, one worker each, each with its own source address): `shard_postings`, one run per
  month x shard, which needs only the operational database and the accounting systems.

A month's close from the UI: select the `accounting` and `ledger`/`r2a` assets, Materialize, pick the month: one asset
backfill that prepares the month, posts every shard in parallel (one run per shard, each on its own worker) and
publishes once every shard is done. Drift reconciliation (`reconciliation_drift`, its job and schedule), the
operator's `repost_job`, the charts refresh and every check are the embedded profile's own (default queue); posting
runs the embedded engine with the same chart retry (assets/shards.py `shard_rechart`). The embedded profile (no
LEDGER_PROFILE) is `definitions.embedded_definitions`; `definitions.defs` picks one when Dagster loads the code.
"""

from __future__ import annotations

import dagster as dg

from ledger_pipeline.assets.accounting import gl_accounts, gl_accounts_fresh, reconciliation_drift
from ledger_pipeline.assets.ledger import journal, journal_balances, journal_complete
from ledger_pipeline.assets.r2a import R2A_SOURCE, r2a_pl_monthly
from ledger_pipeline.assets.shards import (
    published_all_match,
    published_postings,
    shard_postings,
    tenant_shards,
)
from ledger_pipeline.jobs import DUCKDB_WRITER_TAG, gl_accounts_job, reconciliation_drift_job, repost_job
from ledger_pipeline.partitions import settings_partitions, with_partitions
from ledger_pipeline.resources import default_resources
from ledger_pipeline.schedules import background_schedules
from ledger_pipeline.service.preflight_check import connections_preflight, connections_ready
from ledger_pipeline.settings import Settings, load_settings

# reconciliation_drift, its job and schedule are the embedded ones (default queue: it writes the DuckDB copy);
# shard_postings carries the same postings_complete check and the same chart retry as postings.
# Drift follows the posting asset of this graph: published_postings (every shard of a month posted) in place of
# postings; the asset itself (key, code, table) is the embedded one.
production_drift = reconciliation_drift.with_attributes(
    asset_key_replacements={dg.AssetKey("postings"): dg.AssetKey("published_postings")})
PRODUCTION_ASSETS = [R2A_SOURCE, r2a_pl_monthly, journal, gl_accounts, gl_accounts_fresh, tenant_shards,
                     shard_postings, published_postings, production_drift]
PRODUCTION_CHECKS = [journal_balances, journal_complete, published_all_match, connections_ready,
                     connections_preflight]

# The jobs have no partitions_def of their own: they take their assets' (the settings' months, alone or x shard) when
# the definitions resolve (partitions.py), and prepare_month_schedule its cron and timezone from them.
prepare_month_job = dg.define_asset_job(
    "prepare_month_job",
    selection=dg.AssetSelection.assets("gl_accounts_fresh", "r2a_pl_monthly", "journal_entries", "journal_lines",
                                       "tenant_shards"),
    tags=DUCKDB_WRITER_TAG,
    description="A month's preparation on the default queue: stale charts (gl_accounts_fresh), extract, journal "
                "(entries written to the operational database for the shard workers), new tenants assigned to shards. "
                "Monthly assets only, one backfill policy (single run).",
)

shard_posting_job = dg.define_asset_job(
    "shard_posting_job", selection=dg.AssetSelection.assets("shard_postings"),
    description="Posting, one run per month x shard, each on its shard's Celery queue (backfill a month's row: every "
                "shard runs in parallel, one run per shard at a time).",
)

publish_month_job = dg.define_asset_job(
    "publish_month_job", selection=dg.AssetSelection.assets("published_postings"), tags=DUCKDB_WRITER_TAG,
    description="The analysts' DuckDB copy of the month's posting state and reconciliation (default queue).",
)

prepare_month_schedule = dg.build_schedule_from_partitioned_job(
    prepare_month_job, day_of_month=3, hour_of_day=2, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Prepares the previous month at 02:00 Asia/Jakarta on the 3rd. Posting stays an operator's launch "
                "(a backfill of shard_postings and published_postings for the month). Ships stopped.",
)


def production_definitions(settings: Settings | None = None) -> dg.Definitions:
    """With the months and business timezone of `settings` (default: read now)."""
    settings = settings or load_settings()
    return dg.Definitions(
        assets=with_partitions(PRODUCTION_ASSETS, settings_partitions(settings)),
        asset_checks=PRODUCTION_CHECKS,
        jobs=[prepare_month_job, shard_posting_job, publish_month_job, gl_accounts_job, reconciliation_drift_job,
              repost_job],
        schedules=[prepare_month_schedule, *background_schedules(settings.timezone)],
        resources=default_resources(),
        executor=dg.in_process_executor,  # a run is one process: the Celery worker's
    )
