"""Reads of the DuckDB work file, and the window predicate the assets share, in one place. Reads only; writes are
warehouse/store.py's `transaction` and `replace_rows`.

`chart` and `chart_checks` read the analysts' copy of the charts; the pipeline decides from the operational
database's (ledger_pipeline/charts.py `load_charts`, `chart_checks`). They stay for `warehouse.reads` (until 0.4.0).
"""

from __future__ import annotations

import duckdb
import pandas as pd


def window_where(column: str = "period") -> str:
    """`column` in [start, end): bind (start, end) as two date parameters."""
    return f"{column} >= CAST(? AS DATE) AND {column} < CAST(? AS DATE)"


def chart_checks(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """system, tenant_id, checked_at of each tenant's last successful chart fetch (the analysts' copy)."""
    return con.execute("SELECT system, tenant_id, MAX(checked_at) AS checked_at FROM accounting.gl_ingest_status "
                       "WHERE status = 'ok' GROUP BY ALL").fetchdf()


def chart(con: duckdb.DuckDBPyConnection, tenants: list[str] | None = None) -> pd.DataFrame:
    """The charts' DuckDB copy (every tenant's, or these tenants')."""
    sql = "SELECT * FROM accounting.gl_accounts"
    if tenants is None:
        return con.execute(sql).fetchdf()
    return con.execute(sql + " WHERE tenant_id IN (SELECT unnest(?::VARCHAR[]))", [tenants]).fetchdf()
