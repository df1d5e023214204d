"""Zoho Books as a LedgerSink: canonical entries <-> Zoho journals, Zoho's errors classified.

Exactly once without an idempotency key: our key travels in `reference_number`; a create is only ever repeated by
the engine after `find` (a search on reference_number over every date) came back empty, and the client never
resends a write whose outcome is unknown. Zoho's journal list carries no line items, so `find` and `list_period`
read each journal found (`GET /journals/{id}`) to compare lines exactly.

- Our key: `reference_number(custom_id)`, the custom_id itself when it fits Zoho's 100 characters (seed 001:
  "reference_number string [100]") and is printable; otherwise a readable part (r2a-pl-, the tenant id cut to fit,
  the period), "~" and 10 base32 characters of the custom_id's SHA-256 (unique and stable). A shortened key also
  puts the full custom_id first in `notes` ("<custom_id> | <memo>", Zoho's 500), so the entry's own id reads back.
- Every search that must see every date sends `filter_by=JournalDate.All`: without it Zoho lists a narrower window
  (seed 001's sample answer says JournalDate.ThisYear; CData's driver docs say the current month).
- Never someone else's journal: a journal is ours only if its reference_number equals our key (and notes name no
  other custom_id). Search results that are not ours are skipped; a journal reached by the id of our own earlier
  write that no longer carries our key raises `NotOurEntry` and nothing is written. Zoho has no concurrency token,
  so an update or delete of a journal known only by its id reads it first.
- Updates send each line's `line_id` (seed 001's update sample); a refusal because those lines are gone (a person
  re-entered them) re-reads the journal and retries once against what is there.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from ledger_pipeline.ledger.sink import CUSTOM_ID_PREFIX, CanonicalEntry, CreateResult, RemoteEntry, SinkError
from ledger_pipeline.money import from_minor, to_minor
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.zoho.client import ZohoClient, ZohoError

T = TypeVar("T")
# a SinkError of these kinds is one entry's answer, not the call's
PER_ENTRY = ("rejected", "duplicate", "locked", "account", "not_found")
REFERENCE_MAX = 100  # reference_number [100] (seed 001)
NOTES_MAX = 500  # notes [500] (seed 001)
DESCRIPTION_MAX = 500  # line description [500] (seed 001)
HASH_CHARS = 10
NOTE_SEP = " | "
ALL_DATES = {"filter_by": "JournalDate.All"}
_OUR_ID = re.compile(re.escape(CUSTOM_ID_PREFIX) + r"(?P<tenant>.*)-(?P<period>\d{6})", re.S)


def _minor(value: object, currency: str | None) -> int:
    return to_minor(value if isinstance(value, Decimal | int) else str(value), currency)


def key_digest(text: str, chars: int) -> str:
    """`chars` base32 characters (A-Z, 2-7) of the SHA-256 of `text` (UTF-8)."""
    return base64.b32encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")[:chars]


def period_of(custom_id: str | None) -> str:
    """'2025-01' from 'r2a-pl-<tenant>-202501' (for messages); '?' when the id has another form."""
    ours = _OUR_ID.fullmatch(custom_id or "")
    return f"{ours['period'][:4]}-{ours['period'][4:]}" if ours else "?"


def reference_number(custom_id: str) -> str:
    """Our reference_number for `custom_id`: itself when it is at most 100 printable characters, else
    'r2a-pl-<tenant, cut>-<YYYYMM>~<10-character hash>' (100 characters at most)."""
    if len(custom_id) <= REFERENCE_MAX and custom_id.isprintable():
        return custom_id
    tail = "~" + key_digest(custom_id, HASH_CHARS)
    ours = _OUR_ID.fullmatch(custom_id)
    if ours:
        tail = f"-{ours['period']}{tail}"
    text = CUSTOM_ID_PREFIX + ours["tenant"] if ours else custom_id
    head = "".join(c if c.isprintable() else "-" for c in text)[: REFERENCE_MAX - len(tail)]
    return head + tail


def _note_id(notes: str | None) -> str | None:
    head, sep, _ = (notes or "").partition(NOTE_SEP)
    return head if sep and head.startswith(CUSTOM_ID_PREFIX) else None


def custom_id_of(journal: dict) -> str | None:
    """Our custom_id on a journal: the one its notes name when the reference_number is that id's key, else the
    reference_number itself when it is a custom_id kept verbatim (None when there is none)."""
    ref = str(journal.get("reference_number") or "")
    if not ref:
        return None
    note_id = _note_id(journal.get("notes"))
    if note_id is not None:
        return note_id if reference_number(note_id) == ref else None
    return ref


def is_ours(journal: dict, custom_id: str) -> bool:
    """Its reference_number is our key for `custom_id` and its notes name no other custom_id."""
    note_id = _note_id(journal.get("notes"))
    return (str(journal.get("reference_number") or "") == reference_number(custom_id)
            and note_id in (None, custom_id))


class NotOurEntry(SinkError):
    """A journal reached by the id of our own earlier write no longer carries our key: it is never adopted, updated
    or deleted. kind "rejected", detail {"error": "not_our_entry", ...}."""

    def __init__(self, tenant_id: str, custom_id: str | None, journal: dict, action: str):
        key = reference_number(custom_id) if custom_id else "?"
        message = (
            f"tenant {tenant_id}, period {period_of(custom_id)}: Zoho journal {journal.get('journal_id')} no longer "
            f"carries our key (reference number {journal.get('reference_number')!r}; ours is {key!r}), so it was "
            f"not {action}. Someone changed or reused it in Zoho Books. Fix: if it is our journal for this month, "
            f"set its reference number back to {key!r}; if it is not, delete it in Zoho Books or clear the posting "
            "state's remote id; then re-run the month.")
        super().__init__("rejected", message, None, {"error": "not_our_entry",
                                                     "remote_id": str(journal.get("journal_id")),
                                                     "reference_number": journal.get("reference_number"),
                                                     "expected": key})


def parse_journal(data: dict, currency: str | None = None) -> RemoteEntry:
    """A Zoho journal (detail shape) -> RemoteEntry: `amount` + `debit_or_credit` per line, exact decimals of the
    journal's `currency_code` (else `currency`); custom_id from `custom_id_of`; `exchange_rate` in `extra` when
    reported (www.zoho.com/books/api/v3/journals/#get-journal: currency_id, currency_code, exchange_rate)."""
    cur = str(data["currency_code"]).upper() if data.get("currency_code") else currency
    lines = []
    for ln in data.get("line_items", []):
        amount = _minor(ln.get("amount") or 0, cur)
        debit = ln.get("debit_or_credit") == "debit"
        lines.append((str(ln["line_id"]), str(ln["account_id"]), amount if debit else 0, 0 if debit else amount))
    status = data.get("status", "published")
    notes = data.get("notes") or None
    if notes and _note_id(notes):
        notes = notes.partition(NOTE_SEP)[2] or None
    return RemoteEntry(
        remote_id=str(data["journal_id"]), custom_id=custom_id_of(data),
        transaction_date=dt.date.fromisoformat(data["journal_date"]), memo=notes,
        total_debit_minor=_minor(data["total"], cur) if data.get("total") is not None else sum(x[2] for x in lines),
        total_credit_minor=sum(x[3] for x in lines), lines=tuple(lines), currency=cur,
        state="posted" if status == "published" else "awaiting_approval",
        state_detail="" if status == "published" else f"Zoho journal status {status!r} (not in the ledger yet)",
        # find() reads it by id next time (a re-keyed one is named); the rate Zoho reports, if any
        extra={"journal_id": str(data["journal_id"]), **(
            {"exchange_rate": str(data["exchange_rate"])} if data.get("exchange_rate") is not None else {})},
    )


def journal_body(entry: CanonicalEntry, line_ids: list[str] | tuple[str, ...] = (),
                 currency_id: str | None = None) -> dict:
    """Zoho's write shape: yyyy-mm-dd, our key in reference_number, positive amounts (the entry currency's
    decimals) with debit_or_credit; on an update the journal's current line ids, in order, for as many lines as both
    have. A foreign-currency entry (`exchange_rate` set) also sends `currency_id` (Zoho's id of the entry's currency,
    GET /settings/currencies) and `exchange_rate` (www.zoho.com/books/api/v3/journals/#create-a-journal); a journal
    without currency_id is in the organization's base currency."""
    key = reference_number(entry.custom_id)
    notes = entry.memo if key == entry.custom_id else f"{entry.custom_id}{NOTE_SEP}{entry.memo}"[:NOTES_MAX]
    items = []
    for i, ln in enumerate(entry.lines):
        credit = bool(ln.credit_minor and not ln.debit_minor)
        item = {"account_id": str(ln.account_id), "description": ln.description[:DESCRIPTION_MAX],
                "debit_or_credit": "credit" if credit else "debit",
                "amount": from_minor(ln.credit_minor if credit else ln.debit_minor, entry.currency)}
        if i < len(line_ids) and line_ids[i]:
            item["line_id"] = str(line_ids[i])
        items.append(item)
    body: dict = {"journal_date": entry.transaction_date.isoformat(), "reference_number": key, "notes": notes,
                  "journal_type": "both", "status": "published", "line_items": items}
    if currency_id is not None:
        body["currency_id"] = currency_id
    if entry.exchange_rate is not None:
        body["exchange_rate"] = entry.exchange_rate
    return body


def classify(err: ZohoError | NeedsReauth) -> SinkError:
    if isinstance(err, NeedsReauth):
        return SinkError("needs_reauth", str(err))
    if err.kind == "needs_reauth":
        return SinkError("needs_reauth", str(err), err.status)
    if err.kind not in ("rejected", "not_found", "deferred"):
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

    def _currency_id(self, tenant_id: str, entry: CanonicalEntry) -> str | None:
        """Zoho's currency_id of a foreign entry's currency (GET /settings/currencies, www.zoho.com/books/api/v3/
        currency/#list-currencies); None for an entry in the base currency. A currency the organization has not
        added is a rejection naming it and the fix."""
        if entry.exchange_rate is None:
            return None
        _, data = self._call(lambda: self.client.request(tenant_id, "GET", "/settings/currencies"))
        for c in data.get("currencies") or []:
            if str(c.get("currency_code", "")).upper() == entry.currency:
                return str(c["currency_id"])
        raise SinkError("rejected", f"tenant {tenant_id}, period {period_of(entry.custom_id)}: the Zoho Books "
                                    f"organization has no currency {entry.currency}. Fix: add {entry.currency} in "
                                    "Zoho Books (Settings > Currencies), then re-run the month.")

    def _read_ours(self, tenant_id: str, journal_id: str, custom_id: str | None, action: str) -> RemoteEntry | None:
        """The journal as Zoho holds it now (None: gone), only if it still carries our key (NotOurEntry)."""
        data = self._call(lambda: self.client.get_journal(tenant_id, journal_id))
        if data is None:
            return None
        if custom_id is not None:
            ours = is_ours(data, custom_id)
        else:  # only a bare id: it must at least carry one of our keys
            ours = str(custom_id_of(data) or "").startswith(CUSTOM_ID_PREFIX)
        if not ours:
            raise NotOurEntry(tenant_id, custom_id, data, action)
        return parse_journal(data)

    def find(self, tenant_id: str, custom_id: str, hint: dict | None = None) -> RemoteEntry | None:
        """The live journal that carries our key (the oldest when a person made copies), searched over every date
        (filter_by=JournalDate.All); whatever the search returns, only journals whose reference_number is our key
        count, checked again on the journal itself. With the `hint` of our own earlier write (its journal_id) the
        journal is read by id first: gone -> searched by key; no longer carrying our key -> NotOurEntry."""
        if hint and hint.get("journal_id"):
            found_by_id = self._read_ours(tenant_id, str(hint["journal_id"]), custom_id, "adopted")
            if found_by_id is not None:
                return found_by_id
        key = reference_number(custom_id)
        found = self._call(lambda: self.client.list_journals(tenant_id, {"reference_number": key, **ALL_DATES}))
        ids = sorted({str(j["journal_id"]) for j in found if str(j.get("reference_number") or "") == key},
                     key=_id_key)
        for journal_id in ids:
            data = self._call(lambda jid=journal_id: self.client.get_journal(tenant_id, jid))
            if data is not None and is_ours(data, custom_id):
                return parse_journal(data)
        return None

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        """Every journal dated in [start, end): the date range with filter_by=JournalDate.All (so no default window
        narrows it), and the dates checked again here (whichever way Zoho combines the two)."""
        last = end - dt.timedelta(days=1)
        found = self._call(lambda: self.client.list_journals(
            tenant_id, {"date_start": start.isoformat(), "date_end": last.isoformat(), **ALL_DATES}))
        out = []
        for summary in found:
            if not start.isoformat() <= str(summary.get("journal_date")) <= last.isoformat():
                continue
            data = self._call(lambda s=summary: self.client.get_journal(tenant_id, s["journal_id"]))
            if data is not None:  # deleted meanwhile
                out.append(parse_journal(data))
        return out

    def create(self, tenant_id: str, entries: list[CanonicalEntry]) -> list[CreateResult]:
        results = []
        for entry in entries:
            try:
                body = journal_body(entry, (), self._currency_id(tenant_id, entry))
                data = self._call(lambda b=body: self.client.create_journal(tenant_id, b))
            except SinkError as err:
                if err.kind in PER_ENTRY:
                    results.append(CreateResult(entry.custom_id, error=err))
                    continue
                raise
            results.append(CreateResult(entry.custom_id, remote=parse_journal(data)))
        return results

    def _current(self, tenant_id: str, remote: RemoteEntry, custom_id: str | None, action: str) -> RemoteEntry | None:
        """The journal to write: `remote` itself when it was just read from Zoho (its lines are known and its key
        was checked), else a fresh read that checks our key (Zoho has no concurrency token to rely on)."""
        if remote.lines and all(account for _, account, _, _ in remote.lines):
            if custom_id is not None and remote.custom_id != custom_id:
                raise NotOurEntry(tenant_id, custom_id, {"journal_id": remote.remote_id,
                                                         "reference_number": remote.custom_id}, action)
            return remote
        return self._read_ours(tenant_id, str(remote.remote_id), custom_id, action)

    def update(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        """PUT replaces every line item, each sent with the line_id it replaces. Refused because those lines are
        gone (a person re-entered them since the journal was read): re-read, check our key, retry once."""
        journal_id = str(remote.remote_id)
        current = self._current(tenant_id, remote, entry.custom_id, "updated")
        for attempt in range(2):
            if current is None:
                raise SinkError("not_found", f"tenant {tenant_id}, period {period_of(entry.custom_id)}: Zoho journal "
                                             f"{journal_id} is gone")
            body = journal_body(entry, current.line_ids, self._currency_id(tenant_id, entry))
            try:
                return parse_journal(self._call(lambda b=body: self.client.update_journal(tenant_id, journal_id, b)))
            except SinkError as err:
                if attempt or not _lines_gone(err):
                    raise
            current = self._read_ours(tenant_id, journal_id, entry.custom_id, "updated")
            if current is not None and current.matches(entry):
                return current
        raise AssertionError("unreachable")

    def delete(self, tenant_id: str, remote: RemoteEntry | str | int) -> None:
        """DELETE our journal; one known only by its id is read first and deleted only if it carries our key (a
        bare id: one of our keys). Already gone: nothing to do."""
        if not isinstance(remote, RemoteEntry):
            remote = RemoteEntry(str(remote), None, dt.date.min, None, 0, 0, ())
        journal_id = str(remote.remote_id)
        if self._current(tenant_id, remote, remote.custom_id, "deleted") is None:
            return
        self._call(lambda: self.client.delete_journal(tenant_id, journal_id))


def _lines_gone(err: SinkError) -> bool:
    """Zoho refused line ids the journal no longer has (400 "Invalid value passed for line_id")."""
    cause = err.__cause__
    text = (cause.zoho_message or "") if isinstance(cause, ZohoError) else ""
    return err.status == 400 and ("line_id" in text.lower() or "line item" in text.lower())


def _id_key(journal_id: str) -> tuple[int, str]:
    return (len(journal_id), journal_id)
