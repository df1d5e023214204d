"""Exact money: integer minor units (sen) in frames and in Python, Decimal at the edges, never float.

JSON has no decimal type, and `json.dumps` cannot write a Decimal as a bare number; `dumps_exact` does, and
`loads_exact` reads numbers back as Decimal, so an amount never passes through a binary float on the wire.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

MINOR_PER_UNIT = 100
SCALE = 2


class MoneyError(ValueError):
    """An amount that cannot be held exactly (float, more than 2 decimals, not a number)."""


def to_minor(value: Decimal | int | str) -> int:
    """Exact conversion to minor units; refuses floats and sub-sen precision."""
    if isinstance(value, bool | float):
        raise MoneyError(f"refusing a binary float as money: {value!r}")
    if isinstance(value, int):
        return value * MINOR_PER_UNIT
    try:
        dec = Decimal(value)
    except (InvalidOperation, TypeError) as exc:
        raise MoneyError(f"not a number: {value!r}") from exc
    if not dec.is_finite():
        raise MoneyError(f"not a finite amount: {value!r}")
    scaled = dec * MINOR_PER_UNIT
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"more than {SCALE} decimals: {value!r}")
    return int(scaled)


def from_minor(minor: int) -> Decimal:
    return (Decimal(int(minor)) / MINOR_PER_UNIT).quantize(Decimal("0.01"))


def format_amount(minor: int) -> str:
    """Human format with thousands separators, e.g. 1,234,567.89."""
    return f"{from_minor(minor):,.2f}"


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
