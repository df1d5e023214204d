"""Hostile source rows never stop the month: amounts no ledger can hold (beyond the per-row bound, +/-infinity,
NaN), sums that would overflow, txn_date text that is not a real date, tenant ids with stray whitespace. Each
rejects its tenant-month (ledger.rejections, stage extract, naming tenant, period, problem and fix); every other
tenant-month is summed and posted exactly. SQLite rows are inserted with raw SQL so SQLite stores exactly the hostile
value; Postgres runs the cases its types allow."""

from __future__ import annotations

import calendar
import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DataError

from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.extract import MAX_ROW_AMOUNT, extract
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline_tests.helpers import CLOSE, connect, materialize, materialize_gl, query, sandbox_entries

START = "2024-01-01"  # a fixed historic month (the assets as declared take any month since 2000-01)
MONTH = dt.date.fromisoformat(START)
NEXT = (MONTH + dt.timedelta(days=32)).replace(day=1)
JOURNAL = ["r2a_pl_monthly", "journal_entries", "journal_lines"]
INSERT = ("INSERT INTO r2a_transactions (tenant_id, txn_date, category, subcategory, amount, currency) "
          "VALUES (:tenant, :day, :category, 'product_sales', {amount}, 'IDR')")
BOUND = Decimal(MAX_ROW_AMOUNT)
CEILING = Decimal("9999999999999999.99")  # DECIMAL(18,2)


def day(n: int = 15) -> str:
    return MONTH.replace(day=n).isoformat()


def insert(engine: Engine, tenant: str, amount: str, txn_date: str | None = None, times: int = 1,
           category: str = "revenue") -> None:
    """Raw SQL with the amount as an SQL literal: SQLite keeps exactly what it is given (1e20, 9e999, 'NaN')."""
    with engine.begin() as conn:
        conn.execute(text(INSERT.format(amount=amount)),
                     [{"tenant": tenant, "day": day() if txn_date is None else txn_date, "category": category}] * times)


