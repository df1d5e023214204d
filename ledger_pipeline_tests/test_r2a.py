"""R2a source: seed, extraction exactness on SQLite and Postgres, bad data, and the r2a_pl_monthly asset."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import pandas as pd
import pytest
from sqlalchemy import Engine, text

from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import R2aTransaction, make_engine
from ledger_pipeline.warehouse.store import Warehouse, replace_rows, transaction, window_where
from ledger_pipeline_tests.helpers import materialize, query

START = dt.date(2025, 1, 1)


def independent_sums(engine: Engine, start: dt.date, end: dt.date) -> dict[tuple[str, str, str], Decimal]:
    """Per tenant, month, category: Python Decimal sums of the raw rows (no SQL aggregation, no floats)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT x.tenant_id, x.txn_date, x.category, CAST(x.amount AS TEXT) FROM r2a_transactions x "
            "JOIN tenants t ON t.tenant_id = x.tenant_id WHERE x.txn_date >= :s AND x.txn_date < :e"),
            {"s": start, "e": end}).fetchall()
    out: dict[tuple[str, str, str], Decimal] = {}
    for tenant, day, category, amount in rows:
        key = (tenant, str(day)[:7], category)
        out[key] = out.get(key, Decimal(0)) + Decimal(amount)
    return out


def warehouse_sums(settings, start: dt.date, end: dt.date) -> dict[tuple[str, str, str], Decimal]:  # noqa: ANN001
    rows = query(settings, "SELECT tenant_id, strftime(period, '%Y-%m'), revenue, cogs, expenses "
                           "FROM r2a.pl_monthly WHERE period >= ? AND period < ?", [start, end])
    out = {}
    for tenant, month, rev, cogs, exp in rows:
        for cat, val in (("revenue", rev), ("cogs", cogs), ("expense", exp)):
            if val != 0:
                out[(tenant, month, cat)] = val
    return out


@pytest.fixture(params=["sqlite", "postgres"])
def r2a_url(request, settings) -> str:  # noqa: ANN001
    if request.param == "sqlite":
        return settings.r2a_database_url
    return request.getfixturevalue("pg_url")


def test_seed_is_deterministic_and_realistic(settings) -> None:  # noqa: ANN001
    a_t, a_x = seeding.generate(300, 12, START, seed=3)
    b_t, b_x = seeding.generate(300, 12, START, seed=3)
    pd.testing.assert_frame_equal(a_x, b_x)
    assert a_x["amount"].dtype == "int64"  # exact whole rupiah, never float
    assert set(a_x["category"]) == {"revenue", "cogs", "expense"}
    assert a_x.groupby("category")["subcategory"].nunique().min() >= 2
    assert (a_x["amount"] < 0).sum() > 0, "refunds are negative rows"
    monthly = a_x.assign(m=a_x["txn_date"].dt.to_period("M")).pivot_table(
        index=["tenant_id", "m"], columns="category", values="amount", aggfunc="sum", fill_value=0)
    net = monthly["revenue"] - monthly["cogs"] - monthly["expense"]
    assert (net < 0).sum() > 0, "some months lose money"
    late = a_x["recorded_at"].dt.to_period("M") > a_x["txn_date"].dt.to_period("M")
    assert late.sum() > 0, "late-arriving rows"
    assert a_t["joined_on"].nunique() > 1 and a_t["left_on"].notna().sum() > 0
    lebaran_2025 = monthly.xs(pd.Period("2025-03", "M"), level="m")["revenue"].sum()
    july = monthly.xs(pd.Period("2025-07", "M"), level="m")["revenue"].sum()
    assert lebaran_2025 > july * 1.2, "Ramadan/Lebaran peak"


def test_extract_totals_equal_independent_sum(settings, r2a_url: str) -> None:  # noqa: ANN001
    engine = make_engine(r2a_url)
    seeding.seed(engine, 60, 4, START, seed=5)
    materialize(["r2a_pl_monthly"], "2025-01-01", "2025-04-01", r2a_url=r2a_url)
    expected = independent_sums(engine, START, dt.date(2025, 5, 1))
    assert warehouse_sums(settings, START, dt.date(2025, 5, 1)) == {k: v for k, v in expected.items() if v != 0}
    # the detail table carries the same money, per category
    by_category: dict = {}
    for (_, _, category), v in expected.items():
        by_category[category] = by_category.get(category, 0) + v
    assert dict(query(settings, "SELECT category, SUM(amount) FROM r2a.pl_monthly_detail GROUP BY 1")) == by_category


def test_rerun_identical_and_range_equals_single_months(settings) -> None:  # noqa: ANN001
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, 40, 3, START, seed=9)
    cols = "tenant_id, period, revenue, cogs, expenses, net_income, currency, source_rows"
    materialize(["r2a_pl_monthly"], "2025-01-01", "2025-03-01")
    ranged = query(settings, f"SELECT {cols} FROM r2a.pl_monthly ORDER BY ALL")
    materialize(["r2a_pl_monthly"], "2025-01-01", "2025-03-01")
    assert query(settings, f"SELECT {cols} FROM r2a.pl_monthly ORDER BY ALL") == ranged, "re-run: no duplicates"
    for key in ("2025-01-01", "2025-02-01", "2025-03-01"):
        materialize(["r2a_pl_monthly"], key)
    assert query(settings, f"SELECT {cols} FROM r2a.pl_monthly ORDER BY ALL") == ranged
    assert len(ranged) == len({(r[0], r[1]) for r in ranged})


