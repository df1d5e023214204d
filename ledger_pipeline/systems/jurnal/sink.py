"""Jurnal as a LedgerSink: canonical entries <-> Jurnal's journal_entries, with Jurnal's errors classified.

Shapes follow Mekari's Swagger "Jurnal API Doc" 2.0.0 (shared/reference/specs/jurnal_mekari_swagger.json, paths
`/journal_entries`, `/journal_entries/{id}`, `/journal_entries/batch_create`):

- Create (POST): `transaction_date` DD-MM-YYYY (the examples' form), `custom_id` (our key, see `jurnal_key`),
  `memo`, `tags` (names), lines `{account_id, debit | credit, description}` (the spec: "use account_id instead of
  account_name if you have the account id"). Amounts are JSON integers when whole (the spec types them `integer`)
  and exact 2-dp decimals otherwise, never floats.
- Update (PATCH): `transaction_date` and `transaction_no` are required (`required` in the PATCH schema;
  "transaction number cannot be updated", so we send the one Jurnal holds), `transaction_date` as YYYY-MM-DD (the
  PATCH schema's `format: date`), tags as `tag_name`, every line with `account_id`, `debit` and `credit` (the
  schema requires both amounts). Lines are replaced the only ways the spec documents: a line with `id` changes that
  line, a line without `id` is added. The spec documents no way to remove a line of a journal entry (no
  `_destroy`, nothing like the product API's `remove_bundle_elements`), so when the entry must lose lines we
  delete it (DELETE is documented: 204) and create it again under the same custom_id: exactly once still holds,
  because a crash in between is resolved by the look-up by custom_id before any write.
- Batch create: each result is `{"status", "body", "content"}`; the Swagger example has `body` echoing the request
  and `content` the result (the field map of a refusal). `created_entry` reads the created entry from either.
- Reads: `transaction_status` may be an object (`{"id":2,"name":"Closed","name_bahasa":"Selesai"}`, the spec) or a
  string; a line's `account.category` an object `{id, name}` (the spec) or a string: both are read.

Ownership: an entry is adopted, updated or deleted only when its custom_id is ours (`jurnal_key(custom_id)`, or
the unmapped custom_id an older version sent); anything else raises `NotOurEntry` and nothing is written.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from ledger_pipeline import clock
from ledger_pipeline.ledger.sink import CanonicalEntry, CreateResult, RemoteEntry, SinkError, custom_id_for
from ledger_pipeline.money import from_minor, to_minor
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.jurnal.client import JurnalClient, JurnalError, jurnal_message

T = TypeVar("T")
MAX_BATCH = 100

# Jurnal's custom_id: the spec gives no length or character rules (a plain string, also accepted in place of the
# Jurnal id in `/journal_entries/{id}`). We keep our keys to what survives every hop unchanged: at most 64 of
# [A-Za-z0-9_-] (no `.`: Rails routing would read `.x` as a format; no `/`, `%`, `?`, `#`: gateways and proxies
# decode or split them), never all digits (a number would be read as a Jurnal id).
KEY_MAX = 64
_KEY_OK = re.compile(r"[A-Za-z0-9_-]+")
_HASH_LEN = 10


def jurnal_key(custom_id: str) -> str:
    """Our custom_id as Jurnal stores it. Unchanged when it already fits (every tenant id of letters, digits, `_`
    and `-` short enough); otherwise a readable ASCII prefix, the `-YYYYMM` month kept, and a 10-character hash of
    the whole custom_id (base32 of SHA-256: 50 bits), e.g. `r2a-pl-PT-Maju-Jaya-202401-k3v7q2m9xa`. Stable across
    runs and versions, unique per custom_id."""
    if len(custom_id) <= KEY_MAX and _KEY_OK.fullmatch(custom_id) and not custom_id.isdigit():
        return custom_id
    digest = base64.b32encode(hashlib.sha256(custom_id.encode()).digest()).decode().lower()[:_HASH_LEN]
    ascii_only = unicodedata.normalize("NFKD", custom_id).encode("ascii", "ignore").decode()
    readable = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_only)).strip("-")
    month = re.search(r"-\d{6}$", readable)
    suffix = month.group() if month else ""
    head = readable[: len(readable) - len(suffix)]
    room = KEY_MAX - len(suffix) - _HASH_LEN - 1
    return f"{head[:room].rstrip('-')}{suffix}-{digest}".lstrip("-")


def is_ours(remote_custom_id: Any, custom_id: str) -> bool:
    return remote_custom_id is not None and str(remote_custom_id) in (custom_id, jurnal_key(custom_id))


class NotOurEntry(SinkError):
    """Jurnal answered a look-up with an entry whose custom_id is not ours: nothing was adopted or written."""

    @classmethod
    def of(cls, tenant_id: str, custom_id: str, data: dict, asked: str) -> NotOurEntry:
        return cls("rejected", (
            f"tenant {tenant_id}: Jurnal answered {asked} with entry {data.get('id')} whose custom_id is "
            f"{data.get('custom_id')!r}, not ours ({jurnal_key(custom_id)!r} for {custom_id}): it was not adopted, "
            "updated or deleted. Jurnal did not honour the look-up key; check the entry in Jurnal (and "
            f"GET /journal_entries/{jurnal_key(custom_id)}), then re-run this month"), None,
            {"remote_id": str(data.get("id")), "remote_custom_id": data.get("custom_id")})


def _minor(value: object, currency: str | None) -> int:
    return to_minor(value if isinstance(value, Decimal | int) else str(value), currency)


def _amount(minor: int, currency: str) -> int | Decimal:
    """A JSON amount: an integer when whole (the spec's examples and `integer` type), else exact in the currency's
    decimals (money.from_minor)."""
    value = from_minor(minor, currency)
    return int(value) if value == value.to_integral_value() else value


def _date(value: str) -> dt.date:
    for fmt in ("%d/%m/%Y", "%Y-%m-%d", "%d-%m-%Y"):
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"unreadable Jurnal transaction_date {value!r}")


def named(value: Any) -> str | None:
    """A status or category as Jurnal answers it: an object {id, name, name_bahasa?} (the spec) or a string."""
    if isinstance(value, dict):
        return None if value.get("name") is None else str(value["name"])
    return None if value is None else str(value)


def parse_remote(data: dict, custom_id: str | None = None, currency: str | None = None) -> RemoteEntry:
    """A Jurnal journal entry (read shape) -> RemoteEntry, with `custom_id` (ours, canonical) when given. Uses the
    numeric fields, never the formatted ones, in the decimals of the entry's `currency_code` (Mekari's Swagger,
    journal entry response: currency_code, currency_rate), else `currency`."""
    cur = str(data["currency_code"]).upper() if data.get("currency_code") else currency
    lines = tuple(
        (str(ln["id"]), str((ln.get("account") or {}).get("id", ln.get("account_id"))),
         _minor(ln.get("debit") or 0, cur), _minor(ln.get("credit") or 0, cur))
        for ln in data.get("transaction_account_lines") or []
    )
    status = named(data.get("transaction_status"))
    return RemoteEntry(
        remote_id=str(data["id"]), custom_id=custom_id or data.get("custom_id"),
        transaction_date=_date(data["transaction_date"]), memo=data.get("memo"),
        total_debit_minor=_minor(data.get("total_debit") or 0, cur),
        total_credit_minor=_minor(data.get("total_credit") or 0, cur), lines=lines, locked=bool(data.get("locked")),
        currency=cur, extra={"currency_rate": str(data["currency_rate"])} if data.get("currency_rate") else {},
        state_detail=f"Jurnal status {status}" if status else "",
    )


def _line(ln: Any, both_sides: bool, currency: str) -> dict:
    out: dict[str, Any] = {"account_id": int(ln.account_id)}
    if both_sides:
        out.update(debit=_amount(ln.debit_minor, currency), credit=_amount(ln.credit_minor, currency))
    elif ln.debit_minor:
        out["debit"] = _amount(ln.debit_minor, currency)
    else:
        out["credit"] = _amount(ln.credit_minor, currency)
    if ln.description:
        out["description"] = ln.description
    return out


def entry_body(entry: CanonicalEntry) -> dict:
    """Jurnal's create shape (the inner `journal_entry`): DD-MM-YYYY, our key as custom_id, one side per line."""
    body: dict[str, Any] = {
        "transaction_date": entry.transaction_date.strftime("%d-%m-%Y"),
        "custom_id": jurnal_key(entry.custom_id),
        "tags": ["r2a"],
        "transaction_account_lines_attributes": [_line(ln, False, entry.currency) for ln in entry.lines],
    }
    if entry.memo is not None:
        body["memo"] = entry.memo
    return body


