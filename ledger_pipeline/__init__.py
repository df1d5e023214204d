"""ledger_pipeline: monthly R2a P&L -> balanced journal entries -> Jurnal.id, with DuckDB for analysts."""
