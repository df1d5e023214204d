"""Monthly P&L extraction: one GROUP BY in R2a's database per run, data-quality problems surfaced, never summed.

Amounts are summed as integer minor units inside the database (per row `ROUND(amount * 10^unit)`, then SUM of
integers), which is exact on Postgres NUMERIC and on SQLite (whose NUMERIC affinity may store a REAL), and turned
into the minor unit of the tenant's currency in pandas, with integer arithmetic: every `*_minor` of the result is in
its row's `currency`'s own ISO 4217 minor unit (money.minor_unit: JPY 0 decimals, IDR 2, KWD 3).

The query does not know a row's currency (the tenant's, from the small tenants table, merged after aggregation), so
it classifies each row by what a currency needs to hold it, as two more GROUP BY keys: `places`, the decimals the
amount needs (0..3), and `size`, its magnitude (0: |amount| <= 10^12, 1: <= 10^13, 2: <= 10^14, 3: <= 10^15). After
aggregation a group fits its tenant's currency of exponent e when places <= e and size + e <= 3; it was summed in
units of 10^-(3 - size), and 3 - size >= e, so its sum is divided by 10^(3 - size - e), exactly (every row of the
group is a multiple; a remainder would reject the month, never be dropped). Scaling each row by 10^(3 - size) keeps
every scaled row within 10^15, exact both as an integer and in a REAL.

Hostile rows never stop the month. The query classifies every row inside the one GROUP BY and never raises on
what R2a's database accepts; each problem rejects its tenant-month (a row in ledger.rejections, stage `extract`,
naming tenant, period, problem and fix) and every other tenant-month is summed exactly:

- **Currency.** The tenant's currency (tenants.currency) must be an ISO 4217 code books can be kept in
  (money.CURRENCIES: every ISO 4217 code with a minor unit of 0 to 3, from the `iso4217` package); any other code
  rejects the tenant's months (`unknown_currency`), and a row in a currency other than the tenant's rejects its
  month (`currency_mismatch`).
- **Decimals.** A row finer than the tenant's currency allows (1000.50 for a JPY tenant, 1.005 for IDR, 1.2345 for
  any) rejects its month (`too_many_decimals`); the rejection names the rows' ids (a second, small query over the
  rejected tenant-months only). Nothing is ever rounded. Postgres's NUMERIC is exact; on SQLite a fractional amount
  is a REAL (about 16 significant digits), read with a relative tolerance of 1e-15, so a digit finer than the minor
  unit is always seen below 10^13 minor units (100 billion rupiah, 10 billion KWD).
- **Amount bound.** A row may hold at most `MAX_ROW_MINOR` = 10^15 minor units of its currency (inclusive): 10^13
  IDR (`MAX_ROW_AMOUNT`, about USD 600 million), 10^15 JPY, 10^12 KWD. Every vendor we post to documents no amount
  limit, so the binding limits are ours: a REAL keeps every minor unit only below 2^53 (9 x 10^15 minor units),
  int64 holds 9.2 x 10^18 and DuckDB's DECIMAL(21,3) 10^18 - 1 minor units of any currency. 10^15 sits under all
  three with margin, so an accepted row is always exact, and a tenant-month needs more than 1,000 rows at the bound
  before its sums can reach the ceiling. Larger amounts, +/-infinity (SQLite stores `1e999` as a REAL infinity) and
  NaN (Postgres NUMERIC accepts 'NaN'; SQLite turns a NaN into NULL, which is then an empty amount, and keeps the
  text 'NaN' as text, a non-numeric amount) are counted, never summed.
- **Sums.** Minor units are summed as two integers per group (`minor // 10^9` and the remainder), so a SUM in
  SQLite (which raises "integer overflow" past int64) cannot overflow below 9.2 billion rows in one group (a
  billion rows for a group of hostile amounts, which CAST clamps to int64's largest value). A
  tenant-month is rejected when the absolute values of its category/subcategory sums add up beyond
  `MAX_MONTH_MINOR` (10^18 - 1 minor units: 9,999,999,999,999,999.99 IDR): that bounds every number derived from
  it (revenue, COGS, expenses, net income, each journal line, total debit and credit), which DuckDB stores as
  DECIMAL(21,3).
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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, bindparam, text

from ledger_pipeline.money import CURRENCIES, currency_problem, format_amount
from ledger_pipeline.r2a.models import CATEGORIES

MAX_ROW_MINOR = 10**15  # minor units of the row's currency, inclusive; see the module docstring
MAX_ROW_AMOUNT = MAX_ROW_MINOR // 10**2  # the same bound for a 2-decimal currency: 10^13 rupiah per row
MAX_MONTH_MINOR = 10**18 - 1  # the largest DECIMAL(21,3) amount, in minor units of any currency (exponent <= 3)
_SPLIT = 10**9  # minor units are summed as (minor // _SPLIT, minor % _SPLIT) so no SUM can overflow int64
_UNIT = 3  # a row of size 0 is summed in units of 10^-3; each size up divides the unit by 10 (see the docstring)
_SIZES = (10**12, 10**13, 10**14)  # |amount| bounds of sizes 0, 1, 2; size 3 goes up to MAX_ROW_MINOR units
ROW_IDS_SHOWN = 10  # offending r2a_transactions ids listed per problem in a rejection's detail

# What the rows of each problem are; {currency}-dependent texts are filled by _describe().
PROBLEMS = {
    "null_tenant": "rows with no tenant_id",
    "untrimmed_tenant": "rows whose tenant_id has stray whitespace (e.g. ' t00001' or 't00001 ')",
    "unknown_tenant": "rows whose tenant_id is not in R2a's tenants table",
    "unknown_currency": "rows of a tenant whose currency books cannot be kept in: {currency_problem}",
    "null_amount": "rows with an empty amount",
    "non_numeric_amount": "rows whose amount is not a number",
    "nan_amount": "rows whose amount is NaN",
    "infinite_amount": "rows whose amount is +/-infinity",
    "out_of_range_amount": "rows whose amount is beyond +/-{row_bound}, the most one row may hold",
    "too_many_decimals": "rows with more decimals in amount than {minor_unit}",
    "sum_overflow": "rows whose amounts add up beyond {ceiling} (10^18 - 1 minor units, the most the ledger's "
                    "DECIMAL(21,3) holds)",
    "bad_txn_date": "rows whose txn_date is not a real date (YYYY-MM-DD)",
    "unknown_category": "rows whose category is not revenue, cogs or expense",
    "currency_mismatch": "rows in a currency other than the tenant's{tenant_currency}",
}
_FIXES = {
    "untrimmed_tenant": "trim tenant_id (UPDATE r2a_transactions SET tenant_id = trim(tenant_id) "
                        "WHERE tenant_id <> trim(tenant_id))",
    "unknown_currency": "set the tenant's currency to its ISO 4217 code (UPDATE tenants SET currency = 'IDR' "
                        "WHERE tenant_id = '{tenant}', with the real code)",
    "nan_amount": "replace the NaN amounts with the real ones",
    "infinite_amount": "replace the infinite amounts with the real ones",
    "out_of_range_amount": "correct the amounts (at most +/-{row_bound} per row)",
    "too_many_decimals": "correct those amounts in R2a to {places}, the minor unit of {currency_name} (never rounded "
                         "here), or correct tenants.currency if the tenant does not keep its books in {currency_name}",
    "sum_overflow": "correct the amounts: their absolute values must add up to at most {ceiling} per tenant-month",
    "bad_txn_date": "set txn_date to the real date as YYYY-MM-DD (find the rows with "
                    "SELECT * FROM r2a_transactions WHERE date(txn_date, '+0 days') IS NOT txn_date)",
}
_WITH_IDS = ("too_many_decimals", "out_of_range_amount")  # problems whose rejection names the rows' ids


@dataclass
class Extract:
    # *_minor: int64 minor units of the row's `currency` (the tenant's; ISO 4217 minor unit: JPY 0, IDR 2, KWD 3)
    detail: pd.DataFrame  # tenant_id, period, category, subcategory, amount_minor, currency, source_rows
    monthly: pd.DataFrame  # tenant_id, period, revenue/cogs/expenses/net_income _minor, currency, source_rows
    rejections: pd.DataFrame  # tenant_id, period, stage, reason, detail


# The row kinds the query tells apart (its `kind` column, part of the GROUP BY): 0 is a clean row.
KINDS = {1: "null_amount", 2: "non_numeric_amount", 3: "infinite_amount", 4: "out_of_range_amount",
         5: "too_many_decimals", 6: "bad_txn_date", 7: "nan_amount"}
RowIds = Callable[[pd.DataFrame], dict[tuple[str, dt.date], dict[str, list[int]]]]


def _fits(scale: int) -> str:
    """SQLite: the REAL amount has no digit below 10^-log10(scale), within a few ulps (relative 1e-15)."""
    return f"ABS(amount * {scale} - ROUND(amount * {scale})) <= ABS(amount) * {scale} * 1e-15"


def _row_sql(dialect: str) -> dict[str, str]:
    """Per-row SQL expressions: `kind` (a problem no currency accepts, 0 if none), `places` (decimals the amount
    needs, 0..3; 4 for more), `size` (0..3, see the module docstring) and `minor` (the amount scaled by
    10^(3 - size), an integer, garbage but never an error for a hostile row)."""
    inside = f"amount BETWEEN -{MAX_ROW_MINOR} AND {MAX_ROW_MINOR}"  # false for NULL, text, inf, NaN
    size = ("CASE " + " ".join(f"WHEN amount BETWEEN -{b} AND {b} THEN {i}" for i, b in enumerate(_SIZES))
            + f" ELSE {len(_SIZES)} END")
    scale = ("CASE " + " ".join(f"WHEN amount BETWEEN -{b} AND {b} THEN {10 ** (_UNIT - i)}"
                                for i, b in enumerate(_SIZES)) + " ELSE 1 END")
    if dialect == "sqlite":
        # NUMERIC affinity stores an integral value as INTEGER: a REAL is fractional (or beyond int64). A hostile
        # row's minor units are garbage (CAST clamps 1e20 and infinity to int64's max, text gives 0) but never
        # raise: each row adds at most 2^63 / 10^9 to minor_hi. Its group is rejected by its kind anyway.
        return {
            "kind": f"""CASE WHEN date(txn_date, '+0 days') IS NOT txn_date THEN 6
       WHEN {inside} THEN CASE WHEN typeof(amount) <> 'real' OR {_fits(1000)} THEN 0 ELSE 5 END
       WHEN amount IS NULL THEN 1 WHEN typeof(amount) NOT IN ('integer', 'real') THEN 2
       WHEN ABS(amount) = 9e999 THEN 3 ELSE 4 END""",
            "places": f"CASE WHEN typeof(amount) <> 'real' THEN 0 WHEN {_fits(10)} THEN 1 WHEN {_fits(100)} THEN 2 "
                      f"WHEN {_fits(1000)} THEN 3 ELSE 4 END",
            "size": size,
            "minor": f"CAST(ROUND(amount * {scale}) AS INTEGER)",
            "number": "typeof(amount) IN ('integer', 'real') AND ABS(amount) < 9e999",
            "fraction": "typeof(amount) = 'real'",
        }
    # Postgres: NUMERIC is exact. It holds 'NaN' (which equals itself in Postgres, and which no CAST to BIGINT
    # accepts, hence the guard) but no infinity.
    return {
        "kind": (f"CASE WHEN {inside} THEN CASE WHEN amount <> ROUND(amount, 3) THEN 5 ELSE 0 END "
                 "WHEN amount IS NULL THEN 1 WHEN amount = 'NaN' THEN 7 ELSE 4 END"),
        "places": ("CASE WHEN amount = ROUND(amount) THEN 0 WHEN amount = ROUND(amount, 1) THEN 1 "
                   "WHEN amount = ROUND(amount, 2) THEN 2 WHEN amount = ROUND(amount, 3) THEN 3 ELSE 4 END"),
        "size": size,
        "minor": f"CASE WHEN {inside} THEN CAST(ROUND(amount * {scale}) AS BIGINT) ELSE 0 END",
        "number": "amount <> 'NaN'",
        "fraction": "amount <> ROUND(amount)",
    }


def _query(dialect: str) -> str:
    """The one GROUP BY: sums in integer minor units, grouped by a per-row `kind`, `places` and `size` as well, so a
    problem row lands in a group of its own and COUNT(*) counts it: clean whole-unit data has the same groups as
    without them, and classifying costs no extra aggregate (the costly part of a GROUP BY in SQLite), only CASEs
    that test the common case first. Tenant, currency and category checks happen after aggregation (on ~10 groups
    per tenant-month)."""
    row = _row_sql(dialect)
    places = row["places"]
    if dialect == "sqlite":
        select = f"""
