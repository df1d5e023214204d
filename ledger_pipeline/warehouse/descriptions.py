"""What every warehouse table and column means: the one place analysts' descriptions live.

Used twice: `schema.ddl()` writes them into DuckDB (`COMMENT ON ...`, shown by `DESCRIBE`, `duckdb_columns()`,
DBeaver) and `assets.metadata.column_schema()` puts them in the Dagster column schema (the asset's Columns tab).

A column's description is looked up as (table, column) first, then COLUMNS_ANY_TABLE for columns that mean the same
thing everywhere. A table or column with no description fails `test_every_table_and_column_is_described`
(ledger_pipeline_tests/test_analyst.py), never a run: add it here when you add it to schema.TABLES.
"""

from __future__ import annotations

# Columns that mean the same in every table.
COLUMNS_ANY_TABLE: dict[str, str] = {
    "tenant_id": "R2a tenant (business) id, e.g. t00042.",
    "period": "Accounting month: the first day of the month (DATE).",
    "custom_id": "Idempotency key of the tenant-month's journal entry: r2a-pl-{tenant}-{YYYYMM} "
                 "(e.g. r2a-pl-t00001-202501).",
    "run_id": "Dagster run that wrote the row (open it in the UI at /runs/{run_id}).",
    "currency": "ISO 4217 code of the row's amounts (the tenant's currency, e.g. IDR); amounts carry at most its "
                "minor unit's decimals (JPY 0, IDR 2, KWD 3). Never add amounts of different currencies.",
    "system": "Accounting system the row belongs to (jurnal, quickbooks, zoho, aden, rootfi).",
}

TABLE_DESCRIPTIONS: dict[str, str] = {
    "r2a.pl_monthly": "Each tenant's monthly P&L extracted from R2a, one row per tenant-month. Amounts exact.",
    "r2a.pl_monthly_detail": "The monthly P&L per category/subcategory, one row per tenant-month-subcategory.",
    "ledger.rejections": "Every tenant-month that was not turned into a postable entry, and what to do about it.",
    "ledger.journal_entries": "One balanced journal entry per tenant-month (header and totals).",
    "ledger.journal_lines": "The journal entries' lines: one account and one side (debit or credit) each.",
    "accounting.gl_accounts": "Every connected tenant's current chart of accounts, read from its accounting system "
                              "(a copy of the operational database's gl_accounts).",
    "accounting.gl_account_changes": "Chart-of-accounts changes detected between two reads (a copy of the operational "
                                     "database's gl_account_changes).",
    "accounting.gl_ingest_status": "Outcome of the last chart-of-accounts read, per tenant (a copy of the operational "
                                   "database's gl_ingest_status).",
    "accounting.connections": "Each connected tenant's company in its accounting system and the currency its books "
                              "are kept in, as the system reported it (read at connect and on each chart refresh).",
    "accounting.postings": "Published copy of the posting state: what was sent for each entry, and what happened.",
    "accounting.posting_plan": "The last posting plan (written by a dry run): what a real run would do per entry.",
    "accounting.reconciliation": "Our entries compared with what the accounting system holds, per entry.",
    "meta.snapshot_log": "Every snapshot published to this warehouse file: when, by which Dagster run.",
    "ledger.exchange_rates": "Exchange rates loaded by `ledger-pipeline rates load` (operational database): one per "
                             "date and currency pair; 1 from_currency = rate to_currency on rate_date.",
    "analytics.trial_balance": "Debits, credits and balance per tenant, month and account (in the tenant's currency).",
    "analytics.pl_by_month": "P&L across tenants per month and currency, with the number of loss-making tenants.",
    "analytics.posting_status": "Each journal entry with its posting state in its system (not_posted: never sent).",
    "analytics.reconciliation_summary": "Reconciliation outcomes per month, status and currency, with totals.",
    "analytics.rejections_summary": "Rejected tenant-months per month, stage and reason.",
    "meta.snapshot": "The snapshot you are reading: when it was published and by which Dagster run.",
    "analytics.tenant_month_status": "Tenant-months per month, accounting system and posting state (posted, "
                                     "awaiting_approval, rejected, failed, not_posted) and currency, with their "
                                     "total debit.",
    **{f"jurnal.{t}": f"0.1.0's name, kept for one release: accounting.{t} for Jurnal tenants (ids as BIGINT)."
       for t in ("gl_accounts", "gl_account_changes", "gl_ingest_status", "postings", "posting_plan",
                 "reconciliation")},
}

