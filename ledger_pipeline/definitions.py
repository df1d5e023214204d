"""The Dagster Definitions: assets, checks, jobs, schedules and resources (from the environment, see settings)."""

from __future__ import annotations

import dagster as dg

from ledger_pipeline.assets.accounting import (
    jurnal_gl_accounts,
    jurnal_postings,
    jurnal_reconciliation,
    reconciliation_all_match,
    reconciliation_drift,
)
from ledger_pipeline.assets.ledger import journal, journal_balances, journal_complete
from ledger_pipeline.assets.r2a import R2A_SOURCE, r2a_pl_monthly
from ledger_pipeline.jobs import gl_accounts_job, monthly_close_job, reconciliation_drift_job, repost_job
from ledger_pipeline.resources import default_resources
from ledger_pipeline.schedules import (
    gl_accounts_daily_schedule,
    monthly_close_schedule,
    reconciliation_drift_schedule,
)
from ledger_pipeline.settings import load_settings

ASSETS = [R2A_SOURCE, r2a_pl_monthly, journal, jurnal_gl_accounts, jurnal_postings, jurnal_reconciliation,
          reconciliation_drift]
CHECKS = [journal_balances, journal_complete, reconciliation_all_match]

# Transient failures (a Jurnal outage, a DuckDB lock held by a stray process) are retried by the instance's
# run_retries (dagster_home/dagster.yaml); posting is idempotent, so a retried run never double-posts.
defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[monthly_close_job, gl_accounts_job, reconciliation_drift_job, repost_job],
    schedules=[monthly_close_schedule, gl_accounts_daily_schedule, reconciliation_drift_schedule],
    resources=default_resources(),
    executor=dg.in_process_executor,
)

# LEDGER_PROFILE=production: Dagster's production deployment (Postgres instance, Celery workers per shard; see
# ledger_pipeline/production.py and deploy/production/). Unset, the embedded definitions above are the ones.
if load_settings().profile == "production":
    from ledger_pipeline.production import production_definitions

    defs = production_definitions()
