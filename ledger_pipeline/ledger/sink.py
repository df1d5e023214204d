"""The boundary between the pipeline and an accounting system: a canonical entry goes in, a remote entry comes out.

Every system (ledger_pipeline/systems/<name>/sink.py) implements `LedgerSink`; the posting engine
(ledger_pipeline/posting/) never changes when one is added. Ids are strings on this side of the boundary: Jurnal's
are integers, QuickBooks' numeric strings, Zoho's long numbers, Aden's chart codes; each sink converts.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal, Protocol

import pandas as pd

# retryable: nothing reached the system (or a read failed): try again later.
# uncertain: a write may have been applied: look the entry up before writing again.
# needs_reauth: the tenant's grant is gone; the tenant is skipped until someone reconnects it.
# rejected / locked / not_found / duplicate: the system answered no (duplicate = our id is already there).
# account: a line's account is missing or inactive in the tenant's chart (the chart is refreshed, retried once).
# deferred: the tenant's quota is spent (Zoho's daily cap): skipped until the next run, never retried in a loop.
ErrorKind = Literal["retryable", "uncertain", "needs_reauth", "rejected", "duplicate", "locked", "not_found",
                    "account", "deferred"]

# What the remote system says about an entry. Only "posted" is final; the others are tracked by the engine.
RemoteState = Literal["posted", "awaiting_approval", "rejected", "processing"]

CUSTOM_ID_PREFIX = "r2a-pl-"
MEMO_PREFIX = "R2a Monthly P&L - "


def custom_id_for(tenant_id: str, period: dt.date) -> str:
    """The idempotency key of a tenant-month (one definition: the journal builder and reconciliation use it)."""
    return f"{CUSTOM_ID_PREFIX}{tenant_id}-{period:%Y%m}"


def memo_for(period: dt.date) -> str:
    return f"{MEMO_PREFIX}{period:%Y-%m}"


@dataclass(frozen=True)
class CanonicalLine:
    line_no: int
    account_id: str  # the account's id in the tenant's system (from the stored chart)
    account_number: str
    debit_minor: int
    credit_minor: int
    description: str


@dataclass(frozen=True)
class CanonicalEntry:
    """What we post. Line amounts are int64 minor units of `currency` (its ISO 4217 minor unit: money.minor_unit;
    money.from_minor(minor, currency) gives the Decimal a system wants). When the tenant's R2a currency differs from
    the books' currency, `source_currency` is the R2a one and `exchange_rate` the rate used (1 source_currency =
    exchange_rate currency, on transaction_date; ledger/rates.py); both None when no conversion happened."""

    tenant_id: str
    period: dt.date
    custom_id: str
    transaction_date: dt.date
    memo: str
    currency: str
    content_hash: str
    lines: tuple[CanonicalLine, ...]
    source_currency: str | None = None
    exchange_rate: Decimal | None = None

    @property
    def total_debit_minor(self) -> int:
        return sum(ln.debit_minor for ln in self.lines)

    def signature(self) -> Counter:
        return Counter((str(ln.account_id), ln.debit_minor, ln.credit_minor) for ln in self.lines)


@dataclass(frozen=True)
class RemoteEntry:
    """An entry as the system holds it, amounts parsed exactly from the system's numeric fields, in minor units of
    its currency (`currency` when the system says which; None when it does not)."""

    remote_id: str
    custom_id: str | None  # our id as the system stores it (custom_id, reference_number, entry_id, ...)
    transaction_date: dt.date
    memo: str | None
    total_debit_minor: int
    total_credit_minor: int
    lines: tuple[tuple[str, str, int, int], ...]  # (remote line id, account id, debit minor, credit minor)
    locked: bool = False
    state: RemoteState = "posted"
    state_detail: str = ""  # e.g. "awaiting approval since 2026-05-03" or the approver's reason
    # What the sink needs next time (QuickBooks' SyncToken, Rootfi's job id, Aden's revision); kept in the posting
    # state and handed back to find/update/delete as `hint`.
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    currency: str | None = None  # ISO 4217 code of the remote entry, when the system reports one

    def signature(self) -> Counter:
        return Counter((str(acc), d, c) for _, acc, d, c in self.lines)

    @property
    def rate(self) -> Decimal | None:
        """The exchange rate the system reports on the entry (QuickBooks ExchangeRate, Zoho/Aden exchange_rate,
        Jurnal/Rootfi currency_rate), as the sinks keep it in `extra`; None when it reports none."""
        for key in ("ExchangeRate", "exchange_rate", "currency_rate"):
            if self.extra.get(key) not in (None, ""):
                try:
                    return Decimal(str(self.extra[key]))
                except InvalidOperation:
                    return None
        return None

    def same_rate(self, entry: CanonicalEntry) -> bool:
        """The rate agrees where the system reports one: the entry's `exchange_rate` for a foreign-currency entry,
        1 for one in the company's own currency."""
        theirs = self.rate
        return theirs is None or theirs == (entry.exchange_rate if entry.exchange_rate is not None else Decimal(1))

    def matches(self, entry: CanonicalEntry) -> bool:
        """Same lines (account, debit, credit), totals, date and (when the system reports them) currency and
        exchange rate: what the system holds is what we meant to post (a new rate alone is a change)."""
        return ((self.currency is None or self.currency == entry.currency) and self.same_rate(entry)
                and len(self.lines) == len(entry.lines) and self.total_debit_minor == entry.total_debit_minor
                and self.total_credit_minor == entry.total_debit_minor and self.signature() == entry.signature()
                and self.transaction_date == entry.transaction_date)

    @property
    def line_ids(self) -> list[str]:
        return [str(line_id) for line_id, *_ in self.lines]