SELECT tenant_id, substr(txn_date, 1, 7) || '-01' AS month_key, category, subcategory, currency,
  {row['kind']} AS kind,
  {places} AS places, {row['size']} AS size,
  IFNULL(SUM({row['minor']} / {_SPLIT}), 0) AS minor_hi, IFNULL(SUM({row['minor']} % {_SPLIT}), 0) AS minor_lo,
  COUNT(*) AS source_rows, MAX(recorded_at) AS last_recorded_at
FROM r2a_transactions
WHERE {{where}}
GROUP BY tenant_id, month_key, category, subcategory, currency, kind, places, size"""
        # The second branch is the same aggregate over the two index ranges outside every month (see above).
        return (select.format(where="txn_date >= :start AND txn_date < :end") + "\nUNION ALL"
                + select.format(where="txn_date < '0000-01-01' OR txn_date > '9999-12-31'"))
    month = "CAST(date_trunc('month', txn_date) AS DATE)"
    # Postgres sums NUMERIC without overflow; the split happens per group.
    return f"""
SELECT tenant_id, to_char({month}, 'YYYY-MM-DD') AS month_key, category, subcategory, currency,
  {row['kind']} AS kind, {places} AS places, {row['size']} AS size,
  CAST(DIV(SUM({row['minor']}), {_SPLIT}) AS BIGINT) AS minor_hi,
  CAST(MOD(SUM({row['minor']}), {_SPLIT}) AS BIGINT) AS minor_lo,
  COUNT(*) AS source_rows, MAX(recorded_at) AS last_recorded_at
