"""QuickBooks Online as a LedgerSink: canonical entries <-> JournalEntry, exactly once through `requestid`.

- Where our id lives: DocNumber is at most 21 characters and not unique, so it is no dedupe key. The full custom_id
  goes first in PrivateNote (`"<custom_id> | <memo>"`); DocNumber holds its last 21 characters (the tenant-month
  part, so a person can search it in QuickBooks' UI). `find` queries by DocNumber and keeps the entries whose
  PrivateNote carries the exact custom_id.
- Idempotency: every create/update/delete carries a requestid derived from what the write means (operation,
  custom_id, content hash, entry Id, SyncToken), so a retry or a re-run of the same intended write gets
  QuickBooks' original response back instead of a second entry; a different intended write gets a new requestid.
- Updates are full updates with the current SyncToken; a stale one (5010) is re-read and retried (a person edited
  the entry meanwhile). If the re-read entry already equals ours, nothing is written.
- Amounts go out as positive 2-dp decimals with PostingType and come back parsed exactly (never floats).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from ledger_pipeline.ledger.sink import CUSTOM_ID_PREFIX, CanonicalEntry, CreateResult, RemoteEntry, SinkError
from ledger_pipeline.money import from_minor, to_minor
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.quickbooks.client import QuickBooksClient, QuickBooksError, fault_text

T = TypeVar("T")
MAX_BATCH = 30
DOC_NUMBER_MAX = 21
NOTE_SEP = " | "
STALE_RETRIES = 3
_NAMESPACE = uuid.UUID("4f1b2a0e-6c1d-5b7e-9a63-0b7d1c2e9f41")


def request_id(*parts: object) -> str:
    """A requestid (36 characters: within QuickBooks' 50, and 36 for batch) stable for one intended write."""
    return str(uuid.uuid5(_NAMESPACE, "|".join("" if p is None else str(p) for p in parts)))


def doc_number(custom_id: str) -> str:
    return custom_id[-DOC_NUMBER_MAX:]


def _minor(value: object) -> int:
    return to_minor(value if isinstance(value, Decimal | int) else str(value))


def split_note(note: str | None) -> tuple[str | None, str | None]:
    """(custom_id, memo) from a PrivateNote; a note without our prefix is all memo (an entry keyed by hand)."""
    if not note:
        return None, None
    head, sep, tail = note.partition(NOTE_SEP)
    if head.startswith(CUSTOM_ID_PREFIX):
        return head, tail if sep else None
    return None, note


def parse_remote(je: dict) -> RemoteEntry:
    """A JournalEntry -> RemoteEntry: positive Amount + PostingType -> debit/credit minor units, exactly."""
    lines = []
    for ln in je.get("Line") or []:
        detail = ln.get("JournalEntryLineDetail") or {}
        amount = _minor(ln.get("Amount") or 0)
        debit = detail.get("PostingType") == "Debit"
        lines.append((str(ln.get("Id", "")), str((detail.get("AccountRef") or {}).get("value")),
                      amount if debit else 0, 0 if debit else amount))
    custom_id, memo = split_note(je.get("PrivateNote"))
    return RemoteEntry(
        remote_id=str(je["Id"]), custom_id=custom_id, transaction_date=dt.date.fromisoformat(je["TxnDate"]),
        memo=memo, total_debit_minor=sum(d for _, _, d, _ in lines), total_credit_minor=sum(c for *_, c in lines),
        lines=tuple(lines), extra={"Id": str(je["Id"]), "SyncToken": str(je.get("SyncToken", "0"))},
    )


def entry_body(entry: CanonicalEntry) -> dict:
    lines = []
    for ln in entry.lines:
        debit = ln.debit_minor > 0 or ln.credit_minor == 0
        lines.append({
            "Description": ln.description[:4000],
            "Amount": from_minor(ln.debit_minor if debit else ln.credit_minor),
            "DetailType": "JournalEntryLineDetail",
            "JournalEntryLineDetail": {"PostingType": "Debit" if debit else "Credit",
                                       "AccountRef": {"value": str(ln.account_id)}},
        })
    return {"TxnDate": entry.transaction_date.isoformat(), "DocNumber": doc_number(entry.custom_id),
            "PrivateNote": f"{entry.custom_id}{NOTE_SEP}{entry.memo}", "Adjustment": False, "Line": lines}


def classify(err: QuickBooksError | NeedsReauth) -> SinkError:
    if isinstance(err, NeedsReauth):
        return SinkError("needs_reauth", str(err))
    if err.kind != "rejected":
        return SinkError(err.kind, err.message, err.status)
    return classify_fault(err.errors, err.status, fault_text(err.body))


def classify_fault(errors: list[dict], status: int | None, text: str | None = None) -> SinkError:
    """QuickBooks' codes differ between Intuit's pages, so the period lock is matched on the message text."""
    text = text or fault_text({"Fault": {"Error": errors}})
    codes = {str(e.get("code", "")) for e in errors}
    low = text.lower()
    if "account period closed" in low:
        return SinkError("locked", f"QuickBooks refused: the books are closed for this date ({text}). Ask the "
                                   "tenant's accountant to move the closing date in QuickBooks (Account and "
                                   "settings > Advanced > Close the books) or to book the change in an open "
                                   "period, then re-run this month. Nothing was changed in QuickBooks.", status)
    if "6140" in codes or "duplicate document number" in low:
        return SinkError("duplicate", text, status)
    if codes & {"610", "2500"}:
        return SinkError("account", f"QuickBooks refused an account ({text}): it is missing or inactive in the "
                                    "tenant's chart", status, {"codes": sorted(codes)})
    if "5010" in codes:
        return SinkError("retryable", f"the entry kept changing in QuickBooks meanwhile ({text})", status)
    if status == 404:
        return SinkError("not_found", text, status)
    return SinkError("rejected", f"QuickBooks refused the entry ({status}): {text}", status)


class QuickBooksSink:
    name = "quickbooks"
    max_batch = MAX_BATCH

    def __init__(self, client: QuickBooksClient):
        self.client = client
        # (tenant, entry Id) -> the last SyncToken QuickBooks showed this process: an update after our own write
        # needs no read first; if a person edited the entry since, QuickBooks says 5010 and we re-read.
        self._tokens: dict[tuple[str, str], str] = {}
        # (tenant, custom_id) -> the Id of our entry found deleted in QuickBooks: a re-create must not reuse the
        # first create's requestid, or QuickBooks would replay the response that names the deleted entry.
        self._gone: dict[tuple[str, str], str] = {}

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (QuickBooksError, NeedsReauth) as exc:
            raise classify(exc) from exc

    def _seen(self, tenant_id: str, je: dict) -> RemoteEntry:
        remote = parse_remote(je)
        self._tokens[(tenant_id, remote.remote_id)] = remote.extra["SyncToken"]
        return remote

    # -- reads ------------------------------------------------------------------------------------------------
    def _get(self, tenant_id: str, entry_id: str) -> RemoteEntry | None:
        data = self._call(lambda: self.client.get_entry(tenant_id, entry_id))
        if data is None:
            self._tokens.pop((tenant_id, str(entry_id)), None)
            return None
        return self._seen(tenant_id, data)

    def find(self, tenant_id: str, custom_id: str, hint: dict | None = None) -> RemoteEntry | None:
        if hint and hint.get("Id"):
            remote = self._get(tenant_id, str(hint["Id"]))
            if remote is not None and remote.custom_id == custom_id:
                return remote
            if remote is None:
                self._gone[(tenant_id, custom_id)] = str(hint["Id"])
        rows = self._call(lambda: self.client.entries_by_doc_number(tenant_id, doc_number(custom_id)))
        mine = sorted((self._seen(tenant_id, r) for r in rows if split_note(r.get("PrivateNote"))[0] == custom_id),
                      key=lambda r: int(r.remote_id) if r.remote_id.isdigit() else 0)
        return mine[0] if mine else None

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        last = end - dt.timedelta(days=1)
        rows = self._call(lambda: self.client.entries_between(tenant_id, start.isoformat(), last.isoformat()))
        return [self._seen(tenant_id, r) for r in rows]

    # -- writes -----------------------------------------------------------------------------------------------
    def create(self, tenant_id: str, entries: list[CanonicalEntry]) -> list[CreateResult]:
        if len(entries) == 1:
            e = entries[0]
            try:
                data = self._call(lambda: self.client.create_entry(
                    tenant_id, entry_body(e), self._create_key(tenant_id, e)))
            except SinkError as err:
                if err.kind in ("rejected", "duplicate", "locked", "account"):
                    return [CreateResult(e.custom_id, error=err)]
                raise
            return [CreateResult(e.custom_id, remote=self._seen(tenant_id, data))]
        keys = [self._create_key(tenant_id, e) for e in entries]
        items = [{"bId": str(i), "operation": "create", "JournalEntry": entry_body(e)} for i, e in enumerate(entries)]
        responses = self._call(lambda: self.client.batch(tenant_id, items, request_id("batch", *keys)))
        results = []
        for e, resp in zip(entries, responses, strict=True):
            if resp.get("JournalEntry"):
                results.append(CreateResult(e.custom_id, remote=self._seen(tenant_id, resp["JournalEntry"])))
            else:
                errors = (resp.get("Fault") or {}).get("Error") or []
                results.append(CreateResult(e.custom_id, error=classify_fault(errors, 400)))
        return results

    def _create_key(self, tenant_id: str, e: CanonicalEntry) -> str:
        return request_id("create", e.custom_id, e.content_hash, self._gone.get((tenant_id, e.custom_id)))

    def _sync_token(self, tenant_id: str, remote: RemoteEntry) -> tuple[str, RemoteEntry | None]:
        """The SyncToken from the hint or this process's last sight of the entry, else from a read ("", None: the
        entry is gone)."""
        token = (remote.extra or {}).get("SyncToken") or self._tokens.get((tenant_id, str(remote.remote_id)))
        if token is not None:
            return str(token), None
        current = self._get(tenant_id, str(remote.remote_id))
        if current is None:
            return "", None
        return current.extra["SyncToken"], current

    def update(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        entry_id = str(remote.remote_id)
        token, current = self._sync_token(tenant_id, remote)
        if current is None and not token:
            self._gone[(tenant_id, entry.custom_id)] = entry_id
            raise SinkError("not_found", f"JournalEntry {entry_id} is gone from QuickBooks")
        for _ in range(STALE_RETRIES):
            if current is not None and current.matches(entry):
                return current  # already what we mean (an earlier attempt landed): nothing to write
            body = {**entry_body(entry), "Id": entry_id, "SyncToken": token}
            rid = request_id("update", entry.custom_id, entry.content_hash, entry_id, token)
            try:
                return self._seen(tenant_id, self._call(
                    lambda: self.client.update_entry(tenant_id, body, rid)))  # noqa: B023
            except SinkError as err:
                code = err.__cause__.code if isinstance(err.__cause__, QuickBooksError) else ""
                stale = code == "5010"
                if code not in ("5010", "610"):
                    raise
                current = self._get(tenant_id, entry_id)  # someone changed (or deleted) it meanwhile: re-read
                if current is None:
                    self._gone[(tenant_id, entry.custom_id)] = entry_id
                    raise SinkError("not_found", f"JournalEntry {entry_id} was deleted in QuickBooks") from err
                if not stale:
                    raise
                token = current.extra["SyncToken"]
        raise SinkError("retryable", f"JournalEntry {entry_id} kept changing in QuickBooks (stale SyncToken "
                                     f"{STALE_RETRIES} times); the next run tries again")

    def delete(self, tenant_id: str, remote: RemoteEntry | str | int) -> None:
        if not isinstance(remote, RemoteEntry):  # the engine may hand over the bare remote id
            remote = RemoteEntry(str(remote), None, dt.date.min, None, 0, 0, ())
        entry_id = str(remote.remote_id)
        token, current = self._sync_token(tenant_id, remote)
        if current is None and not token:
            return  # already gone
        for _ in range(STALE_RETRIES):
            rid = request_id("delete", entry_id, token)
            try:
                self._call(lambda: self.client.delete_entry(tenant_id, entry_id, token, rid))  # noqa: B023
                self._tokens.pop((tenant_id, entry_id), None)
                return
            except SinkError as err:
                code = err.__cause__.code if isinstance(err.__cause__, QuickBooksError) else ""
                if code not in ("5010", "610"):
                    raise
                current = self._get(tenant_id, entry_id)
                if current is None:
                    return  # deleted meanwhile
                if code != "5010":
                    raise
                token = current.extra["SyncToken"]
        raise SinkError("retryable", f"JournalEntry {entry_id} kept changing in QuickBooks; delete retried next run")
