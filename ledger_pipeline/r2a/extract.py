"""Monthly P&L extraction: one GROUP BY in R2a's database per run, data-quality problems surfaced, never summed.

Amounts are summed as integer minor units inside the database (`ROUND(amount * 100)` per row, then SUM of
integers), which is exact on Postgres NUMERIC and on SQLite (whose NUMERIC affinity may store a REAL).

Hostile rows never stop the month. The query classifies every row inside the one GROUP BY and never raises on
what R2a's database accepts; each problem rejects its tenant-month (a row in ledger.rejections, stage `extract`,
naming tenant, period, problem and fix) and every other tenant-month is summed exactly:

- **Amount bound.** A row may hold at most `MAX_ROW_AMOUNT` = +/-10,000,000,000,000.00 (10^13 rupiah, about
  USD 600 million, inclusive). Jurnal documents no amount limit, so the binding limits are ours: DuckDB's
  DECIMAL(18,2) holds at most 9,999,999,999,999,999.99 (just under 10^16), int64 minor units 9.2 x 10^16 rupiah,
  and a REAL (what SQLite may store) keeps every sen only below 2^53 / 100 = 9 x 10^13 rupiah. 10^13 sits under
  all three with margin, so an accepted row is always exact, and a tenant-month needs more than 1,000 rows at the
  bound before its sums can reach the DECIMAL(18,2) ceiling. Larger amounts, +/-infinity (SQLite stores `1e999`
  as a REAL infinity) and NaN (Postgres NUMERIC accepts 'NaN'; SQLite turns a NaN into NULL, which is then an
  empty amount, and keeps the text 'NaN' as text, a non-numeric amount) are counted, never summed.
- **Sums.** Minor units are summed as two integers per group (`minor // 10^9` and the remainder), so a SUM in
  SQLite (which raises "integer overflow" past int64) cannot overflow below 9.2 billion rows in one group (a
  billion rows for a group of hostile amounts, which CAST clamps to int64's largest value). A
  tenant-month is rejected when the absolute values of its category/subcategory sums add up beyond
  `MAX_MONTH_MINOR` (9,999,999,999,999,999.99): that bounds every number derived from it (revenue, COGS,
  expenses, net income, each journal line, total debit and credit), which DuckDB stores as DECIMAL(18,2).
- **txn_date that is not a real date.** Postgres's DATE cannot hold one. SQLite stores any value, and the window
  `txn_date >= :start AND txn_date < :end` compares text byte by byte (the bounds are not numeric-looking, so the
  column's NUMERIC affinity leaves them text; an INTEGER or REAL txn_date sorts before every text). Every text
  from '0000-01-01' to '9999-12-31' therefore sorts into exactly one month, [its first day, the next month's
  first day), and lands in the window of that month: the real dates; texts with a month's 7-character prefix
  that sort at or after its first day (`'2025-02-30'`, `'2025-01-32'`, `'2025-01-15 10:00'`, `'2025-01x'`);
  and texts whose prefix is no month or another month: `'2025-13-01'` sorts after `'2025-12-31'` (December
  2025), `'2025-1-5'` between September and October 2025 (September), `'2025-02-00'` before `'2025-02-01'`
  (January). What sorts outside every month (numbers, empty or whitespace-led text, `'garbage'`, blobs) is
  added to every window by two more index ranges, `txn_date < '0000-01-01' OR txn_date > '9999-12-31'` (empty,
  so free, when the data is clean) in a UNION ALL branch of the same aggregate, so no row is silently left
  out of every month. A row is a real date when
  `date(txn_date, '+0 days') = txn_date` (the modifier makes SQLite normalise day 29-31 of a shorter month, so
  `'2025-02-30'` becomes `'2025-03-02'` and fails; a time of day fails too). Such a row rejects the tenant-month
  of its `substr(txn_date, 1, 7)` when that is a real month inside the window being extracted, otherwise (no
  month, or a month outside the window such as `'2025-02-00'` seen from January) its rejection has period NULL
  and its detail names the window that found it (every run whose window sees the row reports it again; the
  ones outside every month, every run).
- **tenant_id with stray whitespace** (`' t00001'`, `'t00001 '`) that is not itself a tenant is not merged into
  the tenant: its rows reject the trimmed tenant's month with the fix "trim tenant_id" (a whitespace-only
  tenant_id is no tenant_id).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, text

from ledger_pipeline.r2a.models import CATEGORIES

MAX_ROW_AMOUNT = 10**13  # rupiah per row, inclusive; see the module docstring
MAX_MONTH_MINOR = 10**18 - 1  # 9,999,999,999,999,999.99: the largest DECIMAL(18,2), in minor units
_SPLIT = 10**9  # minor units are summed as (minor // _SPLIT, minor % _SPLIT) so no SUM can overflow int64

PROBLEMS = {
    "null_tenant": "rows with no tenant_id",
    "untrimmed_tenant": "rows whose tenant_id has stray whitespace (e.g. ' t00001' or 't00001 ')",
    "unknown_tenant": "rows whose tenant_id is not in R2a's tenants table",
    "null_amount": "rows with an empty amount",
    "non_numeric_amount": "rows whose amount is not a number",
    "nan_amount": "rows whose amount is NaN",
    "infinite_amount": "rows whose amount is +/-infinity",
    "out_of_range_amount": f"rows whose amount is beyond +/-{MAX_ROW_AMOUNT:,}.00, the most one row may hold",
    "sub_sen_amount": "rows with more than 2 decimals in amount",
    "sum_overflow": "rows whose amounts add up beyond 9,999,999,999,999,999.99 (the ledger's DECIMAL(18,2))",
    "bad_txn_date": "rows whose txn_date is not a real date (YYYY-MM-DD)",
    "unknown_category": "rows whose category is not revenue, cogs or expense",
    "currency_mismatch": "rows in a currency other than the tenant's",
}
_FIXES = {
    "untrimmed_tenant": "trim tenant_id (UPDATE r2a_transactions SET tenant_id = trim(tenant_id) "
                        "WHERE tenant_id <> trim(tenant_id))",
    "nan_amount": "replace the NaN amounts with the real ones",
    "infinite_amount": "replace the infinite amounts with the real ones",
    "out_of_range_amount": f"correct the amounts (at most +/-{MAX_ROW_AMOUNT:,}.00 per row)",
    "sum_overflow": "correct the amounts: their absolute values must add up to at most 9,999,999,999,999,999.99 "
                    "per tenant-month",
    "bad_txn_date": "set txn_date to the real date as YYYY-MM-DD (find the rows with "
                    "SELECT * FROM r2a_transactions WHERE date(txn_date, '+0 days') IS NOT txn_date)",
}


@dataclass
class Extract:
    detail: pd.DataFrame  # tenant_id, period, category, subcategory, amount_minor, currency, source_rows
    monthly: pd.DataFrame  # tenant_id, period, revenue/cogs/expenses/net_income _minor, currency, source_rows
    rejections: pd.DataFrame  # tenant_id, period, stage, reason, detail


# The row kinds the query tells apart (its `kind` column, part of the GROUP BY): 0 is a clean row.
KINDS = {1: "null_amount", 2: "non_numeric_amount", 3: "infinite_amount", 4: "out_of_range_amount",
         5: "sub_sen_amount", 6: "bad_txn_date", 7: "nan_amount"}


def _query(dialect: str) -> str:
    """The one GROUP BY: sums in integer minor units, grouped by a per-row `kind` as well, so a problem row lands in
    a group of its own kind and COUNT(*) counts it: clean data has the same groups as without it, and classifying
    costs no extra aggregate (the costly part of a GROUP BY in SQLite), only one CASE that tests the common case
    first. Tenant, currency and category checks happen after aggregation (on ~10 groups per tenant-month)."""
    inside = f"amount BETWEEN -{MAX_ROW_AMOUNT} AND {MAX_ROW_AMOUNT}"  # false for NULL, text, inf, NaN
    if dialect == "sqlite":
        # A hostile row's minor units are garbage (CAST clamps 1e20 and infinity to int64's max, text gives 0) but
        # never raise: each row adds at most 2^63 / 10^9 to minor_hi. Its group is rejected by its kind anyway.
        minor = "CAST(ROUND(amount * 100) AS INTEGER)"
        select = f"""
