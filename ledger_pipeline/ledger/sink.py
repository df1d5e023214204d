"""The boundary between the pipeline and an accounting platform: a canonical entry goes in, a remote entry comes out.

Jurnal is the first implementation (ledger_pipeline/systems/jurnal/sink.py). Zoho Books, QuickBooks Online or Aden
implement the same protocol (their ids, dates, sides and idempotency keys differ; see
../shared/reference/accounting_apis.md), and the posting engine does not change.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Protocol

import pandas as pd

ErrorKind = Literal["retryable", "uncertain", "needs_reauth", "rejected", "duplicate", "locked", "not_found"]


@dataclass(frozen=True)
class CanonicalLine:
    line_no: int
    account_id: int
    account_number: str
    debit_minor: int
    credit_minor: int
    description: str


@dataclass(frozen=True)
class CanonicalEntry:
    tenant_id: str
    period: dt.date
    custom_id: str
    transaction_date: dt.date
    memo: str
    currency: str
    content_hash: str
    lines: tuple[CanonicalLine, ...]

    @property
    def total_debit_minor(self) -> int:
        return sum(ln.debit_minor for ln in self.lines)

    def signature(self) -> Counter:
        return Counter((ln.account_id, ln.debit_minor, ln.credit_minor) for ln in self.lines)


@dataclass(frozen=True)
class RemoteEntry:
    remote_id: int
    custom_id: str | None
    transaction_date: dt.date
    memo: str | None
    total_debit_minor: int
    total_credit_minor: int
    lines: tuple[tuple[int, int, int, int], ...]  # (remote line id, account id, debit minor, credit minor)
    locked: bool = False

    def signature(self) -> Counter:
        return Counter((acc, d, c) for _, acc, d, c in self.lines)

    def matches(self, entry: CanonicalEntry) -> bool:
        """Same lines (account, debit, credit) and totals: what Jurnal holds is what we meant to post."""
        return (len(self.lines) == len(entry.lines) and self.total_debit_minor == entry.total_debit_minor
                and self.total_credit_minor == entry.total_debit_minor and self.signature() == entry.signature()
                and self.transaction_date == entry.transaction_date)

    @property
    def line_ids(self) -> list[int]:
        return [line_id for line_id, *_ in self.lines]


@dataclass
class CreateResult:
    custom_id: str
    remote: RemoteEntry | None = None
    error: SinkError | None = None


@dataclass
class SinkError(Exception):
    kind: ErrorKind
    message: str
    status: int | None = None
    detail: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


class LedgerSink(Protocol):
    name: str
    max_batch: int  # entries per create call (1 where the platform has no batch endpoint)

    def find(self, tenant_id: str, custom_id: str) -> RemoteEntry | None: ...

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        """Every remote entry dated in [start, end)."""

    def create(self, tenant_id: str, entries: list[CanonicalEntry]) -> list[CreateResult]:
        """One call for up to max_batch entries; a result per entry. Raises SinkError for the whole call."""

    def update(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry: ...

    def delete(self, tenant_id: str, remote_id: int) -> None: ...


def entries_from_frames(entries: pd.DataFrame, lines: pd.DataFrame) -> list[CanonicalEntry]:
    """Canonical entries from ledger.journal_entries / journal_lines frames (amounts as *_minor int64)."""
    by_entry: dict[str, list[CanonicalLine]] = {}
    for row in lines.sort_values(["custom_id", "line_no"]).itertuples(index=False):
        by_entry.setdefault(row.custom_id, []).append(CanonicalLine(
            int(row.line_no), int(row.account_id), str(row.account_number), int(row.debit_minor),
            int(row.credit_minor), str(row.description)))
    return [
        CanonicalEntry(row.tenant_id, pd.Timestamp(row.period).date(), row.custom_id,
                       pd.Timestamp(row.transaction_date).date(), row.memo, row.currency, row.content_hash,
                       tuple(by_entry.get(row.custom_id, ())))
        for row in entries.itertuples(index=False)
    ]
