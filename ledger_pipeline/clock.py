"""The business calendar: one timezone, one clock, month keys and month ranges. Every other module asks here.

- **The business timezone** is `LEDGER_TIMEZONE` (an IANA name, default Asia/Jakarta, validated with the standard
  library's `zoneinfo`, which reads the IANA database: the system's, or the `tzdata` package where there is none).
  A month is a month in that timezone: November closes at 2026-12-01 00:00 local time, whatever the machine's own
  zone or UTC say. R2a's `txn_date` is a local business date (a calendar date in this timezone, no time of day).
- **One clock**: `now()` is the only place that reads the time for month decisions. Tests freeze it in-process with
  `time-machine`, which also reaches Dagster's partition code (both read `datetime.now`), so the product and the
  tests can never disagree about which month is complete.
- **Months** are `datetime.date`s on the first day of the month (`period` in every table); partition keys are
  `'YYYY-MM-01'` strings; operators type `'YYYY-MM'`. `month_of`, `add_months`, `months_between`, `month_key`,
  `parse_month` convert between them.
- **A month is closed once it has ended locally** (`month_end_local(m) <= now()`): the last complete month is the
  one before the current one. `ensure_closed` is the rule the CLI, the assets and backfills share; a deliberate early
  close passes `allow_open=True` (`ledger-pipeline run --allow-open-month`, recorded in the run's tags).
- **The first month** of the partitions (`first_month`): `LEDGER_FIRST_MONTH` when set (required in the production
  profile); in the embedded setup the month recorded in `<LEDGER_DATA_DIR>/first_month` when data was first seeded
  or the first close ran, so it never moves under a running deployment; before anything is recorded, the first of
  the 12 months ending with the last complete month (what `seed` and `demo` generate).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Jakarta"
DEFAULT_HISTORY_MONTHS = 12  # the embedded default first month: 12 months ending with the last complete one
FIRST_MONTH_FILE = "first_month"  # in LEDGER_DATA_DIR: the embedded setup's recorded first month
ALLOW_OPEN_MONTH_TAG = "ledger/allow_open_month"  # run tag of a deliberate early close

_MONTH_RE = re.compile(r"^\s*(\d{4})-(\d{2})(?:-(\d{2}))?\s*$")


class MonthError(ValueError):
    """A month that cannot be closed (not ended yet, before the first partition) or is not a month at all."""


def business_timezone(name: str | None = None) -> ZoneInfo:
    """The IANA zone `name`; None: LEDGER_TIMEZONE (the variable settings.py documents), default Asia/Jakarta.
    Raises MonthError naming LEDGER_TIMEZONE when the name is unknown."""
    name = (name or os.environ.get("LEDGER_TIMEZONE") or DEFAULT_TIMEZONE).strip()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise MonthError(f"LEDGER_TIMEZONE={name!r} is not an IANA timezone name (e.g. Asia/Jakarta, "
                         "Europe/London, America/New_York); fix the setting") from exc


def now(tz: ZoneInfo | str | None = None) -> dt.datetime:
    """The current instant as an aware datetime in the business timezone (the one clock the product reads)."""
    zone = tz if isinstance(tz, ZoneInfo) else business_timezone(tz)
    return dt.datetime.now(dt.UTC).astimezone(zone)


def utc_now_naive() -> dt.datetime:
    """Now in UTC without tzinfo: the timestamps stored in the operational database and DuckDB."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def month_of(day: dt.date | dt.datetime) -> dt.date:
    """The first day of the month holding `day` (a datetime is taken in its own timezone)."""
    return dt.date(day.year, day.month, 1)