SELECT tenant_id, substr(txn_date, 1, 7) || '-01' AS month_key, category, subcategory, currency,
  CASE WHEN date(txn_date, '+0 days') IS NOT txn_date THEN 6
       WHEN {inside} THEN CASE WHEN typeof(amount) <> 'real' THEN 0
                               WHEN ABS(amount * 100 - ROUND(amount * 100)) > max(1e-6, ABS(amount) * 1e-12) THEN 5
                               ELSE 0 END
       WHEN amount IS NULL THEN 1 WHEN typeof(amount) NOT IN ('integer', 'real') THEN 2
       WHEN ABS(amount) = 9e999 THEN 3 ELSE 4 END AS kind,
  IFNULL(SUM({minor} / {_SPLIT}), 0) AS minor_hi, IFNULL(SUM({minor} % {_SPLIT}), 0) AS minor_lo,
  COUNT(*) AS source_rows, MAX(recorded_at) AS last_recorded_at
FROM r2a_transactions
WHERE {{where}}
GROUP BY tenant_id, month_key, category, subcategory, currency, kind"""
        # The second branch is the same aggregate over the two index ranges outside every month (see above).
        return (select.format(where="txn_date >= :start AND txn_date < :end") + "\nUNION ALL"
                + select.format(where="txn_date < '0000-01-01' OR txn_date > '9999-12-31'"))
    month = "CAST(date_trunc('month', txn_date) AS DATE)"
    # Postgres sums NUMERIC without overflow; the split happens per group. NUMERIC(18,2) cannot hold infinity
    # or more than 16 integer digits, but it does hold 'NaN' (which equals itself in Postgres, and which no
    # CAST to BIGINT accepts, hence the guard).
    minor = f"CASE WHEN {inside} THEN CAST(ROUND(amount * 100) AS BIGINT) ELSE 0 END"
    kind = (f"CASE WHEN {inside} THEN CASE WHEN amount <> ROUND(amount, 2) THEN 5 ELSE 0 END "
            "WHEN amount IS NULL THEN 1 WHEN amount = 'NaN' THEN 7 ELSE 4 END")
    return f"""
