"""Dagster metadata shared by every table asset: schema, lineage, previews, exact totals.

What a person reads in the UI must be what the books hold: amounts exactly (`548,930,000.12`, never `5.4893e+08`),
dates as dates, windows as inclusive months, hashes shortened. Previews are rendered as text cells, so the markdown
renderer never re-parses an amount as a float.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal

import dagster as dg
import pandas as pd
from tabulate import tabulate

from ledger_pipeline.money import format_amount
from ledger_pipeline.warehouse.descriptions import column_description
from ledger_pipeline.warehouse.schema import MONEY, TABLES

# Columns holding money wherever they appear (a DuckDB DECIMAL fetched into pandas arrives as float64 or Decimal).
MONEY_COLUMNS = frozenset({c for cols in TABLES.values() for c, t in cols if t == MONEY}
                          | {"debit", "credit", "balance", "amount", "local_total", "remote_total"})
_HASH = re.compile(r"[0-9a-f]{64}")
HASH_SHOWN = 12


def column_schema(table: str) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=c, type=t, description=column_description(table, c))
                                   for c, t in TABLES[table]])


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


def _month(value: dt.date | dt.datetime | str) -> dt.date:
    if isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    return value.date() if isinstance(value, dt.datetime) else value


def describe_window(start: dt.date | dt.datetime | str, end: dt.date | dt.datetime | str) -> str:
    """A partition window [start, end) as inclusive months: '2026-05 .. 2026-07', or '2026-05' for one month."""
    first = _month(start)
    last = _month(end) - dt.timedelta(days=1)
    if last < first:
        return f"{first:%Y-%m} (empty)"
    if (first.year, first.month) == (last.year, last.month):
        return f"{first:%Y-%m}"
    return f"{first:%Y-%m} .. {last:%Y-%m}"


def format_money(value: object) -> str:
    """An amount exactly as the books hold it: Decimal or int minor units in, '1,234,567.89' out."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, Decimal):
        return f"{value:,.2f}"
    if isinstance(value, float):  # a DECIMAL(18,2) fetched by pandas: its shortest repr is the exact amount
        return f"{Decimal(repr(value)):,.2f}"
    return f"{Decimal(str(value)):,.2f}"


def format_cell(value: object, money: bool = False) -> str:
    """One preview cell as text: dates as dates, money exact, hashes shortened, markdown-safe."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return ""
    if money:
        return format_money(value)
    if isinstance(value, pd.Timestamp | dt.datetime):
        ts = pd.Timestamp(value)
        return f"{ts:%Y-%m-%d}" if ts == ts.normalize() else f"{ts:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:f}"
    text = str(value)
    if _HASH.fullmatch(text):
        return text[:HASH_SHOWN] + "…"
    return text.replace("|", "\\|").replace("\n", " ")


def preview_markdown(frame: pd.DataFrame, rows: int = 10) -> str:
    """The first `rows` rows as a markdown table of text cells (money right-aligned, `<col>_minor` -> `<col>`)."""
    shown = frame.head(rows)
    if not len(shown):
        return "_(no rows)_"
    headers, columns, align = [], [], []
    for col in shown.columns:
        name = str(col)
        if name.endswith("_minor"):
            headers.append(name.removesuffix("_minor"))
            currencies = shown["currency"] if "currency" in shown else [None] * len(shown)  # each row's own decimals
            columns.append([format_amount(int(v), c if isinstance(c, str) else None) if pd.notna(v) else ""
                            for v, c in zip(shown[col], currencies, strict=True)])
            align.append("right")
        else:
            money = name in MONEY_COLUMNS
            headers.append(name)
            columns.append([format_cell(v, money) for v in shown[col]])
            align.append("right" if money else "left")
    body = [list(r) for r in zip(*columns, strict=True)]
    return tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)


def preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    return dg.MetadataValue.md(preview_markdown(frame, rows))


def total_key(column: str) -> str:
    """Metadata key for a money column's total: total_debit stays total_debit, revenue becomes total_revenue."""
    return column if column.startswith("total_") else f"total_{column}"


def money_totals(frame: pd.DataFrame, column: str) -> str:
    """The exact total of a money column, never across currencies: '1,234.50' when the frame has one currency (or
    no `currency` column: legacy 2 decimals), '1,234.50 IDR; 1,000 JPY' per currency (sorted) when it has several.
    `column` is the `<name>_minor` int column, in each row's currency's minor units."""
    if "currency" not in frame or frame.empty:
        return format_amount(int(frame[column].sum()))
    sums = frame.groupby("currency", sort=True)[column].sum()
    if len(sums) == 1:
        return format_amount(int(sums.iloc[0]), str(sums.index[0]))
    return "; ".join(f"{format_amount(int(v), str(c))} {c}" for c, v in sums.items())


def table_result_metadata(table: str, frame: pd.DataFrame, extra: dict | None = None) -> dict:
    meta: dict = {
        **table_spec_metadata(table),
        "dagster/row_count": len(frame),
        "preview": preview(frame),
    }
    for col, typ in TABLES[table]:
        if typ == MONEY and f"{col}_minor" in frame:
            meta[total_key(col)] = money_totals(frame, f"{col}_minor")
    if "currency" in frame and not frame.empty:
        meta["currencies"] = ", ".join(sorted(str(c) for c in frame["currency"].dropna().unique()))
    meta.update(extra or {})
    return meta