FROM r2a_transactions
WHERE txn_date >= :start AND txn_date < :end
GROUP BY tenant_id, {month}, category, subcategory, currency, {row['kind']}, {places}, {row['size']}
"""


def _ids_query(dialect: str) -> str:
    """The rows that may be too fine or too large for some currency, of the given R2a tenant ids, in the window:
    for naming the offending rows of a rejected tenant-month (only runs when there is one)."""
    row = _row_sql(dialect)
    month = ("substr(txn_date, 1, 7) || '-01'" if dialect == "sqlite"
             else "to_char(CAST(date_trunc('month', txn_date) AS DATE), 'YYYY-MM-DD')")
    return f"""
SELECT id, tenant_id, {month} AS month_key, {row['places']} AS places,
  CASE WHEN amount BETWEEN -{MAX_ROW_MINOR} AND {MAX_ROW_MINOR} THEN {row['size']} ELSE {len(_SIZES) + 1} END AS size
FROM r2a_transactions
WHERE txn_date >= :start AND txn_date < :end AND tenant_id IN :tenants AND {row['number']}
  AND ({row['fraction']} OR NOT (amount BETWEEN -{_SIZES[0]} AND {_SIZES[0]}))
ORDER BY id"""


def extract(engine: Engine, start: dt.date, end: dt.date) -> Extract:
    """The P&L of every tenant-month in [start, end): one aggregate query, plus the (small) tenants table; a second
    query only when a tenant-month is rejected for amounts its currency cannot hold (to name the rows)."""
    params = {"start": start, "end": end}
    if engine.dialect.name == "sqlite":
        params = {k: v.isoformat() for k, v in params.items()}
    with engine.connect() as conn:
        raw = pd.read_sql_query(text(_query(engine.dialect.name)), conn, params=params)
        tenants = pd.read_sql_query(text("SELECT tenant_id, currency AS tenant_currency FROM tenants"), conn)

    def row_ids(flagged: pd.DataFrame) -> dict[tuple[str, dt.date], dict[str, list[int]]]:
        return _row_ids(engine, params, flagged)
    return shape(raw, tenants, start, end, row_ids)


def _row_ids(engine: Engine, params: dict, flagged: pd.DataFrame) -> dict[tuple[str, dt.date], dict[str, list[int]]]:
    """flagged: source_tenant_id (as in R2a), tenant_id, period, exponent of the rejected tenant-months with rows
    too fine or too large for their currency -> {(tenant, period): {problem: [r2a_transactions.id, ...]}}."""
    sources = sorted({t for t in flagged["source_tenant_id"] if isinstance(t, str)})
    if not sources:
        return {}
    stmt = text(_ids_query(engine.dialect.name)).bindparams(bindparam("tenants", expanding=True))
    with engine.connect() as conn:
        rows = pd.read_sql_query(stmt, conn, params={**params, "tenants": sources})
    if rows.empty:
        return {}
    rows["tenant_id"] = rows["tenant_id"].map(lambda t: t.strip() or None)
    rows["period"] = pd.to_datetime(rows["month_key"], format="%Y-%m-%d", errors="coerce").dt.date
    wanted = flagged.drop_duplicates(["tenant_id", "period"])[["tenant_id", "period", "exponent"]]
    rows = rows.merge(wanted, on=["tenant_id", "period"])
    e = rows["exponent"].astype("int64")
    out: dict[tuple[str, dt.date], dict[str, list[int]]] = {}
    for problem, mask in (("too_many_decimals", rows["places"] > e),
                          ("out_of_range_amount", rows["size"] + e > _UNIT)):
        for (tenant, period), ids in rows[mask].groupby(["tenant_id", "period"])["id"]:
            out.setdefault((tenant, period), {})[problem] = [int(i) for i in ids]
    return out


def shape(raw: pd.DataFrame, tenants: pd.DataFrame, start: dt.date | None = None,
          end: dt.date | None = None, row_ids: RowIds | None = None) -> Extract:
    """The query's groups -> detail, monthly and rejections (vectorised: per group, never per row). `row_ids`
    names the rows of a rejected tenant-month (extract() passes one that queries R2a)."""
    raw = raw.merge(tenants, on="tenant_id", how="left")
    raw["tenant_id"] = raw["tenant_id"].astype("object")
    raw["source_tenant_id"] = raw["tenant_id"]  # as R2a spells it, before _trim_tenants
    rows = raw["source_rows"] = pd.to_numeric(raw["source_rows"]).astype("int64")
    kind = pd.to_numeric(raw["kind"]).astype("int64")
    for k, col in KINDS.items():
        raw[col] = rows.where(kind == k, 0)
    raw["untrimmed_tenant"] = _trim_tenants(raw, tenants)
    exponent = raw["tenant_currency"].map(CURRENCIES)  # NaN: no tenant, or a currency books cannot be kept in
    known = exponent.notna()
    raw["exponent"] = e = exponent.fillna(0).astype("int64")
    raw["unknown_currency"] = rows.where(raw["tenant_currency"].notna() & ~known, 0)
    places = pd.to_numeric(raw["places"]).fillna(0).astype("int64")
    size = pd.to_numeric(raw["size"]).fillna(0).astype("int64")
    clean = (kind == 0) & known
    fits = clean & (places <= e) & (size + e <= _UNIT)
    raw["too_many_decimals"] += rows.where(clean & (places > e), 0)
    raw["out_of_range_amount"] += rows.where(clean & (size + e > _UNIT), 0)
    raw["minor_hi"], raw["minor_lo"], inexact = _to_currency_units(raw, _UNIT - size - e, fits)
    raw["too_many_decimals"] += rows.where(inexact, 0)  # a remainder: never dropped (see the module docstring)
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
    bad = raw[in_bad]
    problems = bad.groupby(key, dropna=False)[[*PROBLEMS, "source_rows"]].sum()
    overflow = (problems["sum_overflow"] > 0) | too_big.reindex(problems.index, fill_value=False)
    problems["sum_overflow"] = problems.pop("source_rows").where(overflow, 0)
    # the same groups in the same order: the tenant-month's currency, for the words of its detail
    problems["currency"] = bad.groupby(key, dropna=False)["tenant_currency"].first().to_numpy()
    flagged = bad[(bad[list(_WITH_IDS)].to_numpy() > 0).any(axis=1) & bad["tenant_currency"].map(CURRENCIES).notna()]
    ids = row_ids(flagged[["source_tenant_id", *key, "exponent"]]) if row_ids and len(flagged) else {}
    rejections = pd.DataFrame(
        [
            {
                "tenant_id": tenant,
                "period": period,
                "stage": "extract",
                "reason": "bad source rows: " + ", ".join(k for k in PROBLEMS if row[k] > 0),
                "detail": _problem_detail(tenant, period, row, start, end, row["currency"],
                                          ids.get((tenant, period), {})),
            }
            for (tenant, period), row in problems.iterrows()
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


def _to_currency_units(raw: pd.DataFrame, shift: pd.Series, fits: pd.Series
                       ) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(hi, lo, inexact): each fitting group's sum, summed in units of 10^-(3 - size), divided by 10^shift into its
    currency's minor units, still as hi * _SPLIT + lo with 0 <= lo < _SPLIT (_SPLIT is a multiple of 10^shift, so the
    division is exact on the two parts). Other groups get 0 (they are rejected). `inexact`: a fitting group whose
    sum is not a multiple of 10^shift (a digit the classification did not see): rejected, never truncated."""
    hi = pd.to_numeric(raw["minor_hi"]).fillna(0).astype("int64").where(fits, 0)
    lo = pd.to_numeric(raw["minor_lo"]).fillna(0).astype("int64").where(fits, 0)
    hi, lo = hi + lo // _SPLIT, lo % _SPLIT
    p = (10 ** shift.where(fits, 0).clip(0, _UNIT)).astype("int64")
    inexact = fits & (lo % p != 0)
    return hi // p, (hi % p) * (_SPLIT // p) + lo // p, inexact


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


