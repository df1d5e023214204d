"""Exact money: integer minor units in frames and in Python, Decimal at the edges, never float.

Every amount is in a currency, and a currency's *minor unit* is ISO 4217's number of decimal places: IDR and USD 2,
JPY and KRW 0, KWD and BHD 3. The codes and their minor units come from the `iso4217` package, which ships the
ISO 4217 list one table as published by SIX, the maintenance agency (see the README's "Currencies and exchange
rates" for why not babel or pycountry). An amount in minor units (`*_minor`, int) is in its own currency's minor
unit: 1000 JPY is 1000, 1000 IDR is 100000, 1000 KWD is 1000000.

The API (the sinks and the warehouse build on it):
- `minor_unit(currency) -> int`: decimal places, 0..3; `UnknownCurrency` for a code that is not ISO 4217 or that
  books cannot be kept in (no minor unit: XAU, XDR, XXX...; 4 decimals: CLF, UYW, beyond the ledger's scale 3).
- `to_minor(value, currency) -> int`: exact; refuses floats; `MoneyError` naming the currency and its minor unit
  for an amount finer than the currency allows (never rounded).
- `from_minor(minor, currency) -> Decimal`: quantized to the currency's exponent (JPY `Decimal('1000')`,
  KWD `Decimal('1.234')`).
- `format_amount(minor, currency) -> str`: thousands separators, the currency's decimals (`1,234.567`).
- `quantum(currency)`, `minor_per_unit(currency)`, `CURRENCIES` (code -> minor unit, every bookable code).

LEGACY: `to_minor`, `from_minor` and `format_amount` called without a currency use 2 decimals, as every caller did
before currencies had their own minor units (the accounting systems' clients and emulators still do). That is
correct only for 2-decimal currencies; pass the currency.

JSON has no decimal type, and `json.dumps` cannot write a Decimal as a bare number; `dumps_exact` does, and
`loads_exact` reads numbers back as Decimal, so an amount never passes through a binary float on the wire.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

import iso4217

MAX_EXPONENT = 3  # the ledger's DECIMAL scale in DuckDB: every currency with at most 3 decimals fits
LEGACY_EXPONENT = 2  # what a caller that passes no currency gets (deprecated: pass the currency)
# Kept for callers of the 2-decimal era; currency-aware code uses minor_per_unit(currency).
MINOR_PER_UNIT = 10**LEGACY_EXPONENT
SCALE = LEGACY_EXPONENT


class MoneyError(ValueError):
    """An amount that cannot be held exactly (a float, finer than its currency's minor unit, not a number)."""


class UnknownCurrency(MoneyError):
    """A currency code that is not in ISO 4217, or one books cannot be kept in (no minor unit, more than 3)."""


def _load() -> tuple[Mapping[str, int], Mapping[str, str]]:
    bookable: dict[str, int] = {}
    refused: dict[str, str] = {}
    for cur in iso4217.Currency:
        if cur.exponent is None:
            refused[cur.code] = (f"{cur.code} ({cur.currency_name}) is an ISO 4217 code with no minor unit (a "
                                 "precious metal, a fund or a testing code): books are not kept in it")
        elif cur.exponent > MAX_EXPONENT:
            refused[cur.code] = (f"{cur.code} ({cur.currency_name}) has {cur.exponent} decimal places in ISO 4217; "
                                 f"the ledger holds at most {MAX_EXPONENT}")
        else:
            bookable[cur.code] = int(cur.exponent)
    return MappingProxyType(dict(sorted(bookable.items()))), MappingProxyType(refused)


CURRENCIES, _REFUSED = _load()  # code -> minor unit (0..3), every ISO 4217 code books can be kept in
ISO_4217_PUBLISHED = iso4217.__published__  # the date of the ISO 4217 list the package ships
_QUANTUM = {e: Decimal(1).scaleb(-e) for e in range(MAX_EXPONENT + 1)}


def currency_problem(currency: object) -> str | None:
    """Why `currency` cannot be booked (for a person), or None when it can."""
    if isinstance(currency, str) and currency in CURRENCIES:
        return None
    if isinstance(currency, str) and currency in _REFUSED:
        return _REFUSED[currency]
    if isinstance(currency, str) and currency.strip().upper() in CURRENCIES:
        return f"{currency!r} is not written as an ISO 4217 code: use {currency.strip().upper()!r}"
    return (f"{currency!r} is not an ISO 4217 currency code (list of {ISO_4217_PUBLISHED:%Y-%m-%d}, "
            "e.g. IDR, USD, JPY, KWD)")


def minor_unit(currency: str) -> int:
    """ISO 4217 minor unit of `currency` (decimal places: JPY 0, IDR 2, KWD 3). Raises UnknownCurrency."""
    try:
        return CURRENCIES[currency]
    except (KeyError, TypeError):
        raise UnknownCurrency(currency_problem(currency)) from None


def minor_per_unit(currency: str) -> int:
    """Minor units in one unit: JPY 1, IDR 100, KWD 1000."""
    return 10 ** minor_unit(currency)


def quantum(currency: str) -> Decimal:
    """The smallest amount of `currency`: JPY Decimal('1'), IDR Decimal('0.01'), KWD Decimal('0.001')."""
    return _QUANTUM[minor_unit(currency)]


def _exponent(currency: str | None) -> int:
    return LEGACY_EXPONENT if currency is None else minor_unit(currency)


def _places(exponent: int) -> str:
    return "no decimals" if exponent == 0 else f"at most {exponent} decimal{'s' if exponent > 1 else ''}"


def to_minor(value: Decimal | int | str, currency: str | None = None) -> int:
    """Exact conversion of an amount of `currency` to its minor units: ('1000', 'JPY') -> 1000,
    ('12.5', 'IDR') -> 1250, ('1.234', 'KWD') -> 1234.

    Raises MoneyError for a float (never exact), a non-number, or an amount finer than the currency allows (e.g.
    1000.50 JPY: the message names the currency and its minor unit; nothing is rounded), UnknownCurrency for a code
    books cannot be kept in. LEGACY: no currency means 2 decimals."""
    if isinstance(value, bool | float):
        raise MoneyError(f"refusing a binary float as money: {value!r}")
    exponent = _exponent(currency)
    if isinstance(value, int):
        return value * 10**exponent
    try:
        dec = Decimal(value)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise MoneyError(f"not a number: {value!r}") from exc
    if not dec.is_finite():
        raise MoneyError(f"not a finite amount: {value!r}")
    scaled = dec.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        what = f"{currency} has minor unit {exponent} ({_places(exponent)})" if currency else \
            f"more than {exponent} decimals"
        raise MoneyError(f"{value!r} is finer than its currency allows: {what}")
    return int(scaled)


def from_minor(minor: int, currency: str | None = None) -> Decimal:
    """Minor units -> Decimal quantized to the currency's exponent: (1000, 'JPY') -> Decimal('1000'),
    (1234, 'KWD') -> Decimal('1.234'), (1250, 'IDR') -> Decimal('12.50'). Exact: no context rounding at any size.
    LEGACY: no currency means 2 decimals."""
    if isinstance(minor, bool | float):
        raise MoneyError(f"minor units are integers, not {minor!r}")
    exponent = _exponent(currency)
    return Decimal(int(minor)).scaleb(-exponent)


def format_amount(minor: int, currency: str | None = None) -> str:
    """Human format with thousands separators and the currency's decimals: (123456789, 'IDR') -> '1,234,567.89',
    (1234567, 'JPY') -> '1,234,567', (1234567, 'KWD') -> '1,234.567'. LEGACY: no currency means 2 decimals."""
    return f"{from_minor(minor, currency):,}"


_DEC_MARK = "\u0000dec:"
_DEC_RE = re.compile(r'"\\u0000dec:(-?[0-9]+(?:\.[0-9]+)?)"')


def _mark_decimals(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return f"{_DEC_MARK}{obj:f}"
    if isinstance(obj, float):
        raise MoneyError(f"refusing a binary float in a JSON body: {obj!r}")
    if isinstance(obj, dict):
        return {k: _mark_decimals(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_mark_decimals(v) for v in obj]
    return obj


def dumps_exact(obj: Any) -> str:
    """JSON with every Decimal written as a bare, exact number."""
    return _DEC_RE.sub(r"\1", json.dumps(_mark_decimals(obj), separators=(",", ":")))


def loads_exact(text: str | bytes) -> Any:
    """JSON with every non-integer number read as a Decimal."""
    return json.loads(text, parse_float=Decimal)
