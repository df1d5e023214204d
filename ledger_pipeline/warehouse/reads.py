"""What the assets read back from the DuckDB work file, in one place (SQL and minor-unit casts)."""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd

from ledger_pipeline.ledger.sink import CanonicalEntry, entries_from_frames
from ledger_pipeline.warehouse.store import window_where

ENTRIES_SQL = f"""SELECT tenant_id, period, custom_id, transaction_date, memo, currency, content_hash
                  FROM ledger.journal_entries WHERE {window_where()} ORDER BY tenant_id, period"""
LINES_SQL = f"""SELECT custom_id, line_no, account_id, account_number, CAST(debit * 100 AS BIGINT) AS debit_minor,
                       CAST(credit * 100 AS BIGINT) AS credit_minor, description
                FROM ledger.journal_lines WHERE {window_where()}"""


def entries_by_tenant(con: duckdb.DuckDBPyConnection, start: dt.date, end: dt.date
                      ) -> dict[str, list[CanonicalEntry]]:
    """The window's journal entries as canonical entries, per tenant."""
    out: dict[str, list[CanonicalEntry]] = {}
    for e in entries_from_frames(con.execute(ENTRIES_SQL, [start, end]).fetchdf(),
                                 con.execute(LINES_SQL, [start, end]).fetchdf()):
        out.setdefault(e.tenant_id, []).append(e)
    return out


def held_periods(con: duckdb.DuckDBPyConnection, start: dt.date, end: dt.date) -> dict[str, set[dt.date]]:
    """Tenant-months rejected upstream in the window: their remote entries are held as they are."""
    held: dict[str, set[dt.date]] = {}
    for tenant, period in con.execute(f"SELECT DISTINCT tenant_id, period FROM ledger.rejections "
                                      f"WHERE {window_where()} AND tenant_id IS NOT NULL", [start, end]).fetchall():
        held.setdefault(tenant, set()).add(period)
    return held


def chart_checks(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """system, tenant_id, checked_at of each tenant's last successful chart fetch."""
    return con.execute("SELECT system, tenant_id, MAX(checked_at) AS checked_at FROM accounting.gl_ingest_status "
                       "WHERE status = 'ok' GROUP BY ALL").fetchdf()


def chart(con: duckdb.DuckDBPyConnection, tenants: list[str] | None = None) -> pd.DataFrame:
    """The stored charts (every tenant's, or these tenants')."""
    sql = "SELECT * FROM accounting.gl_accounts"
    if tenants is None:
        return con.execute(sql).fetchdf()
    return con.execute(sql + " WHERE tenant_id IN (SELECT unnest(?::VARCHAR[]))", [tenants]).fetchdf()