def test_late_rows_change_the_month_on_rerun(settings) -> None:  # noqa: ANN001
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, 10, 2, START, seed=1)
    materialize(["r2a_pl_monthly"], "2025-01-01")
    before = dict(query(settings, "SELECT tenant_id, revenue FROM r2a.pl_monthly"))
    tenant = sorted(before)[1]
    with engine.begin() as conn:
        conn.execute(R2aTransaction.__table__.insert(), [{
            "tenant_id": tenant, "txn_date": dt.date(2025, 1, 20), "category": "revenue",
            "subcategory": "product_sales", "amount": Decimal("1234567.89"), "currency": "IDR",
            "recorded_at": dt.datetime(2025, 2, 10)}])
    materialize(["r2a_pl_monthly"], "2025-01-01")
    after = dict(query(settings, "SELECT tenant_id, revenue FROM r2a.pl_monthly"))
    assert after[tenant] - before[tenant] == Decimal("1234567.89")
    assert {k: v for k, v in after.items() if k != tenant} == {k: v for k, v in before.items() if k != tenant}


def test_each_kind_of_bad_data_is_rejected_and_others_stay_exact(settings, r2a_url: str) -> None:  # noqa: ANN001
    engine = make_engine(r2a_url)
    seeding.seed(engine, 12, 1, START, seed=2)
    clean = independent_sums(engine, START, dt.date(2025, 2, 1))
    bad_rows = [
        {"tenant_id": None, "category": "revenue", "amount": Decimal(5), "currency": "IDR"},
        {"tenant_id": "t00001", "category": "revenue", "amount": None, "currency": "IDR"},
        {"tenant_id": "t00002", "category": "refund", "amount": Decimal(5), "currency": "IDR"},
        {"tenant_id": "t00003", "category": "expense", "amount": Decimal(5), "currency": "USD"},
        {"tenant_id": "ghost", "category": "revenue", "amount": Decimal(5), "currency": "IDR"},
    ]
    with engine.begin() as conn:
        conn.execute(R2aTransaction.__table__.insert(),
                     [{**r, "txn_date": dt.date(2025, 1, 9), "subcategory": "x"} for r in bad_rows])
        if engine.dialect.name == "sqlite":  # SQLite lets a non-number into a NUMERIC column; R2a's app did too
            conn.execute(text("INSERT INTO r2a_transactions (tenant_id, txn_date, category, subcategory, amount, "
                              "currency) VALUES ('t00004', '2025-01-09', 'revenue', 'x', 'n/a', 'IDR')"))
    materialize(["r2a_pl_monthly"], "2025-01-01", r2a_url=r2a_url)
    rejected = {r[0]: r[1] for r in query(settings, "SELECT tenant_id, detail FROM ledger.rejections "
                                                    "WHERE stage = 'extract'")}
    assert "no tenant_id" in rejected[None]
    assert "empty amount" in rejected["t00001"]
    assert "category" in rejected["t00002"]
    assert "currency other than the tenant's" in rejected["t00003"]
    assert "not in R2a's tenants table" in rejected["ghost"]
    bad = {"t00001", "t00002", "t00003"} | ({"t00004"} if engine.dialect.name == "sqlite" else set())
    if engine.dialect.name == "sqlite":
        assert "not a number" in rejected["t00004"]
    got = warehouse_sums(settings, START, dt.date(2025, 2, 1))
    assert not {k[0] for k in got} & bad, "a rejected tenant-month is never summed"
    assert got == {k: v for k, v in clean.items() if k[0] not in bad and v != 0}


def test_failed_write_leaves_previous_rows(tmp_path) -> None:  # noqa: ANN001
    wh = Warehouse(tmp_path / "w.duckdb", tmp_path / "pub.duckdb")
    good = pd.DataFrame({"tenant_id": ["a"], "period": [dt.date(2025, 1, 1)], "revenue_minor": [100],
                         "cogs_minor": [0], "expenses_minor": [0], "net_income_minor": [100], "currency": ["IDR"],
                         "source_rows": [1], "last_recorded_at": [None], "run_id": ["r1"], "extracted_at": [None]})
    with wh.connect() as con, transaction(con):
        replace_rows(con, "r2a.pl_monthly", good, window_where(), ["2025-01-01", "2025-02-01"])
    broken = good.drop(columns=["currency"])  # the insert fails after the delete ran
    with pytest.raises(duckdb.Error), wh.connect() as con, transaction(con):
        replace_rows(con, "r2a.pl_monthly", good.assign(tenant_id="b"), window_where(),
                     ["2025-01-01", "2025-02-01"])
        replace_rows(con, "r2a.pl_monthly", broken, "FALSE")
    with wh.connect() as con:
        assert con.execute("SELECT tenant_id, revenue FROM r2a.pl_monthly").fetchall() == [("a", Decimal("1.00"))]


def test_asset_metadata(settings) -> None:  # noqa: ANN001
    seeding.seed(make_engine(settings.r2a_database_url), 5, 1, START)
    result = materialize(["r2a_pl_monthly"], "2025-01-01")
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["dagster/row_count"].value == 5
    assert "revenue" in {c.name for c in meta["dagster/column_schema"].schema.columns}
    assert meta["total_revenue"].value and "|" in meta["preview"].value
