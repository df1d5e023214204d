"""Exchange rates in the operational database (`exchange_rates`), and their published copy `ledger.exchange_rates`.

`ledger-pipeline rates load FILE.csv` parses the whole file first (ledger/rates.py: every bad line reported with
its number, nothing loaded), then upserts every rate in one transaction: a rate already loaded for the same
(date, from_currency, to_currency) is replaced. `ledger-pipeline rates list` shows them. The lookup is pure:
`rate_table(engine).rate_for(from, to, date, tenant, period)` (exact date; `MissingRate` otherwise, never 1.0).

`publish_rates(con, engine)` writes `ledger.exchange_rates` in the DuckDB work file (call it inside the caller's
`transaction(con)`, before `Warehouse.publish()`), so analysts see the rates the runs used.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, and_, delete, insert, or_, select

from ledger_pipeline.ledger.rates import Rate, RateTable, parse_rates_csv
from ledger_pipeline.state.models import ExchangeRate

_CHUNK = 500  # pairs per DELETE statement (bound parameters stay well under every driver's limit)


@dataclass(frozen=True)
class LoadResult:
    loaded: int  # rates in the file
    replaced: int  # of which a rate for the same pair and date was already loaded
    source: str


@dataclass(frozen=True)
class StoredRate:
    rate: Rate
    source: str | None
    loaded_at: dt.datetime | None


def read_rates_file(path: Path) -> list[Rate]:
    """Every rate in a CSV file; RateFileError (line numbers) for any bad line, OSError if unreadable."""
    return parse_rates_csv(Path(path).read_text(encoding="utf-8-sig"), source=str(path))


def load_rates(engine: Engine, rates: list[Rate], source: str, now: dt.datetime | None = None) -> LoadResult:
    """Upsert `rates` in one transaction (all or nothing): an existing rate for the same date and pair is replaced."""
    table = ExchangeRate.__table__
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    keys = [r.key for r in rates]
    replaced = 0
    with engine.begin() as conn:
        for i in range(0, len(keys), _CHUNK):
            match = or_(*[and_(table.c.rate_date == d, table.c.from_currency == f, table.c.to_currency == t)
                          for d, f, t in keys[i:i + _CHUNK]])
            replaced += conn.execute(delete(table).where(match)).rowcount or 0
        if rates:
            conn.execute(insert(table), [
                {"rate_date": r.day, "from_currency": r.from_currency, "to_currency": r.to_currency,
                 "rate": format(r.rate, "f"), "source": source, "loaded_at": now} for r in rates])
    return LoadResult(len(rates), replaced, source)


def list_rates(engine: Engine, from_currency: str | None = None, to_currency: str | None = None,
               start: dt.date | None = None, end: dt.date | None = None) -> list[StoredRate]:
    """Loaded rates (optionally one base, one quote, dates in [start, end)), by date, then pair."""
    table = ExchangeRate.__table__
    stmt = select(table).order_by(table.c.rate_date, table.c.from_currency, table.c.to_currency)
    if from_currency:
        stmt = stmt.where(table.c.from_currency == from_currency)
    if to_currency:
        stmt = stmt.where(table.c.to_currency == to_currency)
    if start:
        stmt = stmt.where(table.c.rate_date >= start)
    if end:
        stmt = stmt.where(table.c.rate_date < end)
    with engine.connect() as conn:
        return [StoredRate(Rate(r["rate_date"], r["from_currency"], r["to_currency"], Decimal(r["rate"])),
                           r["source"], r["loaded_at"]) for r in conn.execute(stmt).mappings()]


def rate_table(engine: Engine, start: dt.date | None = None, end: dt.date | None = None) -> RateTable:
    """The loaded rates (optionally dates in [start, end)) for pure lookups: `.rate_for(from, to, day, ...)`."""
    return RateTable(s.rate for s in list_rates(engine, start=start, end=end))


RATES_COLUMNS = ["rate_date", "from_currency", "to_currency", "rate", "source", "loaded_at"]


def rates_frame(engine: Engine) -> pd.DataFrame:
    """Every loaded rate as a frame for `ledger.exchange_rates` (rate as exact text; DuckDB casts it exactly)."""
    rows = [{"rate_date": s.rate.day, "from_currency": s.rate.from_currency, "to_currency": s.rate.to_currency,
             "rate": format(s.rate.rate, "f"), "source": s.source, "loaded_at": s.loaded_at}
            for s in list_rates(engine)]
    return pd.DataFrame(rows, columns=RATES_COLUMNS)


def publish_rates(con, engine: Engine) -> int:  # noqa: ANN001  (a duckdb connection to the work file)
    """Replace `ledger.exchange_rates` in the DuckDB work file with every rate of the operational database; returns
    the row count. Call inside `transaction(con)` and publish the warehouse after."""
    from ledger_pipeline.warehouse.store import replace_rows

    return replace_rows(con, "ledger.exchange_rates", rates_frame(engine), "TRUE")
