"""Exchange rates, pure: parsing a rates CSV (every problem with its line number), and the lookup `rate_for`.

A rate says how many units of `to_currency` (the quote) one unit of `from_currency` (the base) buys on a date:
`2025-01-31,USD,IDR,16312.5` is 1 USD = 16,312.5 IDR. Rates are exact decimals (text in the CSV, a Decimal here,
text in the operational database, DECIMAL(38,18) in DuckDB), never floats.

Lookup policy: **the rate for the entry's own date, exactly** (an entry is dated the last day of its month, so the
month-end closing rate dated that day). No "latest before" fallback, no inverse (1/rate is not exact), no
triangulation, and never a silent 1.0: a missing rate is a `MissingRate` naming tenant, period, both currencies,
the date and the fix (`ledger-pipeline rates load`). The same currency on both sides is the identity (exactly 1).

The I/O half (the `exchange_rates` table, `ledger-pipeline rates load|list`, publishing `ledger.exchange_rates`)
is ledger_pipeline/rates.py.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext

from ledger_pipeline.money import currency_problem, minor_unit

COLUMNS = ("date", "from_currency", "to_currency", "rate")
MAX_RATE_DECIMALS = 18  # DuckDB's DECIMAL(38,18) holds every accepted rate exactly
MAX_RATE_INTEGER_DIGITS = 20
LOAD_COMMAND = "ledger-pipeline rates load FILE.csv"


@dataclass(frozen=True)
class Rate:
    """1 `from_currency` = `rate` `to_currency` on `day`."""

    day: dt.date
    from_currency: str
    to_currency: str
    rate: Decimal

    @property
    def key(self) -> tuple[dt.date, str, str]:
        return self.day, self.from_currency, self.to_currency


class RateFileError(ValueError):
    """A rates file with problems: `problems` is [(line number, what is wrong)]; nothing was loaded."""

    def __init__(self, source: str, problems: list[tuple[int, str]]):
        self.source = source
        self.problems = problems
        shown = "\n".join(f"  line {n}: {why}" for n, why in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{source}: {len(problems)} problem(s), nothing was loaded. Fix these lines and load the "
                         f"file again:\n{shown}{more}")


class MissingRate(LookupError):
    """No exchange rate for an entry's date: names tenant, period, both currencies, the date and the fix."""

    def __init__(self, from_currency: str, to_currency: str, day: dt.date, tenant: str | None = None,
                 period: dt.date | None = None):
        self.from_currency, self.to_currency, self.day = from_currency, to_currency, day
        self.tenant, self.period = tenant, period
        who = f"tenant {tenant}, {period:%Y-%m}: " if tenant and period else (f"tenant {tenant}: " if tenant else "")
        super().__init__(
            f"{who}no exchange rate from {from_currency} to {to_currency} for {day.isoformat()} (the entry's date; "
            f"rates are looked up for that exact date, never assumed). To fix: add the line "
            f"'{day.isoformat()},{from_currency},{to_currency},<rate>' (1 {from_currency} = <rate> {to_currency}) to "
            f"a CSV with the header {','.join(COLUMNS)}, run `{LOAD_COMMAND}`, then re-run the month.")


def parse_rate(text: str) -> Decimal:
    """Exact decimal text -> Decimal; ValueError (for a person) when it is not a positive plain decimal that fits
    DECIMAL(38,18)."""
    raw = text.strip()
    if not raw:
        raise ValueError("the rate is empty")
    if any(c in raw for c in "eE"):
        raise ValueError(f"rate {raw!r} is in exponent notation: write it as a plain decimal (e.g. 0.0000613)")
    if "," in raw or "_" in raw:
        raise ValueError(f"rate {raw!r} has a separator: write it as a plain decimal with '.' (e.g. 16312.5)")
    try:
        rate = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"rate {raw!r} is not a number") from None
    if not rate.is_finite():
        raise ValueError(f"rate {raw!r} is not a finite number")
    if rate <= 0:
        raise ValueError(f"rate {raw!r} must be positive")
    sign, digits, exponent = rate.as_tuple()
    if -exponent > MAX_RATE_DECIMALS:
        raise ValueError(f"rate {raw!r} has more than {MAX_RATE_DECIMALS} decimal places")
    if rate.adjusted() >= MAX_RATE_INTEGER_DIGITS:
        raise ValueError(f"rate {raw!r} has more than {MAX_RATE_INTEGER_DIGITS} integer digits")
    return rate


