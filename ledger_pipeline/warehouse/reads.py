"""What the assets read back from the DuckDB work file (the stored charts), in one place."""

from __future__ import annotations

import duckdb
import pandas as pd


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
