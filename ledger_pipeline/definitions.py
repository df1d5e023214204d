"""The Dagster Definitions: one asset graph for both profiles, with the resources of the profile.

`defs` is an `@dg.definitions` function: importing this module reads no profile; Dagster (and `defs()` in tests and
the CLI) calls it, and only then is LEDGER_PROFILE read. Both profiles have the same assets, checks, jobs and
schedules (the monthly close is `monthly_close_job` in both); the environment swaps resources, not graphs:
- unset / `embedded`: the close's posting runs in this process (one shard);
- `production` (deploy/production/: Postgres instance, runs on the default Celery worker): the `postings` step posts
  on the shard workers, one Celery task per shard on `ledger-shard-N`, each from its own source address
  (resources.PostingWorkers, dispatch.py, workers.py).
What is still read at import: the month partitions (ledger_pipeline/partitions.py: LEDGER_FIRST_MONTH,
LEDGER_TIMEZONE), because Dagster needs a partitions definition when an asset is declared; a change takes effect
on the next code-location reload.
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

ASSETS = [R2A_SOURCE, r2a_pl_monthly, journal, gl_accounts, gl_accounts_fresh, postings, reconciliation,
          reconciliation_drift]
CHECKS = [journal_balances, journal_complete, reconciliation_all_match, connections_ready,
          connections_preflight]


@dg.definitions
def defs() -> dg.Definitions:
    """The one graph of both profiles, with the resources of LEDGER_PROFILE (read now, not at import).

    Embedded (default): posting in this process, one shard. Production (deploy/production/, Postgres instance, runs
    on Celery's `ledger-default` worker): the same assets, checks, jobs and schedules; the close's `postings` step
    posts on the shard workers (resources.PostingWorkers)."""
    # Transient failures (an accounting system's outage, a DuckDB lock held by a stray process) are retried by the
    # instance's run_retries (dagster_home/dagster.yaml); posting is idempotent, so a retried run never double-posts.
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=[monthly_close_job, gl_accounts_job, reconciliation_drift_job, repost_job],
        schedules=[monthly_close_schedule, gl_accounts_daily_schedule, reconciliation_drift_schedule],
        resources=default_resources(),
        executor=dg.in_process_executor,  # a run is one process (in production: the default Celery worker's)
    )
