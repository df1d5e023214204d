"""The monthly partitions, shared by every partitioned asset, job and schedule.

Months in the business timezone (LEDGER_TIMEZONE, see ledger_pipeline/clock.py) from the first month (clock.first_month:
LEDGER_FIRST_MONTH, else the embedded setup's recorded month) to the last complete month: Dagster offers exactly the
months `clock.last_complete_month` says have ended, because both read the same timezone and the same clock.
Partitions are built when the definitions load: a changed LEDGER_FIRST_MONTH or LEDGER_TIMEZONE takes effect on the
next code-location (re)load.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from ledger_pipeline import clock
from ledger_pipeline.settings import load_settings

month_key = clock.month_key  # kept importable from here ('2025-11' -> '2025-11-01')


def build_monthly_partitions(first_month: str, timezone: str = clock.DEFAULT_TIMEZONE
                             ) -> dg.MonthlyPartitionsDefinition:
    """Monthly partitions from `first_month` ('YYYY-MM') to the last complete month in `timezone`."""
    return dg.MonthlyPartitionsDefinition(start_date=clock.month_key(first_month), timezone=timezone)


def window_dates(start: dt.datetime, end: dt.datetime) -> tuple[dt.date, dt.date]:
    """A partition time window as [first day, first day after) local business dates."""
    return start.date(), end.date()


_settings = load_settings()
TIMEZONE = _settings.timezone
START = clock.month_key(_settings.first_month)
monthly_partitions = build_monthly_partitions(START, TIMEZONE)


def closed_window(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """The run's partition window as [first day, first day after), refused (MonthError, the step fails naming the
    month, when it ends locally and the override) when a month in it has not ended in the business timezone, unless
    the run carries the `ledger/allow_open_month` tag (`ledger-pipeline run --allow-open-month`)."""
    start, end = window_dates(*context.partition_time_window)
    allow = context.run.tags.get(clock.ALLOW_OPEN_MONTH_TAG, "").lower() == "true"
    clock.ensure_closed(clock.months_between(start, end - dt.timedelta(days=1)), TIMEZONE, allow_open=allow)
    return start, end
