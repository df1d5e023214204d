"""Which currency an entry is posted in (ledger/currency.py, pure): same currency unchanged, a foreign one with the
loaded rate for its date, and every refusal naming tenant, period, both currencies and the fix (never a silent 1.0).
The end-to-end cases through the emulators follow once the emulators keep a home currency per company."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest

from ledger_pipeline.ledger.currency import FOREIGN_JOURNALS, CompanyCurrency, CurrencyRejection, plan_currency
from ledger_pipeline.ledger.rates import Rate, RateTable
from ledger_pipeline.ledger.sink import CanonicalEntry, CanonicalLine

JAN, JAN31 = dt.date(2025, 1, 1), dt.date(2025, 1, 31)
RATES = RateTable([Rate(JAN31, "USD", "IDR", Decimal("16312.5")), Rate(JAN31, "JPY", "USD", Decimal("0.0064"))])
FOREIGN_OK = sorted(s for s, (ok, _) in FOREIGN_JOURNALS.items() if ok)


def entry(currency: str, day: dt.date = JAN31) -> CanonicalEntry:
    lines = (CanonicalLine(1, "10", "1-100", 125000, 0, "cash"), CanonicalLine(2, "40", "4-100", 0, 125000, "sales"))
    return CanonicalEntry("acme", JAN, "r2a-pl-acme-202501", day, "R2A P&L 2025-01", currency, "h", lines)


@pytest.mark.parametrize("system", sorted(FOREIGN_JOURNALS))
def test_same_currency_posts_unchanged(system):
    e = entry("IDR")
    assert plan_currency(e, system, CompanyCurrency("IDR", False), RateTable([])) == e


@pytest.mark.parametrize("system", FOREIGN_OK)
def test_foreign_currency_gets_the_rate_for_its_date(system):
    planned = plan_currency(entry("USD"), system, CompanyCurrency("IDR", True), RATES)
    assert planned.currency == "USD" and planned.exchange_rate == Decimal("16312.5")
    assert planned.lines == entry("USD").lines  # amounts stay the tenant's, exactly


@pytest.mark.parametrize("system", FOREIGN_OK)
def test_no_rate_is_a_rejection_naming_both_currencies(system):
    with pytest.raises(CurrencyRejection) as err:
        plan_currency(entry("USD", dt.date(2025, 2, 28)), system, CompanyCurrency("IDR", True), RATES)
    text = str(err.value)
    assert err.value.stage == "currency"
    assert all(w in text for w in ("acme", "2025-01", "USD", "IDR", "ledger-pipeline rates load"))


@pytest.mark.parametrize("system", sorted(FOREIGN_JOURNALS))
def test_company_without_multicurrency_is_a_rejection(system):
    with pytest.raises(CurrencyRejection) as err:
        plan_currency(entry("USD"), system, CompanyCurrency("IDR", False), RATES)
    text = str(err.value)
    assert all(w in text for w in ("acme", "2025-01", "USD", "IDR"))
    assert ("multicurrency" in text) if FOREIGN_JOURNALS[system][0] else ("no foreign-currency journal" in text)


def test_unknown_home_currency_is_a_rejection_not_a_guess():
    with pytest.raises(CurrencyRejection, match="home currency is not known"):
        plan_currency(entry("USD"), "quickbooks", CompanyCurrency(None, True), RATES)


def test_never_a_silent_one():
    # a rate for the opposite direction is not used (1/rate is not exact): still a rejection
    with pytest.raises(CurrencyRejection):
        plan_currency(entry("USD"), "quickbooks", CompanyCurrency("JPY", True), RATES)


def test_aden_takes_two_decimal_amounts_and_six_decimal_rates():
    lines = (CanonicalLine(1, "10", "1", 1234, 0, "cash"), CanonicalLine(2, "40", "4", 0, 1234, "sales"))
    kwd = dataclasses.replace(entry("KWD"), lines=lines)  # 1.234 KWD
    with pytest.raises(CurrencyRejection, match="at most 2 decimals"):
        plan_currency(kwd, "aden", CompanyCurrency("KWD", False), RateTable([]))
    assert plan_currency(kwd, "quickbooks", CompanyCurrency("KWD", False), RateTable([])) == kwd
    whole = dataclasses.replace(kwd, lines=tuple(dataclasses.replace(ln, debit_minor=ln.debit_minor and 1230,
                                                                     credit_minor=ln.credit_minor and 1230)
                                                 for ln in lines))
    assert plan_currency(whole, "aden", CompanyCurrency("KWD", False), RateTable([])) == whole
    fine_rate = RateTable([Rate(JAN31, "USD", "IDR", Decimal("16312.1234567"))])
    with pytest.raises(CurrencyRejection, match="more than the 6 decimals"):
        plan_currency(entry("USD"), "aden", CompanyCurrency("IDR", True), fine_rate)


def test_reconciliation_sees_a_currency_change_and_a_rate_change():
    from ledger_pipeline.ledger.sink import RemoteEntry
    from ledger_pipeline.reconcile import reconcile_tenant

    e = entry("USD")
    lines = tuple((str(ln.line_no), ln.account_id, ln.debit_minor, ln.credit_minor) for ln in e.lines)

    def remote(currency, **extra):
        return RemoteEntry("9", e.custom_id, e.transaction_date, e.memo, 125000, 125000, lines, currency=currency,
                           extra=extra)

    assert reconcile_tenant("acme", [e], [remote("USD")])[0].status == "match"
    row = reconcile_tenant("acme", [e], [remote("IDR")])[0]
    assert row.status == "amount_mismatch" and "IDR" in row.detail and "USD" in row.detail
    foreign = plan_currency(e, "quickbooks", CompanyCurrency("IDR", True), RATES)
    assert reconcile_tenant("acme", [foreign], [remote("USD", ExchangeRate="16312.5")])[0].status == "match"
    row = reconcile_tenant("acme", [foreign], [remote("USD", ExchangeRate="1")])[0]
    assert row.status == "amount_mismatch" and "exchange rate 1 in the accounting system, ours 16312.5" in row.detail


def test_a_new_rate_changes_the_content_hash_and_the_same_rate_does_not():
    from ledger_pipeline.ledger.currency import planned_hash

    once = plan_currency(entry("USD"), "quickbooks", CompanyCurrency("IDR", True), RATES)
    again = plan_currency(entry("USD"), "quickbooks", CompanyCurrency("IDR", True),
                          RateTable([Rate(JAN31, "USD", "IDR", Decimal("16312.500"))]))  # the same rate, written longer
    new = plan_currency(entry("USD"), "quickbooks", CompanyCurrency("IDR", True),
                        RateTable([Rate(JAN31, "USD", "IDR", Decimal("16400"))]))
    assert once.content_hash == again.content_hash == planned_hash("h", "IDR", Decimal("16312.5"))
    assert new.content_hash != once.content_hash and once.content_hash != entry("USD").content_hash
    # a same-currency entry keeps the journal's hash (analytics.posting_status compares it as is)
    assert plan_currency(entry("IDR"), "quickbooks", CompanyCurrency("IDR", True), RATES).content_hash == "h"


def test_the_posting_status_view_recomputes_the_planned_hash_exactly():
    """DuckDB's sha256 over ledger.exchange_rates' DECIMAL(38,18) gives planned_hash's text."""
    import duckdb

    from ledger_pipeline.ledger.currency import planned_hash

    [(got,)] = duckdb.connect().execute(
        "SELECT sha256('h' || '|' || 'IDR' || '|' || CAST(CAST('16312.5' AS DECIMAL(38,18)) AS VARCHAR))").fetchall()
    assert got == planned_hash("h", "IDR", Decimal("16312.5"))


