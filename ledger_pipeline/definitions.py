"""The Dagster Definitions: assets, checks, jobs, schedules and resources, built when Dagster loads the code location.

`defs` is an `@dg.definitions` function: importing this module reads no environment; Dagster (and `defs()` in
tests and the CLI) calls it, and only then is LEDGER_PROFILE read:
- unset / `embedded`: one process, the whole close as `monthly_close_job` (postings posts every tenant);
- `production`: ledger_pipeline/production.py (Postgres instance, Celery workers per shard; deploy/production/):
  the same charts, extract, journal, drift reconciliation, repost and checks, with posting split month x shard.
What is still read at import: the month partitions (ledger_pipeline/partitions.py: LEDGER_FIRST_MONTH,
LEDGER_TIMEZONE) and the shard list (assets/shards.py: LEDGER_SHARDS), because Dagster needs a partitions
definition when an asset is declared; a change takes effect on the next code-location reload.
"""

from __future__ import annotations

import dagster as dg

from ledger_pipeline.assets.accounting import (
    gl_accounts,
    gl_accounts_fresh,
    postings,
    reconciliation,
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
from ledger_pipeline.service.preflight_check import connections_preflight, connections_ready
from ledger_pipeline.settings import load_settings

ASSETS = [R2A_SOURCE, r2a_pl_monthly, journal, gl_accounts, gl_accounts_fresh, postings, reconciliation,
          reconciliation_drift]
CHECKS = [journal_balances, journal_complete, reconciliation_all_match, connections_ready,
          connections_preflight]


def embedded_definitions() -> dg.Definitions:
    """The embedded profile: one process runs the whole close (in-process executor)."""
    # Transient failures (an accounting system's outage, a DuckDB lock held by a stray process) are retried by the
    # instance's run_retries (dagster_home/dagster.yaml); posting is idempotent, so a retried run never double-posts.
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=[monthly_close_job, gl_accounts_job, reconciliation_drift_job, repost_job],
        schedules=[monthly_close_schedule, gl_accounts_daily_schedule, reconciliation_drift_schedule],
        resources=default_resources(),
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The definitions of the profile LEDGER_PROFILE names (read now, not at import)."""
    if load_settings().profile == "production":
        from ledger_pipeline.production import production_definitions

        return production_definitions()
    return embedded_definitions()