def independent_sums(engine: Engine) -> dict[tuple[str, str], Decimal]:
    """Per tenant and category for MONTH: Python Decimal sums of the raw rows (no SQL aggregation, no floats)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT x.tenant_id, x.category, CAST(x.amount AS TEXT) FROM r2a_transactions x "
            "JOIN tenants t ON t.tenant_id = x.tenant_id WHERE x.txn_date >= :s AND x.txn_date < :e"),
            {"s": MONTH, "e": NEXT} if engine.dialect.name != "sqlite"
            else {"s": MONTH.isoformat(), "e": NEXT.isoformat()}).fetchall()
    out: dict[tuple[str, str], Decimal] = {}
    for tenant, category, amount in rows:
        out[(tenant, category)] = out.get((tenant, category), Decimal(0)) + Decimal(amount)
    return out


def warehouse_sums(settings) -> dict[tuple[str, str], Decimal]:  # noqa: ANN001
    out = {}
    for tenant, rev, cogs, exp in query(settings, "SELECT tenant_id, revenue, cogs, expenses FROM r2a.pl_monthly "
                                                  "WHERE period = ?", [MONTH]):
        for cat, val in (("revenue", rev), ("cogs", cogs), ("expense", exp)):
            if val != 0:
                out[(tenant, cat)] = val
    return out


def rejections(settings) -> dict[tuple[str | None, dt.date | None], tuple[str, str]]:  # noqa: ANN001
    rows = query(settings, "SELECT tenant_id, period, reason, detail FROM ledger.rejections WHERE stage = 'extract'")
    assert len(rows) == len({(r[0], r[1]) for r in rows}), "one rejection per tenant-month"
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def assert_rejected(found: dict, tenant: str, period: dt.date | None, problem: str, *words: str) -> None:
    reason, detail = found[(tenant, period)]
    assert problem in reason, reason
    when = f"{period:%Y-%m}" if period else "period unknown"
    assert detail.startswith(f"tenant {tenant}, {when}"), detail
    assert "To fix: " in detail, detail
    for w in words:
        assert w in detail, (w, detail)


def assert_others_exact(settings, clean: dict, bad: set[str]) -> None:  # noqa: ANN001
    got = warehouse_sums(settings)
    assert not {t for t, _ in got} & bad, "a rejected tenant-month is never summed"
    expected = {k: v for k, v in clean.items() if k[0] not in bad and v != 0}
    assert got == expected and len(expected) > 10


SQLITE_HOSTILE = {  # tenant: (amount literal, txn_date, times, problem, words in the detail)
    "t00001": ("1e20", None, 1, "out_of_range_amount", ["beyond +/-10,000,000,000,000.00", "correct the amounts"]),
    "t00002": ("9e999", None, 1, "infinite_amount", ["+/-infinity", "replace the infinite amounts"]),
    "t00003": ("-9e999", None, 1, "infinite_amount", ["+/-infinity"]),
    "t00004": ("9e999 - 9e999", None, 1, "null_amount", ["empty amount"]),  # SQLite stores a NaN as NULL
    "t00005": ("'NaN'", None, 1, "non_numeric_amount", ["not a number"]),  # ... and the text 'NaN' as text
    "t00006": (str(MAX_ROW_AMOUNT), None, 1001, "sum_overflow", ["9,999,999,999,999,999.99"]),
    # 9,300 rows of -10^13 in one group: a plain SUM of minor units would raise "integer overflow" in SQLite
    "t00007": (f"-{MAX_ROW_AMOUNT}", None, 9300, "sum_overflow", ["9,999,999,999,999,999.99"]),
    "t00008": ("5", f"{MONTH:%Y-%m}-{calendar.monthrange(MONTH.year, MONTH.month)[1] + 1}", 1, "bad_txn_date",
               ["not a real date", "set txn_date to the real date"]),
    "t00009": ("5", f"{MONTH:%Y-%m}-15 garbage", 1, "bad_txn_date", ["not a real date"]),
}


def add_sqlite_hostile_rows(engine: Engine) -> None:
    for tenant, (amount, txn_date, times, _, _) in SQLITE_HOSTILE.items():
        insert(engine, tenant, amount, txn_date, times)
    insert(engine, " t00010", "5")
    insert(engine, "t00011 ", "5")
    insert(engine, "t00012", "5", "garbage")  # outside every month: found by every window, period unknown


def assert_sqlite_rejections(settings) -> None:  # noqa: ANN001
    found = rejections(settings)
    for tenant, (_, _, _, problem, words) in SQLITE_HOSTILE.items():
        assert_rejected(found, tenant, MONTH, problem, *words)
        assert found[(tenant, MONTH)][0] == f"bad source rows: {problem}", "named for what is wrong, nothing else"
    for tenant in ("t00010", "t00011"):
        assert_rejected(found, tenant, MONTH, "untrimmed_tenant", "stray whitespace", "trim tenant_id")
    assert_rejected(found, "t00012", None, "bad_txn_date", "not a real date",
                    f"found by the extraction of {MONTH} .. {NEXT}")
    assert not [k for k in found if k[0] and k[0] != k[0].strip()], "never reported under the untrimmed id"


def test_each_hostile_kind_on_sqlite_is_rejected_and_the_rest_is_exact(settings, sandbox) -> None:  # noqa: ANN001
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, 16, 1, MONTH, seed=4)
    clean = independent_sums(engine)
    add_sqlite_hostile_rows(engine)
    connect([f"t{i:05d}" for i in range(1, 17)])
    materialize_gl()
    result = materialize(JOURNAL, START)
    assert result.success
    assert_sqlite_rejections(settings)
    bad = set(SQLITE_HOSTILE) | {"t00010", "t00011"}
    assert_others_exact(settings, clean, bad)
    entries = {r[0]: (r[1], r[2]) for r in query(settings, "SELECT tenant_id, total_debit, net_income "
                                                           "FROM ledger.journal_entries WHERE period = ?", [MONTH])}
    assert set(entries) == {f"t{i:05d}" for i in range(1, 17)} - bad
    for tenant, (_, net) in entries.items():
        assert net == (clean.get((tenant, "revenue"), 0) - clean.get((tenant, "cogs"), 0)
                       - clean.get((tenant, "expense"), 0))
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["journal_balances"] and checks["journal_complete"]


def test_hostile_rows_end_to_end_through_dagster_and_the_sandbox(settings, sandbox) -> None:  # noqa: ANN001
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, 18, 1, MONTH, seed=8)
    clean = independent_sums(engine)
    add_sqlite_hostile_rows(engine)
    tenants = [f"t{i:05d}" for i in range(1, 19)]
    connect(tenants)
    result = materialize(CLOSE, START, raise_on_error=False)
    failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert not [s for s in failed if s in ("r2a_pl_monthly", "journal_entries", "journal_lines")], failed
    assert_sqlite_rejections(settings)
    bad = set(SQLITE_HOSTILE) | {"t00010", "t00011"}
    assert_others_exact(settings, clean, bad)
    ours = {r[0]: (r[1], r[2]) for r in query(settings, "SELECT custom_id, tenant_id, total_debit "
                                                        "FROM ledger.journal_entries WHERE period = ?", [MONTH])}
    assert {t for t, _ in ours.values()} == set(tenants) - bad
    for tenant, net in query(settings, "SELECT tenant_id, net_income FROM ledger.journal_entries"):
        assert net == (clean.get((tenant, "revenue"), 0) - clean.get((tenant, "cogs"), 0)
                       - clean.get((tenant, "expense"), 0))
    remote = {e["custom_id"]: e for e in sandbox_entries(sandbox.url) if (e["custom_id"] or "").startswith("r2a-pl-")}
    assert set(remote) == set(ours), "every good tenant-month posted once, no hostile one"
    for custom_id, (_, total) in ours.items():
        lines = remote[custom_id]["transaction_account_lines"]
        debit = sum(Decimal(str(x["debit"] or 0)) for x in lines)
        credit = sum(Decimal(str(x["credit"] or 0)) for x in lines)
        assert debit == credit == total == Decimal(str(remote[custom_id]["total_debit"]))
    assert not failed, f"posting/reconciliation steps failed: {failed}"


def test_hostile_rows_on_postgres(settings, sandbox, pg_url: str) -> None:  # noqa: ANN001
    engine = make_engine(pg_url)
    seeding.seed(engine, 12, 1, MONTH, seed=6)
    clean = independent_sums(engine)
    for literal in ("1e20", "'Infinity'", "'-Infinity'"):  # NUMERIC(18,2) cannot hold them: no such row exists
        with pytest.raises(DataError):
            insert(engine, "t00001", literal)
    insert(engine, "t00001", "'NaN'")
    insert(engine, "t00002", str(BOUND + Decimal("0.01")))  # fits NUMERIC(18,2), not the per-row bound
    insert(engine, "t00003", str(MAX_ROW_AMOUNT), times=1001)
    insert(engine, "t00004", f"-{MAX_ROW_AMOUNT}", times=9300)
    insert(engine, " t00005", "5")
    insert(engine, "t00006 ", "5")
    connect([f"t{i:05d}" for i in range(1, 13)], r2a_url=pg_url)
    materialize_gl(pg_url)
    assert materialize(JOURNAL, START, r2a_url=pg_url).success
    found = rejections(settings)
    assert_rejected(found, "t00001", MONTH, "nan_amount", "NaN", "replace the NaN amounts")
    assert_rejected(found, "t00002", MONTH, "out_of_range_amount", "beyond +/-10,000,000,000,000.00")
    assert_rejected(found, "t00003", MONTH, "sum_overflow", "9,999,999,999,999,999.99")
    assert_rejected(found, "t00004", MONTH, "sum_overflow")
    assert_rejected(found, "t00005", MONTH, "untrimmed_tenant", "trim tenant_id")
    assert_rejected(found, "t00006", MONTH, "untrimmed_tenant", "trim tenant_id")
    assert len(found) == 6
    assert_others_exact(settings, clean, {f"t{i:05d}" for i in range(1, 7)})


@pytest.fixture(params=["sqlite", "postgres"])
def r2a_url(request, settings) -> str:  # noqa: ANN001
    if request.param == "sqlite":
        return settings.r2a_database_url
    return request.getfixturevalue("pg_url")


def test_bounds_are_inclusive_and_exact(settings, r2a_url: str) -> None:  # noqa: ANN001
    """A row of exactly +/-10^13 is accepted; one sen more is not. A tenant-month whose amounts add up to exactly
    9,999,999,999,999,999.99 is accepted and lands exactly in DuckDB's DECIMAL(18,2); one sen more is not."""
    engine = make_engine(r2a_url)
    seeding.seed(engine, 5, 1, MONTH, seed=1)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM r2a_transactions WHERE tenant_id IN ('t00001', 't00002', 't00003')"))
    insert(engine, "t00001", str(MAX_ROW_AMOUNT))
    insert(engine, "t00001", f"-{MAX_ROW_AMOUNT}", category="expense")
    insert(engine, "t00001", "9999999999999.99", category="cogs")
    insert(engine, "t00002", str(BOUND + Decimal("0.01")))
    insert(engine, "t00003", str(MAX_ROW_AMOUNT), times=999)
    insert(engine, "t00003", "9999999999999.99")
    materialize(["r2a_pl_monthly"], START, r2a_url=r2a_url)
    monthly = {r[0]: r[1:] for r in query(settings, "SELECT tenant_id, revenue, cogs, expenses, net_income "
                                                    "FROM r2a.pl_monthly")}
    assert monthly["t00001"] == (BOUND, Decimal("9999999999999.99"), -BOUND, BOUND - Decimal("9999999999999.99")
                                 + BOUND)
    assert monthly["t00003"] == (CEILING, Decimal(0), Decimal(0), CEILING)
    found = rejections(settings)
    assert set(found) == {("t00002", MONTH)}
    assert_rejected(found, "t00002", MONTH, "out_of_range_amount")


