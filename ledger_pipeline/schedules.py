"""Schedules, in Asia/Jakarta time. Both start STOPPED: turning on a schedule that posts to tenants' books is an
operator's decision (Dagster UI > Automation, or `dagster schedule start <name>`)."""

from __future__ import annotations

import dagster as dg

from ledger_pipeline.jobs import gl_accounts_job, monthly_close_job, reconciliation_drift_job
from ledger_pipeline.partitions import TIMEZONE
from ledger_pipeline.systems import SYSTEMS

# "Jurnal, QuickBooks Online, ... or Rootfi": every system of the registry, for the descriptions operators read
SYSTEM_NAMES = ", ".join(info.title for info in SYSTEMS.values())

# 02:00 on the 3rd: late R2a rows for the previous month have had two days to arrive.
monthly_close_schedule = dg.build_schedule_from_partitioned_job(
    monthly_close_job, day_of_month=3, hour_of_day=2, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Closes the previous month at 02:00 Asia/Jakarta on the 3rd (late R2a rows have had two days): "
                "one monthly_close_job run for that month's partition (extract, journal, post to each tenant's own "
                f"accounting system: {SYSTEM_NAMES}; reconcile). "
                "Ships stopped: turning it on writes to tenants' books, an operator's decision.",
)

gl_accounts_daily_schedule = dg.ScheduleDefinition(
    name="gl_accounts_daily_schedule", job=gl_accounts_job, cron_schedule="0 1 * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Refreshes every connected tenant's chart of accounts from its own accounting system "
                f"({SYSTEM_NAMES}) daily at 01:00 Asia/Jakarta "
                "(gl_accounts_job), so the journal builder resolves accounts against the current charts. "
                "Read-only towards the systems. Ships stopped.",
)

reconciliation_drift_schedule = dg.ScheduleDefinition(
    name="reconciliation_drift_schedule", job=reconciliation_drift_job, cron_schedule="30 * * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.STOPPED,
    description=f"Hourly at :30: reads the accounting systems' entries ({SYSTEM_NAMES}) for the last three "
                "months, least recently checked tenants first, within LEDGER_DRIFT_REQUESTS_PER_HOUR requests, and "
                "records drift made by people in accounting.reconciliation. Read-only, background priority. Ships "
                "stopped.",
)
