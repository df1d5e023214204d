"""Currencies end to end through the emulators (real HTTP, the sandbox server), on every system a case applies to:
the company's home currency read from the system, the entry planned (ledger/currency.py), posted by the system's
sink, read back and reconciled. Same currency: posted with its currency; foreign with a loaded rate: posted with the
rate; no rate or no multicurrency: refused before any request, naming both currencies; JPY (0 decimals) and KWD
(3 decimals) exact; a remote entry in another currency is amount_mismatch."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import httpx
import pytest

from ledger_pipeline.connections import read_company_currency
from ledger_pipeline.ledger.currency import FOREIGN_JOURNALS, CompanyCurrency, CurrencyRejection, plan_currency
from ledger_pipeline.ledger.rates import Rate, RateTable
from ledger_pipeline.ledger.sink import CanonicalEntry, CanonicalLine, custom_id_for, memo_for
from ledger_pipeline.reconcile import reconcile_tenant
from ledger_pipeline.settings import load_settings
from ledger_pipeline.systems import SYSTEMS, OpenOptions, open_connection
from ledger_pipeline_tests.helpers import set_company_currency

JAN, JAN31 = dt.date(2025, 1, 1), dt.date(2025, 1, 31)
RATES = RateTable([Rate(JAN31, "USD", "IDR", Decimal("16312.5"))])
ALL = sorted(SYSTEMS)
FOREIGN = sorted(s for s in ALL if FOREIGN_JOURNALS[s][0])



def entry_for(connection, tenant: str, currency: str, minor: int) -> CanonicalEntry:  # noqa: ANN001
    """A two-line entry (debit the first active account, credit the second) of `minor` units of `currency`."""
    chart = [a for a in connection.fetch_chart(tenant) if not a.archived]
    debit, credit = chart[0], chart[1]
    lines = (CanonicalLine(1, debit.account_id, debit.number, minor, 0, "debit"),
             CanonicalLine(2, credit.account_id, credit.number, 0, minor, "credit"))
    return CanonicalEntry(tenant, JAN, custom_id_for(tenant, JAN), JAN31, memo_for(JAN), currency,
                          f"h-{currency}-{minor}", lines)


def post(connection, e: CanonicalEntry):  # noqa: ANN001, ANN201
    """Create through the sink and read the entry back by our key (Rootfi's create answers asynchronously)."""
    [result] = connection.sink.create(e.tenant_id, [e])
    assert result.error is None, result.error
    return connection.sink.find(e.tenant_id, e.custom_id) or result.remote



def writes(sandbox, system: str) -> int:  # noqa: ANN001
    return httpx.get(f"{sandbox.url}/_sandbox/stats").json()["by_system"].get(system, {}).get("api_writes", 0)


# Rootfi: each account's currency_id ([AC-ALL]); Jurnal/Rootfi journals take no rate, so multicurrency is off
@pytest.mark.parametrize(("system", "multi"), [
    ("zoho", True), ("aden", True), ("rootfi", False), ("quickbooks", False), ("jurnal", False)])
def test_home_currency_is_read_from_the_system(connect, sandbox, system, multi):  # noqa: ANN001
    tenant = f"home{system[:3]}"
    conn = connect(system, tenant)
    assert read_company_currency(system, conn, tenant) == CompanyCurrency("IDR", multi)
    set_company_currency(sandbox, system, tenant, home_currency="JPY")  # a company kept in yen reads as JPY
    assert read_company_currency(system, conn, tenant).home == "JPY"


@pytest.mark.parametrize("system", ALL)
def test_same_currency_is_posted_with_its_currency_and_reconciles(connect, system):  # noqa: ANN001
    tenant = f"same{system[:3]}"
    conn = connect(system, tenant)
    e = entry_for(conn, tenant, "IDR", 1_250_000_00)
    planned = plan_currency(e, system, CompanyCurrency("IDR", False), RateTable([]))
    remote = post(conn, planned)
    assert remote.currency in (None, "IDR")
    assert remote.total_debit_minor == e.total_debit_minor
    assert [r.status for r in reconcile_tenant(tenant, [planned], [remote])] == ["match"]


@pytest.mark.parametrize("system", FOREIGN)
def test_foreign_currency_with_a_rate_is_posted_with_the_rate(connect, sandbox, system):  # noqa: ANN001
    tenant = f"fx{system[:3]}"
    conn = connect(system, tenant)
    set_company_currency(sandbox, system, tenant, home_currency="IDR", multicurrency=True)
    e = plan_currency(entry_for(conn, tenant, "USD", 1_250_00), system, CompanyCurrency("IDR", True), RATES)
    assert e.exchange_rate == Decimal("16312.5")
    remote = post(conn, e)
    assert remote.currency in (None, "USD") and remote.total_debit_minor == 1_250_00
    assert [r.status for r in reconcile_tenant(tenant, [e], [remote])] == ["match"]


@pytest.mark.parametrize("system", FOREIGN)
def test_no_rate_is_refused_before_any_request_naming_both_currencies(connect, sandbox, system):  # noqa: ANN001
    tenant = f"norate{system[:3]}"
    conn = connect(system, tenant)
    before = writes(sandbox, system)
    with pytest.raises(CurrencyRejection) as err:
        plan_currency(entry_for(conn, tenant, "USD", 1_250_00), system, CompanyCurrency("IDR", True), RateTable([]))
    assert all(w in str(err.value) for w in (tenant, "2025-01", "USD", "IDR", "ledger-pipeline rates load"))
    assert writes(sandbox, system) == before


@pytest.mark.parametrize("system", ALL)
def test_company_without_multicurrency_is_refused(connect, system):  # noqa: ANN001
    tenant = f"mono{system[:3]}"
    conn = connect(system, tenant)
    with pytest.raises(CurrencyRejection) as err:
        plan_currency(entry_for(conn, tenant, "USD", 1_250_00), system, CompanyCurrency("IDR", False), RATES)
    assert "USD" in str(err.value) and "IDR" in str(err.value)


# the emulators that keep each entry's currency today; KWD's 3 decimals: Aden refuses them (documented), the
# Rootfi emulator takes 2 decimals only, so KWD is posted there as a whole-fils-of-10 amount
@pytest.mark.parametrize(("system", "currency", "minor"), [
    ("aden", "JPY", 1_234_567), ("rootfi", "JPY", 1_234_567), ("aden", "KWD", 1_234_567),
    ("rootfi", "KWD", 1_234_560)])
def test_zero_and_three_decimal_currencies_are_posted_exactly(connect, sandbox, system, currency,  # noqa: ANN001
                                                               minor):
    tenant = f"dec{system[:3]}{currency.lower()}"
    conn = connect(system, tenant)
    set_company_currency(sandbox, system, tenant, home_currency=currency)  # the company keeps its books in it
    e = entry_for(conn, tenant, currency, minor)
    try:
        planned = plan_currency(e, system, CompanyCurrency(currency, False), RateTable([]))
    except CurrencyRejection as exc:  # Aden takes at most 2 decimals: KWD 1,234.567 is refused, never rounded
        assert system == "aden" and currency == "KWD" and "at most 2 decimals" in str(exc)
        return
    remote = post(conn, planned)
    assert remote.currency == currency and remote.total_debit_minor == minor
    assert [r.status for r in reconcile_tenant(tenant, [planned], [remote])] == ["match"]


@pytest.mark.parametrize("system", ALL)
def test_a_currency_change_is_an_amount_mismatch_with_both_currencies(connect, system):  # noqa: ANN001
    tenant = f"chg{system[:3]}"
    conn = connect(system, tenant)
    e = entry_for(conn, tenant, "IDR", 1_250_000_00)
    remote = post(conn, e)
    assert remote.currency == "IDR", "every sink reads the entry's currency back (Jurnal: the company's)"
    ours = dataclasses.replace(e, currency="USD")  # R2a now says the tenant's books are in USD
    [row] = reconcile_tenant(tenant, [ours], [remote])
    assert row.status == "amount_mismatch" and "IDR" in row.detail and "USD" in row.detail


@pytest.mark.parametrize("system", FOREIGN)
def test_a_new_rate_alone_changes_the_entry_and_the_update_sends_it(connect, sandbox, system):  # noqa: ANN001
    """Same lines, a rate loaded anew for the entry's date: the planned hash differs (the close re-posts), the
    remote entry at the old rate is an amount_mismatch naming both rates, and the update puts the new rate there."""
    tenant = f"rate{system[:3]}"
    conn = connect(system, tenant)
    set_company_currency(sandbox, system, tenant, home_currency="IDR", multicurrency=True)
    e = entry_for(conn, tenant, "USD", 1_250_00)
    old = plan_currency(e, system, CompanyCurrency("IDR", True), RATES)
    remote = post(conn, old)
    new = plan_currency(e, system, CompanyCurrency("IDR", True),
                        RateTable([Rate(JAN31, "USD", "IDR", Decimal("16400.25"))]))
    assert new.content_hash != old.content_hash and new.lines == old.lines
    [row] = reconcile_tenant(tenant, [new], [remote])
    assert row.status == "amount_mismatch" and "16312.5" in row.detail and "16400.25" in row.detail, row.detail
    conn.sink.update(tenant, remote, new)
    after = conn.sink.find(tenant, e.custom_id)
    assert [r.status for r in reconcile_tenant(tenant, [new], [after])] == ["match"]
    assert [r.status for r in reconcile_tenant(tenant, [old], [after])] == ["amount_mismatch"]


# --- through the Dagster close: the company currency read with the chart, the plan in the posting asset ----------

def test_a_usd_tenant_on_an_idr_company_closes_with_the_loaded_rate_or_is_refused_naming_both(settings, sandbox):  # noqa: ANN001
    from sqlalchemy import text as sql

    from ledger_pipeline import clock
    from ledger_pipeline.r2a import seed as seeding
    from ledger_pipeline.r2a.models import make_engine
    from ledger_pipeline.rates import load_rates
    from ledger_pipeline.state.database import make_ops_engine
    from ledger_pipeline_tests.helpers import CLOSE, connect_to, live_entries, materialize, query

    month = clock.add_months(clock.last_complete_month(), -1)
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, 2, 1, month, seed=5)
    with engine.begin() as conn:
        conn.execute(sql("UPDATE tenants SET currency = 'USD' WHERE tenant_id = 't00001'"))
        conn.execute(sql("UPDATE r2a_transactions SET currency = 'USD' WHERE tenant_id = 't00001'"))
    connect_to("aden", ["t00001", "t00002"])

    # no rate loaded: the USD tenant's month is a failed posting naming both currencies and the fix; nothing sent
    result = materialize(CLOSE, month.isoformat(), raise_on_error=False)
    # a permanent cause: not a failed step (reconciliation runs for the others) but a failed WARN postings check
    failed_checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                     and not e.event_specific_data.passed]
    assert "postings_complete" in [e.event_specific_data.check_name for e in failed_checks]
    ops = make_ops_engine(settings.ops_database_url)
    with ops.connect() as conn:
        homes = dict(conn.execute(sql("SELECT tenant_id, home_currency FROM connection_health")).all())
    assert homes == {"t00001": "IDR", "t00002": "IDR"}, "read from the Aden company with its chart"
    assert query(settings, "SELECT tenant_id, home_currency, multicurrency FROM accounting.connections "
                           "ORDER BY 1") == [("t00001", "IDR", True), ("t00002", "IDR", True)]
    posted = {e["custom_id"].split("~")[0] for e in live_entries(sandbox.url, "aden")}
    assert custom_id_for("t00002", month) in posted and custom_id_for("t00001", month) not in posted
    [(who, stage, detail)] = query(settings, "SELECT tenant_id, stage, detail FROM ledger.rejections "
                                             "WHERE stage = 'currency'")
    assert who == "t00001" and all(w in detail for w in ("USD", "IDR", "ledger-pipeline rates load"))
    text = " ".join(repr(e.event_specific_data) for e in failed_checks)
    assert all(w in text for w in ("t00001", "USD", "IDR", "ledger-pipeline rates load")), text[:2000]

    # the rate for the entry's date loaded: posted in USD with it, reconciled
    last_day = clock.add_months(month, 1) - dt.timedelta(days=1)
    load_rates(ops, [Rate(last_day, "USD", "IDR", Decimal("16312.5"))], "test")
    assert materialize(CLOSE, month.isoformat()).success
    s = load_settings()
    aden = open_connection("aden", s, OpenOptions(s.ops_database_url, 1000, 0.01, 5))
    try:
        remote = aden.sink.find("t00001", custom_id_for("t00001", month))
    finally:
        aden.close()
    assert remote is not None and remote.currency == "USD"
    assert query(settings, "SELECT DISTINCT status FROM accounting.reconciliation") in ([("match",)],)
    assert query(settings, "SELECT * FROM ledger.rejections WHERE stage = 'currency'") == []
    assert query(settings, "SELECT from_currency, to_currency, rate FROM ledger.exchange_rates") == [
        ("USD", "IDR", Decimal("16312.5"))]
    assert query(settings, "SELECT DISTINCT up_to_date FROM analytics.posting_status") == [(True,)]

    # a new rate loaded for the same date, the lines unchanged: the next close updates the remote entry with it
    load_rates(ops, [Rate(last_day, "USD", "IDR", Decimal("16400.25"))], "test")
    assert materialize(CLOSE, month.isoformat()).success
    aden = open_connection("aden", s, OpenOptions(s.ops_database_url, 1000, 0.01, 5))
    try:
        remote = aden.sink.find("t00001", custom_id_for("t00001", month))
    finally:
        aden.close()
    assert remote is not None and Decimal(str(remote.extra["exchange_rate"])) == Decimal("16400.25")
    assert query(settings, "SELECT DISTINCT status FROM accounting.reconciliation") == [("match",)]
    assert query(settings, "SELECT DISTINCT up_to_date FROM analytics.posting_status") == [(True,)]


