"""Property: for random ISO 4217 currencies (0, 2 and 3 decimals) and amounts, on every system, an amount survives
R2a -> extract() -> frames -> DuckDB DECIMAL(21,3) -> minor units -> the sink's wire body (exact JSON) -> the
emulator (real HTTP, enforcing the system's decimals) -> the sink's parse -> reconciliation, unchanged.

Each system takes what its vendor documents: QuickBooks and Zoho an amount in the currency's own decimals (KWD's 3);
Jurnal, Aden and Rootfi at most 2 decimals (their emulators' module docs), so a 3-decimal currency is drawn there as
a whole number of hundredths (KWD 1.230), the amounts such a company can hold. The explicit examples pin one 0-, 2-
and 3-decimal currency per system; hypothesis adds a few random ones (few examples: it stays fast)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import duckdb
import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ledger_pipeline.ledger.currency import CompanyCurrency, plan_currency
from ledger_pipeline.ledger.rates import RateTable
from ledger_pipeline.ledger.sink import CanonicalEntry, CanonicalLine, custom_id_for, memo_for
from ledger_pipeline.money import CURRENCIES, from_minor, minor_unit
from ledger_pipeline.r2a.extract import extract
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.r2a.seed import create_tables
from ledger_pipeline.reconcile import reconcile_tenant
from ledger_pipeline.sandboxes.currency import set_home_currency
from ledger_pipeline.settings import load_settings
from ledger_pipeline.systems import OpenOptions, open_connection
from ledger_pipeline.systems.authflow import follow_redirects
from ledger_pipeline.warehouse import schema
from ledger_pipeline.warehouse.store import replace_rows, transaction

JAN, FEB = dt.date(2025, 1, 1), dt.date(2025, 2, 1)
JAN31 = dt.date(2025, 1, 31)
SYSTEMS = ("quickbooks", "zoho", "jurnal", "aden", "rootfi")
TWO_PLACES = {"jurnal", "aden", "rootfi"}  # systems whose amounts take at most 2 decimals, whatever the currency
CODES = sorted(CURRENCIES)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[dict]:  # noqa: ANN001
    """One sandbox, one connection per system, one R2a file and one DuckDB for every example."""
    from cryptography.fernet import Fernet

    from ledger_pipeline.sandboxes.base import SandboxLimits
    from ledger_pipeline.sandboxes.server import SandboxServer

    root = tmp_path_factory.mktemp("prop")
    mp = pytest.MonkeyPatch()
    mp.setenv("LEDGER_DATA_DIR", str(root / "data"))
    mp.setenv("R2A_DATABASE_URL", f"sqlite:///{root / 'r2a.sqlite'}")
    mp.setenv("LEDGER_ENCRYPTION_KEY", Fernet.generate_key().decode())
    with SandboxServer(root / "sb.sqlite", limits=SandboxLimits(scale=1000)) as server:
        for k, v in server.env().items():
            mp.setenv(k, v)
        s = load_settings()
        conns = {system: open_connection(system, s, OpenOptions(s.ops_database_url, 1000, 0.01, 5))
                 for system in SYSTEMS}
        http = httpx.Client(timeout=10)
        con = duckdb.connect()
        schema.ensure(con)
        try:
            engine = make_engine(s.r2a_database_url)
            create_tables(engine)
            yield {"engine": engine, "conns": conns, "http": http, "con": con, "n": [0], "url": server.url}
        finally:
            con.close()
            http.close()
            for c in conns.values():
                c.close()
    mp.undo()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(system=st.sampled_from(SYSTEMS), code=st.sampled_from(CODES), minor=st.integers(min_value=1, max_value=10**12))
@example(system="quickbooks", code="KWD", minor=123_456_789)  # 3 decimals, each one kept
@example(system="quickbooks", code="JPY", minor=1_000)  # 0 decimals
@example(system="zoho", code="BHD", minor=1_001)
@example(system="zoho", code="JPY", minor=987_654_321)
@example(system="jurnal", code="IDR", minor=1_250_000_00)  # 2 decimals
@example(system="jurnal", code="JPY", minor=1_001)
@example(system="aden", code="USD", minor=1)
@example(system="aden", code="KWD", minor=1_230)  # 3-decimal currency on a 2-decimal system: whole hundredths
@example(system="rootfi", code="JPY", minor=7)
@example(system="rootfi", code="BHD", minor=10)
def test_an_amount_survives_extraction_duckdb_wire_remote_and_reconciliation(world, system, code, minor) -> None:  # noqa: ANN001
    if system in TWO_PLACES and minor_unit(code) > 2:
        minor = max(10, minor - minor % 10 ** (minor_unit(code) - 2))  # what a 2-decimal system can hold
    engine, conn, con = world["engine"], world["conns"][system], world["con"]
    world["n"][0] += 1
    tenant = f"p{world['n'][0]:04d}"
    # R2a: one revenue row, written as decimal text the way R2a's app writes it
    with engine.begin() as db:
        db.execute(text("DELETE FROM r2a_transactions"))
        db.execute(text("DELETE FROM tenants"))
        db.execute(text("INSERT INTO tenants (tenant_id, name, currency) VALUES (:t, :t, :c)"),
                   {"t": tenant, "c": code})
        db.execute(text(f"INSERT INTO r2a_transactions (tenant_id, txn_date, category, subcategory, amount, currency) "
                        f"VALUES (:t, '2025-01-15', 'revenue', 's', {from_minor(minor, code)}, :c)"),
                   {"t": tenant, "c": code})
    # extraction -> frame -> DuckDB -> minor units back
    x = extract(engine, JAN, FEB)
    assert x.rejections.empty, x.rejections["detail"].tolist()
    with transaction(con):
        replace_rows(con, "r2a.pl_monthly_detail", x.detail.assign(run_id="r"), "TRUE")
    [(currency, back)] = con.execute(f"SELECT currency, {schema.minor_sql('amount', 'currency')} "
                                     "FROM r2a.pl_monthly_detail").fetchall()
    assert (currency, back) == (code, minor)
    # wire -> remote (the emulator) -> parse; the company keeps its books in the tenant's currency, as the sandbox
    # sets it at connect (sandboxes/currency.py)
    conn.connect_tenant(tenant, follow_redirects(world["http"]))
    set_home_currency(world["http"], world["url"], system, tenant, code)
    chart = [a for a in conn.fetch_chart(tenant) if not a.archived]
    e = CanonicalEntry(tenant, JAN, custom_id_for(tenant, JAN), JAN31, memo_for(JAN), currency, f"h{minor}", (
        CanonicalLine(1, chart[0].account_id, chart[0].number, back, 0, "cash"),
        CanonicalLine(2, chart[1].account_id, chart[1].number, 0, back, "revenue")))
    planned = plan_currency(e, system, CompanyCurrency(code, False), RateTable([]))
    [result] = conn.sink.create(tenant, [planned])
    assert result.error is None, result.error
    remote = conn.sink.find(tenant, e.custom_id)
    assert remote is not None and remote.currency == code and remote.total_debit_minor == minor
    assert [r.status for r in reconcile_tenant(tenant, [planned], [remote])] == ["match"]
