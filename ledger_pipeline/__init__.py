"""ledger_pipeline: monthly R2a P&L -> balanced journal entries -> each tenant's accounting system (Jurnal, QuickBooks
Online, Zoho Books, Aden, Rootfi), with DuckDB for analysts."""