# --- the sandbox's companies keep their books in the tenant's R2a currency (set at connect) ----------------------

@pytest.mark.parametrize(("system", "currency"), [("quickbooks", "USD"), ("zoho", "KWD"), ("jurnal", "JPY"),
                                                  ("aden", "USD"), ("rootfi", "JPY")])
def test_connect_auto_approve_keeps_the_sandbox_company_in_the_tenants_currency(settings, sandbox, system,  # noqa: ANN001
                                                                                  currency):
    from click.testing import CliRunner
    from sqlalchemy import text as sql

    from ledger_pipeline.cli import main
    from ledger_pipeline.connections import company_currencies
    from ledger_pipeline.r2a import seed as seeding
    from ledger_pipeline.r2a.models import make_engine
    from ledger_pipeline.state.database import make_ops_engine

    engine = make_engine(settings.r2a_database_url)
    seeding.create_tables(engine)
    with engine.begin() as conn:
        conn.execute(sql("INSERT INTO tenants (tenant_id, name, currency) VALUES ('t1', 't1', :c), "
                         "('t2', 't2', 'IDR')"), {"c": currency})
    for tenant in ("t1", "t2"):
        out = CliRunner().invoke(main, ["connect", "--tenant", tenant, "--system", system, "--auto-approve"])
        assert out.exit_code == 0, out.output
    # read back from the system the way every connection reads it (connections.py), and stored
    stored = company_currencies(make_ops_engine(settings.ops_database_url))
    assert stored[(system, "t1")].home == currency and stored[(system, "t2")].home == "IDR"


