"""The business calendar at the awkward instants, on a frozen clock (time-machine reaches Dagster's partition code
too): the product and Dagster agree on which month is complete whatever the wall clock says."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import time_machine

from ledger_pipeline import clock
from ledger_pipeline.definitions import defs
from ledger_pipeline.partitions import build_monthly_partitions
from ledger_pipeline.r2a.seed import default_start
from ledger_pipeline.settings import PROJECT_ROOT

UTC = dt.UTC
JKT = "Asia/Jakarta"

# (instant in UTC, the month in progress in Jakarta, the last complete month there)
AWKWARD = [
    (dt.datetime(2026, 11, 30, 16, 59, tzinfo=UTC), dt.date(2026, 11, 1), dt.date(2026, 10, 1)),  # 23:59 local
    (dt.datetime(2026, 11, 30, 17, 0, tzinfo=UTC), dt.date(2026, 12, 1), dt.date(2026, 11, 1)),   # midnight local
    (dt.datetime(2026, 11, 30, 18, 0, tzinfo=UTC), dt.date(2026, 12, 1), dt.date(2026, 11, 1)),   # last day 18:00 UTC
    (dt.datetime(2026, 12, 31, 23, 30, tzinfo=UTC), dt.date(2027, 1, 1), dt.date(2026, 12, 1)),   # 31 Dec 23:30 UTC
    (dt.datetime(2028, 2, 29, 12, 0, tzinfo=UTC), dt.date(2028, 2, 1), dt.date(2028, 1, 1)),      # 29 Feb 19:00 local
    (dt.datetime(2028, 2, 29, 17, 0, tzinfo=UTC), dt.date(2028, 3, 1), dt.date(2028, 2, 1)),      # 1 Mar 00:00 local
]


@pytest.mark.parametrize(("instant", "current", "last"), AWKWARD)
def test_months_at_awkward_instants(instant: dt.datetime, current: dt.date, last: dt.date) -> None:
    with time_machine.travel(instant, tick=False):
        assert clock.now(JKT).utcoffset() == dt.timedelta(hours=7)
        assert clock.current_month(JKT) == current
        assert clock.last_complete_month(JKT) == last
        assert clock.is_closed(last, JKT) and not clock.is_closed(current, JKT)
        assert clock.recent_months(3, JKT) == [clock.add_months(last, -2), clock.add_months(last, -1), last]
        assert default_start(12) == clock.add_months(last, -11)  # LEDGER_TIMEZONE unset: Jakarta


@pytest.mark.parametrize(("instant", "current", "last"), AWKWARD)
def test_dagster_partitions_agree_with_the_clock(instant: dt.datetime, current: dt.date, last: dt.date) -> None:
    partitions = build_monthly_partitions("2026-01", JKT)
    with time_machine.travel(instant, tick=False):
        assert partitions.get_last_partition_key() == clock.month_key(clock.last_complete_month(JKT)) == \
            f"{last:%Y-%m-%d}"
        assert clock.month_key(current) not in partitions.get_partition_keys()


def test_the_same_instant_in_another_timezone() -> None:
    with time_machine.travel(dt.datetime(2026, 11, 30, 18, 0, tzinfo=UTC), tick=False):
        assert clock.last_complete_month("America/New_York") == dt.date(2026, 10, 1)  # 13:00 on the 30th there
        assert clock.last_complete_month("UTC") == dt.date(2026, 10, 1)
        assert clock.last_complete_month("Pacific/Kiritimati") == dt.date(2026, 11, 1)  # UTC+14


def test_month_arithmetic() -> None:
    assert clock.add_months(dt.date(2026, 1, 1), -1) == dt.date(2025, 12, 1)
    assert clock.add_months(dt.date(2026, 12, 1), 1) == dt.date(2027, 1, 1)
    assert clock.add_months(dt.date(2026, 3, 1), -25) == dt.date(2024, 2, 1)
    assert clock.month_end(dt.date(2028, 2, 1)) == dt.date(2028, 2, 29)
    assert clock.month_end(dt.date(2027, 2, 1)) == dt.date(2027, 2, 28)
    assert clock.month_end(dt.date(2026, 12, 1)) == dt.date(2026, 12, 31)
    assert clock.months_between(dt.date(2025, 11, 1), dt.date(2026, 2, 1)) == [
        dt.date(2025, 11, 1), dt.date(2025, 12, 1), dt.date(2026, 1, 1), dt.date(2026, 2, 1)]
    assert clock.months_between(dt.date(2026, 2, 1), dt.date(2026, 1, 1)) == []
    assert clock.month_key("2025-11") == "2025-11-01" == clock.month_key("2025-11-01")
    assert clock.month_end_local(dt.date(2026, 11, 1), JKT) == dt.datetime(2026, 11, 30, 17, 0, tzinfo=UTC)
    for bad in ("March", "2025-13", "2025-11-15", "25-11"):
        with pytest.raises(clock.MonthError, match="expected YYYY-MM"):
            clock.parse_month(bad)


def test_an_open_month_is_refused_with_when_it_ends() -> None:
    with time_machine.travel(dt.datetime(2026, 11, 30, 17, 33, tzinfo=UTC), tick=False):  # 00:33 on 1 Dec local
        clock.ensure_closed([dt.date(2026, 11, 1)], JKT)  # November has ended in Jakarta
        with pytest.raises(clock.MonthError) as err:
            clock.ensure_closed([dt.date(2026, 11, 1), dt.date(2026, 12, 1)], JKT)
        message = str(err.value)
        assert "2026-12 has not ended in Asia/Jakarta" in message and "2027-01-01 00:00" in message
        assert "--allow-open-month" in message and "2026-11" in message
        clock.ensure_closed([dt.date(2026, 12, 1)], JKT, allow_open=True)
    late_on_the_30th = dt.datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # 23:00 on 30 Nov local
    with time_machine.travel(late_on_the_30th, tick=False), pytest.raises(clock.MonthError, match="2026-11 has not"):
        clock.ensure_closed([dt.date(2026, 11, 1)], JKT)


def test_timezone_is_validated() -> None:
    assert clock.business_timezone("Europe/London").key == "Europe/London"
    with pytest.raises(clock.MonthError, match="LEDGER_TIMEZONE='Mars/Olympus'"):
        clock.business_timezone("Mars/Olympus")


def test_first_month_is_recorded_once_and_never_moves(tmp_path: Path) -> None:
    with time_machine.travel(dt.datetime(2026, 11, 30, 18, 0, tzinfo=UTC), tick=False):
        default = clock.first_month(None, tmp_path, JKT)
        assert default.month == dt.date(2025, 12, 1) and default.source.startswith("default")
        assert clock.record_first_month(tmp_path, default.month)
    with time_machine.travel(dt.datetime(2027, 3, 10, 0, 0, tzinfo=UTC), tick=False):  # months later
        later = clock.first_month(None, tmp_path, JKT)
        assert later.month == dt.date(2025, 12, 1) and "recorded" in later.source
        assert not clock.record_first_month(tmp_path, dt.date(2026, 4, 1))  # recorded once
        assert clock.first_month("2024-01", tmp_path, JKT).month == dt.date(2024, 1, 1)  # the setting wins
        with pytest.raises(clock.MonthError, match=r"LEDGER_FIRST_MONTH is 2025-12 \(recorded in"):
            clock.ensure_after_first([dt.date(2025, 6, 1)], later)


def test_monthly_schedule_targets_the_last_complete_month_in_jakarta(monkeypatch: pytest.MonkeyPatch) -> None:
    # 02:00 on 3 Dec in Jakarta is 19:00 UTC on 2 Dec: the tick closes November
    monkeypatch.delenv("LEDGER_TIMEZONE", raising=False)
    monthly_close_schedule = defs().resolve_schedule_def("monthly_close_job_schedule")
    assert monthly_close_schedule.execution_timezone == JKT
    tick = dt.datetime(2026, 12, 3, 2, 0, tzinfo=clock.business_timezone(JKT))
    with time_machine.travel(tick + dt.timedelta(seconds=1), tick=False):
        context = dg.build_schedule_context(scheduled_execution_time=tick)
        requests = list(monthly_close_schedule.evaluate_tick(context).run_requests or [])
    assert [r.partition_key for r in requests] == ["2026-11-01"]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ledger_pipeline.cli", *args], env=env, capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=120)


def test_run_refuses_an_open_month_and_months_before_the_first(tmp_path: Path) -> None:
    """Through the CLI, before anything runs (exit 2): the current month (by the product's clock), a future month,
    and a month before the first partition, each with the fix."""
    env = {**os.environ, "LEDGER_DATA_DIR": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "home"),
           "R2A_DATABASE_URL": f"sqlite:///{tmp_path / 'r2a.sqlite'}", "LEDGER_FIRST_MONTH": "2024-01"}
    current = clock.current_month()
    out = _cli("run", "--month", f"{current:%Y-%m}", env=env)
    if out.returncode != 2:  # the month ended between the two reads of the clock
        current = clock.current_month()
        out = _cli("run", "--month", f"{current:%Y-%m}", env=env)
    assert out.returncode == 2 and f"{current:%Y-%m} has not ended in Asia/Jakarta" in out.stderr
    assert "--allow-open-month" in out.stderr
    out = _cli("run", "--month", "2024-06", "--to", "2999-03", env=env)
    assert out.returncode == 2 and "has not ended" in out.stderr
    out = _cli("run", "--month", "2023-06", env=env)
    assert out.returncode == 2 and "LEDGER_FIRST_MONTH is 2024-01 (LEDGER_FIRST_MONTH)" in out.stderr
    assert "set LEDGER_FIRST_MONTH=2023-06" in out.stderr
    out = _cli("run", "--month", "2024-13", env=env)
    assert out.returncode == 2 and "expected YYYY-MM" in out.stderr
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").iterdir())  # nothing ran
