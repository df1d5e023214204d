"""Which currency an entry is posted in, and at what rate (pure).

An entry is always posted **in the tenant's currency** (its R2a currency, `CanonicalEntry.currency`): the amounts we
send are the amounts R2a holds, exactly, never converted by us. The company's *home currency* is the currency its
books are kept in (read from the system at connect and on chart refresh; the ops table `connection_health`).

- Same currency: posted as is; `exchange_rate` stays None (the sinks still send the currency where the system takes
  one).
- Different currency: the system must accept a foreign-currency journal (`FOREIGN_JOURNALS` below, with the vendor
  source) and the company must have multicurrency turned on; the rate is the one loaded for the entry's date
  (ledger/rates.py `RateTable.rate_for`: 1 entry currency = rate home currency). The entry gets `exchange_rate` set and
  the sink sends it (QuickBooks `CurrencyRef` + `ExchangeRate`, Zoho `currency_id` + `exchange_rate`, Aden
  `currency` + `exchange_rate`, Rootfi `currency_id` + `currency_rate`).
  Its `content_hash` becomes `planned_hash(journal hash, home, rate)`: a rate loaded anew for the entry's date (same
  lines) is a changed entry, so the next close updates the remote entry with the new rate (posting.py compares
  hashes), and `analytics.posting_status.up_to_date` says false until it has (warehouse/schema.py recomputes the
  same hash with DuckDB's sha256).
- No rate, a system without foreign-currency journals, a company without multicurrency, or an unknown home
  currency: `CurrencyRejection` (stage "currency") naming tenant, period, both currencies and the fix. Never a
  silent 1.0.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from decimal import Decimal

from ledger_pipeline.ledger.rates import LOAD_COMMAND, MissingRate, RateTable
from ledger_pipeline.ledger.sink import CanonicalEntry
from ledger_pipeline.money import minor_unit

STAGE = "currency"

# system -> (accepts a journal in a currency other than the company's home currency, vendor source)
FOREIGN_JOURNALS: dict[str, tuple[bool, str]] = {
    # JournalEntry.CurrencyRef and ExchangeRate ("Multicurrency must be enabled for the company",
    # developer.intuit.com/app/developer/qbo/docs/api/accounting/all-entities/journalentry; Preferences
    # CurrencyPrefs.MultiCurrencyEnabled / HomeCurrency)
    "quickbooks": (True, "QuickBooks JournalEntry CurrencyRef + ExchangeRate (multicurrency companies)"),
    # POST /journals takes currency_id and exchange_rate (www.zoho.com/books/api/v3/journals/#create-a-journal);
    # the organization's currency_code is the base currency (www.zoho.com/books/api/v3/organizations/)
    "zoho": (True, "Zoho Books journals currency_id + exchange_rate"),
    # Mekari's Jurnal journal entry create schema has no currency field (specs/jurnal_mekari_swagger.json,
    # POST /journal_entries: transaction_account_lines_attributes only); entries are in the company currency
    "jurnal": (False, "Jurnal journal entries carry no currency (Mekari's Swagger, POST /journal_entries)"),
    # Aden journal entries carry `currency` and `exchange_rate` ("Amounts <= 2 dp; exchange rates <= 6 dp",
    # docs.adenhq.com journal entries)
    "aden": (True, "Aden journal entries currency + exchange_rate"),
    # Rootfi's create body has currency_id but no rate (docs.integrationlabs.co v2/v3 journal-entries: records only
    # *report* currency_rate), so a foreign entry would be booked at whatever rate the platform picks: refused
    "rootfi": (False, "Rootfi's journal entry create takes currency_id but no exchange rate "
                      "(docs.integrationlabs.co journal-entries)"),
}
# system -> (most decimals an amount may have, most decimals a rate may have); absent: the currency's own
# minor unit and any rate. Aden: "Amounts <= 2 dp; exchange rates <= 6 dp" (docs.adenhq.com journal entries).
SYSTEM_DECIMALS: dict[str, tuple[int, int]] = {"aden": (2, 6)}


def planned_hash(journal_hash: str, home: str, rate: Decimal) -> str:
    """The content hash of a foreign-currency entry as posted: sha256 hex of "<journal hash>|<home>|<rate with 18
    decimals>" (the journal's hash covers date, memo, currency and lines; this adds the company's currency and the
    rate, so a new rate alone is a change). DuckDB's `sha256(h || '|' || home || '|' || CAST(rate AS VARCHAR))` over
    ledger.exchange_rates' DECIMAL(38,18) gives the same text (warehouse/schema.py analytics.posting_status)."""
    return hashlib.sha256(f"{journal_hash}|{home}|{rate:.18f}".encode()).hexdigest()