def test_one_sen_beyond_the_ceiling_is_rejected(settings, r2a_url: str) -> None:  # noqa: ANN001
    engine = make_engine(r2a_url)
    seeding.seed(engine, 4, 1, MONTH, seed=1)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM r2a_transactions WHERE tenant_id = 't00001'"))
    insert(engine, "t00001", str(MAX_ROW_AMOUNT), times=999)
    insert(engine, "t00001", "-9999999999999.99", category="expense")  # |amounts| add up to 10^16: one sen over
    insert(engine, "t00001", "0.01", category="cogs")
    x = extract(engine, MONTH, NEXT)
    assert list(x.rejections["tenant_id"]) == ["t00001"]
    assert "sum_overflow" in x.rejections["reason"].iloc[0]
    assert "t00001" not in set(x.monthly["tenant_id"]) and len(x.monthly) == 3


def sqlite_window(engine: Engine, start: str, end: str) -> dict[tuple[str | None, dt.date | None], str]:
    x = extract(engine, dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    return {(r.tenant_id, r.period): r.reason for r in x.rejections.itertuples()}


def test_which_window_sees_a_txn_date_that_is_not_a_date(settings) -> None:  # noqa: ANN001
    """SQLite compares txn_date as text: what each window sees, and the period each rejection gets."""
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, 9, 12, dt.date(2025, 1, 1), seed=3)
    for tenant, txn_date in [("t00001", "2025-02-30"), ("t00002", "2025-13-01"), ("t00003", "2025-1-5"),
                             ("t00004", "2025-02-00"), ("t00005", " 2025-03-05"), ("t00006", "")]:
        insert(engine, tenant, "5", txn_date)
    with engine.begin() as conn:  # a number: sorts before every text
        conn.execute(text(INSERT.format(amount="5")), {"tenant": "t00007", "day": 20250305, "category": "revenue"})
        conn.execute(text(INSERT.format(amount="5")), {"tenant": "   ", "day": "2025-03-05", "category": "revenue"})
    unknown = {(t, None) for t in ("t00005", "t00006", "t00007")}  # outside every month: seen by every window
    assert set(sqlite_window(engine, "2025-02-01", "2025-03-01")) == {("t00001", dt.date(2025, 2, 1))} | unknown
    # '2025-02-00' sorts before '2025-02-01': January's window sees it under February's prefix -> period unknown
    assert set(sqlite_window(engine, "2025-01-01", "2025-02-01")) == {("t00004", None)} | unknown
    # ... and a window holding February takes it as February's
    assert ("t00004", dt.date(2025, 2, 1)) in sqlite_window(engine, "2025-01-01", "2025-03-01")
    assert set(sqlite_window(engine, "2025-09-01", "2025-10-01")) == {("t00003", None)} | unknown  # '2025-1-5'
    assert set(sqlite_window(engine, "2025-12-01", "2026-01-01")) == {("t00002", None)} | unknown  # '2025-13-01'
    march = sqlite_window(engine, "2025-03-01", "2025-04-01")
    assert (None, dt.date(2025, 3, 1)) in march, "a whitespace-only tenant_id is no tenant_id"
    assert all("bad_txn_date" in march[k] for k in unknown)