def _places(exponent: int) -> str:
    return "whole units (no decimals)" if exponent == 0 else \
        f"at most {exponent} decimal{'s' if exponent > 1 else ''}"


def _describe(currency: object) -> dict[str, str]:
    """The currency-dependent words of PROBLEMS and _FIXES for a tenant-month in `currency`."""
    if isinstance(currency, str) and currency in CURRENCIES:
        e = CURRENCIES[currency]
        return {"currency_name": currency, "places": _places(e), "tenant_currency": f" ({currency})",
                "minor_unit": f"{currency} has (ISO 4217 minor unit {e}: {_places(e)})",
                "row_bound": f"{format_amount(MAX_ROW_MINOR, currency)} {currency}",
                "ceiling": f"{format_amount(MAX_MONTH_MINOR, currency)} {currency}", "currency_problem": ""}
    return {"currency_name": "its currency", "places": "at most 3 decimals", "tenant_currency": "",
            "minor_unit": "any currency has (more than 3)",
            "row_bound": f"{MAX_ROW_MINOR:,} minor units", "ceiling": f"{MAX_MONTH_MINOR:,} minor units",
            "currency_problem": currency_problem(currency) if isinstance(currency, str) else "no currency"}


def _ids(found: list[int]) -> str:
    shown = ", ".join(map(str, found[:ROW_IDS_SHOWN]))
    more = f" and {len(found) - ROW_IDS_SHOWN} more" if len(found) > ROW_IDS_SHOWN else ""
    return f" (r2a_transactions.id {shown}{more})"


