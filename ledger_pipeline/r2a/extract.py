"""Monthly P&L extraction: one GROUP BY in R2a's database per run, data-quality problems surfaced, never summed.

Amounts are summed as integer minor units inside the database (`ROUND(amount * 100)` per row, then SUM of
integers), which is exact on Postgres NUMERIC and on SQLite (whose NUMERIC affinity may store a REAL).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Engine, text

from ledger_pipeline.r2a.models import CATEGORIES

PROBLEMS = {
    "null_tenant": "rows with no tenant_id",
    "unknown_tenant": "rows whose tenant_id is not in R2a's tenants table",
    "null_amount": "rows with an empty amount",
    "non_numeric_amount": "rows whose amount is not a number",
    "sub_sen_amount": "rows with more than 2 decimals in amount",
    "unknown_category": "rows whose category is not revenue, cogs or expense",
    "currency_mismatch": "rows in a currency other than the tenant's",
}


@dataclass
class Extract:
    detail: pd.DataFrame  # tenant_id, period, category, subcategory, amount_minor, currency, source_rows
    monthly: pd.DataFrame  # tenant_id, period, revenue/cogs/expenses/net_income _minor, currency, source_rows
    rejections: pd.DataFrame  # tenant_id, period, stage, reason, detail


def _query(dialect: str) -> str:
    if dialect == "sqlite":
        month = "substr(x.txn_date, 1, 7) || '-01'"
        minor = "CAST(ROUND(x.amount * 100) AS INTEGER)"
        non_numeric = "typeof(x.amount) NOT IN ('integer', 'real', 'null')"
        sub_sen = "typeof(x.amount) IN ('integer', 'real') AND ABS(x.amount * 100 - ROUND(x.amount * 100)) > 1e-6"
    else:
        month = "CAST(date_trunc('month', x.txn_date) AS DATE)"
        minor = "CAST(ROUND(x.amount * 100) AS BIGINT)"
        non_numeric = "FALSE"
        sub_sen = "x.amount <> ROUND(x.amount, 2)"
    cats = ", ".join(f"'{c}'" for c in CATEGORIES)
    bad = {
        "null_tenant": "x.tenant_id IS NULL",
        "unknown_tenant": "x.tenant_id IS NOT NULL AND t.tenant_id IS NULL",
        "null_amount": "x.amount IS NULL",
        "non_numeric_amount": non_numeric,
        "sub_sen_amount": sub_sen,
        "unknown_category": f"x.category IS NULL OR x.category NOT IN ({cats})",
        "currency_mismatch": "x.currency IS NOT NULL AND t.currency IS NOT NULL AND x.currency <> t.currency",
    }
    any_bad = " OR ".join(f"({cond})" for cond in bad.values())
    flags = ",\n  ".join(f"SUM(CASE WHEN {cond} THEN 1 ELSE 0 END) AS {name}" for name, cond in bad.items())
    return f"""
SELECT x.tenant_id, {month} AS period, x.category, x.subcategory,
  SUM(CASE WHEN {any_bad} THEN 0 ELSE {minor} END) AS amount_minor,
  COUNT(*) AS source_rows,
  MAX(t.currency) AS currency,
  MAX(x.recorded_at) AS last_recorded_at,
  {flags}
FROM r2a_transactions x LEFT JOIN tenants t ON t.tenant_id = x.tenant_id
WHERE x.txn_date >= :start AND x.txn_date < :end
GROUP BY x.tenant_id, {month}, x.category, x.subcategory
"""


def extract(engine: Engine, start: dt.date, end: dt.date) -> Extract:
    """The P&L of every tenant-month in [start, end), with one query."""
    params = {"start": start, "end": end}
    if engine.dialect.name == "sqlite":
        params = {k: v.isoformat() for k, v in params.items()}
    with engine.connect() as conn:
        raw = pd.read_sql_query(text(_query(engine.dialect.name)), conn, params=params)
    return shape(raw)


def shape(raw: pd.DataFrame) -> Extract:
    raw = raw.copy()
    raw["period"] = pd.to_datetime(raw["period"]).dt.date
    raw["tenant_id"] = raw["tenant_id"].astype("object")
    for col in ["amount_minor", "source_rows", *PROBLEMS]:
        raw[col] = pd.to_numeric(raw[col]).fillna(0).astype("int64")
    raw["last_recorded_at"] = pd.to_datetime(raw["last_recorded_at"])
    key = ["tenant_id", "period"]
    problems = raw.groupby(key, dropna=False)[list(PROBLEMS)].sum()
    bad_keys = problems[(problems > 0).any(axis=1)]
    rejections = pd.DataFrame(
        [
            {
                "tenant_id": tenant,
                "period": period,
                "stage": "extract",
                "reason": "bad source rows: " + ", ".join(k for k in PROBLEMS if row[k] > 0),
                "detail": _problem_detail(tenant, period, row),
            }
            for (tenant, period), row in bad_keys.iterrows()
        ],
        columns=["tenant_id", "period", "stage", "reason", "detail"],
    )
    rejections["tenant_id"] = rejections["tenant_id"].where(rejections["tenant_id"].notna(), None)
    bad_index = pd.MultiIndex.from_frame(bad_keys.reset_index()[key]) if len(bad_keys) else None
    good = raw
    if bad_index is not None:
        good = raw[~pd.MultiIndex.from_frame(raw[key]).isin(bad_index)]
    detail = good[key + ["category", "subcategory", "amount_minor", "currency", "source_rows"]].copy()
    detail["subcategory"] = detail["subcategory"].fillna("uncategorised")
    detail = detail.sort_values(key + ["category", "subcategory"], ignore_index=True)
    pivot = detail.pivot_table(index=key, columns="category", values="amount_minor", aggfunc="sum", fill_value=0)
    monthly = pd.DataFrame(index=pivot.index)
    monthly["revenue_minor"] = pivot.get("revenue", 0)
    monthly["cogs_minor"] = pivot.get("cogs", 0)
    monthly["expenses_minor"] = pivot.get("expense", 0)
    for col in ("revenue_minor", "cogs_minor", "expenses_minor"):
        monthly[col] = monthly[col].astype("int64")
    monthly["net_income_minor"] = monthly["revenue_minor"] - monthly["cogs_minor"] - monthly["expenses_minor"]
    agg = good.groupby(key).agg(currency=("currency", "first"), source_rows=("source_rows", "sum"),
                                last_recorded_at=("last_recorded_at", "max"))
    monthly = monthly.join(agg).reset_index()
    return Extract(detail=detail, monthly=monthly, rejections=rejections)


def _problem_detail(tenant: object, period: dt.date, row: pd.Series) -> str:
    who = f"tenant {tenant}" if isinstance(tenant, str) else "rows with no tenant_id"
    found = "; ".join(f"{int(row[k])} {PROBLEMS[k]}" for k in PROBLEMS if row[k] > 0)
    action = (
        "Fix or delete these rows in R2a (r2a_transactions), then re-run this month; "
        "nothing was posted for this tenant-month."
    )
    if not isinstance(tenant, str):
        action = "Attach these rows to a tenant in R2a (r2a_transactions.tenant_id), then re-run this month."
    return f"{who}, {period:%Y-%m}: {found}. {action}"
