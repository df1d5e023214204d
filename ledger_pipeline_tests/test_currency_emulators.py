"""The emulators keep a home currency per company and hold entries to each system's currency rules (issue 21.6),
through the real sandbox server and our own clients: the home currency read back by ledger_pipeline.connections, a
foreign entry refused without multicurrency, amounts finer than the currency's minor unit refused (JPY decimals, a
KWD 4th decimal), and QuickBooks answering each entry's own CurrencyRef and ExchangeRate."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import httpx
import pytest

from ledger_pipeline.connections import read_company_currency
from ledger_pipeline.ledger.currency import CompanyCurrency, plan_currency
from ledger_pipeline.ledger.rates import Rate, RateTable
from ledger_pipeline.ledger.sink import CanonicalEntry, CanonicalLine, custom_id_for, memo_for
from ledger_pipeline.systems.core import ApiError
from ledger_pipeline_tests.helpers import set_company_currency

JAN, JAN31 = dt.date(2025, 1, 1), dt.date(2025, 1, 31)
RATES = RateTable([Rate(JAN31, "USD", "IDR", Decimal("16312.5"))])




def answer(result: object) -> dict:
    """A client's answer: (status, body[, replayed]) or the body itself."""
    return result[1] if isinstance(result, tuple) else result  # type: ignore[return-value]


def inspected(sandbox, system: str, tenant: str) -> list[dict]:  # noqa: ANN001
    return httpx.get(f"{sandbox.url}/_sandbox/journal_entries",
                     params={"system": system, "login": tenant}).json()["journal_entries"]


def two_accounts(conn, tenant: str) -> tuple[str, str]:  # noqa: ANN001
    chart = [a for a in conn.fetch_chart(tenant) if not a.archived]
    return chart[0].account_id, chart[1].account_id


def entry_for(conn, tenant: str, currency: str, minor: int) -> CanonicalEntry:  # noqa: ANN001
    debit, credit = two_accounts(conn, tenant)
    lines = (CanonicalLine(1, debit, "d", minor, 0, "debit"), CanonicalLine(2, credit, "c", 0, minor, "credit"))
    return CanonicalEntry(tenant, JAN, custom_id_for(tenant, JAN), JAN31, memo_for(JAN), currency,
                          f"h-{currency}-{minor}", lines)


def raw_entry(system: str, conn, tenant: str, amount: str, currency: str, n: int = 1) -> tuple[str, dict]:  # noqa: ANN001
    """(path, body) of a two-line entry of `amount` (a decimal string, sent as is) in the system's own shape."""
    debit, credit = two_accounts(conn, tenant)
    value = Decimal(amount)
    if system == "quickbooks":
        return "/journalentry", {"TxnDate": "2025-01-31", "CurrencyRef": {"value": currency}, "Line": [
            {"Amount": value, "DetailType": "JournalEntryLineDetail",
             "JournalEntryLineDetail": {"PostingType": side, "AccountRef": {"value": acc}}}
            for side, acc in (("Debit", debit), ("Credit", credit))]}
    if system == "zoho":
        return "/journals", {"journal_date": "2025-01-31", "reference_number": f"raw-{n}", "line_items": [
            {"account_id": acc, "debit_or_credit": side, "amount": value}
            for side, acc in (("debit", debit), ("credit", credit))]}
    if system == "aden":
        return "/journal-entries", {"entry_id": f"raw-{n}", "tran_date": "2025-01-31", "currency": currency, "lines": [
            {"line_number": 1, "account_id": debit, "debit": value, "credit": 0},
            {"line_number": 2, "account_id": credit, "debit": 0, "credit": value}]}
    assert system == "jurnal"
    return "/journal_entries", {"journal_entry": {
        "transaction_date": "2025-01-31", "transaction_account_lines_attributes": [
            {"account_id": debit, "debit": value}, {"account_id": credit, "credit": value}]}}


@pytest.mark.parametrize(("system", "home", "multi"), [
    ("quickbooks", "USD", False), ("zoho", "JPY", True), ("jurnal", "JPY", False), ("aden", "KWD", True)])
def test_home_currency_set_per_company_is_read_back_through_connections(connect, sandbox, system, home,  # noqa: ANN001
                                                                         multi):
    tenant = f"home{system[:3]}"
    conn = connect(system, tenant)
    assert read_company_currency(system, conn, tenant).home == "IDR", "a new company keeps its books in IDR"
    set_company_currency(sandbox, system, tenant, home_currency=home)
    assert read_company_currency(system, conn, tenant) == CompanyCurrency(home, multi)
    other = f"other{system[:3]}"  # one company's currency is its own
    assert read_company_currency(system, connect(system, other), other).home == "IDR"


