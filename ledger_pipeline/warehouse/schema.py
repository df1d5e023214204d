"""The DuckDB tables analysts query (amounts exact DECIMAL(21,3), `period` the first day of the month) and their views.

Frames carry money as `<column>_minor` int64 in the minor unit of the row's own `currency` (ISO 4217: JPY 0 decimals,
IDR 2, KWD 3); the writer turns them into DECIMAL(21,3) inside DuckDB, exactly, with that currency's exponent
(`select_list`), and `minor_sql` turns a DECIMAL back into the currency's minor units. Scale 3 holds every currency
books can be kept in (money.MAX_EXPONENT), and 18 integer digits hold the ledger's largest amount, 10^18 - 1 minor
units (r2a/extract.py's MAX_MONTH_MINOR), whatever the currency's exponent. Every table with amounts has `currency`;
totals in the views are per currency, never across currencies.
"""

from __future__ import annotations

from ledger_pipeline.money import CURRENCIES, LEGACY_EXPONENT, MAX_EXPONENT

MONEY = f"DECIMAL(21,{MAX_EXPONENT})"
RATE = "DECIMAL(38,18)"  # an exchange rate (ledger/rates.py: at most 18 decimals and 20 integer digits)

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
        ("subcategory", "VARCHAR"), ("run_id", "VARCHAR"), ("currency", "VARCHAR"),
    ],
    # The operational database's exchange_rates (ledger_pipeline/rates.py publish_rates).
    "ledger.exchange_rates": [
        ("rate_date", "DATE"), ("from_currency", "VARCHAR"), ("to_currency", "VARCHAR"), ("rate", RATE),
        ("source", "VARCHAR"), ("loaded_at", "TIMESTAMP"),
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
    # Each connected tenant's company and the currency its books are kept in (ops connection_health;
    # ledger_pipeline/connections.py).
    "accounting.connections": [
        ("system", "VARCHAR"), ("tenant_id", "VARCHAR"), ("company", "VARCHAR"), ("home_currency", "VARCHAR"),
        ("multicurrency", "BOOLEAN"), ("checked_at", "TIMESTAMP"),
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
        ("currency", "VARCHAR"),
    ],
}