def add_months(month: dt.date, n: int) -> dt.date:
    """The first day of the month `n` months after (negative: before) `month`'s month."""
    index = month.year * 12 + month.month - 1 + n
    return dt.date(index // 12, index % 12 + 1, 1)


def months_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every month from `first` to `last`, both included (empty when last < first)."""
    first, last = month_of(first), month_of(last)
    count = (last.year - first.year) * 12 + last.month - first.month + 1
    return [add_months(first, i) for i in range(max(count, 0))]


def month_end(month: dt.date) -> dt.date:
    """The last day of the month (an entry's `transaction_date`)."""
    return add_months(month_of(month), 1) - dt.timedelta(days=1)


def parse_month(value: str | dt.date, what: str = "month") -> dt.date:
    """'2025-11', '2025-11-01' or a date -> date(2025, 11, 1). Raises MonthError (expected YYYY-MM)."""
    if isinstance(value, dt.date):
        return month_of(value)
    match = _MONTH_RE.match(str(value))
    if not match or not 1 <= int(match.group(2)) <= 12 or (match.group(3) and match.group(3) != "01"):
        raise MonthError(f"{what}: {value!r} is not a month (expected YYYY-MM)")
    return dt.date(int(match.group(1)), int(match.group(2)), 1)


def month_key(value: str | dt.date) -> str:
    """A month as its partition key: '2025-11' -> '2025-11-01'."""
    return f"{parse_month(value):%Y-%m-01}"


def month_end_local(month: dt.date, tz: ZoneInfo | str | None = None) -> dt.datetime:
    """The instant the month ends in the business timezone (00:00 local on the next month's first day)."""
    zone = tz if isinstance(tz, ZoneInfo) else business_timezone(tz)
    nxt = add_months(month_of(month), 1)
    return dt.datetime(nxt.year, nxt.month, 1, tzinfo=zone)


def current_month(tz: ZoneInfo | str | None = None, at: dt.datetime | None = None) -> dt.date:
    """The month in progress in the business timezone (`at` defaults to now())."""
    zone = tz if isinstance(tz, ZoneInfo) else business_timezone(tz)
    return month_of((at or now(zone)).astimezone(zone))


def last_complete_month(tz: ZoneInfo | str | None = None, at: dt.datetime | None = None) -> dt.date:
    """The latest month that has ended in the business timezone."""
    return add_months(current_month(tz, at), -1)


def recent_months(count: int, tz: ZoneInfo | str | None = None, at: dt.datetime | None = None) -> list[dt.date]:
    """The `count` complete months ending with the last complete month, oldest first."""
    last = last_complete_month(tz, at)
    return months_between(add_months(last, 1 - count), last)


def is_closed(month: dt.date, tz: ZoneInfo | str | None = None, at: dt.datetime | None = None) -> bool:
    zone = tz if isinstance(tz, ZoneInfo) else business_timezone(tz)
    return month_end_local(month, zone) <= (at or now(zone))


def ensure_closed(months: list[dt.date], tz: ZoneInfo | str | None = None, *, allow_open: bool = False,
                  at: dt.datetime | None = None) -> None:
    """Refuse months that have not ended in the business timezone (unless `allow_open`). Raises MonthError naming
    the month, when it ends locally and the override."""
    zone = tz if isinstance(tz, ZoneInfo) else business_timezone(tz)
    instant = at or now(zone)
    open_ = [m for m in months if not is_closed(m, zone, instant)]
    if open_ and not allow_open:
        m = open_[0]
        raise MonthError(
            f"{m:%Y-%m} has not ended in {zone.key}: it ends at {month_end_local(m, zone):%Y-%m-%d %H:%M} "
            f"{zone.key} (now {instant:%Y-%m-%d %H:%M}); the last complete month is "
            f"{last_complete_month(zone, instant):%Y-%m}. Closing an open month posts entries for days that have not "
            "happened yet; for a deliberate early close pass --allow-open-month (recorded in the run's tags)")


@dataclass(frozen=True)
class FirstMonth:
    """The first monthly partition and where it came from (for error messages)."""

    month: dt.date
    source: str  # "LEDGER_FIRST_MONTH", "recorded in <file>" or "default (not yet recorded)"

    def describe(self) -> str:
        return f"LEDGER_FIRST_MONTH is {self.month:%Y-%m} ({self.source})"


def first_month(env_value: str | None, data_dir: Path, tz: ZoneInfo | str | None = None,
                at: dt.datetime | None = None) -> FirstMonth:
    """LEDGER_FIRST_MONTH, else the month recorded in the data dir, else the default (not recorded here: see
    `record_first_month`, called when data is first seeded and when a close first runs)."""
    if env_value and env_value.strip():
        return FirstMonth(parse_month(env_value, "LEDGER_FIRST_MONTH"), "LEDGER_FIRST_MONTH")
    path = Path(data_dir) / FIRST_MONTH_FILE
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    if text:
        return FirstMonth(parse_month(text, str(path)), f"recorded in {path}")
    return FirstMonth(add_months(last_complete_month(tz, at), 1 - DEFAULT_HISTORY_MONTHS),
                      "default: 12 months ending with the last complete month, not yet recorded")


def record_first_month(data_dir: Path, month: dt.date) -> bool:
    """Record the embedded setup's first month once (never moved afterwards). True when this call recorded it."""
    path = Path(data_dir) / FIRST_MONTH_FILE
    if path.exists() and path.read_text().strip():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{month_of(month):%Y-%m}\n")
    tmp.replace(path)
    return True


def ensure_after_first(months: list[dt.date], first: FirstMonth) -> None:
    """Refuse months before the first partition, naming LEDGER_FIRST_MONTH, its value and the fix."""
    early = [m for m in months if m < first.month]
    if early:
        raise MonthError(
            f"{early[0]:%Y-%m} is before the first monthly partition: {first.describe()}. To close earlier months, "
            f"set LEDGER_FIRST_MONTH={early[0]:%Y-%m} (or earlier) and reload the code location")
