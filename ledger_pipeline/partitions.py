"""The monthly partitions, shared by every partitioned asset, job and schedule.

The first month is LEDGER_FIRST_MONTH (settings.resolve_first_month: by default the first month the demo seeds, the
12 months ending last month), so the UI shows no month as missing that cannot have data. Partitions are built when
the definitions are imported: a changed LEDGER_FIRST_MONTH takes effect on the next code-location (re)load.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from ledger_pipeline.settings import load_settings

TIMEZONE = "Asia/Jakarta"


def build_monthly_partitions(first_month: str) -> dg.MonthlyPartitionsDefinition:
    """Monthly partitions from `first_month` ('YYYY-MM') to the last complete month, Asia/Jakarta."""
    return dg.MonthlyPartitionsDefinition(start_date=month_key(first_month), timezone=TIMEZONE)


def month_key(month: str) -> str:
    """'2025-11' or '2025-11-01' -> the partition key '2025-11-01'."""
    try:
        parsed = dt.datetime.strptime(month[:7], "%Y-%m")
    except ValueError as exc:
        raise ValueError(f"not a month: {month!r} (expected YYYY-MM)") from exc
    return parsed.strftime("%Y-%m-01")


def window_dates(start: dt.datetime, end: dt.datetime) -> tuple[dt.date, dt.date]:
    """A partition time window as [first day, first day after) dates in Jakarta time."""
    return start.date(), end.date()


START = month_key(load_settings().first_month)
monthly_partitions = build_monthly_partitions(START)
