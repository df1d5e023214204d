"""Jobs: the monthly close (GL accounts, extract, journal, post, reconcile) and the GL-accounts refresh."""

from __future__ import annotations

import dagster as dg

from ledger_pipeline.partitions import monthly_partitions

# Every run writes the DuckDB work file: the instance limits runs with this tag to one at a time.
DUCKDB_WRITER_TAG = {"ledger/duckdb_writer": "1"}

monthly_close_job = dg.define_asset_job(
    "monthly_close_job",
    selection=dg.AssetSelection.assets("jurnal_gl_accounts", "r2a_pl_monthly", "journal_entries", "journal_lines",
                                       "jurnal_postings", "jurnal_reconciliation"),
    partitions_def=monthly_partitions,
    tags=DUCKDB_WRITER_TAG,
    description="Close a month (or a range, as one run): refresh GL accounts, extract R2a's P&L, build and "
                "validate journal entries, post them to Jurnal exactly once, reconcile.",
)

gl_accounts_job = dg.define_asset_job(
    "gl_accounts_job", selection=dg.AssetSelection.assets("jurnal_gl_accounts"), tags=DUCKDB_WRITER_TAG,
    config={"ops": {"jurnal_gl_accounts": {"config": {"refresh": "all"}}}},
    description="Refresh every connected tenant's chart of accounts from its accounting system (background "
                "priority: a close running at the same time goes first on the shared request budget).",
)

reconciliation_drift_job = dg.define_asset_job(
    "reconciliation_drift_job", selection=dg.AssetSelection.assets("reconciliation_drift"), tags=DUCKDB_WRITER_TAG,
    description="Read the accounting systems' entries over a rolling window to find drift made by people (edited, "
                "deleted or added entries), within a request budget per run, least recently checked tenants first.",
)
