"""Moved to warehouse/sql.py (0.3.0); this module re-exports it for one release (until 0.4.0)."""

from ledger_pipeline.warehouse.sql import chart, chart_checks

__all__ = ["chart", "chart_checks"]
