"""Exchange rates: `ledger-pipeline rates load|list` on the real operational database, all-or-nothing loads with
every bad line named, replacement on re-load, the exact-date lookup that never assumes 1.0, and the DuckDB copy."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from ledger_pipeline.cli import main
from ledger_pipeline.ledger.rates import (
    MissingRate,
    Rate,
    RateFileError,
    RateTable,
    convert_minor,
    parse_rates_csv,
    rate_for,
)
from ledger_pipeline.money import UnknownCurrency
from ledger_pipeline.rates import list_rates, load_rates, publish_rates, rate_table
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.warehouse import schema
from ledger_pipeline.warehouse.store import transaction

JAN31, FEB28 = dt.date(2025, 1, 31), dt.date(2025, 2, 28)
GOOD = """date,from_currency,to_currency,rate
2025-01-31,USD,IDR,16312.5
2025-01-31,JPY,IDR,104.123456789012345678
2025-01-31,IDR,USD,0.0000613
2025-02-28,KWD,USD,3.2468
"""
BAD = """date,from_currency,to_currency,rate
2025-01-31,USD,IDR,16400
2025-02-30,USD,IDR,16400
2025-01-31,XYZ,IDR,1
2025-01-31,USD,USD,1
2025-01-31,JPY,IDR,1.5e2
2025-01-31,JPY,IDR,0
2025-01-31,JPY,IDR,abc
2025-01-31,KWD,IDR,1.0000000000000000001
2025-01-31,KWD,IDR,52000

