"""Currencies: every ISO 4217 code with its own minor unit (JPY 0, IDR 2, KWD 3), exact from R2a through the frames
and the pandera contract into DuckDB's DECIMAL(21,3) and back; an amount finer than its currency allows rejects its
tenant-month (never rounded), and no total adds amounts of different currencies."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import iso4217
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from ledger_pipeline.ledger.journal import build_journal
from ledger_pipeline.ledger.mapping import load_mapping
from ledger_pipeline.ledger.schemas import validate_lines
from ledger_pipeline.money import (
    CURRENCIES,
    MoneyError,
    UnknownCurrency,
    format_amount,
    from_minor,
    minor_per_unit,
    minor_unit,
    quantum,
    to_minor,
)
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.extract import MAX_MONTH_MINOR, MAX_ROW_MINOR, extract
from ledger_pipeline.r2a.models import make_engine as _make_engine
from ledger_pipeline.r2a.seed import create_tables
from ledger_pipeline.sandboxes.chart import DEFAULT_CHART
from ledger_pipeline.settings import DATA_DIR
from ledger_pipeline.warehouse import schema
from ledger_pipeline.warehouse.store import Warehouse, replace_rows, transaction
from ledger_pipeline_tests.helpers import connect, materialize, materialize_gl, query

JAN, FEB = dt.date(2025, 1, 1), dt.date(2025, 2, 1)
START = "2024-01-01"  # a fixed historic month (the assets as declared take any month since 2000-01)
MONTH = dt.date.fromisoformat(START)
NEXT = (MONTH + dt.timedelta(days=32)).replace(day=1)
INSERT = ("INSERT INTO r2a_transactions (tenant_id, txn_date, category, subcategory, amount, currency) "
          "VALUES (:tenant, :day, :category, :sub, {amount}, :currency)")


def make_engine(url: str):  # noqa: ANN201 - R2a's tables, created as the seed does (the pipeline never does)
    engine = _make_engine(url)
    create_tables(engine)
    return engine


# --- the money API ------------------------------------------------------------------------------------------------

def test_every_iso_4217_code_with_a_minor_unit_up_to_3_is_a_currency() -> None:
    library = {c.code: c.exponent for c in iso4217.Currency}
    assert {code: e for code, e in library.items() if e is not None and e <= 3} == CURRENCIES
    assert len(CURRENCIES) > 150
    assert (minor_unit("IDR"), minor_unit("USD"), minor_unit("JPY"), minor_unit("KRW")) == (2, 2, 0, 0)
    # valid ISO codes the old hand list lacked
    assert (minor_unit("KWD"), minor_unit("BHD"), minor_unit("CLP"), minor_unit("ISK")) == (3, 3, 0, 0)
    assert (minor_per_unit("JPY"), minor_per_unit("IDR"), minor_per_unit("KWD")) == (1, 100, 1000)
    assert (quantum("JPY"), quantum("IDR"), quantum("KWD")) == (Decimal(1), Decimal("0.01"), Decimal("0.001"))


@pytest.mark.parametrize(("code", "words"), [
    ("XYZ", ["'XYZ' is not an ISO 4217 currency code"]),
    ("jpy", ["use 'JPY'"]),
    ("XAU", ["no minor unit"]),  # gold: an ISO 4217 code, but no books are kept in it
    ("CLF", ["4 decimal places", "at most 3"]),  # Chile's Unidad de Fomento: finer than DECIMAL(21,3)
    (None, ["None"]),
])
def test_a_code_books_cannot_be_kept_in_is_a_named_error(code: str | None, words: list[str]) -> None:
    with pytest.raises(UnknownCurrency) as err:
        minor_unit(code)  # type: ignore[arg-type]
    for w in words:
        assert w in str(err.value)
    if code is not None:  # None is the legacy 2-decimal call of to_minor
        with pytest.raises(UnknownCurrency):
            to_minor("1", code)


def test_conversions_are_exact_in_each_currency_and_never_round() -> None:
    assert to_minor("1000", "JPY") == 1000 and from_minor(1000, "JPY") == Decimal("1000")
    assert str(from_minor(1000, "JPY")) == "1000"
    assert to_minor("12.5", "IDR") == 1250 and str(from_minor(1250, "IDR")) == "12.50"
    assert to_minor(Decimal("1.234"), "KWD") == 1234 and str(from_minor(1234, "KWD")) == "1.234"
    assert to_minor(7, "KWD") == 7000 and to_minor(7, "JPY") == 7
    assert str(from_minor(-5, "KWD")) == "-0.005" and str(from_minor(0, "IDR")) == "0.00"
    big = MAX_MONTH_MINOR
    assert to_minor(str(from_minor(big, "KWD")), "KWD") == big  # 19 digits: no context rounding
    with pytest.raises(MoneyError) as err:
        to_minor("1000.50", "JPY")
    assert "JPY has minor unit 0" in str(err.value) and "no decimals" in str(err.value)
    with pytest.raises(MoneyError, match="KWD has minor unit 3"):
        to_minor("1.2345", "KWD")
    with pytest.raises(MoneyError, match="binary float"):
        to_minor(0.1, "USD")  # type: ignore[arg-type]
    with pytest.raises(MoneyError, match="integers"):
        from_minor(1.0, "USD")  # type: ignore[arg-type]
    assert format_amount(123456789, "IDR") == "1,234,567.89"
    assert format_amount(1234567, "JPY") == "1,234,567"
    assert format_amount(-1234567, "KWD") == "-1,234.567"


def test_no_currency_keeps_the_two_decimal_behaviour_of_existing_callers() -> None:
    assert to_minor("12.34") == 1234 and to_minor(5) == 500
    assert str(from_minor(1234)) == "12.34" and format_amount(123456789) == "1,234,567.89"
    with pytest.raises(MoneyError, match="more than 2 decimals"):
        to_minor("1.001")


# --- extraction ---------------------------------------------------------------------------------------------------

def tenants(engine: Engine, currencies: dict[str, str]) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM r2a_transactions"))
        conn.execute(text("DELETE FROM tenants"))
        for tenant, currency in currencies.items():
            conn.execute(text("INSERT INTO tenants (tenant_id, name, currency) VALUES (:t, :t, :c)"),
                         {"t": tenant, "c": currency})


def insert(engine: Engine, tenant: str, amount: str, currency: str, category: str = "revenue",
           sub: str = "product_sales", day: dt.date = dt.date(2025, 1, 15)) -> int:
    """Raw SQL with the amount as an SQL literal (SQLite keeps it as R2a's app wrote it); returns the row id."""
    with engine.begin() as conn:
        conn.execute(text(INSERT.format(amount=amount)), {"tenant": tenant, "day": day, "category": category,
                                                          "sub": sub, "currency": currency})
        return int(conn.execute(text("SELECT MAX(id) FROM r2a_transactions")).scalar_one())


@pytest.fixture(params=["sqlite", "postgres"])
def r2a_url(request, settings) -> str:  # noqa: ANN001
    if request.param == "sqlite":
        return settings.r2a_database_url
    return request.getfixturevalue("pg_url")


def test_a_jpy_row_with_decimals_rejects_its_month_naming_the_rows(settings, r2a_url: str) -> None:  # noqa: ANN001
    engine = make_engine(r2a_url)
    tenants(engine, {"tjp": "JPY", "tid": "IDR"})
    bad = insert(engine, "tjp", "1000.50", "JPY")
    insert(engine, "tjp", "2000", "JPY", "expense", "rent")
    insert(engine, "tid", "1000.50", "IDR")
    x = extract(engine, JAN, FEB)
    assert list(x.rejections["tenant_id"]) == ["tjp"]
    reason, detail = x.rejections.iloc[0][["reason", "detail"]]
    assert reason == "bad source rows: too_many_decimals"
    assert detail.startswith("tenant tjp, 2025-01: 1 rows with more decimals in amount than JPY has "
                             "(ISO 4217 minor unit 0: whole units (no decimals))"), detail
    assert f"r2a_transactions.id {bad})" in detail, "names the offending row"
    assert "To fix: correct those amounts in R2a to whole units" in detail and "never rounded" in detail
    assert "re-run this month" in detail
    assert x.monthly.set_index("tenant_id").loc["tid", "revenue_minor"] == 100050, "IDR keeps its 2 decimals"
    assert "tjp" not in set(x.detail["tenant_id"]), "never summed, never rounded"


def test_kwd_three_decimals_are_exact_and_a_fourth_is_rejected(settings, r2a_url: str) -> None:  # noqa: ANN001
    engine = make_engine(r2a_url)
    tenants(engine, {"tkw": "KWD", "tbh": "BHD", "tcl": "CLP", "tis": "ISK", "tbad": "KWD"})
    for amount in ("1.234", "0.001", "999999.999", "-0.235"):
        insert(engine, "tkw", amount, "KWD")
    insert(engine, "tkw", "12.5", "KWD", "expense", "rent")
    insert(engine, "tbh", "0.125", "BHD")
    insert(engine, "tcl", "15000", "CLP")
    insert(engine, "tis", "-3", "ISK", "cogs", "merchandise")
    if engine.dialect.name == "sqlite":  # Postgres's NUMERIC(21,3) column cannot hold a 4th decimal at all
        insert(engine, "tbad", "1.2345", "KWD")
    x = extract(engine, JAN, FEB)
    monthly = x.monthly.set_index("tenant_id")
    assert monthly.loc["tkw", "revenue_minor"] == 1234 + 1 + 999999999 - 235
    assert monthly.loc["tkw", "expenses_minor"] == 12500 and monthly.loc["tkw", "currency"] == "KWD"
    assert monthly.loc["tbh", "revenue_minor"] == 125
    assert monthly.loc["tcl", "revenue_minor"] == 15000 and monthly.loc["tis", "cogs_minor"] == -3
    if engine.dialect.name == "sqlite":
        assert list(x.rejections["tenant_id"]) == ["tbad"]
        assert "than KWD has (ISO 4217 minor unit 3: at most 3 decimals)" in x.rejections.iloc[0]["detail"]
    else:
        assert x.rejections.empty


def test_an_unknown_currency_rejects_the_tenant_months(settings, r2a_url: str) -> None:  # noqa: ANN001
    engine = make_engine(r2a_url)
    tenants(engine, {"tx": "XYZ", "tg": "XAU", "tok": "USD"})
    insert(engine, "tx", "5", "XYZ")
    insert(engine, "tg", "5", "XAU")
    insert(engine, "tok", "5.25", "USD")
    found = {r.tenant_id: (r.reason, r.detail) for r in extract(engine, JAN, FEB).rejections.itertuples()}
    assert set(found) == {"tx", "tg"}
    assert found["tx"][0] == "bad source rows: unknown_currency"
    assert "'XYZ' is not an ISO 4217 currency code" in found["tx"][1]
    assert "UPDATE tenants SET currency" in found["tx"][1] and "tenant_id = 'tx'" in found["tx"][1]
    assert "no minor unit" in found["tg"][1]


def test_the_row_bound_is_10_to_the_15_minor_units_of_the_tenants_currency(settings, r2a_url: str) -> None:  # noqa: ANN001
    engine = make_engine(r2a_url)
    tenants(engine, {"jok": "JPY", "jbig": "JPY", "kok": "KWD", "kbig": "KWD", "iok": "IDR", "ibig": "IDR"})
    insert(engine, "jok", str(MAX_ROW_MINOR), "JPY")
    big = insert(engine, "jbig", str(MAX_ROW_MINOR + 1), "JPY")
    insert(engine, "kok", "-1000000000000", "KWD")  # 10^12 KWD = 10^15 fils
    kbig = insert(engine, "kbig", "1000000000001", "KWD")
    insert(engine, "iok", "10000000000000", "IDR")
    insert(engine, "ibig", "10000000000001", "IDR")
    x = extract(engine, JAN, FEB)
    monthly = x.monthly.set_index("tenant_id")["revenue_minor"]
    assert monthly.to_dict() == {"jok": MAX_ROW_MINOR, "kok": -MAX_ROW_MINOR, "iok": MAX_ROW_MINOR}
    found = {r.tenant_id: r.detail for r in x.rejections.itertuples()}
    assert set(found) == {"jbig", "kbig", "ibig"}
    assert "beyond +/-1,000,000,000,000,000 JPY" in found["jbig"] and f"id {big})" in found["jbig"]
    assert "beyond +/-1,000,000,000,000.000 KWD" in found["kbig"] and f"id {kbig})" in found["kbig"]
    assert "beyond +/-10,000,000,000,000.00 IDR" in found["ibig"]


# --- round trip: R2a -> extraction -> frames -> DuckDB -> back ----------------------------------------------------

def land(con: duckdb.DuckDBPyConnection, x) -> list[tuple]:  # noqa: ANN001
    """Write the extract as the r2a_pl_monthly asset does and read it back: (tenant, category, DECIMAL, currency,
    minor units through schema.minor_sql)."""
    with transaction(con):
        replace_rows(con, "r2a.pl_monthly_detail", x.detail.assign(run_id="r"), "TRUE")
        replace_rows(con, "r2a.pl_monthly", x.monthly.assign(run_id="r", extracted_at=None), "TRUE")
    return con.execute(f"SELECT tenant_id, category, amount, currency, {schema.minor_sql('amount', 'currency')} "
                       "FROM r2a.pl_monthly_detail ORDER BY ALL").fetchall()


amounts_by_currency = st.sampled_from(sorted(CURRENCIES)).flatmap(lambda code: st.tuples(
    st.just(code),
    st.lists(st.one_of(st.integers(min_value=-10**6, max_value=10**6),  # minor units, up to the row bound
                       st.integers(min_value=-MAX_ROW_MINOR, max_value=MAX_ROW_MINOR)), min_size=1, max_size=4)))


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory) -> tuple[Engine, duckdb.DuckDBPyConnection]:  # noqa: ANN001
    """One R2a SQLite file and one DuckDB warehouse for every example (each example replaces their rows)."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('rt') / 'r2a.sqlite'}")
    con = duckdb.connect()
    schema.ensure(con)
    return engine, con


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(amounts_by_currency, min_size=1, max_size=4))
def test_any_currency_and_amount_survive_extraction_duckdb_and_back(roundtrip, cases) -> None:  # noqa: ANN001
    """For random ISO 4217 currencies and random amounts within each one's minor unit: R2a's rows (as decimal
    text, the way R2a's app writes them) -> extract() -> frames -> DuckDB DECIMAL(21,3) -> back, unchanged."""
    engine, con = roundtrip
    codes = {f"t{i}": code for i, (code, _) in enumerate(cases)}
    tenants(engine, codes)
    expected: dict[str, tuple[int, Decimal]] = {}
    with engine.begin() as conn:
        for i, (code, minors) in enumerate(cases):
            for m in minors:
                conn.execute(text(INSERT.format(amount=f"{from_minor(m, code)}")), {
                    "tenant": f"t{i}", "day": "2025-01-15", "category": "revenue", "sub": "s", "currency": code})
            if total := sum(minors):
                expected[f"t{i}"] = (total, from_minor(total, code))
    x = extract(engine, JAN, FEB)
    assert x.rejections.empty, x.rejections["detail"].tolist()
    got = dict(zip(x.detail["tenant_id"], x.detail["amount_minor"], strict=True))
    assert {t: m for t, m in got.items() if m} == {t: m for t, (m, _) in expected.items()}
    back = {t: (amount, currency, minor) for t, _, amount, currency, minor in land(con, x)}
    for tenant, (minor, amount) in expected.items():
        got_amount, got_currency, got_minor = back[tenant]
        assert got_currency == codes[tenant]
        assert got_amount == amount and got_minor == minor, (tenant, codes[tenant], minor, back[tenant])
        assert to_minor(got_amount, got_currency) == minor


def money_types(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """table.column -> type of every money column of the warehouse's tables (not views)."""
    money = {(t, c) for t, cols in schema.TABLES.items() for c, typ in cols if typ == schema.MONEY}
    rows = con.execute("SELECT c.schema_name || '.' || c.table_name, c.column_name, c.data_type "
                       "FROM duckdb_columns() c JOIN duckdb_tables() t USING (schema_name, table_name)").fetchall()
    return {f"{t}.{c}": typ for t, c, typ in rows if (t, c) in money}


def test_decimal_21_3_holds_the_ceiling_of_every_exponent(tmp_path) -> None:  # noqa: ANN001
    con = duckdb.connect()
    schema.ensure(con)
    frame = pd.DataFrame({"tenant_id": ["j", "i", "k", "j2"], "period": [JAN] * 4, "category": ["revenue"] * 4,
                          "subcategory": ["s"] * 4, "amount_minor": [MAX_MONTH_MINOR, MAX_MONTH_MINOR,
                                                                     -MAX_MONTH_MINOR, 1],
                          "currency": ["JPY", "IDR", "KWD", "JPY"], "source_rows": [1] * 4, "run_id": ["r"] * 4})
    replace_rows(con, "r2a.pl_monthly_detail", frame, "TRUE")
    rows = dict(con.execute("SELECT tenant_id, amount FROM r2a.pl_monthly_detail").fetchall())
    assert rows == {"j": Decimal("999999999999999999"), "i": Decimal("9999999999999999.99"),
                    "k": Decimal("-999999999999999.999"), "j2": Decimal(1)}
    assert set(money_types(con).values()) == {"DECIMAL(21,3)"}
    with pytest.raises(duckdb.Error, match="currency XAU is not an ISO 4217 code"):
        replace_rows(con, "r2a.pl_monthly_detail", frame.assign(currency="XAU"), "TRUE")
    with pytest.raises(duckdb.Error):  # a frame without currency: its amounts' unit is unknown
        replace_rows(con, "r2a.pl_monthly_detail", frame.drop(columns="currency"), "TRUE")


def test_every_table_with_amounts_has_a_currency_and_views_total_per_currency() -> None:
    for table, cols in schema.TABLES.items():
        names = [c for c, _ in cols]
        if any(t == schema.MONEY for _, t in cols):
            assert "currency" in names, table
    con = duckdb.connect()
    schema.ensure(con)
    frame = pd.DataFrame({"tenant_id": ["a", "b", "c"], "period": [JAN] * 3, "revenue_minor": [150, 150, 1500],
                          "cogs_minor": [0] * 3, "expenses_minor": [0] * 3, "net_income_minor": [150, 150, 1500],
                          "currency": ["JPY", "JPY", "KWD"], "source_rows": [1] * 3, "last_recorded_at": [None] * 3,
                          "run_id": ["r"] * 3, "extracted_at": [None] * 3})
    replace_rows(con, "r2a.pl_monthly", frame, "TRUE")
    assert con.execute("SELECT currency, tenants, revenue FROM analytics.pl_by_month ORDER BY 1").fetchall() == [
        ("JPY", 2, Decimal(300)), ("KWD", 1, Decimal("1.5"))]


def test_a_0_1_warehouse_gets_decimal_21_3_and_currencies(tmp_path) -> None:  # noqa: ANN001
    """DECIMAL(18,2) amounts widen to DECIMAL(21,3) keeping every value; journal lines and reconciliation rows get
    their entry's currency."""
    work = tmp_path / "work.duckdb"
    con = duckdb.connect(str(work))
    con.execute("CREATE SCHEMA ledger; CREATE SCHEMA accounting; CREATE SCHEMA r2a")
    con.execute("CREATE TABLE ledger.journal_entries (tenant_id VARCHAR, period DATE, custom_id VARCHAR, "
                "currency VARCHAR, total_debit DECIMAL(18,2))")
    con.execute("INSERT INTO ledger.journal_entries VALUES ('t1', '2025-01-01', 'c1', 'JPY', 1500.00), "
                "('t2', '2025-01-01', 'c2', 'IDR', 9999999999999999.99)")
    con.execute("CREATE TABLE ledger.journal_lines (tenant_id VARCHAR, period DATE, custom_id VARCHAR, "
                "line_no INTEGER, debit DECIMAL(18,2), credit DECIMAL(18,2))")
    con.execute("INSERT INTO ledger.journal_lines VALUES ('t1', '2025-01-01', 'c1', 1, 1500.00, 0), "
                "('t2', '2025-01-01', 'c2', 1, 0, 12.34)")
    con.execute("CREATE TABLE accounting.reconciliation (system VARCHAR, tenant_id VARCHAR, period DATE, "
                "custom_id VARCHAR, status VARCHAR, local_total DECIMAL(18,2))")
    con.execute("INSERT INTO accounting.reconciliation VALUES ('jurnal', 't1', '2025-01-01', 'c1', 'match', 1500), "
                "('jurnal', 't9', '2025-01-01', 'c9', 'unexpected_remote', 0)")
    con.execute("CREATE SCHEMA analytics; CREATE VIEW analytics.trial_balance AS SELECT tenant_id, SUM(debit) AS debit "
                "FROM ledger.journal_lines GROUP BY ALL")  # a view on a column whose type changes
    con.close()
    with Warehouse(work, tmp_path / "warehouse.duckdb").connect() as con:
        assert con.execute("SELECT custom_id, total_debit, currency FROM ledger.journal_entries ORDER BY 1"
                           ).fetchall() == [("c1", Decimal(1500), "JPY"), ("c2", Decimal("9999999999999999.99"),
                                                                           "IDR")]
        assert con.execute("SELECT custom_id, debit, credit, currency FROM ledger.journal_lines ORDER BY 1"
                           ).fetchall() == [("c1", Decimal(1500), 0, "JPY"), ("c2", 0, Decimal("12.34"), "IDR")]
        assert con.execute("SELECT custom_id, currency FROM accounting.reconciliation ORDER BY 1").fetchall() == [
            ("c1", "JPY"), ("c9", None)]
        types = money_types(con)
        assert set(types.values()) == {"DECIMAL(21,3)"} and len(types) == 12, types
        assert con.execute("SELECT currency, local_total FROM analytics.reconciliation_summary ORDER BY 1"
                           ).fetchall() == [("JPY", Decimal(1500)), (None, Decimal(0))]
        assert con.execute("SELECT tenant_id, debit, currency FROM analytics.trial_balance ORDER BY 1").fetchall() == [
            ("t1", Decimal(1500), "JPY"), ("t2", Decimal(0), "IDR")]


# --- the journal and its contract ---------------------------------------------------------------------------------

RULES = load_mapping(DATA_DIR / "account_mapping.csv")


def chart(tenant_ids: list[str]) -> pd.DataFrame:
    rows = [(t, i + 1, n, name, False) for t in tenant_ids for i, (n, name, _) in enumerate(DEFAULT_CHART)]
    return pd.DataFrame(rows, columns=["tenant_id", "account_id", "number", "name", "archived"])


def detail(rows: list[tuple[str, str, str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"tenant_id": t, "period": JAN, "category": c, "subcategory": s, "amount_minor": a,
                          "currency": cur, "source_rows": 1} for t, c, s, a, cur in rows])


def test_journal_entries_in_jpy_and_kwd_balance_in_their_own_minor_units() -> None:
    d = detail([("tj", "revenue", "product_sales", 150_000, "JPY"), ("tj", "expense", "rent", 40_001, "JPY"),
                ("tk", "revenue", "product_sales", 1_234, "KWD"), ("tk", "cogs", "merchandise", 5, "KWD")])
    build = build_journal(d, chart(["tj", "tk"]), RULES)
    lines, invalid = validate_lines(build.lines, JAN, FEB)
    assert invalid.empty
    entries = build.entries.set_index("tenant_id")
    assert entries.loc["tj", "net_income_minor"] == 109_999 and entries.loc["tj", "currency"] == "JPY"
    assert entries.loc["tk", "total_debit_minor"] == entries.loc["tk", "total_credit_minor"] == 1_234
    assert set(lines.groupby("tenant_id")["currency"].unique().map(tuple)) == {("JPY",), ("KWD",)}


def test_the_contract_rejects_a_mixed_currency_entry_and_an_unknown_currency() -> None:
    d = detail([("tm", "revenue", "product_sales", 1_000, "JPY"), ("tm", "expense", "rent", 250, "KWD"),
                ("tx", "revenue", "product_sales", 100, "XYZ"), ("tx", "expense", "rent", 50, "XYZ"),
                ("ok", "revenue", "product_sales", 100, "IDR")])
    build = build_journal(d, chart(["tm", "tx", "ok"]), RULES)
    lines, invalid = validate_lines(build.lines, JAN, FEB)
    found = dict(zip(invalid["tenant_id"], invalid["detail"], strict=True))
    assert set(found) == {"tm", "tx"} and set(lines["tenant_id"]) == {"ok"}
    assert "the entry mixes currencies" in found["tm"]
    # totals per currency, each in its own decimals: never 1,000 JPY + 0.250 KWD added up
    assert "debits 250 JPY, credits 1,000 JPY" in found["tm"] or "credits 1,000 JPY" in found["tm"]
    assert "credits 0.250 KWD" in found["tm"] or "debits 0.250 KWD" in found["tm"]
    assert "not an ISO 4217 code books can be kept in" in found["tx"]


# --- end to end through Dagster -----------------------------------------------------------------------------------

def test_jpy_and_kwd_tenants_close_exactly_through_dagster(settings, sandbox) -> None:  # noqa: ANN001
    """Seeded tenants re-denominated to JPY and KWD: r2a.pl_monthly and the journal (which reads the DECIMALs back
    into minor units) hold exactly R2a's sums, in each tenant's currency."""
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, 4, 1, MONTH, seed=3)
    with engine.begin() as conn:
        conn.execute(text("UPDATE tenants SET currency = 'JPY' WHERE tenant_id = 't00001'"))
        conn.execute(text("UPDATE tenants SET currency = 'KWD' WHERE tenant_id = 't00002'"))
        conn.execute(text("UPDATE r2a_transactions SET currency = 'JPY' WHERE tenant_id = 't00001'"))
        conn.execute(text("UPDATE r2a_transactions SET currency = 'KWD', amount = amount / 1000.0 "
                          "WHERE tenant_id = 't00002'"))  # fils: 3 decimals on most rows
        rows = conn.execute(text("SELECT tenant_id, category, CAST(amount AS TEXT) FROM r2a_transactions "
                                 "WHERE txn_date >= :s AND txn_date < :e"),
                            {"s": MONTH.isoformat(), "e": NEXT.isoformat()}).fetchall()
    sums: dict[tuple[str, str], Decimal] = {}
    for tenant, category, amount in rows:
        sums[(tenant, category)] = sums.get((tenant, category), Decimal(0)) + Decimal(amount)
    assert any(Decimal(a) != Decimal(a).to_integral_value() for t, _, a in rows if t == "t00002")
    connect(["t00001", "t00002", "t00003", "t00004"])
    materialize_gl()
    assert materialize(["r2a_pl_monthly", "journal_entries", "journal_lines"], START).success
    assert query(settings, "SELECT * FROM ledger.rejections") == []
    got = {r[0]: r[1:] for r in query(settings, "SELECT tenant_id, currency, revenue, cogs, expenses, net_income "
                                                "FROM r2a.pl_monthly")}
    for tenant, currency in (("t00001", "JPY"), ("t00002", "KWD"), ("t00003", "IDR")):
        rev, cogs, exp = (sums.get((tenant, c), Decimal(0)) for c in ("revenue", "cogs", "expense"))
        assert got[tenant] == (currency, rev, cogs, exp, rev - cogs - exp), tenant
    entries = {r[0]: r[1:] for r in query(settings, "SELECT tenant_id, currency, net_income, total_debit, "
                                                    "total_credit FROM ledger.journal_entries")}
    for tenant in ("t00001", "t00002"):
        currency, net, debit, credit = entries[tenant]
        assert currency == got[tenant][0] and net == got[tenant][4] and debit == credit
    lines = query(settings, "SELECT DISTINCT tenant_id, currency FROM ledger.journal_lines ORDER BY 1")
    assert lines[:2] == [("t00001", "JPY"), ("t00002", "KWD")]