SELECT tenant_id, to_char({month}, 'YYYY-MM-DD') AS month_key, category, subcategory, currency, {kind} AS kind,
  CAST(DIV(SUM({minor}), {_SPLIT}) AS BIGINT) AS minor_hi, CAST(MOD(SUM({minor}), {_SPLIT}) AS BIGINT) AS minor_lo,
  COUNT(*) AS source_rows, MAX(recorded_at) AS last_recorded_at
FROM r2a_transactions
WHERE txn_date >= :start AND txn_date < :end
GROUP BY tenant_id, {month}, category, subcategory, currency, {kind}
"""


def extract(engine: Engine, start: dt.date, end: dt.date) -> Extract:
    """The P&L of every tenant-month in [start, end): one aggregate query, plus the (small) tenants table."""
    params = {"start": start, "end": end}
    if engine.dialect.name == "sqlite":
        params = {k: v.isoformat() for k, v in params.items()}
    with engine.connect() as conn:
        raw = pd.read_sql_query(text(_query(engine.dialect.name)), conn, params=params)
        tenants = pd.read_sql_query(text("SELECT tenant_id, currency AS tenant_currency FROM tenants"), conn)
    return shape(raw, tenants, start, end)


def shape(raw: pd.DataFrame, tenants: pd.DataFrame, start: dt.date | None = None,
          end: dt.date | None = None) -> Extract:
    raw = raw.merge(tenants, on="tenant_id", how="left")
    raw["tenant_id"] = raw["tenant_id"].astype("object")
    rows = raw["source_rows"] = pd.to_numeric(raw["source_rows"]).astype("int64")
    kind = pd.to_numeric(raw["kind"]).astype("int64")
    for k, col in KINDS.items():
        raw[col] = rows.where(kind == k, 0)
    if (kind != 0).any():  # a group of problem rows is rejected by its kind; its sum means nothing
        raw[["minor_hi", "minor_lo"]] = raw[["minor_hi", "minor_lo"]].where(kind == 0, 0)
    raw["untrimmed_tenant"] = _trim_tenants(raw, tenants)
    raw["period"] = _periods(raw, start, end)
    raw["amount_minor"], raw["sum_overflow"] = _minor_units(raw)
    raw["null_tenant"] = rows.where(raw["tenant_id"].isna(), 0)
    raw["unknown_tenant"] = rows.where(raw["tenant_id"].notna() & raw["tenant_currency"].isna(), 0)
    raw["unknown_category"] = rows.where(~raw["category"].isin(CATEGORIES), 0)
    raw["currency_mismatch"] = rows.where(raw["currency"].notna() & raw["tenant_currency"].notna()
                                          & (raw["currency"] != raw["tenant_currency"]), 0)
    raw["currency"] = raw["tenant_currency"]
    raw["last_recorded_at"] = pd.to_datetime(raw["last_recorded_at"])
    key = ["tenant_id", "period"]
    # One pass over every group: does the tenant-month have a bad row, and its gross (the sum of |group sums|,
    # which bounds every amount derived from it) in two int64 parts, so that adding them up cannot overflow.
    gross = raw["amount_minor"].abs()
    months = pd.DataFrame({"flagged": (raw[list(PROBLEMS)].to_numpy() > 0).any(axis=1), "gross_hi": gross // _SPLIT,
                           "gross_lo": gross % _SPLIT, "tenant_id": raw["tenant_id"], "period": raw["period"]}
                          ).groupby(key, dropna=False).sum()
    too_big = months["gross_hi"] + months["gross_lo"] // _SPLIT > MAX_MONTH_MINOR // _SPLIT
    bad_index = months.index[months["flagged"] | too_big]
    in_bad = pd.MultiIndex.from_frame(raw[key]).isin(bad_index) if len(bad_index) else np.zeros(len(raw), bool)
    problems = raw[in_bad].groupby(key, dropna=False)[[*PROBLEMS, "source_rows"]].sum()
    overflow = (problems["sum_overflow"] > 0) | too_big.reindex(problems.index, fill_value=False)
    problems["sum_overflow"] = problems.pop("source_rows").where(overflow, 0)
    bad_keys = problems
    rejections = pd.DataFrame(
        [
            {
                "tenant_id": tenant,
                "period": period,
                "stage": "extract",
                "reason": "bad source rows: " + ", ".join(k for k in PROBLEMS if row[k] > 0),
                "detail": _problem_detail(tenant, period, row, start, end),
            }
            for (tenant, period), row in bad_keys.iterrows()
        ],
        columns=["tenant_id", "period", "stage", "reason", "detail"],
    )
    for col in ("tenant_id", "period"):
        rejections[col] = rejections[col].astype("object").where(rejections[col].notna(), None)
    good = raw[~in_bad] if len(bad_index) else raw
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


def _trim_tenants(raw: pd.DataFrame, tenants: pd.DataFrame) -> pd.Series:
    """Rows under a tenant_id that is no tenant but is one once trimmed of whitespace move to the trimmed id,
    flagged, so they reject that tenant's month instead of being merged into it silently or reported under an id
    nobody recognises. Runs on the (few) groups whose tenant_id is unknown, after the tenants merge."""
    unknown = raw["tenant_id"].notna() & raw["tenant_currency"].isna()
    tenant = raw.loc[unknown, "tenant_id"]
    trimmed = tenant.map(lambda t: (t.strip() or None) if isinstance(t, str) else t)
    moved = trimmed[trimmed.ne(tenant)]
    if moved.empty:
        return pd.Series(0, index=raw.index, dtype="int64")
    raw.loc[moved.index, "tenant_id"] = moved
    raw.loc[moved.index, "tenant_currency"] = moved.map(tenants.set_index("tenant_id")["tenant_currency"])
    return raw["source_rows"].where(raw.index.isin(moved.index), 0)


def _periods(raw: pd.DataFrame, start: dt.date | None, end: dt.date | None) -> pd.Series:
    """`month_key` is the first 7 characters of txn_date + '-01'; a real month inside the window is the period.
    Anything else can only come from rows whose txn_date is not a real date (kind 6): their period is unknown."""
    ts = pd.to_datetime(raw["month_key"], format="%Y-%m-%d", errors="coerce")
    known = ts.notna()
    if start is not None and end is not None:
        known &= (ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end))
    period = ts.dt.date
    return period if known.all() else period.astype("object").where(known, None)


def _minor_units(raw: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each group's sum in minor units from its two parts, or 0 and flagged when it is beyond MAX_MONTH_MINOR."""
    hi = pd.to_numeric(raw["minor_hi"]).fillna(0).astype("int64")
    lo = pd.to_numeric(raw["minor_lo"]).fillna(0).astype("int64")
    hi, lo = hi + lo // _SPLIT, lo % _SPLIT  # now 0 <= lo < _SPLIT and the sum is hi * _SPLIT + lo
    limit = MAX_MONTH_MINOR // _SPLIT  # |hi * _SPLIT + lo| <= MAX_MONTH_MINOR  <=>  -limit - 1 < hi <= limit
    fits = (hi <= limit) & (hi >= -limit - 1) & ((hi > -limit - 1) | (lo > 0))
    minor = np.where(fits, hi.clip(-limit - 1, limit) * _SPLIT + lo, 0)
    return pd.Series(minor, index=raw.index, dtype="int64"), raw["source_rows"].where(~fits, 0)


def _problem_detail(tenant: object, period: dt.date | None, row: pd.Series, start: dt.date | None,
                    end: dt.date | None) -> str:
    who = f"tenant {tenant}" if isinstance(tenant, str) else "rows with no tenant_id"
    if isinstance(period, dt.date):
        when = f"{period:%Y-%m}"
        rerun = "re-run this month; nothing was posted for this tenant-month."
    else:
        window = f"{start} .. {end}" if start and end else "this window"
        when = f"period unknown (found by the extraction of {window})"
        rerun = "re-run the month the rows belong to."
    found = "; ".join(f"{int(row[k])} {PROBLEMS[k]}" for k in PROBLEMS if row[k] > 0)
    fixes = [_FIXES[k] for k in PROBLEMS if row[k] > 0 and k in _FIXES]
    if any(row[k] > 0 and k not in _FIXES and k != "null_tenant" for k in PROBLEMS):
        fixes.append(f"fix or delete {'the other bad' if fixes else 'these'} rows in R2a (r2a_transactions)")
    if not isinstance(tenant, str):
        fixes.insert(0, "attach these rows to a tenant in R2a (r2a_transactions.tenant_id)")
    return f"{who}, {when}: {found}. To fix: {'; '.join(fixes)}; then {rerun}"
