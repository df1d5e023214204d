"""The DuckDB tables analysts query (amounts DECIMAL(18,2), `period` the first day of the month) and their views.

Frames carry money as `<column>_minor` int64; the writer turns them into DECIMAL(18,2) inside DuckDB, exactly.
"""

from __future__ import annotations

MONEY = "DECIMAL(18,2)"

# table -> [(column, type)]; a MONEY column is fed from the frame's `<column>_minor`.
TABLES: dict[str, list[tuple[str, str]]] = {
    "r2a.pl_monthly": [
        ("tenant_id", "VARCHAR"), ("period", "DATE"), ("revenue", MONEY), ("cogs", MONEY), ("expenses", MONEY),
        ("net_income", MONEY), ("currency", "VARCHAR"), ("source_rows", "BIGINT"),
        ("last_recorded_at", "TIMESTAMP"), ("run_id", "VARCHAR"), ("extracted_at", "TIMESTAMP"),
    ],
    "r2a.pl_monthly_detail": [
        ("tenant_id", "VARCHAR"), ("period", "DATE"), ("category", "VARCHAR"), ("subcategory", "VARCHAR"),
        ("amount", MONEY), ("currency", "VARCHAR"), ("source_rows", "BIGINT"), ("run_id", "VARCHAR"),
    ],
    "ledger.rejections": [
        ("tenant_id", "VARCHAR"), ("period", "DATE"), ("stage", "VARCHAR"), ("reason", "VARCHAR"),
        ("detail", "VARCHAR"), ("run_id", "VARCHAR"), ("recorded_at", "TIMESTAMP"),
    ],
    "ledger.journal_entries": [
        ("tenant_id", "VARCHAR"), ("period", "DATE"), ("custom_id", "VARCHAR"), ("transaction_date", "DATE"),
        ("memo", "VARCHAR"), ("currency", "VARCHAR"), ("line_count", "INTEGER"), ("total_debit", MONEY),
        ("total_credit", MONEY), ("net_income", MONEY), ("content_hash", "VARCHAR"), ("source_rows", "BIGINT"),
        ("run_id", "VARCHAR"), ("built_at", "TIMESTAMP"),
    ],
    "ledger.journal_lines": [
        ("tenant_id", "VARCHAR"), ("period", "DATE"), ("custom_id", "VARCHAR"), ("line_no", "INTEGER"),
        ("account_id", "BIGINT"), ("account_number", "VARCHAR"), ("account_name", "VARCHAR"),
        ("debit", MONEY), ("credit", MONEY), ("description", "VARCHAR"), ("category", "VARCHAR"),
        ("subcategory", "VARCHAR"), ("run_id", "VARCHAR"),
    ],
    "jurnal.gl_accounts": [
        ("tenant_id", "VARCHAR"), ("account_id", "BIGINT"), ("number", "VARCHAR"), ("name", "VARCHAR"),
        ("category", "VARCHAR"), ("category_id", "BIGINT"), ("parent_id", "BIGINT"), ("archived", "BOOLEAN"),
        ("fetched_at", "TIMESTAMP"), ("run_id", "VARCHAR"),
    ],
    "jurnal.gl_account_changes": [
        ("tenant_id", "VARCHAR"), ("account_id", "BIGINT"), ("change", "VARCHAR"), ("number", "VARCHAR"),
        ("name", "VARCHAR"), ("previous_name", "VARCHAR"), ("archived", "BOOLEAN"), ("detected_at", "TIMESTAMP"),
        ("run_id", "VARCHAR"),
    ],
    "jurnal.gl_ingest_status": [
        ("tenant_id", "VARCHAR"), ("status", "VARCHAR"), ("accounts", "INTEGER"), ("error", "VARCHAR"),
        ("checked_at", "TIMESTAMP"), ("run_id", "VARCHAR"),
    ],
    "jurnal.postings": [
        ("tenant_id", "VARCHAR"), ("period", "DATE"), ("custom_id", "VARCHAR"), ("remote_id", "BIGINT"),
        ("remote_line_ids", "VARCHAR"), ("content_hash", "VARCHAR"), ("action", "VARCHAR"), ("status", "VARCHAR"),
        ("attempts", "INTEGER"),
        ("error", "VARCHAR"), ("posted_at", "TIMESTAMP"), ("updated_at", "TIMESTAMP"), ("run_id", "VARCHAR"),
    ],
    "jurnal.posting_plan": [
        ("tenant_id", "VARCHAR"), ("period", "DATE"), ("custom_id", "VARCHAR"), ("action", "VARCHAR"),
        ("reason", "VARCHAR"), ("run_id", "VARCHAR"), ("planned_at", "TIMESTAMP"),
    ],
    "jurnal.reconciliation": [
        ("tenant_id", "VARCHAR"), ("period", "DATE"), ("custom_id", "VARCHAR"), ("status", "VARCHAR"),
        ("remote_ids", "VARCHAR"), ("local_total", MONEY), ("remote_total", MONEY), ("detail", "VARCHAR"),
        ("run_id", "VARCHAR"), ("checked_at", "TIMESTAMP"),
    ],
}