2025-01-31,KWD,IDR,52001
2025-01-31,EUR,IDR
"""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_parse_gives_exact_decimals_and_names_every_bad_line() -> None:
    rates = parse_rates_csv(GOOD)
    assert rates[0] == Rate(JAN31, "USD", "IDR", Decimal("16312.5"))
    assert rates[1].rate == Decimal("104.123456789012345678"), "18 decimals, exactly"
    with pytest.raises(RateFileError) as err:
        parse_rates_csv(BAD, "bad.csv")
    problems = dict(err.value.problems)
    assert set(problems) == {3, 4, 5, 6, 7, 8, 9, 12, 13}, problems
    assert "not a date as YYYY-MM-DD" in problems[3]
    assert "'XYZ' is not an ISO 4217 currency code" in problems[4]
    assert "both USD" in problems[5]
    assert "exponent notation" in problems[6]
    assert "must be positive" in problems[7]
    assert "not a number" in problems[8]
    assert "more than 18 decimal places" in problems[9]
    assert "a second rate for KWD -> IDR on 2025-01-31 (line 10 has one)" in problems[12]
    assert "the rate is empty" in problems[13]
    assert str(err.value).startswith("bad.csv: 9 problem(s), nothing was loaded")
    with pytest.raises(RateFileError, match="the header lacks to_currency, rate"):
        parse_rates_csv("date,from_currency,quote\n2025-01-31,USD,IDR\n")


def test_rate_for_is_the_entry_dates_rate_and_never_a_silent_one() -> None:
    table = RateTable(parse_rates_csv(GOOD))
    assert table.rate_for("USD", "IDR", JAN31) == Decimal("16312.5")
    assert rate_for(parse_rates_csv(GOOD), "KWD", "USD", FEB28) == Decimal("3.2468")
    assert table.rate_for("IDR", "IDR", JAN31) == 1, "the same currency is the identity"
    with pytest.raises(MissingRate) as err:
        table.rate_for("USD", "IDR", FEB28, tenant="t00007", period=dt.date(2025, 2, 1))  # only January's is loaded
    text = str(err.value)
    assert text.startswith("tenant t00007, 2025-02: no exchange rate from USD to IDR for 2025-02-28")
    assert "'2025-02-28,USD,IDR,<rate>'" in text and "ledger-pipeline rates load FILE.csv" in text
    with pytest.raises(MissingRate, match="from IDR to JPY"):
        table.rate_for("IDR", "JPY", JAN31)  # no inverse of JPY -> IDR (1/rate is not exact)
    with pytest.raises(UnknownCurrency):
        table.rate_for("USD", "XYZ", JAN31)


def test_convert_minor_rounds_once_to_the_targets_minor_unit() -> None:
    assert convert_minor(100_000, "JPY", "IDR", Decimal("104.123456789012345678")) == 10_412_345_68  # 100,000 JPY
    assert convert_minor(1_234, "KWD", "USD", Decimal("3.2468")) == 401  # 1.234 KWD = 4.0065512 USD -> 4.01
    assert convert_minor(-1_234, "KWD", "USD", Decimal("3.2468")) == -401
    assert convert_minor(5, "IDR", "JPY", Decimal("0.5")) == 0  # 0.025 JPY
    # exactly 500,000,000,000,000,000.499999999999999999 minor units: 28-digit Decimal arithmetic would round up
    assert convert_minor(10**18 - 1, "IDR", "USD", Decimal("0.500000000000000001")) == 5 * 10**17
    with pytest.raises(TypeError):
        convert_minor(1, "USD", "IDR", 16312.5)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgres"])
def ops_url(request, settings) -> str:  # noqa: ANN001
    if request.param == "sqlite":
        return settings.ops_database_url
    url = request.getfixturevalue("pg_url")
    request.getfixturevalue("monkeypatch").setenv("LEDGER_OPS_DATABASE_URL", url)
    return url


def test_load_replaces_per_pair_and_date_and_a_bad_file_loads_nothing(ops_url: str, tmp_path: Path) -> None:
    engine = make_ops_engine(ops_url)
    first = load_rates(engine, parse_rates_csv(GOOD), "good.csv", now=dt.datetime(2025, 2, 1))
    assert (first.loaded, first.replaced) == (4, 0)
    again = load_rates(engine, parse_rates_csv("date,from_currency,to_currency,rate\n2025-01-31,USD,IDR,16400.25\n"
                                               "2025-03-31,USD,IDR,16500\n"), "fix.csv")
    assert (again.loaded, again.replaced) == (2, 1)
    stored = {(s.rate.day, s.rate.from_currency, s.rate.to_currency): (s.rate.rate, s.source)
              for s in list_rates(engine)}
    assert len(stored) == 5
    assert stored[(JAN31, "USD", "IDR")] == (Decimal("16400.25"), "fix.csv"), "re-loading the pair and date replaces"
    assert stored[(JAN31, "JPY", "IDR")] == (Decimal("104.123456789012345678"), "good.csv"), "exact after storage"
    assert rate_table(engine).rate_for("USD", "IDR", JAN31) == Decimal("16400.25")
    assert [s.rate.from_currency for s in list_rates(engine, to_currency="IDR", start=JAN31, end=FEB28)] == [
        "JPY", "USD"]

    code, out = run("rates", "load", str(write(tmp_path, "bad.csv", BAD)))
    assert code == 1
    assert "9 problem(s), nothing was loaded" in out and "line 4: from_currency: 'XYZ'" in out
    assert len(list_rates(engine)) == 5 and rate_table(engine).rate_for("USD", "IDR", JAN31) == Decimal("16400.25")


def test_the_cli_loads_and_lists(settings, tmp_path: Path) -> None:  # noqa: ANN001
    code, out = run("rates", "list")
    assert code == 0 and "no exchange rates loaded: ledger-pipeline rates load FILE.csv" in out
    code, out = run("rates", "load", str(write(tmp_path, "rates.csv", GOOD)))
    assert code == 0 and "loaded 4 rate(s)" in out and "0 replaced" in out
    code, out = run("rates", "load", str(tmp_path / "rates.csv"))
    assert code == 0 and "4 replaced" in out
    code, out = run("rates", "list")
    assert code == 0
    assert "104.123456789012345678" in out and "0.0000613" in out and "16312.5" in out and "rates.csv" in out
    code, out = run("rates", "list", "--from", "KWD", "--month", "2025-02")
    assert code == 0 and "3.2468" in out and "16312.5" not in out
    code, out = run("rates", "list", "--month", "2025-13")
    assert code == 2 and "not a month" in out


def test_published_to_duckdb_exactly(settings) -> None:  # noqa: ANN001
    engine = make_ops_engine(settings.ops_database_url)
    load_rates(engine, parse_rates_csv(GOOD), "good.csv", now=dt.datetime(2025, 2, 1, 8))
    con = duckdb.connect()
    schema.ensure(con)
    with transaction(con):
        assert publish_rates(con, engine) == 4
    rows = con.execute("SELECT rate_date, from_currency, to_currency, rate, source, loaded_at "
                       "FROM ledger.exchange_rates ORDER BY 1, 2, 3").fetchall()
    assert rows[1] == (JAN31, "JPY", "IDR", Decimal("104.123456789012345678"), "good.csv", dt.datetime(2025, 2, 1, 8))
    assert [r[3] for r in rows] == [Decimal("0.0000613"), Decimal("104.123456789012345678"), Decimal("16312.5"),
                                    Decimal("3.2468")]
    with transaction(con):
        publish_rates(con, engine)  # replaces, never appends
    assert con.execute("SELECT COUNT(*) FROM ledger.exchange_rates").fetchone() == (4,)