COLUMNS: dict[tuple[str, str], str] = {
    ("accounting.postings", "verified_at"): "When the system's answer to our create/update matched what we sent, "
                                            "line by line (the entry then counts as reconciled without a read).",
    ("accounting.reconciliation", "checked_by"): "posting_response (verified from the system's answer when posting, "
                                                 "no request), remote_read (the drift job read the system) or "
                                                 "repost (an operator's `ledger-pipeline repost` read it).",
    # r2a.pl_monthly
    ("r2a.pl_monthly", "revenue"): "Revenue of the month (sales net of refunds), exact, DECIMAL(21,3) in `currency`.",
    ("r2a.pl_monthly", "cogs"): "Cost of goods sold of the month, exact.",
    ("r2a.pl_monthly", "expenses"): "Operating expenses of the month, exact.",
    ("r2a.pl_monthly", "net_income"): "revenue - cogs - expenses; negative for a loss month.",
    ("r2a.pl_monthly", "source_rows"): "Number of R2a r2a_transactions rows summed into this tenant-month.",
    ("r2a.pl_monthly", "last_recorded_at"): "When the newest R2a row of this tenant-month was recorded (late rows).",
    ("r2a.pl_monthly", "extracted_at"): "When the row was extracted from R2a (UTC).",
    # r2a.pl_monthly_detail
    ("r2a.pl_monthly_detail", "category"): "R2a category: revenue, cogs or expense.",
    ("r2a.pl_monthly_detail", "subcategory"): "R2a subcategory, e.g. product_sales, rent, utilities.",
    ("r2a.pl_monthly_detail", "amount"): "Sum of the subcategory's R2a amounts for the month, exact.",
    ("r2a.pl_monthly_detail", "source_rows"): "Number of R2a rows summed into this amount.",
    # ledger.rejections
    ("ledger.rejections", "stage"): "Where it was rejected: extract (bad source rows), map (account mapping), "
                                    "validate (journal contract).",
    ("ledger.rejections", "reason"): "Short machine-readable reason, e.g. unknown_category, account_missing.",
    ("ledger.rejections", "detail"): "What is wrong and what to do, for a person.",
    ("ledger.rejections", "recorded_at"): "When the rejection was recorded (UTC).",
    # ledger.journal_entries
    ("ledger.journal_entries", "transaction_date"): "Entry date: the last day of the month.",
    ("ledger.journal_entries", "memo"): "Entry memo as posted: R2a Monthly P&L - YYYY-MM.",
    ("ledger.journal_entries", "line_count"): "Number of lines in the entry.",
    ("ledger.journal_entries", "total_debit"): "Sum of the entry's debits, exact; equals total_credit.",
    ("ledger.journal_entries", "total_credit"): "Sum of the entry's credits, exact; equals total_debit.",
    ("ledger.journal_entries", "net_income"): "Net income of the month, taken to the clearing/equity account.",
    ("ledger.journal_entries", "content_hash"): "sha256 of the canonical entry: what was (or will be) posted.",
    ("ledger.journal_entries", "source_rows"): "Number of R2a rows behind the entry.",
    ("ledger.journal_entries", "built_at"): "When the entry was built (UTC).",
    # ledger.journal_lines
    ("ledger.journal_lines", "line_no"): "Line number within the entry, from 1.",
    ("ledger.journal_lines", "account_id"): "The account's id in the tenant's system (accounting.gl_accounts).",
    ("ledger.journal_lines", "account_number"): "GL account number, e.g. 4-40000.",
    ("ledger.journal_lines", "account_name"): "GL account name as in the tenant's chart.",
    ("ledger.journal_lines", "debit"): "Debit amount, exact (0 when the line is a credit).",
    ("ledger.journal_lines", "credit"): "Credit amount, exact (0 when the line is a debit).",
    ("ledger.journal_lines", "description"): "Line description as posted.",
    ("ledger.journal_lines", "category"): "R2a category behind the line (revenue, cogs, expense; clearing for the "
                                          "balancing line).",
    ("ledger.journal_lines", "subcategory"): "R2a subcategory behind the line.",
    # accounting.gl_accounts
    ("accounting.gl_accounts", "account_id"): "The account's id in the tenant's system.",
    ("accounting.gl_accounts", "number"): "Account number, e.g. 1-10001.",
    ("accounting.gl_accounts", "name"): "Account name.",
    ("accounting.gl_accounts", "category"): "The system's account category, e.g. Kas & Bank, Income, Expense.",
    ("accounting.gl_accounts", "category_id"): "The system's account category id.",
    ("accounting.gl_accounts", "parent_id"): "Parent account id for sub-accounts, NULL at the top.",
    ("accounting.gl_accounts", "archived"): "True when archived or inactive in the tenant's system (unusable).",
    ("accounting.gl_accounts", "fetched_at"): "When the chart was read from the tenant's system (UTC).",
    # accounting.gl_account_changes
    ("accounting.gl_account_changes", "account_id"): "The account's id in the tenant's system.",
    ("accounting.gl_account_changes", "change"): "added, renamed, renumbered, archived, unarchived or removed.",
    ("accounting.gl_account_changes", "number"): "Account number after the change.",
    ("accounting.gl_account_changes", "name"): "Account name after the change.",
    ("accounting.gl_account_changes", "previous_name"): "Account name before the change.",
    ("accounting.gl_account_changes", "archived"): "Archived flag after the change.",
    ("accounting.gl_account_changes", "detected_at"): "When the change was detected (UTC).",
    # accounting.gl_ingest_status
    ("accounting.gl_ingest_status", "status"): "ok, or why the chart could not be read (e.g. needs_reauth, error).",
    ("accounting.gl_ingest_status", "accounts"): "Number of accounts read.",
    ("accounting.gl_ingest_status", "error"): "What went wrong, for a person; NULL when ok.",
    ("accounting.gl_ingest_status", "checked_at"): "When the read was attempted (UTC).",
    # accounting.postings
    ("accounting.connections", "company"): "The company's name in the system, when it reports one.",
    ("accounting.connections", "home_currency"): "ISO 4217 code of the company's home (base) currency: an entry in "
                                                 "another currency is posted with an exchange rate or refused.",
    ("accounting.connections", "multicurrency"): "The company takes journals in other currencies (QuickBooks "
                                                 "MultiCurrencyEnabled; Zoho and Aden always; Jurnal and Rootfi "
                                                 "never); NULL when the system does not say.",
    ("accounting.connections", "checked_at"): "When the home currency was last read from the system (UTC); NULL: "
                                              "never read.",
    ("accounting.postings", "remote_id"): "The system's id of the journal entry, once known.",
    ("accounting.postings", "remote_line_ids"): "The system's ids of the entry's lines, in line order.",
    ("accounting.postings", "content_hash"): "Hash of the entry as last posted; the ledger's differs once it changes.",
    ("accounting.postings", "action"): "Last write: create, update or delete.",
    ("accounting.postings", "status"): "posted, pending (outcome being resolved), failed, deleted, "
                                       "awaiting_approval, rejected, submitted (an upload job still running).",
    ("accounting.postings", "attempts"): "Number of write attempts.",
    ("accounting.postings", "error"): "Why the last attempt failed, for a person; NULL when posted.",
    ("accounting.postings", "posted_at"): "When the system confirmed the entry (UTC).",
    ("accounting.postings", "updated_at"): "When this row last changed (UTC).",
    # accounting.posting_plan
    ("accounting.posting_plan", "action"): "What a real run would do: create, update, delete or skip.",
    ("accounting.posting_plan", "reason"): "Why, e.g. unchanged, new, content changed.",
    ("accounting.posting_plan", "planned_at"): "When the plan was made (UTC).",
    # accounting.reconciliation
    ("accounting.reconciliation", "status"): "match, missing_remote (not posted, or deleted by hand), "
                                         "duplicate_remote, amount_mismatch (edited by hand, or our ledger changed), "
                                         "moved_remote (re-dated by hand), accepted_remote (a version changed by hand "
                                         "that an operator accepted), unexpected_remote, awaiting_approval; "
                                         "not_checked: could not read.",
    ("accounting.reconciliation", "remote_ids"): "The system's entry ids found for the custom_id.",
    ("accounting.reconciliation", "local_total"): "Our entry's total debit, exact.",
    ("accounting.reconciliation", "remote_total"): "The system's entry total debit, exact.",
    ("accounting.reconciliation", "detail"): "What differs, for a person: a change made by hand line by line, and "
                                             "what happens next.",
    ("accounting.reconciliation", "checked_at"): "When the entry was seen as the row says (UTC): the read, or the "
                                                 "system's answer to our write.",
    # ledger.exchange_rates
    ("ledger.exchange_rates", "rate_date"): "The date the rate is for (an entry uses the rate of its own date).",
    ("ledger.exchange_rates", "from_currency"): "Base currency (ISO 4217): the rate prices one unit of it.",
    ("ledger.exchange_rates", "to_currency"): "Quote currency (ISO 4217): the rate is in units of it.",
    ("ledger.exchange_rates", "rate"): "1 from_currency = rate to_currency, exact (as loaded, up to 18 decimals).",
    ("ledger.exchange_rates", "source"): "The file the rate was loaded from.",
    ("ledger.exchange_rates", "loaded_at"): "When the rate was loaded (UTC); a re-load of the same pair and date "
                                            "replaces it.",
    # meta.snapshot_log
    ("meta.snapshot_log", "snapshot_id"): "Snapshot stamp, also in its file name warehouse.{snapshot_id}.duckdb.",
    ("meta.snapshot_log", "published_at"): "When the snapshot was published (UTC).",
    ("meta.snapshot_log", "run_id"): "Dagster run that published it (NULL outside a run, e.g. a script).",
    ("meta.snapshot_log", "published_by"): "host:pid of the publishing process.",
    ("meta.snapshot_log", "file"): "Snapshot file name in the LEDGER_WAREHOUSE folder.",
}


def table_description(table: str) -> str | None:
    return TABLE_DESCRIPTIONS.get(table)


def column_description(table: str, column: str) -> str | None:
    return COLUMNS.get((table, column)) or COLUMNS_ANY_TABLE.get(column)


def missing(tables: dict[str, list[tuple[str, str]]]) -> list[str]:
    """'table' or 'table.column' for everything in `tables` that has no description (the unit test's view)."""
    out = [t for t in tables if not table_description(t)]
    out += [f"{t}.{c}" for t, cols in tables.items() for c, _ in cols if not column_description(t, c)]
    return out