VIEWS = {
    "analytics.trial_balance": """
        SELECT l.tenant_id, l.period, l.account_number, any_value(l.account_name) AS account_name,
               SUM(l.debit) AS debit, SUM(l.credit) AS credit, SUM(l.debit) - SUM(l.credit) AS balance
        FROM ledger.journal_lines l GROUP BY ALL ORDER BY l.tenant_id, l.period, l.account_number""",
    "analytics.pl_by_month": """
        SELECT period, COUNT(*) AS tenants, SUM(revenue) AS revenue, SUM(cogs) AS cogs,
               SUM(expenses) AS expenses, SUM(net_income) AS net_income,
               COUNT(*) FILTER (WHERE net_income < 0) AS loss_making_tenants
        FROM r2a.pl_monthly GROUP BY period ORDER BY period""",
    "analytics.posting_status": """
        SELECT e.tenant_id, e.period, e.custom_id, e.total_debit, COALESCE(p.status, 'not_posted') AS status,
               p.remote_id, p.attempts, p.error, p.posted_at, (p.content_hash = e.content_hash) AS up_to_date
        FROM ledger.journal_entries e LEFT JOIN jurnal.postings p USING (custom_id)
        ORDER BY e.tenant_id, e.period""",
    "analytics.reconciliation_summary": """
        SELECT period, status, COUNT(*) AS entries, SUM(local_total) AS local_total,
               SUM(remote_total) AS remote_total
        FROM jurnal.reconciliation GROUP BY ALL ORDER BY period, status""",
    "analytics.rejections_summary": """
        SELECT period, stage, reason, COUNT(*) AS tenant_months
        FROM ledger.rejections GROUP BY ALL ORDER BY period, stage, tenant_months DESC""",
}


def ddl() -> list[str]:
    statements = [f"CREATE SCHEMA IF NOT EXISTS {s}" for s in ("r2a", "ledger", "jurnal", "analytics")]
    for table, cols in TABLES.items():
        statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{c} {t}' for c, t in cols)})")
    statements += [f"CREATE OR REPLACE VIEW {name} AS {sql}" for name, sql in VIEWS.items()]
    return statements


def select_list(table: str, frame_name: str = "frame") -> str:
    """The SELECT list that feeds `table` from a frame, money columns converted exactly from minor units."""
    parts = []
    for col, typ in TABLES[table]:
        if typ == MONEY:
            parts.append(f"CAST(CAST({frame_name}.{col}_minor AS DECIMAL(18,0)) * 0.01 AS {MONEY}) AS {col}")
        else:
            parts.append(f"CAST({frame_name}.{col} AS {typ}) AS {col}")
    return ", ".join(parts)