@dataclass(frozen=True)
class CompanyCurrency:
    """What a connection knows about the books: `home` ISO 4217 code (None: not read yet) and whether the company
    keeps foreign-currency entries (`multicurrency`; None: the system does not say, taken as off for a foreign
    entry)."""

    home: str | None
    multicurrency: bool | None = None


class CurrencyRejection(ValueError):
    """An entry that cannot be posted in its currency to this company; `stage` is "currency". The message names
    tenant, period, both currencies and the fix."""

    stage = STAGE

    def __init__(self, entry: CanonicalEntry, system: str, home: str | None, problem: str, fix: str):
        self.tenant_id, self.period, self.system = entry.tenant_id, entry.period, system
        self.currency, self.home_currency = entry.currency, home
        super().__init__(f"tenant {entry.tenant_id}, period {entry.period:%Y-%m}: the entry is in {entry.currency} "
                         f"and the {system} company keeps its books in {home or 'an unknown currency'}: {problem}. "
                         f"Fix: {fix}, then re-run the month.")


def foreign_refusal(system: str, currency: str, company: CompanyCurrency) -> tuple[str, str] | None:
    """Why `system` cannot take a journal in `currency` into this company's books kept in another currency, as
    (problem, fix), or None when it can (given a loaded rate). The one rule posting (`plan_currency`) and preflight
    both apply; rates are looked up separately (they are per date)."""
    supported, source = FOREIGN_JOURNALS.get(system, (False, "unknown system"))
    if not supported:
        return f"{system} takes no foreign-currency journal ({source})", f"connect a company kept in {currency}"
    if not company.multicurrency:
        return ("multicurrency is not turned on for the company",
                f"turn on multicurrency in {system} for the company (and add {currency}), or connect a company kept "
                f"in {currency}")
    return None


def plan_currency(entry: CanonicalEntry, system: str, company: CompanyCurrency, rates: RateTable) -> CanonicalEntry:
    """The entry as it is posted: unchanged for the company's own currency; with `exchange_rate` (1 entry currency
    = rate home currency on transaction_date) and the `planned_hash` for a foreign one. Expects the journal's entry
    (not one planned already: its hash would be hashed twice). Raises CurrencyRejection (see module doc)."""
    amount_places, rate_places = SYSTEM_DECIMALS.get(system, (3, 18))
    fine = [ln.line_no for ln in entry.lines
            if (ln.debit_minor or ln.credit_minor) % 10 ** max(0, minor_unit(entry.currency) - amount_places)]
    if fine:
        raise CurrencyRejection(entry, system, company.home, f"{system} takes amounts with at most {amount_places} "
                                f"decimals and lines {', '.join(map(str, fine[:10]))} have more (nothing is rounded)",
                                f"connect the tenant to a system that keeps {entry.currency}'s "
                                f"{minor_unit(entry.currency)} decimals")
    home = company.home.upper() if company.home else None
    if home is None:
        raise CurrencyRejection(entry, system, None, "the company's home currency is not known",
                                f"run `ledger-pipeline preflight --tenant {entry.tenant_id}` (it reads the home "
                                "currency from the system) or reconnect the tenant")
    if home == entry.currency:
        return dataclasses.replace(entry, exchange_rate=None) if entry.exchange_rate is not None else entry
    refused = foreign_refusal(system, entry.currency, company)
    if refused:
        raise CurrencyRejection(entry, system, home, *refused)
    try:
        rate: Decimal = rates.rate_for(entry.currency, home, entry.transaction_date, entry.tenant_id, entry.period)
    except MissingRate as exc:
        raise CurrencyRejection(entry, system, home, f"no exchange rate from {entry.currency} to {home} for "
                                f"{entry.transaction_date.isoformat()}",
                                f"add '{entry.transaction_date.isoformat()},{entry.currency},{home},<rate>' to a "
                                f"rates CSV and run `{LOAD_COMMAND}`") from exc
    if -rate.as_tuple().exponent > rate_places:  # type: ignore[operator]
        raise CurrencyRejection(entry, system, home, f"the rate {rate} for {entry.transaction_date.isoformat()} has "
                                f"more than the {rate_places} decimals {system} takes",
                                f"load a rate with at most {rate_places} decimals with `{LOAD_COMMAND}`")
    return dataclasses.replace(entry, exchange_rate=rate, content_hash=planned_hash(entry.content_hash, home, rate))
