"""The Dagster Definitions: one asset graph for both profiles, with the resources of the profile.

`defs` is an `@dg.definitions` function: importing this module (or any module it imports) reads no environment;
Dagster (and `defs()` in tests and the CLI) calls it, and only then are the settings read:
- LEDGER_PROFILE picks the resources, never the graph: both profiles have the same assets, checks, jobs and
  schedules (the monthly close is `monthly_close_job` in both). Unset / `embedded`: the close's posting runs in this
  process (one shard). `production` (deploy/production/: Postgres instance, runs on the default Celery worker): the
  `postings` step posts on the shard workers, one Celery task per shard on `ledger-shard-N`, each from its own
  source address (resources.PostingWorkers, dispatch.py, workers.py).
- LEDGER_FIRST_MONTH and LEDGER_TIMEZONE: the month partitions (the assets are declared with a placeholder,
  replaced here: ledger_pipeline/partitions.py) and the schedules' timezone (ledger_pipeline/schedules.py).
A change takes effect on the next code-location reload.
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
from ledger_pipeline.partitions import settings_partitions, with_partitions
from ledger_pipeline.resources import default_resources
from ledger_pipeline.schedules import build_schedules
from ledger_pipeline.service.preflight_check import connections_preflight, connections_ready
from ledger_pipeline.settings import Settings, load_settings

# Declared with the placeholder partitions (any month since 2000-01, Asia/Jakarta): what tests materialize directly.
# build_definitions gives them the settings' months.
ASSETS = [R2A_SOURCE, r2a_pl_monthly, journal, gl_accounts, gl_accounts_fresh, postings, reconciliation,
          reconciliation_drift]
CHECKS = [journal_balances, journal_complete, reconciliation_all_match, connections_ready,
          connections_preflight]


def build_definitions(settings: Settings) -> dg.Definitions:
    """The one graph, with the months, business timezone and profile resources of `settings`."""
    # Transient failures (an accounting system's outage, a DuckDB lock held by a stray process) are retried by the
    # instance's run_retries (dagster_home/dagster.yaml); posting is idempotent, so a retried run never double-posts.
    return dg.Definitions(
        assets=with_partitions(ASSETS, settings_partitions(settings)),
        asset_checks=CHECKS,
        jobs=[monthly_close_job, gl_accounts_job, reconciliation_drift_job, repost_job],
        schedules=build_schedules(settings.timezone),
        resources=default_resources(settings),
        executor=dg.in_process_executor,  # a run is one process (in production: the default Celery worker's)
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The definitions for the current settings (all read now, not at import: a bad setting fails here, naming the
    variable)."""
    return build_definitions(load_settings())
