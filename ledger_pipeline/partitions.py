"""The monthly partitions, shared by every partitioned asset, job and schedule."""

from __future__ import annotations

import datetime as dt

import dagster as dg

TIMEZONE = "Asia/Jakarta"
START = "2024-01-01"

monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=START, timezone=TIMEZONE)


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
