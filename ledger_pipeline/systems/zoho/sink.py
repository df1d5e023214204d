"""Zoho Books as a LedgerSink: canonical entries <-> Zoho journals, Zoho's errors classified.

Exactly once without an idempotency key: our custom_id travels in `reference_number`; a create is only ever
repeated by the engine after `find` (a search on reference_number) came back empty, and the client never resends
a write whose outcome is unknown. Zoho's journal list carries no line items, so `find` and `list_period` read each
journal found (`GET /journals/{id}`) to compare lines exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from ledger_pipeline.ledger.sink import CanonicalEntry, CreateResult, RemoteEntry, SinkError
from ledger_pipeline.money import from_minor, to_minor
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.zoho.client import ZohoClient, ZohoError

T = TypeVar("T")
# a SinkError of these kinds is one entry's answer, not the call's
PER_ENTRY = ("rejected", "duplicate", "locked", "account", "not_found")


def _minor(value: object) -> int:
    return to_minor(value if isinstance(value, Decimal | int) else str(value))


def parse_journal(data: dict) -> RemoteEntry:
    """A Zoho journal (detail shape) -> RemoteEntry: `amount` + `debit_or_credit` per line, exact decimals."""
    lines = []
    for ln in data.get("line_items", []):
        amount = _minor(ln.get("amount") or 0)
        debit = ln.get("debit_or_credit") == "debit"
        lines.append((str(ln["line_id"]), str(ln["account_id"]), amount if debit else 0, 0 if debit else amount))
    status = data.get("status", "published")
    return RemoteEntry(
        remote_id=str(data["journal_id"]), custom_id=data.get("reference_number") or None,
        transaction_date=dt.date.fromisoformat(data["journal_date"]), memo=data.get("notes") or None,
        total_debit_minor=_minor(data["total"]) if data.get("total") is not None else sum(x[2] for x in lines),
        total_credit_minor=sum(x[3] for x in lines), lines=tuple(lines),
        state="posted" if status == "published" else "awaiting_approval",
        state_detail="" if status == "published" else f"Zoho journal status {status!r} (not in the ledger yet)",
    )


def journal_body(entry: CanonicalEntry) -> dict:
    """Zoho's write shape: yyyy-mm-dd, our id in reference_number, positive amounts with debit_or_credit."""
    return {
        "journal_date": entry.transaction_date.isoformat(),
        "reference_number": entry.custom_id,
        "notes": entry.memo,
        "journal_type": "both",
        "status": "published",
        "line_items": [
            {"account_id": str(ln.account_id), "description": ln.description,
             "debit_or_credit": "credit" if ln.credit_minor and not ln.debit_minor else "debit",
             "amount": from_minor(ln.credit_minor if ln.credit_minor and not ln.debit_minor else ln.debit_minor)}
            for ln in entry.lines
        ],
    }


def classify(err: ZohoError | NeedsReauth) -> SinkError:
    if isinstance(err, NeedsReauth):
        return SinkError("needs_reauth", str(err))
    if err.kind in ("retryable", "uncertain"):
        return SinkError(err.kind, err.message, err.status, {"code": err.code})
    if err.kind == "deferred":
        return SinkError("deferred", "Zoho's daily API limit for this organization is spent: deferred to the next "
                                     f"run ({err.zoho_message or err.message})", err.status, {"code": err.code})
    text = err.zoho_message or err.message
    low = text.lower()
    detail = {"code": err.code}
    if "locked" in low and "transaction" in low:
        return SinkError("locked", f"Zoho refused: the period is locked ({text}). Ask the tenant's accountant to "
                                   "unlock it in Zoho Books (Settings > Transaction Locking) or to book the change in "
                                   "an open period, then re-run this month. Nothing was changed in Zoho.",
                         err.status, detail)
    if "account" in low and ("does not exist" in low or "inactive" in low):
        return SinkError("account", f"Zoho refused an account ({text}): it is missing or inactive in the tenant's "
                                    "chart", err.status, detail)
    if err.status == 404:
        return SinkError("not_found", f"Zoho: {text} (not found)", err.status, detail)
    return SinkError("rejected", f"Zoho refused the entry ({err.status}, code {err.code}): {text}", err.status,
                     detail)


class ZohoSink:
    name = "zoho"
    max_batch = 1  # Zoho has no batch endpoint for journals

    def __init__(self, client: ZohoClient):
        self.client = client

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (ZohoError, NeedsReauth) as exc:
            raise classify(exc) from exc

    def find(self, tenant_id: str, custom_id: str, hint: dict | None = None) -> RemoteEntry | None:
        """The live journal whose reference_number is our id (the oldest when a person made copies)."""
        found = self._call(lambda: self.client.list_journals(tenant_id, {"reference_number": custom_id}))
        ids = sorted((j["journal_id"] for j in found if j.get("reference_number") == custom_id), key=_id_key)
        for journal_id in ids:
            data = self._call(lambda jid=journal_id: self.client.get_journal(tenant_id, jid))
            if data is not None:
                return parse_journal(data)
        return None

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        last = end - dt.timedelta(days=1)
        found = self._call(lambda: self.client.list_journals(
            tenant_id, {"date_start": start.isoformat(), "date_end": last.isoformat()}))
        out = []
        for summary in found:
            data = self._call(lambda s=summary: self.client.get_journal(tenant_id, s["journal_id"]))
            if data is not None:  # deleted meanwhile
                out.append(parse_journal(data))
        return out

    def create(self, tenant_id: str, entries: list[CanonicalEntry]) -> list[CreateResult]:
        results = []
        for entry in entries:
            try:
                data = self._call(lambda e=entry: self.client.create_journal(tenant_id, journal_body(e)))
            except SinkError as err:
                if err.kind in PER_ENTRY:
                    results.append(CreateResult(entry.custom_id, error=err))
                    continue
                raise
            results.append(CreateResult(entry.custom_id, remote=parse_journal(data)))
        return results

    def update(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        """PUT replaces every line item (lines sent without line_id are new lines; the old ones go)."""
        data = self._call(lambda: self.client.update_journal(tenant_id, str(remote.remote_id), journal_body(entry)))
        return parse_journal(data)

    def delete(self, tenant_id: str, remote: RemoteEntry | str | int) -> None:
        journal_id = str(remote.remote_id if isinstance(remote, RemoteEntry) else remote)
        self._call(lambda: self.client.delete_journal(tenant_id, journal_id))


def _id_key(journal_id: str) -> tuple[int, str]:
    return (len(journal_id), journal_id)