@dataclass
class SinkError(Exception):
    kind: ErrorKind
    message: str
    status: int | None = None
    detail: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


@dataclass
class CreateResult:
    """One entry's outcome in a create call: a remote entry, an error, or (asynchronous systems) a `pending`
    hint to resolve later (e.g. {"job_id": ...}): the engine keeps the entry pending and looks it up next time."""

    custom_id: str
    remote: RemoteEntry | None = None
    error: SinkError | None = None
    pending: dict | None = None


class LedgerSink(Protocol):
    name: str  # the system's name in the registry
    max_batch: int  # entries per create call (1 where the system has no batch endpoint)

    def find(self, tenant_id: str, custom_id: str, hint: dict | None = None) -> RemoteEntry | None:
        """The live entry with our id, or None. `hint` is what the last RemoteEntry.extra / pending said."""

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        """Every live remote entry dated in [start, end) (ours and others')."""

    def create(self, tenant_id: str, entries: list[CanonicalEntry]) -> list[CreateResult]:
        """One call for up to max_batch entries; a result per entry. Raises SinkError for the whole call."""

    def update(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        """Make the remote entry equal `entry` (in place, or by reversal where posted entries are immutable).
        `remote` may be a stub rebuilt from the posting state (ids and `extra` only, no lines)."""

    def delete(self, tenant_id: str, remote: RemoteEntry) -> None:
        """Remove the entry (or reverse it where the system cannot delete); `remote` may be a stub."""


def entries_from_frames(entries: pd.DataFrame, lines: pd.DataFrame) -> list[CanonicalEntry]:
    """Canonical entries from ledger.journal_entries / journal_lines frames (amounts as *_minor int64 of the entry's
    currency; optional entry columns source_currency and exchange_rate (Decimal) carry a conversion)."""
    by_entry: dict[str, list[CanonicalLine]] = {}
    for row in lines.sort_values(["custom_id", "line_no"]).itertuples(index=False):
        by_entry.setdefault(row.custom_id, []).append(CanonicalLine(
            int(row.line_no), str(row.account_id), str(row.account_number), int(row.debit_minor),
            int(row.credit_minor), str(row.description)))
    return [
        CanonicalEntry(row.tenant_id, pd.Timestamp(row.period).date(), row.custom_id,
                       pd.Timestamp(row.transaction_date).date(), row.memo, row.currency, row.content_hash,
                       tuple(by_entry.get(row.custom_id, ())), _optional(row, "source_currency"),
                       _optional(row, "exchange_rate"))
        for row in entries.itertuples(index=False)
    ]


def _optional(row: tuple, name: str) -> object:
    value = getattr(row, name, None)
    return None if value is None or (isinstance(value, float) and value != value) else value