# --- totals never mix currencies: reconciliation rows, their metadata and the drift read keep each currency --------

def test_jpy_and_idr_tenants_reconcile_with_totals_per_currency_through_the_close_and_the_drift_read(  # noqa: ANN001
        settings, sandbox):
    from sqlalchemy import text as sql

    from ledger_pipeline import clock
    from ledger_pipeline.r2a import seed as seeding
    from ledger_pipeline.r2a.models import make_engine
    from ledger_pipeline.sandboxes.currency import set_home_currency
    from ledger_pipeline_tests.helpers import CLOSE, connect_to, materialize, materialize_drift, query

    month = clock.add_months(clock.last_complete_month(), -1)
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, 2, 1, month, seed=5)
    with engine.begin() as conn:  # t00001 keeps its books in yen (whole yen: JPY has no minor unit)
        conn.execute(sql("UPDATE tenants SET currency = 'JPY' WHERE tenant_id = 't00001'"))
        conn.execute(sql("UPDATE r2a_transactions SET currency = 'JPY', amount = ROUND(amount, 0) "
                         "WHERE tenant_id = 't00001'"))
    connect_to("quickbooks", ["t00001", "t00002"])
    with httpx.Client(timeout=10) as http:
        set_home_currency(http, sandbox.url, "quickbooks", "t00001", "JPY")
    result = materialize(CLOSE, month.isoformat())
    assert result.success
    expected = dict(query(settings, "SELECT tenant_id, total_debit FROM ledger.journal_entries"))
    rows = query(settings, "SELECT tenant_id, status, currency, local_total, remote_total "
                           "FROM accounting.reconciliation ORDER BY 1")
    assert rows == [("t00001", "match", "JPY", expected["t00001"], expected["t00001"]),
                    ("t00002", "match", "IDR", expected["t00002"], expected["t00002"])]
    [meta] = [m.metadata for m in result.get_asset_materialization_events()
              if m.asset_key.path[-1] == "reconciliation" for m in [m.event_specific_data.materialization]]
    total = meta["total_local_total"].value
    assert "JPY" in total and "IDR" in total, total  # one total per currency, never one mixed sum
    summary = query(settings, "SELECT currency, local_total FROM analytics.reconciliation_summary ORDER BY 1")
    assert summary == [("IDR", expected["t00002"]), ("JPY", expected["t00001"])]

    # the drift read's rows are read back in their own currency's decimals by the next reconciliation
    assert materialize_drift().success
    assert materialize(["reconciliation"], month.isoformat()).success
    assert query(settings, "SELECT tenant_id, currency, local_total, remote_total FROM accounting.reconciliation "
                           "ORDER BY 1") == [("t00001", "JPY", expected["t00001"], expected["t00001"]),
                                             ("t00002", "IDR", expected["t00002"], expected["t00002"])]