def patch_body(entry: CanonicalEntry, current: RemoteEntry, transaction_no: str) -> dict:
    """Jurnal's PATCH shape (the inner `journal_entry`) making `current` equal `entry`: its line ids reused in
    order (a line with `id` changes that line), further lines added without `id`. `entry` must not have fewer
    lines than `current` (the API cannot remove one; see JurnalSink.update)."""
    ids = current.line_ids
    if len(entry.lines) < len(ids):
        raise ValueError("patch_body cannot remove lines")
    lines = [({"id": int(ids[i])} if i < len(ids) else {}) | _line(ln, both_sides=True, currency=entry.currency)
             for i, ln in enumerate(entry.lines)]
    body: dict[str, Any] = {
        "transaction_date": entry.transaction_date.isoformat(),
        "transaction_no": str(transaction_no),
        "custom_id": jurnal_key(entry.custom_id),
        "tag_name": ["r2a"],
        "transaction_account_lines_attributes": lines,
    }
    if entry.memo is not None:
        body["memo"] = entry.memo
    return body


def created_entry(item: dict) -> dict | None:
    """The created entry in a batch_create result item, wherever Jurnal put it: `content.journal_entry` or
    `content` (the spec: `content` holds the result), else `body.journal_entry` or `body` (an older reading) when
    it is an entry (has an `id`) rather than the echo of our request."""
    for part in ("content", "body"):
        value = item.get(part)
        for candidate in ((value or {}).get("journal_entry") if isinstance(value, dict) else None, value):
            if isinstance(candidate, dict) and candidate.get("id") is not None \
                    and "transaction_account_lines" in candidate:
                return candidate
    return None