VIEWS = {
    "analytics.trial_balance": """
        SELECT l.tenant_id, l.period, l.account_number, any_value(l.account_name) AS account_name,
               SUM(l.debit) AS debit, SUM(l.credit) AS credit, SUM(l.debit) - SUM(l.credit) AS balance, l.currency
        FROM ledger.journal_lines l GROUP BY ALL ORDER BY l.tenant_id, l.period, l.account_number, l.currency""",
    "analytics.pl_by_month": """
        SELECT period, currency, COUNT(*) AS tenants, SUM(revenue) AS revenue, SUM(cogs) AS cogs,
               SUM(expenses) AS expenses, SUM(net_income) AS net_income,
               COUNT(*) FILTER (WHERE net_income < 0) AS loss_making_tenants
        FROM r2a.pl_monthly GROUP BY period, currency ORDER BY period, currency""",
    "analytics.posting_status": """
        SELECT e.tenant_id, e.period, e.custom_id, p.system, e.total_debit,
               COALESCE(p.status, 'not_posted') AS status, p.remote_id, p.attempts, p.error, p.posted_at,
               (p.content_hash = CASE WHEN c.home_currency IS NULL OR c.home_currency = e.currency
                                      THEN e.content_hash
                                      ELSE sha256(e.content_hash || '|' || c.home_currency || '|'
                                                  || CAST(x.rate AS VARCHAR)) END) AS up_to_date, e.currency
        FROM ledger.journal_entries e
        LEFT JOIN (SELECT * FROM accounting.postings WHERE status <> 'deleted'
                   QUALIFY row_number() OVER (PARTITION BY custom_id ORDER BY updated_at DESC) = 1) p
          USING (custom_id)
        -- a foreign-currency entry is posted with the rate loaded for its date, its hash covering that rate
        -- (ledger/currency.py planned_hash): posted with another rate, or none loaded, it is not up to date
        LEFT JOIN accounting.connections c ON c.system = p.system AND c.tenant_id = e.tenant_id
        LEFT JOIN ledger.exchange_rates x ON x.rate_date = e.transaction_date AND x.from_currency = e.currency
          AND x.to_currency = c.home_currency
        ORDER BY e.tenant_id, e.period""",
    "analytics.tenant_month_status": """
        SELECT period, system, status, currency, COUNT(*) AS tenant_months, SUM(total_debit) AS total_debit
        FROM analytics.posting_status GROUP BY ALL ORDER BY period, system, status, currency""",
    "analytics.reconciliation_summary": """
        SELECT period, status, currency, COUNT(*) AS entries, SUM(local_total) AS local_total,
               SUM(remote_total) AS remote_total
        FROM accounting.reconciliation GROUP BY ALL ORDER BY period, status, currency""",
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
        SELECT * EXCLUDE (system, checked_by, currency) FROM accounting.reconciliation WHERE system = 'jurnal'""",
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


# Columns added since a release, filled for the rows already there: (table, column) -> UPDATE (idempotent).
BACKFILL = {
    # 0.1.x: journal lines and reconciliation rows get their entry's currency
    ("ledger.journal_lines", "currency"): """
        UPDATE ledger.journal_lines l SET currency = e.currency FROM ledger.journal_entries e
        WHERE l.currency IS NULL AND e.custom_id = l.custom_id AND e.currency IS NOT NULL""",
    ("accounting.reconciliation", "currency"): """
        UPDATE accounting.reconciliation r SET currency = e.currency FROM ledger.journal_entries e
        WHERE r.currency IS NULL AND e.custom_id = r.custom_id AND e.currency IS NOT NULL""",
}


def migrate(con) -> None:  # noqa: ANN001  (a duckdb connection)
    """Bring a warehouse file written by an older release to this schema, before ddl() runs: 0.1.0's jurnal.*
    tables become rows of accounting.* (system 'jurnal'), changed column types are altered (amounts DECIMAL(18,2)
    -> DECIMAL(21,3): every value kept exactly), new columns added and filled (BACKFILL: a line's or a
    reconciliation row's currency is its entry's)."""
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
    added: set[tuple[str, str]] = set()
    for table, cols in TABLES.items():
        current = have.get(table, {})
        for col, typ in cols:
            if current and col not in current:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {col} {typ}")
                added.add((table, col))
            elif current and current[col].replace(" ", "") != typ:
                con.execute(f"ALTER TABLE {table} ALTER COLUMN {col} TYPE {typ}")
    for old, new in LEGACY_TABLES.items():
        if old in have:
            shared = [c for c, _ in TABLES[new] if c in have[old]]
            con.execute(f"INSERT INTO {new} (system, {', '.join(shared)}) "
                        f"SELECT 'jurnal', {', '.join(shared)} FROM {old}")
            con.execute(f"DROP TABLE {old}")
            added |= {(new, c) for c, _ in TABLES[new] if c not in have[old]}
    for key, sql in BACKFILL.items():
        if key in added:
            con.execute(sql)


def ensure(con) -> None:  # noqa: ANN001  (a duckdb connection)
    """Bring the file to this schema: migrate an older one, then create what is missing (idempotent)."""
    migrate(con)
    for stmt in ddl():
        con.execute(stmt)


def _codes(exponent: int) -> str:
    return ", ".join(f"'{code}'" for code, e in CURRENCIES.items() if e == exponent)


def _factor_sql(currency: str, to_minor: bool = False) -> str:
    """SQL for 10^-exponent (or 10^exponent with `to_minor`) of the currency in `currency` (an SQL expression), per
    row. NULL currency: LEGACY 2 decimals (frames written before currencies had their own minor units). A code
    books cannot be kept in raises (DuckDB error()), never a guessed exponent."""
    arms = []
    for exponent in range(MAX_EXPONENT + 1):
        codes = _codes(exponent)
        if not codes and exponent != LEGACY_EXPONENT:
            continue  # no ISO 4217 currency has this many decimals (1, today)
        cond = (f"{currency} IS NULL OR " if exponent == LEGACY_EXPONENT else "") + (
            f"{currency} IN ({codes})" if codes else "FALSE")
        factor = 10**exponent if to_minor else f"{10**-exponent:.{MAX_EXPONENT}f}"
        arms.append(f"WHEN {cond} THEN {factor}")
    fail = (f"error('currency ' || {currency} || ' is not an ISO 4217 code with at most {MAX_EXPONENT} decimals: "
            "the amount cannot be converted')")
    return f"(CASE {' '.join(arms)} ELSE {fail} END)"


def money_sql(minor: str, currency: str) -> str:
    """SQL: the exact DECIMAL(21,3) amount of `minor` (int64 minor units, an SQL expression) in `currency`."""
    return f"CAST(CAST({minor} AS DECIMAL(21,0)) * {_factor_sql(currency)} AS {MONEY})"


def minor_sql(amount: str, currency: str) -> str:
    """SQL: a DECIMAL amount (an SQL expression) back to int64 minor units of `currency` (exact: the amounts in these
    tables never have more decimals than their currency)."""
    return f"CAST({amount} * {_factor_sql(currency, to_minor=True)} AS BIGINT)"


def select_list(table: str, frame_name: str = "frame", columns: object = None) -> str:
    """The SELECT list that feeds `table` from a frame, money columns converted exactly from minor units with the
    exponent of the row's currency (a frame without `currency` fails: its amounts' unit is unknown).

    `columns`: the frame's columns. LEGACY: a frame with `custom_id` but no `currency` (accounting.reconciliation's,
    until its rows carry one) takes the currency of its journal entry (ledger.journal_entries, by custom_id); where
    there is none, and wherever a row's currency is NULL, amounts convert with 2 decimals."""
    have = None if columns is None else set(columns)
    names = {c for c, _ in TABLES[table]}
    currency = f"{frame_name}.currency"
    if have is not None and "currency" in names and "currency" not in have and "custom_id" in have:
        currency = ("(SELECT any_value(e.currency) FROM ledger.journal_entries e "
                    f"WHERE e.custom_id = {frame_name}.custom_id)")
    parts = []
    for col, typ in TABLES[table]:
        if typ == MONEY:
            parts.append(f"{money_sql(f'{frame_name}.{col}_minor', currency)} AS {col}")
        elif col == "currency":
            parts.append(f"CAST({currency} AS VARCHAR) AS {col}")
        else:
            parts.append(f"CAST({frame_name}.{col} AS {typ}) AS {col}")
    return ", ".join(parts)
