"""Schedules, in the business timezone (LEDGER_TIMEZONE, default Asia/Jakarta). Every one starts STOPPED: turning on
a schedule that posts to tenants' books is an operator's decision (Dagster UI > Automation, or
`dagster schedule start <name>`).

Built when the definitions are (`definitions.defs()`), never at import: the timezone is a setting.
"""

from __future__ import annotations

import dagster as dg

from ledger_pipeline.jobs import gl_accounts_job, monthly_close_job, reconciliation_drift_job
from ledger_pipeline.systems import SYSTEMS

# "Jurnal, QuickBooks Online, ... or Rootfi": every system of the registry, for the descriptions operators read
SYSTEM_NAMES = ", ".join(info.title for info in SYSTEMS.values())


def _monthly_close(timezone: str):  # an unresolved schedule (its type is not public dagster API)
    """02:00 on the 3rd: late R2a rows for the previous month have had two days to arrive. The job has no partitions
    of its own, so the cron and execution timezone come from its assets' partitions (the settings' months, in the
    business timezone) when the definitions resolve."""
    return dg.build_schedule_from_partitioned_job(
        monthly_close_job, day_of_month=3, hour_of_day=2, minute_of_hour=0,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Closes the previous month at 02:00 {timezone} on the 3rd (late R2a rows have had two days): "
                    "one monthly_close_job run for that month's partition (extract, journal, post to each tenant's "
                    f"own accounting system: {SYSTEM_NAMES}; reconcile). "
                    "Ships stopped: turning it on writes to tenants' books, an operator's decision.",
    )


def _gl_accounts_daily(timezone: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="gl_accounts_daily_schedule", job=gl_accounts_job, cron_schedule="0 1 * * *",
        execution_timezone=timezone, default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Refreshes every connected tenant's chart of accounts from its own accounting system "
                    f"({SYSTEM_NAMES}) daily at 01:00 {timezone} "
                    "(gl_accounts_job), so the journal builder resolves accounts against the current charts. "
                    "Read-only towards the systems. Ships stopped.",
    )


def _reconciliation_drift(timezone: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="reconciliation_drift_schedule", job=reconciliation_drift_job, cron_schedule="30 * * * *",
        execution_timezone=timezone, default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Hourly at :30: reads the accounting systems' entries ({SYSTEM_NAMES}) for the last three "
                    "months, least recently checked tenants first, within LEDGER_DRIFT_REQUESTS_PER_HOUR requests, "
                    "and records drift made by people in accounting.reconciliation. Read-only, background priority. "
                    "Ships stopped.",
    )


def build_schedules(timezone: str) -> list:
    """Every schedule (the same in both profiles) in the business timezone `timezone` (Settings.timezone)."""
    return [_monthly_close(timezone), _gl_accounts_daily(timezone), _reconciliation_drift(timezone)]