def classify(err: JurnalError | NeedsReauth) -> SinkError:
    if isinstance(err, NeedsReauth) or err.kind == "needs_reauth":
        return SinkError("needs_reauth", str(err), getattr(err, "status", None))
    if err.kind == "rejected" and err.status == 422 and "not exist" in str(err.body) and "account" in str(err.body):
        text = jurnal_message(err.body)
        return SinkError("account", f"Jurnal refused an account ({text}): it is missing or archived in the "
                                    "tenant's chart", err.status)
    text = jurnal_message(err.body) if err.body is not None else err.message
    if err.kind in ("rejected", "not_found"):
        if "custom_id" in str(err.body) and ("already" in text or "taken" in text):
            return SinkError("duplicate", text, err.status)
        if "locked period" in text or "Kunci Periode" in text or "dikunci" in text:
            return SinkError("locked", _lock_reason(text), err.status)
        if err.status == 404:
            return SinkError("not_found", text, err.status)
        return SinkError("rejected", f"Jurnal refused the entry ({err.status}): {text}", err.status)
    return SinkError(err.kind, err.message, err.status)


def _lines_changed(exc: JurnalError) -> bool:
    """A PATCH refused because a line id we sent no longer exists (edited in Jurnal meanwhile): the emulator's
    `line N not found`, or Rails' `Couldn't find TransactionAccountLine with ID=N`."""
    text = str(exc.body).lower()
    return exc.kind in ("rejected", "not_found") and exc.status in (404, 422) and "line" in text and (
        "not found" in text or "couldn't find" in text)


def _lock_reason(text: str) -> str:
    return (f"Jurnal refused: the period is locked ({text}). Ask the tenant's accountant to open the period in "
            "Jurnal (Pengaturan > Kunci Periode / Tutup Buku) or to book the change in an open period, then re-run "
            "this month. Nothing was changed in Jurnal.")


