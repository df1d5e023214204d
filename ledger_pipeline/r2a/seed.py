"""Deterministic synthetic R2a data for Indonesian SMEs in IDR, written in bulk.

Everything is generated as numpy arrays (no Python loop per row) and written in one transaction:
executemany on SQLite, COPY on Postgres.

This is a dev/demo tool that plays R2a's own team: it is the only code that creates R2a's tables
(`create_tables`, explicitly, before writing). The pipeline itself never runs DDL or DML on R2a.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, text

from ledger_pipeline import clock
from ledger_pipeline.r2a.models import R2aBase, R2aTransaction, Tenant, sqlite_path

PROFILES = {
    # name: (median monthly revenue in IDR, cogs share of revenue, expense share of revenue)
    "warung": (25_000_000, 0.62, 0.30),
    "cafe": (120_000_000, 0.38, 0.52),
    "retail": (400_000_000, 0.70, 0.22),
    "services": (180_000_000, 0.15, 0.70),
    "distributor": (1_500_000_000, 0.82, 0.12),
}
# (category, subcategory, share of the category, mean rows per month)
SUBCATEGORIES = [
    ("revenue", "product_sales", 0.80, 4),
    ("revenue", "service_revenue", 0.20, 2),
    ("cogs", "merchandise", 0.65, 2),
    ("cogs", "raw_materials", 0.35, 1),
    ("expense", "salaries", 0.45, 2),
    ("expense", "rent", 0.20, 1),
    ("expense", "utilities", 0.08, 1),
    ("expense", "marketing", 0.12, 1),
    ("expense", "transport", 0.08, 1),
    ("expense", "admin_fees", 0.07, 1),
]
# Month holding the last days of Ramadan and Lebaran (Idul Fitri) per year: the seasonal peak.
LEBARAN_MONTH = {2023: 4, 2024: 4, 2025: 3, 2026: 3, 2027: 3, 2028: 2}
NAMES = ["Sari", "Jaya", "Makmur", "Berkah", "Sentosa", "Abadi", "Mulia", "Sejahtera", "Lancar", "Maju"]
KINDS = {"warung": "Warung", "cafe": "Kopi", "retail": "Toko", "services": "Jasa", "distributor": "CV"}


@dataclass(frozen=True)
class SeedResult:
    tenants: int
    months: int
    rows: int
    start: dt.date


def default_start(months: int, at: dt.datetime | None = None) -> dt.date:
    """The first month of a range of `months` ending at the last complete month in the business timezone."""
    return clock.recent_months(months, at=at)[0]


def generate(tenants: int, months: int, start: dt.date, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns (tenants, transactions) frames; amounts are whole rupiah as int64 (exact)."""
    rng = np.random.default_rng(seed)
    tenant_ids = np.array([f"t{i:05d}" for i in range(1, tenants + 1)])
    profile_names = np.array(list(PROFILES))
    profile = profile_names[rng.integers(0, len(profile_names), tenants)]
    base_rev = np.array([PROFILES[p][0] for p in profile]) * rng.lognormal(0, 0.6, tenants)
    cogs_share = np.array([PROFILES[p][1] for p in profile]) * rng.uniform(0.85, 1.15, tenants)
    exp_share = np.array([PROFILES[p][2] for p in profile]) * rng.uniform(0.85, 1.2, tenants)
    # ~10% join after the start, ~3% stop before the end (none of either when the range is a single month).
    joined = np.where(rng.random(tenants) < 0.10, rng.integers(1, max(months, 2), tenants), 0).clip(0, months - 1)
    left = np.where(rng.random(tenants) < 0.03, rng.integers(1, max(months, 2), tenants), months)
    left = np.maximum(left, joined + 1)
    periods = [
        clock.add_months(start, m) for m in range(months)
    ]
    names = np.array(
        [f"{KINDS[p]} {NAMES[i % 10]} {NAMES[(i // 10) % 10]} {i + 1}" for i, p in enumerate(profile)]
    )
    tenants_df = pd.DataFrame(
        {
            "tenant_id": tenant_ids,
            "name": names,
            "currency": "IDR",
            "profile": profile,
            "joined_on": [periods[j].isoformat() for j in joined],
            "left_on": [periods[j].isoformat() if j < months else None for j in left],
        }
    )

    # One block per (tenant, month, subcategory): how many rows, and the block's total amount.
    t_idx, m_idx = np.meshgrid(np.arange(tenants), np.arange(months), indexing="ij")
    t_idx, m_idx = t_idx.ravel(), m_idx.ravel()
    active = (m_idx >= joined[t_idx]) & (m_idx < left[t_idx])
    t_idx, m_idx = t_idx[active], m_idx[active]
    month_nums = np.array([p.month for p in periods])[m_idx]
    years = np.array([p.year for p in periods])[m_idx]
    lebaran = np.array([LEBARAN_MONTH.get(y, 3) for y in years])
    season = 1.0 + 0.45 * (month_nums == lebaran) + 0.2 * (month_nums == lebaran - 1) + 0.25 * (month_nums == 12)
    month_rev = base_rev[t_idx] * season * rng.lognormal(0, 0.18, len(t_idx))
    # Loss-making months: a slow month with full costs.
    slump = rng.random(len(t_idx)) < 0.08
    month_rev = np.where(slump, month_rev * 0.45, month_rev)
    cat_total = {
        "revenue": month_rev,
        "cogs": month_rev * cogs_share[t_idx] * np.where(slump, 1.6, 1.0),
        "expense": base_rev[t_idx] * exp_share[t_idx] * rng.lognormal(0, 0.1, len(t_idx)),
    }
    blocks_t, blocks_m, blocks_cat, blocks_sub, blocks_n, blocks_amt = [], [], [], [], [], []
    for category, sub, share, mean_rows in SUBCATEGORIES:
        n = rng.poisson(mean_rows, len(t_idx))
        n = np.where(sub in ("salaries", "rent", "product_sales"), np.maximum(n, 1), n)
        total = cat_total[category] * share * rng.uniform(0.8, 1.2, len(t_idx))
        keep = n > 0
        blocks_t.append(t_idx[keep])
        blocks_m.append(m_idx[keep])
        blocks_cat.append(np.full(keep.sum(), category))
        blocks_sub.append(np.full(keep.sum(), sub))
        blocks_n.append(n[keep])
        blocks_amt.append(total[keep] / n[keep])
    bt, bm = np.concatenate(blocks_t), np.concatenate(blocks_m)
    bn = np.concatenate(blocks_n)
    rows_t, rows_m = np.repeat(bt, bn), np.repeat(bm, bn)
    rows_cat, rows_sub = np.repeat(np.concatenate(blocks_cat), bn), np.repeat(np.concatenate(blocks_sub), bn)
    mean_amt = np.repeat(np.concatenate(blocks_amt), bn)
    # Whole rupiah, rounded to 100: IDR has no sen in practice. int64 all the way (exact).
    amount = (np.round(mean_amt * rng.uniform(0.7, 1.3, len(mean_amt)) / 100) * 100).astype(np.int64)
    amount = np.maximum(amount, 100)

    # Refunds/reversals: negative revenue rows for ~20% of tenant-months.
    tm = len(t_idx)
    refund = rng.random(tm) < 0.20
    r_t, r_m = t_idx[refund], m_idx[refund]
    r_amt = -(np.round(month_rev[refund] * rng.uniform(0.005, 0.04, refund.sum()) / 100) * 100).astype(np.int64)
    rows_t = np.concatenate([rows_t, r_t])
    rows_m = np.concatenate([rows_m, r_m])
    rows_cat = np.concatenate([rows_cat, np.full(len(r_t), "revenue")])
    rows_sub = np.concatenate([rows_sub, np.full(len(r_t), "product_sales")])
    amount = np.concatenate([amount, np.minimum(r_amt, -100)])

    period_days = np.array([(periods[m] - dt.date(1970, 1, 1)).days for m in range(months)])
    month_len = np.array([(clock.add_months(p, 1) - p).days for p in periods])
    day = (rng.random(len(rows_m)) * month_len[rows_m]).astype(np.int64)
    txn_days = period_days[rows_m] + day
    txn_date = txn_days.astype("datetime64[D]")
    # Late-arriving rows: ~2% recorded 3-40 days after their month closed.
    late = rng.random(len(rows_m)) < 0.02
    recorded_days = np.where(
        late, period_days[rows_m] + month_len[rows_m] + rng.integers(3, 40, len(rows_m)), txn_days
    )
    recorded = recorded_days.astype("datetime64[D]") + np.timedelta64(9, "h")
    order = np.lexsort((txn_days, rows_t))
    descriptions = np.where(amount < 0, "Refund", "R2a")
    txns = pd.DataFrame(
        {
            "id": np.arange(1, len(order) + 1),
            "tenant_id": tenant_ids[rows_t[order]],
            "txn_date": txn_date[order],
            "category": rows_cat[order],
            "subcategory": rows_sub[order],
            "amount": amount[order],
            "currency": "IDR",
            "description": descriptions[order],
            "recorded_at": recorded[order],
        }
    )
    return tenants_df, txns


