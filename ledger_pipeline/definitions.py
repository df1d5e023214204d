"""The Dagster Definitions: assets, checks, jobs, schedules and resources, built when Dagster loads the code location.

`defs` is an `@dg.definitions` function: importing this module (or any module it imports) reads no environment;
Dagster (and `defs()` in tests and the CLI) calls it, and only then are the settings read:
- LEDGER_PROFILE: unset / `embedded`: one process, the whole close as `monthly_close_job` (postings posts every
  tenant); `production`: ledger_pipeline/production.py (Postgres instance, Celery workers per shard;
  deploy/production/): the same charts, extract, journal, drift reconciliation, repost and checks, with posting
  split month x shard;
- LEDGER_FIRST_MONTH and LEDGER_TIMEZONE: the month partitions (the assets are declared with a placeholder,
  replaced here: ledger_pipeline/partitions.py) and the schedules' timezone (ledger_pipeline/schedules.py).
A change takes effect on the next code-location reload. (The production profile's shard list, LEDGER_SHARDS, is
still read when ledger_pipeline/assets/shards.py is imported, which only `defs()` does in that profile.)
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
# embedded_definitions gives them the settings' months.
ASSETS = [R2A_SOURCE, r2a_pl_monthly, journal, gl_accounts, gl_accounts_fresh, postings, reconciliation,
          reconciliation_drift]
CHECKS = [journal_balances, journal_complete, reconciliation_all_match, connections_ready,
          connections_preflight]


def embedded_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The embedded profile: one process runs the whole close (in-process executor), with the months and business
    timezone of `settings` (default: read now)."""
    settings = settings or load_settings()
    # Transient failures (an accounting system's outage, a DuckDB lock held by a stray process) are retried by the
    # instance's run_retries (dagster_home/dagster.yaml); posting is idempotent, so a retried run never double-posts.
    return dg.Definitions(
        assets=with_partitions(ASSETS, settings_partitions(settings)),
        asset_checks=CHECKS,
        jobs=[monthly_close_job, gl_accounts_job, reconciliation_drift_job, repost_job],
        schedules=build_schedules(settings.timezone),
        resources=default_resources(),
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The definitions of the profile LEDGER_PROFILE names, with the settings' months and timezone (all read now,
    not at import: a bad setting fails here, naming the variable)."""
    settings = load_settings()
    if settings.profile == "production":
        from ledger_pipeline.production import production_definitions

        return production_definitions(settings)
    return embedded_definitions(settings)