def _months(start: dt.date, end: dt.date) -> list[dt.date]:
    """The months of [start, end)."""
    return clock.months_between(start, end - dt.timedelta(days=1))


def _is_stub(remote: RemoteEntry) -> bool:
    """A RemoteEntry rebuilt from the posting state (ids only): its lines and transaction_no must be read."""
    return not remote.lines or any(not acc for _, acc, _, _ in remote.lines)


class JurnalSink:
    name = "jurnal"
    max_batch = MAX_BATCH

    def __init__(self, client: JurnalClient):
        self.client = client
        self._transaction_no: dict[str, str] = {}  # remote id -> Jurnal's transaction_no (a PATCH must send it)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (JurnalError, NeedsReauth) as exc:
            raise classify(exc) from exc

    def _remote(self, data: dict, custom_id: str) -> RemoteEntry:
        if data.get("transaction_no") is not None:
            if len(self._transaction_no) > 10_000:
                self._transaction_no.clear()
            self._transaction_no[str(data["id"])] = str(data["transaction_no"])
        return parse_remote(data, custom_id)

    def find(self, tenant_id: str, custom_id: str, hint: dict | None = None) -> RemoteEntry | None:
        """Our entry, looked up by our key (`GET /journal_entries/{key}`, the key one encoded path segment); the
        unmapped custom_id too when it differs (entries created before keys were mapped). A 404 is None. Raises
        NotOurEntry when Jurnal answers with an entry that is not ours."""
        key = jurnal_key(custom_id)
        data = self._call(lambda: self.client.get_entry(tenant_id, key))
        asked = f"GET /journal_entries/{key}"
        if data is None and key != custom_id:
            data = self._call(lambda: self.client.get_entry(tenant_id, custom_id))
            asked = f"GET /journal_entries/{custom_id}"
        if data is None:
            return None
        if not is_ours(data.get("custom_id"), custom_id):
            raise NotOurEntry.of(tenant_id, custom_id, data, asked)
        return self._remote(data, custom_id)

    def _read(self, tenant_id: str, remote_id: str, custom_id: str) -> RemoteEntry | None:
        """The entry as Jurnal holds it now, by its Jurnal id (None: gone); NotOurEntry when it is not ours."""
        data = self._call(lambda: self.client.get_entry(tenant_id, remote_id))
        if data is None:
            return None
        if not is_ours(data.get("custom_id"), custom_id):
            raise NotOurEntry.of(tenant_id, custom_id, data, f"GET /journal_entries/{remote_id}")
        return self._remote(data, custom_id)

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        """Every entry dated in [start, end), ours with their canonical custom_id. Entries outside the window are
        dropped here too (a server that ignored the date filters cannot hand us other months' entries)."""
        last = end - dt.timedelta(days=1)
        data = self._call(lambda: self.client.list_entries(tenant_id, start.strftime("%d-%m-%Y"),
                                                           last.strftime("%d-%m-%Y")))
        canonical = {jurnal_key(c): c for c in (custom_id_for(tenant_id, m) for m in _months(start, end))}
        out = []
        for d in data:
            remote = parse_remote(d)
            if not start <= remote.transaction_date < end:
                continue
            cid = canonical.get(str(d.get("custom_id")))
            out.append(self._remote(d, cid) if cid else remote)
        return out

    def create(self, tenant_id: str, entries: list[CanonicalEntry]) -> list[CreateResult]:
        if len(entries) == 1:
            e = entries[0]
            try:
                data = self._call(lambda: self.client.create_entry(tenant_id, entry_body(e)))
            except SinkError as err:
                if err.kind in ("rejected", "duplicate", "locked"):
                    return [CreateResult(e.custom_id, error=err)]
                raise
            return [self._created(tenant_id, e, data)]
        items = self._call(lambda: self.client.batch_create(tenant_id, [entry_body(e) for e in entries]))
        results = []
        for entry, item in zip(entries, items, strict=True):
            if item.get("status") in (200, 201):
                results.append(self._created(tenant_id, entry, created_entry(item)))
            else:
                err = JurnalError("rejected", tenant_id, "batch item refused", item.get("status"),
                                  item.get("content"))
                results.append(CreateResult(entry.custom_id, error=classify(err)))
        return results

    def _created(self, tenant_id: str, entry: CanonicalEntry, data: dict | None) -> CreateResult:
        """A create Jurnal accepted: the entry from its answer, or (answer without it, or not ours) looked up."""
        if data is not None and is_ours(data.get("custom_id"), entry.custom_id):
            return CreateResult(entry.custom_id, remote=self._remote(data, entry.custom_id))
        remote = self.find(tenant_id, entry.custom_id)
        if remote is None:
            return CreateResult(entry.custom_id, error=SinkError(
                "uncertain", f"tenant {tenant_id}: Jurnal accepted {entry.custom_id} but neither its answer nor a "
                             "look-up shows the entry; the next run looks it up before writing"))
        return CreateResult(entry.custom_id, remote=remote)

    def _current(self, tenant_id: str, remote: RemoteEntry, custom_id: str) -> RemoteEntry | None:
        """`remote` with its lines and transaction_no known: read again unless this sink just read it."""
        if not remote.remote_id:
            return self.find(tenant_id, custom_id)
        if _is_stub(remote) or remote.remote_id not in self._transaction_no:
            return self._read(tenant_id, remote.remote_id, custom_id)
        if not is_ours(remote.custom_id, custom_id):
            raise NotOurEntry.of(tenant_id, custom_id, {"id": remote.remote_id, "custom_id": remote.custom_id},
                                 "a look-up")
        return remote

    def update(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        """Make Jurnal's entry equal `entry`. Same or more lines: one PATCH (line ids reused in order, the rest
        added). Fewer lines: delete and re-create (the API has no way to remove a line). A PATCH refused because a
        line id no longer exists (someone edited the entry in Jurnal) is retried once against the entry as it is
        now, read again: stale line ids are never resent."""
        cid = entry.custom_id
        current = self._current(tenant_id, remote, cid)
        for attempt in (1, 2):
            if current is None:
                raise SinkError("not_found", f"tenant {tenant_id}: {cid} (Jurnal id {remote.remote_id}) is no "
                                             "longer in Jurnal; it is looked up again", 404)
            if len(entry.lines) < len(current.lines):
                return self._recreate(tenant_id, current, entry)
            body = patch_body(entry, current, self._transaction_no[current.remote_id])
            try:
                data = self.client.update_entry(tenant_id, current.remote_id, body)
            except JurnalError as exc:
                if attempt == 1 and _lines_changed(exc):
                    current = self._read(tenant_id, current.remote_id, cid)
                    continue
                raise classify(exc) from exc
            except NeedsReauth as exc:
                raise classify(exc) from exc
            return self._remote(data, cid)
        raise AssertionError("unreachable")

    def _recreate(self, tenant_id: str, current: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        self._call(lambda: self.client.delete_entry(tenant_id, current.remote_id))
        try:
            data = self._call(lambda: self.client.create_entry(tenant_id, entry_body(entry)))
        except SinkError as err:
            raise SinkError(err.kind, (
                f"tenant {tenant_id}: {entry.custom_id} had to lose {len(current.lines) - len(entry.lines)} line(s), "
                f"which Jurnal's API cannot remove, so entry {current.remote_id} was deleted to be created again; "
                f"creating it failed: {err.message}. The next run looks it up and creates it"), err.status) from err
        result = self._created(tenant_id, entry, data)
        if result.remote is None:
            raise result.error
        return result.remote

    def delete(self, tenant_id: str, remote: RemoteEntry) -> None:
        """Delete our entry (a stub is read first: only an entry whose custom_id is ours is deleted)."""
        if not remote.custom_id:
            raise SinkError("rejected", f"tenant {tenant_id}: refusing to delete Jurnal entry {remote.remote_id} "
                                        "without our custom_id to check it against; nothing was deleted")
        current = self._current(tenant_id, remote, remote.custom_id)
        if current is None:
            raise SinkError("not_found", f"tenant {tenant_id}: entry {remote.remote_id} is no longer in Jurnal", 404)
        self._call(lambda: self.client.delete_entry(tenant_id, current.remote_id))
