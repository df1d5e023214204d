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
        ("account_id", "VARCHAR"), ("account_number", "VARCHAR"), ("account_name", "VARCHAR"),
        ("debit", MONEY), ("credit", MONEY), ("description", "VARCHAR"), ("category", "VARCHAR"),
        ("subcategory", "VARCHAR"), ("run_id", "VARCHAR"),
    ],
    # Every accounting system in one table each, with a `system` column (ids as the system writes them).
    "accounting.gl_accounts": [
        ("system", "VARCHAR"), ("tenant_id", "VARCHAR"), ("account_id", "VARCHAR"), ("number", "VARCHAR"),
        ("name", "VARCHAR"), ("category", "VARCHAR"), ("parent_id", "VARCHAR"), ("archived", "BOOLEAN"),
        ("fetched_at", "TIMESTAMP"), ("run_id", "VARCHAR"),
    ],
    "accounting.gl_account_changes": [
        ("system", "VARCHAR"), ("tenant_id", "VARCHAR"), ("account_id", "VARCHAR"), ("change", "VARCHAR"),
        ("number", "VARCHAR"), ("name", "VARCHAR"), ("previous_name", "VARCHAR"), ("archived", "BOOLEAN"),
        ("detected_at", "TIMESTAMP"), ("run_id", "VARCHAR"),
    ],
    "accounting.gl_ingest_status": [
        ("system", "VARCHAR"), ("tenant_id", "VARCHAR"), ("status", "VARCHAR"), ("accounts", "INTEGER"),
        ("error", "VARCHAR"), ("checked_at", "TIMESTAMP"), ("run_id", "VARCHAR"),
    ],
    "accounting.postings": [
        ("system", "VARCHAR"), ("tenant_id", "VARCHAR"), ("period", "DATE"), ("custom_id", "VARCHAR"),
        ("remote_id", "VARCHAR"), ("remote_line_ids", "VARCHAR"), ("content_hash", "VARCHAR"), ("action", "VARCHAR"),
        ("status", "VARCHAR"), ("attempts", "INTEGER"), ("error", "VARCHAR"), ("posted_at", "TIMESTAMP"),
        ("verified_at", "TIMESTAMP"), ("updated_at", "TIMESTAMP"), ("run_id", "VARCHAR"),
    ],
    "accounting.posting_plan": [
        ("system", "VARCHAR"), ("tenant_id", "VARCHAR"), ("period", "DATE"), ("custom_id", "VARCHAR"),
        ("action", "VARCHAR"), ("reason", "VARCHAR"), ("run_id", "VARCHAR"), ("planned_at", "TIMESTAMP"),
    ],
    "accounting.reconciliation": [
        ("system", "VARCHAR"), ("tenant_id", "VARCHAR"), ("period", "DATE"), ("custom_id", "VARCHAR"),
        ("status", "VARCHAR"), ("remote_ids", "VARCHAR"), ("local_total", MONEY), ("remote_total", MONEY),
        ("detail", "VARCHAR"), ("checked_by", "VARCHAR"), ("run_id", "VARCHAR"), ("checked_at", "TIMESTAMP"),
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
        SELECT e.tenant_id, e.period, e.custom_id, p.system, e.total_debit,
               COALESCE(p.status, 'not_posted') AS status, p.remote_id, p.attempts, p.error, p.posted_at,
               (p.content_hash = e.content_hash) AS up_to_date
        FROM ledger.journal_entries e
        LEFT JOIN (SELECT * FROM accounting.postings WHERE status <> 'deleted'
                   QUALIFY row_number() OVER (PARTITION BY custom_id ORDER BY updated_at DESC) = 1) p
          USING (custom_id)
        ORDER BY e.tenant_id, e.period""",
    "analytics.tenant_month_status": """
        SELECT period, system, status, COUNT(*) AS tenant_months, SUM(total_debit) AS total_debit
        FROM analytics.posting_status GROUP BY ALL ORDER BY period, system, status""",
    "analytics.reconciliation_summary": """
        SELECT period, status, COUNT(*) AS entries, SUM(local_total) AS local_total,
               SUM(remote_total) AS remote_total
        FROM accounting.reconciliation GROUP BY ALL ORDER BY period, status""",
    # 0.1.0's Jurnal-only names, kept as views for one release (see the README's changelog).
    "jurnal.gl_accounts": """
        SELECT tenant_id, TRY_CAST(account_id AS BIGINT) AS account_id, number, name, category,
               CAST(NULL AS BIGINT) AS category_id, TRY_CAST(parent_id AS BIGINT) AS parent_id, archived,
               fetched_at, run_id
        FROM accounting.gl_accounts WHERE system = 'jurnal'""",
    "jurnal.gl_account_changes": """
        SELECT * EXCLUDE (system) REPLACE (TRY_CAST(account_id AS BIGINT) AS account_id)
        FROM accounting.gl_account_changes WHERE system = 'jurnal'""",
    "jurnal.gl_ingest_status": "SELECT * EXCLUDE (system) FROM accounting.gl_ingest_status WHERE system = 'jurnal'",
    "jurnal.postings": """
        SELECT * EXCLUDE (system, verified_at) REPLACE (TRY_CAST(remote_id AS BIGINT) AS remote_id)
        FROM accounting.postings WHERE system = 'jurnal'""",
    "jurnal.posting_plan": "SELECT * EXCLUDE (system) FROM accounting.posting_plan WHERE system = 'jurnal'",
    "jurnal.reconciliation": """
        SELECT * EXCLUDE (system, checked_by) FROM accounting.reconciliation WHERE system = 'jurnal'""",
    "analytics.rejections_summary": """
        SELECT period, stage, reason, COUNT(*) AS tenant_months
        FROM ledger.rejections GROUP BY ALL ORDER BY period, stage, tenant_months DESC""",
}


# Written by `store.Warehouse.publish()`: one row per published snapshot; `meta.snapshot` is the one you read.
META_TABLES: dict[str, list[tuple[str, str]]] = {
    "meta.snapshot_log": [
        ("snapshot_id", "VARCHAR"), ("published_at", "TIMESTAMP"), ("run_id", "VARCHAR"),
        ("published_by", "VARCHAR"), ("file", "VARCHAR"),
    ],
}
META_VIEWS = {
    "meta.snapshot": "SELECT * FROM meta.snapshot_log ORDER BY published_at DESC, snapshot_id DESC LIMIT 1",
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def comments() -> list[str]:
    """COMMENT ON statements from warehouse/descriptions.py (DESCRIBE, duckdb_columns(), DBeaver show them).

    A table or column without a description gets no comment here (never a runtime failure); the unit test
    `test_every_table_and_column_is_described` is what fails.
    """
    from ledger_pipeline.warehouse import descriptions as d

    out = []
    for table, cols in {**TABLES, **META_TABLES}.items():
        if text := d.table_description(table):
            out.append(f"COMMENT ON TABLE {table} IS {_quote(text)}")
        out += [f"COMMENT ON COLUMN {table}.{c} IS {_quote(text)}"
                for c, _ in cols if (text := d.column_description(table, c))]
    out += [f"COMMENT ON VIEW {view} IS {_quote(text)}"
            for view in {**VIEWS, **META_VIEWS} if (text := d.table_description(view))]
    return out


def ddl() -> list[str]:
    statements = [f"CREATE SCHEMA IF NOT EXISTS {s}" for s in ("r2a", "ledger", "jurnal", "analytics", "meta")]
    statements += [f"CREATE SCHEMA IF NOT EXISTS {s}" for s in sorted({t.split(".")[0] for t in TABLES})
                   if s not in ("r2a", "ledger", "jurnal", "analytics", "meta")]
    for table, cols in {**TABLES, **META_TABLES}.items():
        statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{c} {t}' for c, t in cols)})")
    statements += [f"CREATE OR REPLACE VIEW {name} AS {sql}" for name, sql in {**VIEWS, **META_VIEWS}.items()]
    return statements + comments()


LEGACY_TABLES = {  # 0.1.0 table -> where its rows live now (all of them Jurnal's)
    "jurnal.gl_accounts": "accounting.gl_accounts", "jurnal.gl_account_changes": "accounting.gl_account_changes",
    "jurnal.gl_ingest_status": "accounting.gl_ingest_status", "jurnal.postings": "accounting.postings",
    "jurnal.posting_plan": "accounting.posting_plan", "jurnal.reconciliation": "accounting.reconciliation",
}


def migrate(con) -> None:  # noqa: ANN001  (a duckdb connection)
    """Bring a warehouse file written by an older release to this schema, before ddl() runs: 0.1.0's jurnal.*
    tables become rows of accounting.* (system 'jurnal'), changed column types are altered, new columns added."""
    def existing() -> dict[str, dict[str, str]]:
        cols: dict[str, dict[str, str]] = {}
        for schema_name, table, col, typ in con.execute(
                "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_name IN (SELECT table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE' AND table_schema = information_schema.columns.table_schema)"
        ).fetchall():
            cols.setdefault(f"{schema_name}.{table}", {})[col] = typ
        return cols

    have = existing()
    if not have:
        return
    for stmt in ddl():
        if stmt.startswith(("CREATE SCHEMA", "CREATE TABLE")):
            con.execute(stmt)
    for table, cols in TABLES.items():
        current = have.get(table, {})
        for col, typ in cols:
            if current and col not in current:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {col} {typ}")
            elif current and current[col] != typ and not (typ == MONEY and current[col].startswith("DECIMAL")):
                con.execute(f"ALTER TABLE {table} ALTER COLUMN {col} TYPE {typ}")
    for old, new in LEGACY_TABLES.items():
        if old in have:
            shared = [c for c, _ in TABLES[new] if c in have[old]]
            con.execute(f"INSERT INTO {new} (system, {', '.join(shared)}) "
                        f"SELECT 'jurnal', {', '.join(shared)} FROM {old}")
            con.execute(f"DROP TABLE {old}")


def ensure(con) -> None:  # noqa: ANN001  (a duckdb connection)
    """Bring the file to this schema: migrate an older one, then create what is missing (idempotent)."""
    migrate(con)
    for stmt in ddl():
        con.execute(stmt)


def select_list(table: str, frame_name: str = "frame") -> str:
    """The SELECT list that feeds `table` from a frame, money columns converted exactly from minor units."""
    parts = []
    for col, typ in TABLES[table]:
        if typ == MONEY:
            parts.append(f"CAST(CAST({frame_name}.{col}_minor AS DECIMAL(18,0)) * 0.01 AS {MONEY}) AS {col}")
        else:
            parts.append(f"CAST({frame_name}.{col} AS {typ}) AS {col}")
    return ", ".join(parts)
