"""The window's journal entries in the operational database: what every posting worker reads (one SQL query per
window, or per shard), whichever host built them."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
from sqlalchemy import Engine, delete, insert, select, update

from ledger_pipeline.ledger.sink import CanonicalEntry, CanonicalLine, custom_id_for
from ledger_pipeline.state.models import LedgerEntry


def save_window(engine: Engine, start: dt.date, end: dt.date, entries: list[CanonicalEntry],
                rejected: pd.DataFrame, run_id: str | None = None) -> None:
    """Replace the window: every entry, plus a row per tenant-month rejected upstream (its remote entry is held)."""
    rows = [{"custom_id": e.custom_id, "tenant_id": e.tenant_id, "period": e.period, "rejected": 0,
             "transaction_date": e.transaction_date, "memo": e.memo, "currency": e.currency,
             "content_hash": e.content_hash, "run_id": run_id, "lines": _lines_json(e)} for e in entries]
    seen = {r["custom_id"] for r in rows}
    for tenant, period in rejected[["tenant_id", "period"]].dropna().drop_duplicates().itertuples(index=False):
        period = pd.Timestamp(period).date()
        cid = custom_id_for(tenant, period)
        if cid not in seen:
            seen.add(cid)
            rows.append({"custom_id": cid, "tenant_id": tenant, "period": period, "rejected": 1, "run_id": run_id,
                         "transaction_date": None, "memo": None, "currency": None, "content_hash": None,
                         "lines": None})
    with engine.begin() as conn:
        conn.execute(delete(LedgerEntry).where(LedgerEntry.period >= start, LedgerEntry.period < end))
        if rows:
            conn.execute(insert(LedgerEntry), rows)


def save_lines(engine: Engine, entries: list[CanonicalEntry]) -> None:
    """Store these entries' lines as they are now (the chart retry gives them the chart's current account ids)."""
    with engine.begin() as conn:
        for e in entries:
            conn.execute(update(LedgerEntry).where(LedgerEntry.custom_id == e.custom_id).values(lines=_lines_json(e)))


def _lines_json(e: CanonicalEntry) -> str:
    return json.dumps([[ln.line_no, ln.account_id, ln.account_number, ln.debit_minor, ln.credit_minor,
                        ln.description] for ln in e.lines])


def load_window(engine: Engine, start: dt.date, end: dt.date, tenants: list[str] | None = None
                ) -> tuple[dict[str, list[CanonicalEntry]], dict[str, set[dt.date]]]:
    """(entries per tenant, periods held per tenant) for [start, end), optionally for some tenants only."""
    table = LedgerEntry.__table__
    stmt = select(table).where(table.c.period >= start, table.c.period < end).order_by(table.c.tenant_id,
                                                                                        table.c.period)
    if tenants is not None:
        stmt = stmt.where(table.c.tenant_id.in_(tenants))
    entries: dict[str, list[CanonicalEntry]] = {}
    held: dict[str, set[dt.date]] = {}
    with engine.connect() as conn:
        for r in conn.execute(stmt).mappings():
            if r["rejected"]:
                held.setdefault(r["tenant_id"], set()).add(r["period"])
                continue
            lines = tuple(CanonicalLine(int(n), str(a), str(num), int(d), int(c), str(text))
                          for n, a, num, d, c, text in json.loads(r["lines"]))
            entries.setdefault(r["tenant_id"], []).append(CanonicalEntry(
                r["tenant_id"], r["period"], r["custom_id"], r["transaction_date"], r["memo"], r["currency"],
                r["content_hash"], lines))
    return entries, held
