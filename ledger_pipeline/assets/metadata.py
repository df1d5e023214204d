"""Dagster metadata shared by every table asset: schema, lineage, previews, exact totals."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from ledger_pipeline.money import format_amount
from ledger_pipeline.warehouse.schema import MONEY, TABLES


def column_schema(table: str) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=c, type=t) for c, t in TABLES[table]])


def table_spec_metadata(table: str) -> dict:
    """Static metadata for @asset(metadata=...): where the table lives and its columns."""
    return {"dagster/table_name": table, "dagster/column_schema": column_schema(table),
            "dagster/storage_kind": "duckdb"}


def lineage(deps: dict[str, list[tuple[str, str]]]) -> dg.TableColumnLineage:
    """{out_column: [(upstream asset name, column), ...]}"""
    return dg.TableColumnLineage(
        deps_by_column={
            out: [dg.TableColumnDep(asset_key=dg.AssetKey(a), column_name=c) for a, c in ins]
            for out, ins in deps.items()
        }
    )


def preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    shown = frame.head(rows).copy()
    for col in [c for c in shown.columns if c.endswith("_minor")]:
        shown[col.removesuffix("_minor")] = shown.pop(col).map(format_amount)
    return dg.MetadataValue.md(shown.to_markdown(index=False) if len(shown) else "_(no rows)_")


def table_result_metadata(table: str, frame: pd.DataFrame, extra: dict | None = None) -> dict:
    meta: dict = {
        **table_spec_metadata(table),
        "dagster/row_count": len(frame),
        "preview": preview(frame),
    }
    for col, typ in TABLES[table]:
        if typ == MONEY and f"{col}_minor" in frame:
            meta[f"total_{col}"] = format_amount(int(frame[f"{col}_minor"].sum()))
    meta.update(extra or {})
    return meta