def parse_rates_csv(text: str, source: str = "rates file") -> list[Rate]:
    """Every rate of a CSV (header `date,from_currency,to_currency,rate`, in any column order, more columns
    ignored). Raises RateFileError listing every bad line (1-based, the header is line 1): a date that is not
    YYYY-MM-DD, a currency that is not ISO 4217, the same currency twice, a rate that is not a positive exact
    decimal, or the same (date, from, to) twice (one rate per pair and date)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise RateFileError(source, [(1, f"the header lacks {', '.join(missing)} (expected {','.join(COLUMNS)}; "
                                         f"found {','.join(header) or 'nothing'})")])
    reader.fieldnames = header
    problems: list[tuple[int, str]] = []
    rates: list[Rate] = []
    seen: dict[tuple[dt.date, str, str], int] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            problems.append((line, "more fields than the header has"))
            continue
        values = {c: (row.get(c) or "").strip() for c in COLUMNS}
        if not any(values.values()):
            continue  # a blank line
        why: list[str] = []
        try:
            day = dt.date.fromisoformat(values["date"]) if len(values["date"]) == 10 else None
        except ValueError:
            day = None
        if day is None:
            why.append(f"date {values['date']!r} is not a date as YYYY-MM-DD")
        for col in ("from_currency", "to_currency"):
            if (problem := currency_problem(values[col])) is not None:
                why.append(f"{col}: {problem}")
        if values["from_currency"] == values["to_currency"] and values["from_currency"]:
            why.append(f"from_currency and to_currency are both {values['from_currency']} (a currency needs no rate "
                       "to itself)")
        try:
            rate = parse_rate(values["rate"])
        except ValueError as exc:
            why.append(str(exc))
        if why:
            problems.append((line, "; ".join(why)))
            continue
        r = Rate(day, values["from_currency"], values["to_currency"], rate)
        if r.key in seen:
            problems.append((line, f"a second rate for {r.from_currency} -> {r.to_currency} on {day} (line "
                                   f"{seen[r.key]} has one): one rate per pair and date"))
            continue
        seen[r.key] = line
        rates.append(r)
    if problems:
        raise RateFileError(source, problems)
    return rates


class RateTable:
    """The loaded rates, for lookups (pure; build it from `ledger_pipeline.rates.rate_table(engine)`)."""

    def __init__(self, rates: Iterable[Rate]):
        self._by_key = {r.key: r.rate for r in rates}

    def __len__(self) -> int:
        return len(self._by_key)

    def rate_for(self, from_currency: str, to_currency: str, day: dt.date, tenant: str | None = None,
                 period: dt.date | None = None) -> Decimal:
        """1 `from_currency` = result `to_currency` on `day` exactly (Decimal(1) for the same currency). Raises
        MissingRate (naming tenant and period when given) when no rate is loaded for that pair and date."""
        minor_unit(from_currency), minor_unit(to_currency)  # UnknownCurrency for a code books cannot use
        if from_currency == to_currency:
            return Decimal(1)
        try:
            return self._by_key[(day, from_currency, to_currency)]
        except KeyError:
            raise MissingRate(from_currency, to_currency, day, tenant, period) from None


def rate_for(rates: RateTable | Iterable[Rate], from_currency: str, to_currency: str, day: dt.date,
             tenant: str | None = None, period: dt.date | None = None) -> Decimal:
    """The rate for `day` exactly (see RateTable.rate_for)."""
    table = rates if isinstance(rates, RateTable) else RateTable(rates)
    return table.rate_for(from_currency, to_currency, day, tenant, period)


def convert_minor(minor: int, from_currency: str, to_currency: str, rate: Decimal) -> int:
    """`minor` units of `from_currency` at `rate` -> minor units of `to_currency`, rounded half away from zero to
    the target's minor unit (the one rounding a conversion needs; exact decimal arithmetic up to it). A balanced
    entry converted line by line may need a rounding line: that is the posting side's concern."""
    if isinstance(rate, float) or not isinstance(rate, Decimal):
        raise TypeError(f"a rate is a Decimal, not {rate!r}")
    with localcontext() as ctx:
        ctx.prec = 80  # 19 digits of minor units times 38 of a rate: exact before the one rounding
        value = Decimal(int(minor)).scaleb(minor_unit(to_currency) - minor_unit(from_currency)) * rate
        return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))