def test_seed_bad_rows_reject_the_same_tenant_months(settings, r2a_url: str) -> None:  # noqa: ANN001
    """`seed --with-bad-rows` and the demo: the hostile kinds land on the same three tenants' month."""
    engine = make_engine(r2a_url)
    seeding.seed(engine, 6, 1, MONTH, seed=2)
    clean = independent_sums(engine)
    seeding.add_bad_rows(engine, MONTH, ["t00001", "t00002", "t00003"])
    materialize(["r2a_pl_monthly"], START, r2a_url=r2a_url)
    found = rejections(settings)
    assert set(found) == {("t00001", MONTH), ("t00002", MONTH), ("t00003", MONTH), ("t99999", MONTH), (None, MONTH)}
    assert_rejected(found, "t00001", MONTH, "out_of_range_amount", "trim tenant_id")
    assert "untrimmed_tenant" in found[("t00001", MONTH)][0]
    assert_rejected(found, "t00002", MONTH, "nan_amount" if engine.dialect.name != "sqlite" else "infinite_amount")
    if engine.dialect.name == "sqlite":
        assert_rejected(found, "t00003", MONTH, "bad_txn_date", "set txn_date")
    got = warehouse_sums(settings)
    assert got == {k: v for k, v in clean.items() if k[0] not in {"t00001", "t00002", "t00003"} and v != 0}
