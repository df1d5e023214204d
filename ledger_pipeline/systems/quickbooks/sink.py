"""QuickBooks Online as a LedgerSink: canonical entries <-> JournalEntry, exactly once through `requestid`.

- Our key: `DocNumber` (QuickBooks allows at most 21 characters; it is not unique unless the company turns on the
  duplicate-number warning, which then answers 6210 "Duplicate Document Number Error"). `doc_number(custom_id)` is
  the custom_id itself when it is at most 21 characters of [A-Za-z0-9._-]; otherwise a readable part (the tenant id
  reduced to ASCII letters and digits, cut to fit, and the period YYYYMM), "~" and 7 base32 characters of the
  custom_id's SHA-256: unique (35 bits of hash on top of the readable part) and stable (a pure function of the
  custom_id). The full custom_id also goes first in PrivateNote (`"<custom_id> | <memo>"`), so the entry's own id
  can be read back whatever its length.
- Never someone else's entry: a found entry is ours only if its DocNumber equals ours (or, for entries posted before
  this scheme, DocNumber is the custom_id's last 21 characters and PrivateNote names it), and a PrivateNote naming
  another custom_id disqualifies it. Search results that are not ours are skipped; an entry we created that no longer
  carries our key (a person changed its DocNumber) raises `NotOurEntry`, and nothing is written.
- Idempotency: every create/update/delete carries a requestid derived from what the write means (operation,
  custom_id, content hash, entry Id, SyncToken), so a retry or a re-run of the same intended write gets
  QuickBooks' original response back instead of a second entry; a different intended write gets a new requestid.
  A replayed answer is adopted only if its DocNumber is ours.
- Updates are full updates with the current SyncToken (optimistic concurrency: an unchanged SyncToken proves the
  entry is as we last saw it, ours); a stale one (5010) is re-read, checked to be still ours, and retried once. If
  the re-read entry already equals ours, nothing is written.
- Amounts go out as positive 2-dp decimals with PostingType and come back parsed exactly (never floats).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
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
DOC_NUMBER_MAX = 21  # JournalEntry.DocNumber, "ValidRange: QBO: max=21" (seed 002, Intuit's JournalEntry reference)
HASH_CHARS = 7
NOTE_SEP = " | "
STALE_RETRIES = 2  # the first try and one retry after a re-read (5010: someone else saved the entry first)
_NAMESPACE = uuid.UUID("4f1b2a0e-6c1d-5b7e-9a63-0b7d1c2e9f41")
_SAFE_KEY = re.compile(r"[A-Za-z0-9._-]+")
_OUR_ID = re.compile(re.escape(CUSTOM_ID_PREFIX) + r"(?P<tenant>.*)-(?P<period>\d{6})", re.S)


def request_id(*parts: object) -> str:
    """A requestid (36 characters: within QuickBooks' 50, and 36 for batch) stable for one intended write."""
    return str(uuid.uuid5(_NAMESPACE, "|".join("" if p is None else str(p) for p in parts)))


def key_digest(text: str, chars: int) -> str:
    """`chars` base32 characters (A-Z, 2-7) of the SHA-256 of `text` (UTF-8)."""
    return base64.b32encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")[:chars]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def doc_number(custom_id: str) -> str:
    """Our DocNumber for `custom_id` (at most 21 characters, ASCII letters, digits, `.`, `_`, `-` and `~`).

    'r2a-pl-t00042-202501' stays as it is; 'r2a-pl-Ünïcode/ tenant #7-202501' becomes 'n-code-202501~SH3SAHZ'
    (the tenant's ASCII letters and digits, dash-joined and cut to fit, the period, '~' and a 7-character hash of
    the whole id)."""
    if len(custom_id) <= DOC_NUMBER_MAX and _SAFE_KEY.fullmatch(custom_id):
        return custom_id
    tail = "~" + key_digest(custom_id, HASH_CHARS)
    ours = _OUR_ID.fullmatch(custom_id)
    if ours:
        tail = f"-{ours['period']}{tail}"
    head = _slug(ours["tenant"] if ours else custom_id)[: DOC_NUMBER_MAX - len(tail)].rstrip("-")
    return (head or "t") + tail


def legacy_doc_number(custom_id: str) -> str:
    """The DocNumber of entries posted before `doc_number` (the custom_id's last 21 characters)."""
    return custom_id[-DOC_NUMBER_MAX:]


def period_of(custom_id: str | None) -> str:
    """'2025-01' from 'r2a-pl-<tenant>-202501' (for messages); '?' when the id has another form."""
    ours = _OUR_ID.fullmatch(custom_id or "")
    return f"{ours['period'][:4]}-{ours['period'][4:]}" if ours else "?"


def _minor(value: object, currency: str | None) -> int:
    return to_minor(value if isinstance(value, Decimal | int) else str(value), currency)


def split_note(note: str | None) -> tuple[str | None, str | None]:
    """(custom_id, memo) from a PrivateNote; a note without our prefix is all memo (an entry keyed by hand)."""
    if not note:
        return None, None
    head, sep, tail = note.partition(NOTE_SEP)
    if head.startswith(CUSTOM_ID_PREFIX):
        return head, tail if sep else None
    return None, note


def custom_id_of(je: dict) -> str | None:
    """Our custom_id on a JournalEntry, if it carries one consistently: PrivateNote names it and DocNumber is its key
    (or its legacy key), or DocNumber is a custom_id kept verbatim and PrivateNote names no other."""
    doc = str(je.get("DocNumber") or "")
    note_id, _ = split_note(je.get("PrivateNote"))
    if note_id is not None:
        return note_id if doc in (doc_number(note_id), legacy_doc_number(note_id)) else None
    return doc if doc.startswith(CUSTOM_ID_PREFIX) and doc_number(doc) == doc else None


def is_ours(je: dict, custom_id: str) -> bool:
    """Does this JournalEntry carry our key for `custom_id`? DocNumber equals doc_number(custom_id) and PrivateNote
    names no other custom_id, or (legacy) DocNumber is its last 21 characters and PrivateNote names it."""
    doc = str(je.get("DocNumber") or "")
    note_id, _ = split_note(je.get("PrivateNote"))
    if note_id is not None and note_id != custom_id:
        return False
    return doc == doc_number(custom_id) or (note_id == custom_id and doc == legacy_doc_number(custom_id))


class NotOurEntry(SinkError):
    """A JournalEntry reached under our id (its Id from our own write, or a replayed answer) does not carry our key:
    it is never adopted, updated or deleted. kind "rejected", detail {"error": "not_our_entry", ...}."""

    def __init__(self, tenant_id: str, custom_id: str | None, je: dict, action: str):
        key = doc_number(custom_id) if custom_id else "?"
        message = (
            f"tenant {tenant_id}, period {period_of(custom_id)}: QuickBooks JournalEntry {je.get('Id')} no longer "
            f"carries our key (DocNumber {je.get('DocNumber')!r}, PrivateNote {str(je.get('PrivateNote'))[:60]!r}; "
            f"ours is DocNumber {key!r} with {custom_id} first in PrivateNote), so it was not {action}. Someone "
            "changed or reused it in QuickBooks. Fix: if it is our entry for this month, set its DocNumber back to "
            f"{key!r}; if it is not, delete it in QuickBooks or clear the posting state's remote id; then re-run "
            "the month.")
        super().__init__("rejected", message, None, {"error": "not_our_entry", "remote_id": str(je.get("Id")),
                                                     "doc_number": je.get("DocNumber"), "expected": key})


def currency_of(je: dict, default: str | None = None) -> str | None:
    """The JournalEntry's currency: CurrencyRef.value (QuickBooks sets it on every entry, the home currency when
    multicurrency is off; developer.intuit.com accounting API, JournalEntry.CurrencyRef), else `default`."""
    ref = je.get("CurrencyRef")
    value = ref.get("value") if isinstance(ref, dict) else None
    return str(value).upper() if value else default


def parse_remote(je: dict, currency: str | None = None) -> RemoteEntry:
    """A JournalEntry -> RemoteEntry: positive Amount + PostingType -> debit/credit minor units of its currency
    (CurrencyRef, else `currency`), exactly; custom_id from `custom_id_of` (None when the entry does not carry one
    of our keys consistently); ExchangeRate (when reported) in `extra`."""
    cur = currency_of(je, currency)
    lines = []
    for ln in je.get("Line") or []:
        detail = ln.get("JournalEntryLineDetail") or {}
        amount = _minor(ln.get("Amount") or 0, cur)
        debit = detail.get("PostingType") == "Debit"
        lines.append((str(ln.get("Id", "")), str((detail.get("AccountRef") or {}).get("value")),
                      amount if debit else 0, 0 if debit else amount))
    _, memo = split_note(je.get("PrivateNote"))
    return RemoteEntry(
        remote_id=str(je["Id"]), custom_id=custom_id_of(je), transaction_date=dt.date.fromisoformat(je["TxnDate"]),
        memo=memo, total_debit_minor=sum(d for _, _, d, _ in lines), total_credit_minor=sum(c for *_, c in lines),
        # CurrencyRef as QuickBooks answers it (the home currency when multicurrency is off)
        lines=tuple(lines), currency=cur,
        extra={"Id": str(je["Id"]), "SyncToken": str(je.get("SyncToken", "0")),
               **({"ExchangeRate": str(je["ExchangeRate"])} if je.get("ExchangeRate") is not None else {})},
    )


def entry_body(entry: CanonicalEntry) -> dict:
    """A JournalEntry create body: amounts in the entry's currency's decimals, CurrencyRef always (the home currency
    is accepted without multicurrency), ExchangeRate when the entry is foreign to the company (1 entry currency =
    ExchangeRate home currency; developer.intuit.com accounting API, JournalEntry.ExchangeRate)."""
    lines = []
    for ln in entry.lines:
        debit = ln.debit_minor > 0 or ln.credit_minor == 0
        lines.append({
            "Description": ln.description[:4000],
            "Amount": from_minor(ln.debit_minor if debit else ln.credit_minor, entry.currency),
            "DetailType": "JournalEntryLineDetail",
            "JournalEntryLineDetail": {"PostingType": "Debit" if debit else "Credit",
                                       "AccountRef": {"value": str(ln.account_id)}},
        })
    body = {"TxnDate": entry.transaction_date.isoformat(), "DocNumber": doc_number(entry.custom_id),
            "PrivateNote": f"{entry.custom_id}{NOTE_SEP}{entry.memo}", "Adjustment": False, "Line": lines,
            "CurrencyRef": {"value": entry.currency}}
    if entry.exchange_rate is not None:
        body["ExchangeRate"] = entry.exchange_rate
    return body


def classify(err: QuickBooksError | NeedsReauth) -> SinkError:
    if isinstance(err, NeedsReauth):
        return SinkError("needs_reauth", str(err))
    if err.kind == "needs_reauth":
        return SinkError("needs_reauth", str(err), err.status)
    if err.kind == "not_found":  # a 404, or 610 on a look-up
        return SinkError("not_found", err.text or err.message, err.status)
    if err.kind != "rejected":
        return SinkError(err.kind, err.message, err.status)
    return classify_fault(err.errors, err.status, fault_text(err.body))


def classify_fault(errors: list[dict], status: int | None, text: str | None = None) -> SinkError:
    """QuickBooks' codes differ between Intuit's pages (6210 is both "Account Period Closed" and "Duplicate Document
    Number Error" in Intuit's "Top QuickBooks Online API errors", 2017-06-08; "Handling common errors" gives 6140 to
    the duplicate), so the closed period and the duplicate are matched on the message text."""
    text = text or fault_text({"Fault": {"Error": errors}})
    codes = {str(e.get("code", "")) for e in errors}
    low = text.lower()
    if "account period closed" in low or "account period has closed" in low:
        return SinkError("locked", f"QuickBooks refused: the books are closed for this date ({text}). Ask the "
                                   "tenant's accountant to move the closing date in QuickBooks (Account and "
                                   "settings > Advanced > Close the books) or to book the change in an open "
                                   "period, then re-run this month. Nothing was changed in QuickBooks.", status)
    if "duplicate document number" in low or "duplicate doc num" in low or "6140" in codes:
        return SinkError("duplicate", text, status)
    if status == 403 or codes & {"120", "3100"}:
        # 3100 AuthorizationFailed (403, oauth-jsclient#2); 120 Authorization Failure: the connecting user lost
        # admin rights ("consider the connection disconnected", Intuit's handling-common-errors page)
        return SinkError("needs_reauth", f"QuickBooks refused this company's grant ({text}): reconnect it with "
                                         "`ledger-pipeline connect --tenant <tenant> --system quickbooks` as an "
                                         "admin of the company", status)
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
    def _read(self, tenant_id: str, entry_id: str) -> dict | None:
        data = self._call(lambda: self.client.get_entry(tenant_id, entry_id))
        if data is None:
            self._tokens.pop((tenant_id, str(entry_id)), None)
        return data

    def _read_ours(self, tenant_id: str, entry_id: str, custom_id: str | None, action: str) -> RemoteEntry | None:
        """The entry as QuickBooks holds it now (None: gone), only if it still carries our key."""
        data = self._read(tenant_id, entry_id)
        if data is None:
            return None
        ours = is_ours(data, custom_id) if custom_id else custom_id_of(data) is not None
        if not ours:
            raise NotOurEntry(tenant_id, custom_id, data, action)
        return self._seen(tenant_id, data)

    def find(self, tenant_id: str, custom_id: str, hint: dict | None = None) -> RemoteEntry | None:
        """Our live entry for `custom_id`, or None. With a hint (the Id of our own earlier write) that entry is read
        first: gone -> search; no longer carrying our key -> NotOurEntry. The search is by DocNumber (then by the
        legacy DocNumber); whatever the query returns, only entries that carry our key count (the oldest wins)."""
        if hint and hint.get("Id"):
            remote = self._read_ours(tenant_id, str(hint["Id"]), custom_id, "adopted, updated or deleted")
            if remote is not None:
                return remote
            self._gone[(tenant_id, custom_id)] = str(hint["Id"])
        key, legacy = doc_number(custom_id), legacy_doc_number(custom_id)
        rows = self._call(lambda: self.client.entries_by_doc_number(tenant_id, key))
        if legacy != key and not any(is_ours(r, custom_id) for r in rows):
            rows += self._call(lambda: self.client.entries_by_doc_number(tenant_id, legacy))
        mine = sorted({str(r["Id"]): r for r in rows if is_ours(r, custom_id)}.values(),
                      key=lambda r: (len(str(r["Id"])), str(r["Id"])))
        return self._seen(tenant_id, mine[0]) if mine else None

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        last = end - dt.timedelta(days=1)
        rows = self._call(lambda: self.client.entries_between(tenant_id, start.isoformat(), last.isoformat()))
        return [self._seen(tenant_id, r) for r in rows]

    # -- writes -----------------------------------------------------------------------------------------------
    def _answer(self, tenant_id: str, e: CanonicalEntry, je: dict) -> CreateResult:
        """A create's answer (possibly a requestid replay) is adopted only if it carries our key."""
        if not is_ours(je, e.custom_id):
            return CreateResult(e.custom_id, error=NotOurEntry(tenant_id, e.custom_id, je, "adopted"))
        return CreateResult(e.custom_id, remote=self._seen(tenant_id, je))

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
            return [self._answer(tenant_id, e, data)]
        keys = [self._create_key(tenant_id, e) for e in entries]
        items = [{"bId": str(i), "operation": "create", "JournalEntry": entry_body(e)} for i, e in enumerate(entries)]
        responses = self._call(lambda: self.client.batch(tenant_id, items, request_id("batch", *keys)))
        results = []
        for e, resp in zip(entries, responses, strict=True):
            if resp.get("JournalEntry"):
                results.append(self._answer(tenant_id, e, resp["JournalEntry"]))
            else:
                errors = (resp.get("Fault") or {}).get("Error") or []
                results.append(CreateResult(e.custom_id, error=classify_fault(errors, 400)))
        return results

    def _create_key(self, tenant_id: str, e: CanonicalEntry) -> str:
        return request_id("create", e.custom_id, e.content_hash, self._gone.get((tenant_id, e.custom_id)))

    def _sync_token(self, tenant_id: str, remote: RemoteEntry, custom_id: str | None,
                    action: str) -> tuple[str, RemoteEntry | None]:
        """The SyncToken from the hint or this process's last sight of the entry (our own write or a read that
        checked our key: an unchanged SyncToken means the entry is still that), else from a read that checks our
        key ("", None: the entry is gone)."""
        token = (remote.extra or {}).get("SyncToken") or self._tokens.get((tenant_id, str(remote.remote_id)))
        if token is not None:
            return str(token), None
        current = self._read_ours(tenant_id, str(remote.remote_id), custom_id, action)
        if current is None:
            return "", None
        return current.extra["SyncToken"], current

    def update(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        """Full update of our entry with the current SyncToken; 5010 (someone saved it first) -> re-read, check it
        still carries our key (else NotOurEntry, nothing written), retry once against what is there."""
        entry_id = str(remote.remote_id)
        token, current = self._sync_token(tenant_id, remote, entry.custom_id, "updated")
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
                if code not in ("5010", "610"):
                    raise
                current = self._read_ours(tenant_id, entry_id, entry.custom_id, "updated")
                if current is None:
                    self._gone[(tenant_id, entry.custom_id)] = entry_id
                    raise SinkError("not_found", f"JournalEntry {entry_id} was deleted in QuickBooks") from err
                if code != "5010":
                    raise
                token = current.extra["SyncToken"]
        raise SinkError("retryable", f"tenant {tenant_id}, period {period_of(entry.custom_id)}: JournalEntry "
                                     f"{entry_id} kept changing in QuickBooks (stale SyncToken after a re-read); "
                                     "the next run tries again")

    def delete(self, tenant_id: str, remote: RemoteEntry | str | int) -> None:
        """Delete our entry (`?operation=delete` with Id and SyncToken); a bare id is read first and deleted only if
        it carries one of our keys. 5010 -> re-read, check our key, retry once."""
        if not isinstance(remote, RemoteEntry):
            remote = RemoteEntry(str(remote), None, dt.date.min, None, 0, 0, ())
        entry_id, custom_id = str(remote.remote_id), remote.custom_id
        token, current = self._sync_token(tenant_id, remote, custom_id, "deleted")
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
                current = self._read_ours(tenant_id, entry_id, custom_id, "deleted")
                if current is None:
                    return  # deleted meanwhile
                if code != "5010":
                    raise
                token = current.extra["SyncToken"]
        raise SinkError("retryable", f"tenant {tenant_id}, period {period_of(custom_id)}: JournalEntry {entry_id} "
                                     "kept changing in QuickBooks; the delete is retried on the next run")