def create_tables(engine: Engine) -> None:
    """R2a's tables (`tenants`, `r2a_transactions`), created where missing: what R2a's team owns in production, made
    here for the embedded setup and tests only. SQLite: the file's folder is created and the file set to WAL (so the
    pipeline's read-only connections read while the seed writes)."""
    path = sqlite_path(engine.url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    R2aBase.metadata.create_all(engine)


def write(engine: Engine, tenants_df: pd.DataFrame, txns: pd.DataFrame,
          progress: Callable[[int, int], None] | None = None) -> None:
    """Replace R2a's tenants and transactions with the frames, in one transaction (the tables are created first
    when missing: `create_tables`)."""
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(delete(R2aTransaction))
        conn.execute(delete(Tenant))
        raw = conn.connection.driver_connection
        tcols = list(tenants_df.columns)
        xcols = list(txns.columns)
        if engine.dialect.name == "postgresql":
            with raw.cursor() as cur:
                _copy(cur, "tenants", tenants_df, tcols)
                _copy(cur, "r2a_transactions", txns, xcols, progress)
                cur.execute("SELECT setval(pg_get_serial_sequence('r2a_transactions', 'id'), "
                            "(SELECT COALESCE(MAX(id), 0) + 1 FROM r2a_transactions), false)")
        else:
            cur = raw.cursor()
            cur.executemany(
                f"INSERT INTO tenants ({','.join(tcols)}) VALUES ({','.join('?' * len(tcols))})",
                tenants_df.astype(object).where(tenants_df.notna(), None).itertuples(index=False, name=None),
            )
            frame = txns.assign(
                txn_date=txns["txn_date"].dt.strftime("%Y-%m-%d"),
                recorded_at=txns["recorded_at"].dt.strftime("%Y-%m-%d %H:%M:%S.000000"),
            )
            step = 200_000
            sql = f"INSERT INTO r2a_transactions ({','.join(xcols)}) VALUES ({','.join('?' * len(xcols))})"
            for lo in range(0, len(frame), step):
                chunk = frame.iloc[lo : lo + step]
                cur.executemany(sql, zip(*(chunk[c].tolist() for c in xcols), strict=True))
                if progress:
                    progress(min(lo + step, len(frame)), len(frame))
            cur.close()


def _copy(cur, table: str, frame: pd.DataFrame, cols: list[str],  # noqa: ANN001
          progress: Callable[[int, int], None] | None = None) -> None:
    step = 250_000
    with cur.copy(f"COPY {table} ({','.join(cols)}) FROM STDIN WITH (FORMAT csv)") as copy:
        for lo in range(0, len(frame), step):
            buf = io.StringIO()
            frame.iloc[lo : lo + step].to_csv(buf, header=False, index=False, date_format="%Y-%m-%d %H:%M:%S")
            copy.write(buf.getvalue())
            if progress:
                progress(min(lo + step, len(frame)), len(frame))


def seed(engine: Engine, tenants: int, months: int, start: dt.date | None = None, seed: int = 7,
         progress: Callable[[int, int], None] | None = None) -> SeedResult:
    start = start or default_start(months)
    tenants_df, txns = generate(tenants, months, start, seed)
    write(engine, tenants_df, txns, progress)
    return SeedResult(tenants=len(tenants_df), months=months, rows=len(txns), start=start)


def add_bad_rows(engine: Engine, period: dt.date, tenant_ids: list[str]) -> int:
    """A few rows of each kind of bad source data, as real R2a databases have (for the demo and drills). The hostile
    kinds (an amount beyond the per-row bound, infinity or NaN, a txn_date that is no date, a tenant_id with stray
    whitespace) go to the same three tenants and month, so the same tenant-months are rejected."""
    day = period.replace(day=15)
    rows = [
        {"tenant_id": tenant_ids[0], "category": "revnue", "subcategory": "product_sales", "amount": 150000,
         "currency": "IDR", "description": "typo in category"},
        {"tenant_id": tenant_ids[1], "category": "expense", "subcategory": "rent", "amount": 1200,
         "currency": "USD", "description": "paid in USD"},
        {"tenant_id": tenant_ids[2], "category": "expense", "subcategory": "utilities", "amount": None,
         "currency": "IDR", "description": "amount missing"},
        {"tenant_id": "t99999", "category": "revenue", "subcategory": "product_sales", "amount": 50000,
         "currency": "IDR", "description": "tenant deleted from R2a"},
        {"tenant_id": None, "category": "revenue", "subcategory": "product_sales", "amount": 70000,
         "currency": "IDR", "description": "no tenant"},
        {"tenant_id": f" {tenant_ids[0]}", "category": "revenue", "subcategory": "product_sales", "amount": 25000,
         "currency": "IDR", "description": "tenant_id with a leading space"},
    ]
    # Written as SQL literals, which is how they reach R2a: SQLite keeps 1e20, infinity and any txn_date text; on
    # Postgres NUMERIC(18,2) holds 'NaN' and 2e13 (beyond the per-row bound) but no infinity, DATE no bad text.
    sqlite = engine.dialect.name == "sqlite"
    hostile = [
        (tenant_ids[0], "'" + day.isoformat() + "'", "1e20" if sqlite else "20000000000000", "amount beyond the bound"),
        (tenant_ids[1], "'" + day.isoformat() + "'", "9e999" if sqlite else "'NaN'", "infinite or NaN amount"),
    ]
    if sqlite:
        hostile.append((tenant_ids[2], f"'{period:%Y-%m}-32'", "50000", "txn_date that is not a date"))
    with engine.begin() as conn:
        conn.execute(R2aTransaction.__table__.insert(), [{**r, "txn_date": day} for r in rows])
        for tenant, txn_date, amount, description in hostile:
            conn.execute(text(
                "INSERT INTO r2a_transactions (tenant_id, txn_date, category, subcategory, amount, currency, "
                f"description) VALUES (:tenant, {txn_date}, 'revenue', 'product_sales', {amount}, 'IDR', :d)"),
                {"tenant": tenant, "d": description})
    return len(rows) + len(hostile)