@pytest.mark.parametrize("system", ["quickbooks", "zoho", "aden", "rootfi"])
def test_foreign_entry_is_refused_without_multicurrency(connect, sandbox, system):  # noqa: ANN001
    tenant = f"mono{system[:3]}"
    conn = connect(system, tenant)
    set_company_currency(sandbox, system, tenant, home_currency="IDR", multicurrency=False)
    e = entry_for(conn, tenant, "USD", 1_250_00)
    if system != "rootfi":  # Rootfi's create takes no rate: our planner refuses, the emulator is asked directly
        e = plan_currency(e, system, CompanyCurrency("IDR", True), RATES)
        assert e.exchange_rate == Decimal("16312.5")
    [result] = conn.sink.create(tenant, [e])
    assert result.error is not None and result.error.kind == "rejected", result
    text = str(result.error).lower()
    assert "usd" in text and ("multi" in text or "currency" in text), text
    assert conn.sink.find(tenant, e.custom_id) is None and inspected(sandbox, system, tenant) == []


@pytest.mark.parametrize("system", ["quickbooks", "zoho", "aden"])
def test_foreign_entry_without_a_rate_is_refused(connect, sandbox, system):  # noqa: ANN001
    tenant = f"norate{system[:3]}"
    conn = connect(system, tenant)
    set_company_currency(sandbox, system, tenant, home_currency="IDR", multicurrency=True)
    path, body = raw_entry(system, conn, tenant, "12.50", "USD")
    if system == "zoho":  # a foreign journal names its currency by Zoho's id
        currencies = answer(conn.client.request(tenant, "GET", "/settings/currencies"))["currencies"]
        body["currency_id"] = next(c["currency_id"] for c in currencies if c["currency_code"] == "USD")
    with pytest.raises(ApiError) as err:
        conn.client.request(tenant, "POST", path, body)
    assert "exchange" in str(err.value).lower() or "exchangerate" in str(err.value).lower(), str(err.value)
    assert inspected(sandbox, system, tenant) == []


@pytest.mark.parametrize(("system", "currency", "bad", "good"), [
    ("quickbooks", "JPY", "1000.5", "1000"), ("zoho", "JPY", "1000.5", "1000"), ("aden", "JPY", "1000.5", "1000"),
    ("jurnal", "JPY", "1000.5", "1000"), ("quickbooks", "KWD", "1.2345", "1.234"), ("zoho", "KWD", "1.2345", "1.234")])
def test_amounts_finer_than_the_currency_allows_are_refused(connect, sandbox, system, currency, bad,  # noqa: ANN001
                                                            good):
    tenant = f"dec{system[:3]}{currency.lower()}"
    conn = connect(system, tenant)
    set_company_currency(sandbox, system, tenant, home_currency=currency)
    path, body = raw_entry(system, conn, tenant, bad, currency)
    with pytest.raises(ApiError) as err:
        conn.client.request(tenant, "POST", path, body)
    assert err.value.status in (400, 422) and "decimal" in str(err.value).lower(), str(err.value)
    assert inspected(sandbox, system, tenant) == [], "nothing stored, nothing rounded"
    path, body = raw_entry(system, conn, tenant, good, currency, n=2)
    conn.client.request(tenant, "POST", path, body)
    [stored] = inspected(sandbox, system, tenant)
    assert stored["currency"] == currency and Decimal(str(stored["total_debit"])) == Decimal(good)


def test_quickbooks_keeps_and_returns_each_entrys_currency_and_rate(connect, sandbox):  # noqa: ANN001
    tenant = "qbofx"
    conn = connect("quickbooks", tenant)
    set_company_currency(sandbox, "quickbooks", tenant, home_currency="IDR", multicurrency=True)
    e = plan_currency(entry_for(conn, tenant, "USD", 1_250_00), "quickbooks", CompanyCurrency("IDR", True), RATES)
    [result] = conn.sink.create(tenant, [e])
    assert result.error is None, result.error
    remote = conn.sink.find(tenant, e.custom_id)
    assert remote.currency == "USD" and remote.total_debit_minor == 1_250_00
    assert Decimal(remote.extra["ExchangeRate"]) == Decimal("16312.5")
    je = answer(conn.client.request(tenant, "GET", f"/journalentry/{remote.remote_id}"))["JournalEntry"]
    assert je["CurrencyRef"]["value"] == "USD" and Decimal(str(je["ExchangeRate"])) == Decimal("16312.5")
    [shown] = inspected(sandbox, "quickbooks", tenant)
    assert shown["currency"] == "USD" and Decimal(str(shown["exchange_rate"])) == Decimal("16312.5")
    # a home-currency entry in the same company answers the home currency, no rate
    same = entry_for(conn, tenant, "IDR", 7_000_00)
    same = CanonicalEntry(tenant, dt.date(2025, 2, 1), custom_id_for(tenant, dt.date(2025, 2, 1)),
                          dt.date(2025, 2, 28), memo_for(dt.date(2025, 2, 1)), "IDR", "h2", same.lines)
    assert conn.sink.create(tenant, [same])[0].error is None
    assert conn.sink.find(tenant, same.custom_id).currency == "IDR"
    prefs = answer(conn.client.request(tenant, "GET", "/preferences"))["Preferences"]["CurrencyPrefs"]
    assert prefs == {"HomeCurrency": {"value": "IDR"}, "MultiCurrencyEnabled": True}
