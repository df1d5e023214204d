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
    """The one GROUP BY: sums in integer minor units plus per-group counts of row-level problems. Tenant, currency
    and category checks happen after aggregation (on ~10 groups per tenant-month, not on every row)."""
    if dialect == "sqlite":
        month = "substr(txn_date, 1, 7) || '-01'"
        minor = "CAST(ROUND(amount * 100) AS INTEGER)"
        non_numeric = "SUM(typeof(amount) NOT IN ('integer', 'real', 'null'))"
        sub_sen = "SUM(typeof(amount) = 'real' AND ABS(amount * 100 - ROUND(amount * 100)) > 1e-6)"
    else:
        month = "CAST(date_trunc('month', txn_date) AS DATE)"
        minor = "CAST(ROUND(amount * 100) AS BIGINT)"
        non_numeric = "0"
        sub_sen = "SUM(CASE WHEN amount <> ROUND(amount, 2) THEN 1 ELSE 0 END)"
    return f"""
SELECT tenant_id, {month} AS period, category, subcategory, currency,
  SUM({minor}) AS amount_minor, COUNT(*) AS source_rows, COUNT(*) - COUNT(amount) AS null_amount,
  {non_numeric} AS non_numeric_amount, {sub_sen} AS sub_sen_amount, MAX(recorded_at) AS last_recorded_at
FROM r2a_transactions
WHERE txn_date >= :start AND txn_date < :end
GROUP BY tenant_id, {month}, category, subcategory, currency
"""


def extract(engine: Engine, start: dt.date, end: dt.date) -> Extract:
    """The P&L of every tenant-month in [start, end): one aggregate query, plus the (small) tenants table."""
    params = {"start": start, "end": end}
    if engine.dialect.name == "sqlite":
        params = {k: v.isoformat() for k, v in params.items()}
    with engine.connect() as conn:
        raw = pd.read_sql_query(text(_query(engine.dialect.name)), conn, params=params)
        tenants = pd.read_sql_query(text("SELECT tenant_id, currency AS tenant_currency FROM tenants"), conn)
    return shape(raw, tenants)


def shape(raw: pd.DataFrame, tenants: pd.DataFrame) -> Extract:
    raw = raw.merge(tenants, on="tenant_id", how="left")
    raw["period"] = pd.to_datetime(raw["period"]).dt.date
    raw["tenant_id"] = raw["tenant_id"].astype("object")
    for col in ["amount_minor", "source_rows", "null_amount", "non_numeric_amount", "sub_sen_amount"]:
        raw[col] = pd.to_numeric(raw[col]).fillna(0).astype("int64")
    rows = raw["source_rows"]
    raw["null_tenant"] = rows.where(raw["tenant_id"].isna(), 0)
    raw["unknown_tenant"] = rows.where(raw["tenant_id"].notna() & raw["tenant_currency"].isna(), 0)
    raw["unknown_category"] = rows.where(~raw["category"].isin(CATEGORIES), 0)
    raw["currency_mismatch"] = rows.where(raw["currency"].notna() & raw["tenant_currency"].notna()
                                          & (raw["currency"] != raw["tenant_currency"]), 0)
    raw["currency"] = raw["tenant_currency"]
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
    good = raw
    if len(bad_keys):
        bad_index = pd.MultiIndex.from_frame(bad_keys.reset_index()[key])
        good = raw[~pd.MultiIndex.from_frame(raw[key]).isin(bad_index)]
    detail = good.groupby(key + ["category", good["subcategory"].fillna("uncategorised").rename("subcategory")],
                          sort=True).agg(amount_minor=("amount_minor", "sum"), currency=("currency", "first"),
                                         source_rows=("source_rows", "sum")).reset_index()
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