def _problem_detail(tenant: object, period: dt.date | None, row: pd.Series, start: dt.date | None,
                    end: dt.date | None, currency: object = None, ids: dict[str, list[int]] | None = None) -> str:
    who = f"tenant {tenant}" if isinstance(tenant, str) else "rows with no tenant_id"
    if isinstance(period, dt.date):
        when = f"{period:%Y-%m}"
        rerun = "re-run this month; nothing was posted for this tenant-month."
    else:
        window = f"{start} .. {end}" if start and end else "this window"
        when = f"period unknown (found by the extraction of {window})"
        rerun = "re-run the month the rows belong to."
    words = {**_describe(currency), "tenant": tenant}
    ids = ids or {}
    found = "; ".join(f"{int(row[k])} {PROBLEMS[k].format(**words)}{_ids(ids[k]) if ids.get(k) else ''}"
                      for k in PROBLEMS if row[k] > 0)
    fixes = [_FIXES[k].format(**words) for k in PROBLEMS if row[k] > 0 and k in _FIXES]
    if any(row[k] > 0 and k not in _FIXES and k != "null_tenant" for k in PROBLEMS):
        fixes.append(f"fix or delete {'the other bad' if fixes else 'these'} rows in R2a (r2a_transactions)")
    if not isinstance(tenant, str):
        fixes.insert(0, "attach these rows to a tenant in R2a (r2a_transactions.tenant_id)")
    return f"{who}, {when}: {found}. To fix: {'; '.join(fixes)}; then {rerun}"