# A table the UI shows in full (every row, every cell), unlike the 10-row markdown preview: Dagster renders a
# dg.MetadataValue.table with its TableSchema as a sortable table on the materialization and the asset page.
FULL_TABLE_MAX_ROWS = 5000


def full_table(frame: pd.DataFrame, rows: int = FULL_TABLE_MAX_ROWS) -> dg.MetadataValue:
    """Every row (up to `rows`) as a dg.MetadataValue.table of text cells: money exact, dates as dates.

    Cells are strings (format_cell, `<col>_minor` shown as `<col>` in the decimals of the row's `currency`), so no
    amount reaches the UI as a float."""
    shown = frame.head(rows)
    names = [str(c).removesuffix("_minor") for c in shown.columns]
    records = []
    at = list(shown.columns).index("currency") if "currency" in shown else None  # each row's own decimals
    for values in shown.itertuples(index=False, name=None):
        cells = {}
        cur = values[at] if at is not None and isinstance(values[at], str) else None
        for col, name, v in zip(shown.columns, names, values, strict=True):
            if str(col).endswith("_minor"):
                cells[name] = format_amount(int(v), cur) if pd.notna(v) else ""
            else:
                cells[name] = format_cell(v, name in MONEY_COLUMNS).replace("\\|", "|")
        records.append(dg.TableRecord(cells))
    return dg.MetadataValue.table(records=records,
                                  schema=dg.TableSchema(columns=[dg.TableColumn(n, "string") for n in names]))


def counts_by_system(frame: pd.DataFrame, column: str = "status") -> dg.MetadataValue:
    """{system: {value: count}} of `column`, as JSON (status counts split by accounting system)."""
    if not len(frame):
        return dg.MetadataValue.json({})
    grouped = frame.groupby(["system", column]).size()
    out: dict[str, dict[str, int]] = {}
    for (system, value), n in grouped.items():
        out.setdefault(str(system), {})[str(value)] = int(n)
    return dg.MetadataValue.json(out)


def month_keys(context: dg.AssetExecutionContext) -> list[str]:
    """The run's partition keys ('2026-05-01', ...): one for a single month, every month of a range run."""
    return list(context.partition_keys) if context.has_partition_key_range or context.has_partition_key else []


def add_month_metadata(context: dg.AssetExecutionContext, by_month: dict[str, dict],
                       asset_key: str | None = None) -> None:
    """Each month's own numbers on that month's partition (Dagster 1.13: metadata added with
    `context.add_asset_metadata(..., partition_key=...)` overrides the output's metadata on that partition's
    materialization only, see dagster/_core/execution/plan/execute_step.py `_get_output_asset_events`). A range run
    (single-run backfill) then shows October's entries on October's page, not the window's."""
    for key, meta in by_month.items():
        context.add_asset_metadata(meta, asset_key=asset_key, partition_key=key)


def month_slice(frame: pd.DataFrame, key: str, column: str = "period") -> pd.DataFrame:
    """The rows of `frame` whose `column` falls in the month starting at partition key `key`."""
    if not len(frame):
        return frame
    first = pd.Timestamp(key[:10])
    values = pd.to_datetime(frame[column])
    return frame[(values >= first) & (values < first + pd.DateOffset(months=1))]


def rejection_fixes(rejections: pd.DataFrame) -> list[str]:
    """What to do about each row of ledger.rejections (tenant_id, period, stage, reason): fix the cause its stage
    names, then close the month again (the command, with the month)."""
    fixes = []
    for r in rejections.itertuples(index=False):
        period = pd.Timestamp(r.period) if pd.notna(r.period) else None
        again = (f"then `ledger-pipeline run --month {period:%Y-%m}`" if period is not None else
                 "then close the month again")
        reason = str(getattr(r, "reason", "") or "")
        if r.stage == "extract":
            fix = "correct the source rows in R2a named in the reason"
        elif r.stage == "map" and reason.startswith("no chart"):
            fix = f"connect the tenant (`ledger-pipeline connect --tenant {r.tenant_id}`) and refresh its chart"
        elif r.stage == "map":
            fix = ("add the missing row to the account mapping file, or restore the account in the tenant's chart "
                   "of accounts")
        elif r.stage == "validate":
            fix = "correct the source rows so the entry passes the journal contract (the lines are named)"
        elif r.stage == "currency":
            fix = ("load the missing exchange rate (`ledger-pipeline rates load FILE`) or enable the currency in "
                   "the tenant's system")
        else:
            fix = "correct the cause named in the reason"
        fixes.append(f"{fix}, {again}")
    return fixes


def rejections_table(rejections: pd.DataFrame) -> dg.MetadataValue:
    """Every rejection (tenant, month, stage, reason, the full detail) with its fix, shown in full in the UI."""
    cols = [c for c in ("tenant_id", "period", "stage", "reason", "detail") if c in rejections]
    return full_table(rejections[cols].assign(fix=rejection_fixes(rejections)) if len(rejections) else
                      rejections[cols].assign(fix=[]))
