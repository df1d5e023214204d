"""Schedules, in Asia/Jakarta time. Both start STOPPED: turning on a schedule that posts to tenants' books is an
operator's decision (Dagster UI > Automation, or `dagster schedule start <name>`)."""

from __future__ import annotations

import dagster as dg

from ledger_pipeline.jobs import gl_accounts_job, monthly_close_job
from ledger_pipeline.partitions import TIMEZONE

# 02:00 on the 3rd: late R2a rows for the previous month have had two days to arrive.
monthly_close_schedule = dg.build_schedule_from_partitioned_job(
    monthly_close_job, day_of_month=3, hour_of_day=2, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

gl_accounts_daily_schedule = dg.ScheduleDefinition(
    name="gl_accounts_daily_schedule", job=gl_accounts_job, cron_schedule="0 1 * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.STOPPED,
)