def test_a_rate_changed_by_hand_is_a_change_a_person_made():
    """What we left there carries our rate in its fingerprint: the system holding the same lines at another rate is
    an edit (amount_mismatch, both rates in the diff), not "ours, the next close updates it"."""
    from ledger_pipeline.ledger.sink import RemoteEntry
    from ledger_pipeline.reconcile import classify, entry_fingerprint, remote_fingerprint

    planned = plan_currency(entry("USD"), "quickbooks", CompanyCurrency("IDR", True), RATES)
    lines = tuple((str(i), ln.account_id, ln.debit_minor, ln.credit_minor) for i, ln in enumerate(planned.lines))
    left = RemoteEntry("1", planned.custom_id, JAN31, planned.memo, 125000, 125000, lines,
                       extra={"ExchangeRate": "16312.5"}, currency="USD")
    edited = dataclasses.replace(left, extra={"ExchangeRate": "15000"})
    assert remote_fingerprint(left) == entry_fingerprint(planned) != remote_fingerprint(edited)
    assert classify(planned, left, entry_fingerprint(planned), True, "quickbooks", "QuickBooks")[0] == "match"
    kind, change = classify(planned, edited, entry_fingerprint(planned), True, "quickbooks", "QuickBooks")
    assert kind == "edited" and "15000" in change.diff and "16312.5" in change.diff
    # an entry in the company's own currency keeps the fingerprint it had before currencies (rate 1 or none)
    same = dataclasses.replace(left, extra={"ExchangeRate": "1"}, currency="IDR")
    assert remote_fingerprint(same) == remote_fingerprint(dataclasses.replace(same, extra={}))


def test_a_system_that_books_another_rate_fails_the_posting_naming_both_rates():
    """A 2xx whose entry holds our lines at another exchange rate is not posted: a mismatch naming both rates."""
    from ledger_pipeline_tests.helpers import MemoryStore
    from ledger_pipeline_tests.test_posting_engine import MemorySink, run

    class OtherRate(MemorySink):
        def _remote(self, e, remote_id=None):  # noqa: ANN001, ANN202
            return dataclasses.replace(super()._remote(e, remote_id), extra={"exchange_rate": "15000"},
                                       currency=e.currency)

    sink, store = OtherRate(), MemoryStore()
    base = entry("USD")
    planned = plan_currency(dataclasses.replace(base, tenant_id="t1", custom_id="r2a-pl-t1-202501"), "aden",
                            CompanyCurrency("IDR", True), RATES)
    out = run(sink, store, [planned])
    assert [k for _, _, k in out.failures] == ["mismatch"]
    error = store.rows[planned.custom_id].error
    assert "15000" in error and "16312.5" in error and "rate" in error, error
