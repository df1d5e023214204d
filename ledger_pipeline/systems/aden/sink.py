"""Aden as a LedgerSink: an entry is a Draft submitted for approval; its workflow status is the RemoteEntry state.

Sources (docs.adenhq.com): the quickstart creates with a client-chosen `entry_id` ("JE-2024-001"); the journal-entry
list, workflow, update, void and reverse pages address entries by `journal_entry_id` with values of that same form and
answer bare objects; lists are {"data": [...], "pagination"}; the list filters are status, entry_type, start_date,
end_date, posting_period_id, limit and offset; accounting periods carry `period_id` and `is_closed`.

Our key (the Aden `entry_id`):
- `aden_key(custom_id)`: the custom_id itself when it is 1-38 characters of [A-Za-z0-9_-]; otherwise a readable prefix
  (the custom_id folded to ASCII, other characters as "_", at most 24 characters) + ".h" + the first 12 hex digits of
  its SHA-256. Stable, unique per custom_id (identity keys hold no "."; hashed ones always do), and within the assumed
  rule of 1-50 characters of [A-Za-z0-9._-] with room for our revision suffix and Aden's reversal suffix "-REV".
- Revisions: a posted entry is immutable, so a change reverses it and posts the next revision `<key>.r<n>` (n >= 2).
  `extra` carries {"revision", "entry_id" (the key), "journal_entry_id" (Aden's address), "tran_date", "status",
  "reversed", "reversals"}; `find(custom_id, hint)` walks the revisions from the hinted one.

Addressing, both readings of the docs: entries are read at `/journal-entries/{journal_entry_id}`, with the
journal_entry_id Aden answered (posting state) or, failing that, with our key (the likely reading: journal_entry_id ==
entry_id). When the server turns out to assign its own ids (a create answers journal_entry_id != entry_id; remembered
per tenant), a look-up lists the entry's date with documented filters and reads the hit whose `entry_id` is ours.

Never trust a server's filter or id: every entry read, listed or answered is adopted, updated, voided or reversed
only if its key (`entry_id`, else `journal_entry_id`) equals ours; a direct read answering another key raises
`AdenKeyMismatch` before any write, and a listing's hits are re-read (a hit the company cannot read is foreign and
skipped). `list_period` re-applies the date window itself.

Exactly once: a create is `POST /journal-entries` (Draft) plus `submit-for-approval`, each with an
`X-Idempotency-Key` derived from the key, our content hash, the action and the version acted on, so a retry of the same
step replays and a new step gets a new key. A create that finds our key taken converges on what is there. Two
requests per fresh entry: the period comes from the cache (`cache.AdenCache`, kept across runs), the create answers
the whole entry and the submit its new status.

Workflow: below the company's approval threshold Aden auto-posts ("posted"); above it the entry waits for a person
("awaiting_approval", never a failure); a rejection is "rejected" with the approver's reason. `find` completes what an
interrupted create or update left half-done (a Draft we created and never submitted, or one we sent back ourselves).
An update refused because the entry moved on in Aden meanwhile (409: submitted, approved, ...) is re-read and
converged once more. Reversals are created as Drafts (reverse page) and submitted like any entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from ledger_pipeline import clock
from ledger_pipeline.ledger.sink import (
    CUSTOM_ID_PREFIX,
    CanonicalEntry,
    CreateResult,
    RemoteEntry,
    SinkError,
    custom_id_for,
)
from ledger_pipeline.money import from_minor, to_minor
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.aden.cache import AdenCache
from ledger_pipeline.systems.aden.client import AdenClient, AdenError
from ledger_pipeline.systems.core import path as api_path

T = TypeVar("T")
OUR_CHANGE = "ledger_pipeline: the content changed in R2a; resubmitting"  # our own request-change reason
SUBMITTED = ("Pending Approval", "On Hold", "Approved")
KEY_MAX = 38
_IDENTITY = re.compile(rf"[A-Za-z0-9_-]{{1,{KEY_MAX}}}")
_REVISION = re.compile(r"(?P<base>.+)\.r(?P<n>\d+)")
_MONTH_SUFFIX = re.compile(r"-(\d{4})(\d{2})$")
_STALE = ("status_changed_at", "status_reason", "change_requested")  # describe the status before an action
_SINCE = {"Pending Approval": "submitted_at", "Approved": "approved_at", "Posted": "posted_at",
          "Rejected": "rejected_at", "On Hold": "held_at", "Voided": "voided_at"}


def aden_key(custom_id: str) -> str:
    """Our Aden `entry_id` for a custom_id (see the module docstring for the scheme)."""
    if _IDENTITY.fullmatch(custom_id):
        return custom_id
    folded = unicodedata.normalize("NFKD", custom_id).encode("ascii", "ignore").decode()
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", folded).strip("_-")[:24].rstrip("_-") or "id"
    return f"{readable}.h{hashlib.sha256(custom_id.encode()).hexdigest()[:12]}"


def revision_key(custom_id: str, revision: int) -> str:
    """The key of a revision: the base key, then `<key>.r2`, `.r3`, ..."""
    key = aden_key(custom_id)
    return key if revision <= 1 else f"{key}.r{revision}"


def split_key(entry_key: str) -> tuple[str, int]:
    """(base key, revision) of an Aden entry_id of ours."""
    m = _REVISION.fullmatch(entry_key or "")
    return (m["base"], int(m["n"])) if m else (entry_key, 1)


def key_of(data: dict) -> str:
    """The key an Aden entry carries: `entry_id` when the server echoes it, else its `journal_entry_id`."""
    return str(data.get("entry_id") or data.get("journal_entry_id") or "")


class AdenKeyMismatch(SinkError):
    """Aden answered an entry whose key is not the one we asked for: nothing is adopted or written."""

    def __init__(self, tenant_id: str, wanted: str, got: str, how: str):
        super().__init__("rejected", f"tenant {tenant_id}: Aden answered entry {got!r} when {how} {wanted!r}: it is "
                                     "not ours, so it is neither adopted, updated, voided nor reversed (nothing was "
                                     "written). Check the entry in Aden and the posting state's journal_entry_id.",
                         None, {"wanted": wanted, "got": got})


def _key(*parts: Any) -> str:
    return "r2a-" + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:40]


def _minor(value: object, currency: str | None) -> int:
    return to_minor(value if isinstance(value, Decimal | int) else str(value), currency)


def _version(e: dict) -> str:
    return str(e.get("updated_at") or e.get("created_at") or "")


def _merge(e: dict, reply: dict) -> dict:
    """The entry after a workflow action whose answer is partial (status and its timestamps)."""
    out = {k: v for k, v in e.items() if k not in _STALE}
    out.update(reply)
    if "reason" in reply and "status_reason" not in reply:
        out["status_reason"] = reply["reason"]
    return out


def workflow_state(data: dict) -> tuple[str, str]:
    """Aden's status -> (RemoteEntry.state, state_detail)."""
    status = data["status"]
    since = (data.get("status_changed_at") or data.get(_SINCE.get(status, "")) or data.get("updated_at")
             or data.get("created_at") or "")
    reason = data.get("status_reason") or data.get("reason")
    why = f": {reason}" if reason else ""
    if status == "Posted":
        return "posted", ""
    if status == "Rejected":
        return "rejected", f"rejected by the approver on {since}{why}"
    if status == "Pending Approval":
        return "awaiting_approval", f"awaiting approval since {since}"
    if status == "On Hold":
        return "awaiting_approval", f"on hold since {since}{why}"
    if status == "Approved":
        return "awaiting_approval", f"approved since {since}, not yet posted{why}"
    if data.get("change_requested") and reason != OUR_CHANGE:
        return "awaiting_approval", f"sent back to Draft by the approver since {since}{why}"
    return "awaiting_approval", f"draft since {since}, not yet submitted"


def parse_remote(data: dict, custom_id: str | None, extra: dict | None = None) -> RemoteEntry:
    """An Aden journal entry -> RemoteEntry (exact amounts in the decimals of its `currency`, which it carries:
    docs.adenhq.com journal entries); `custom_id` is ours when the entry is ours; `exchange_rate` in `extra` when
    reported."""
    cur = str(data["currency"]).upper() if data.get("currency") else None
    key = key_of(data)
    _, revision = split_key(key)
    state, detail = workflow_state(data)
    raw = data.get("lines") or []
    lines = tuple((str(ln.get("line_number", i + 1)), str(ln["account_id"]), _minor(ln.get("debit") or 0, cur),
                   _minor(ln.get("credit") or 0, cur)) for i, ln in enumerate(raw))
    debit = _minor(data["total_debit"], cur) if data.get("total_debit") is not None else sum(x[2] for x in lines)
    credit = _minor(data["total_credit"], cur) if data.get("total_credit") is not None else sum(x[3] for x in lines)
    return RemoteEntry(
        remote_id=str(data["journal_entry_id"]), custom_id=custom_id,
        transaction_date=dt.date.fromisoformat(data["tran_date"]), memo=data.get("memo"),
        total_debit_minor=debit, total_credit_minor=credit,
        lines=lines, state=state, state_detail=detail, currency=cur,  # type: ignore[arg-type]
        extra={**({"exchange_rate": str(data["exchange_rate"])} if data.get("exchange_rate") is not None else {}),
               "revision": revision, "entry_id": key, "journal_entry_id": str(data["journal_entry_id"]),
               "tran_date": data["tran_date"], "status": data["status"], **(extra or {})},
    )


def _lines(entry: CanonicalEntry) -> list[dict]:
    cur = entry.currency
    return [{"line_number": ln.line_no, "account_id": ln.account_id, "debit": from_minor(ln.debit_minor, cur),
             "credit": from_minor(ln.credit_minor, cur), "memo": ln.description} for ln in entry.lines]


def entry_body(entry: CanonicalEntry, entry_id: str, period_id: str) -> dict:
    """The create body (quickstart + journal-entries overview): `currency` always, `exchange_rate` (at most 6
    decimals, 1 entry currency = rate company currency) for an entry foreign to the company."""
    body = {"entry_id": entry_id, "tran_date": entry.transaction_date.isoformat(), "memo": entry.memo,
            "entry_type": "Standard", "posting_period_id": period_id, "currency": entry.currency,
            "lines": _lines(entry)}
    if entry.exchange_rate is not None:
        body["exchange_rate"] = entry.exchange_rate
    return body


def classify(err: AdenError | NeedsReauth) -> SinkError:
    if isinstance(err, NeedsReauth):
        return SinkError("needs_reauth", str(err))
    if err.kind == "needs_reauth":
        return SinkError("needs_reauth", str(err), err.status)
    if err.kind not in ("rejected", "not_found"):
        return SinkError(err.kind, err.message, err.status)
    text, code, field = err.text, err.code, err.field
    detail = {"code": code, "field": field}
    if code == "DUPLICATE_ENTRY":
        return SinkError("duplicate", f"Aden already holds this entry_id ({text})", err.status, detail)
    if err.status == 404:
        return SinkError("not_found", text, err.status, detail)
    if code == "VALIDATION_ERROR" and field == "posting_period_id" and "closed" in text.lower():
        return SinkError("locked", f"Aden refused: the accounting period is closed ({text}). Ask the tenant's "
                                   "accountant to reopen the period in Aden, then re-run this month. Nothing was "
                                   "changed in Aden.", err.status, detail)
    if code == "VALIDATION_ERROR" and field == "tran_date" and "outside" in text:
        return SinkError("rejected", f"Aden refused the period check: {text}", err.status, detail)
    if code == "VALIDATION_ERROR" and "account" in field:
        return SinkError("account", f"Aden refused an account ({text}): it is missing or inactive in the tenant's "
                                    "chart", err.status, detail)
    return SinkError("rejected", f"Aden refused ({err.status}): {text}", err.status, detail)


def _period_refused(err: SinkError) -> bool:
    return (err.detail or {}).get("field") == "posting_period_id"


def _containing(periods: list[dict], date: dt.date) -> dict | None:
    day = date.isoformat()
    for p in periods:
        if not p.get("is_adjustment_period") and p["start_date"] <= day <= p["end_date"]:
            return p
    return None


def _month_date(custom_id: str) -> dt.date | None:
    """The last day of the month our custom_id names (`...-YYYYMM`), to bound a listing; None if it names none."""
    m = _MONTH_SUFFIX.search(custom_id)
    if not m or not 1 <= int(m[2]) <= 12:
        return None
    first = dt.date(int(m[1]), int(m[2]), 1)
    return clock.month_end(first)


class AdenSink:
    name = "aden"
    max_batch = 1  # Aden has no batch endpoint

    def __init__(self, client: AdenClient, cache: AdenCache | None = None):
        self.client = client
        self.cache = cache or AdenCache(None)

    # -- plumbing -------------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (AdenError, NeedsReauth) as exc:
            raise classify(exc) from exc

    def _request(self, tenant_id: str, method: str, path: str, body: Any = None, params: dict | None = None,
                 key: str | None = None) -> tuple[Any, bool]:
        _, data, replayed = self._call(lambda: self.client.request(tenant_id, method, path, body, params, key))
        return data, replayed

    def _get(self, tenant_id: str, jeid: str) -> dict | None:
        """GET /journal-entries/{jeid}: the bare entry, None on 404 (not found, never "unreachable")."""
        try:
            data, _ = self._request(tenant_id, "GET", api_path("journal-entries", jeid))
        except SinkError as err:
            if err.kind == "not_found":
                return None
            raise
        return data if isinstance(data, dict) and "journal_entry_id" in data else None

    @staticmethod
    def _check(tenant_id: str, e: dict, key: str, how: str) -> dict:
        if key_of(e) != key:
            raise AdenKeyMismatch(tenant_id, key, key_of(e), how)
        return e

    def _learn(self, tenant_id: str, e: dict, key: str) -> None:
        """How this server addresses entries, from an answer that carries our key."""
        jeid = e.get("journal_entry_id")
        if jeid:
            self.cache.set_addressing(tenant_id, "entry_id" if jeid == key else "server_id")

    def _read(self, tenant_id: str, key: str, jeid: str | None, date: dt.date | None) -> dict | None:
        """Our entry with `key` (whole, with lines) or None; see "Addressing" in the module docstring."""
        if jeid and jeid != key:
            e = self._get(tenant_id, jeid)
            return None if e is None else self._check(tenant_id, e, key, f"reading {jeid} for")
        how = self.cache.addressing(tenant_id)
        if how != "server_id":
            e = self._get(tenant_id, key)
            if e is not None:
                self._learn(tenant_id, self._check(tenant_id, e, key, "asked for"), key)
                return e
            if how == "entry_id":
                return None
        return self._scan(tenant_id, key, date)

    def _scan(self, tenant_id: str, key: str, date: dt.date | None) -> dict | None:
        """A listing (documented filters only, never trusted) for the entry whose key is ours."""
        params = {"start_date": date.isoformat(), "end_date": date.isoformat()} if date else {}
        rows = self._call(lambda: self.client.pages(tenant_id, "/journal-entries", params))
        for row in rows:
            if key_of(row) != key or not row.get("journal_entry_id"):
                continue
            e = self._get(tenant_id, str(row["journal_entry_id"]))
            if e is None:  # listed but not readable by this company: another company's entry, not ours
                continue
            self._learn(tenant_id, self._check(tenant_id, e, key, "listing for"), key)
            return e
        return None

    def _remote(self, tenant_id: str, e: dict, custom_id: str, extra: dict | None) -> RemoteEntry:
        if "lines" not in e:  # an answer without lines: read the whole entry
            fresh = self._get(tenant_id, str(e["journal_entry_id"]))
            if fresh is not None:
                e = self._check(tenant_id, fresh, key_of(e), "re-reading")
        return parse_remote(e, custom_id, extra)

    def _chain(self, tenant_id: str, custom_id: str, hint: dict | None) -> tuple[dict | None, int, dict]:
        """(the live revision or None, its revision number or the next free one, extra) from the hinted revision."""
        hint = hint or {}
        hinted = max(1, int(hint.get("revision") or 1))
        revision = hinted
        extra = {"reversed": list(hint.get("reversed") or []), "reversals": list(hint.get("reversals") or [])}
        date = dt.date.fromisoformat(hint["tran_date"]) if hint.get("tran_date") else _month_date(custom_id)
        while True:
            jeid = hint.get("journal_entry_id") if revision == hinted else None
            e = self._read(tenant_id, revision_key(custom_id, revision), jeid, date)
            if e is None:
                return None, revision, extra
            reversed_ = e.get("reversed_by") or (e["journal_entry_id"] in extra["reversed"] and e["status"] == "Posted")
            if e["status"] != "Voided" and not reversed_:
                return e, revision, extra
            if e.get("reversed_by"):
                for k, v in (("reversed", e["journal_entry_id"]), ("reversals", e["reversed_by"])):
                    if v not in extra[k]:
                        extra[k].append(v)
            revision += 1

    # -- periods ---------------------------------------------------------------------------------------------
    def refresh_periods(self, tenant_id: str) -> list[dict]:
        """Read every accounting period (GET /accounting-periods, paged) into the cache."""
        rows = self._call(lambda: self.client.pages(tenant_id, "/accounting-periods"))
        self.cache.put_periods(tenant_id, rows)
        return self.cache.periods(tenant_id) or []

    def _periods(self, tenant_id: str, refresh: bool = False) -> list[dict]:
        cached = None if refresh else self.cache.periods(tenant_id)
        return self.refresh_periods(tenant_id) if cached is None else cached

    def _period_for(self, tenant_id: str, date: dt.date) -> dict:
        """The period containing `date`, from the cache; re-read once when none contains it, or when it is cached as
        closed and was not read in this process (it may have been reopened)."""
        p = _containing(self._periods(tenant_id), date)
        if (p is None or p["is_closed"]) and not self.cache.fresh(tenant_id):
            p = _containing(self._periods(tenant_id, refresh=True), date)
        if p is None:
            raise SinkError("rejected", f"tenant {tenant_id}: Aden has no accounting period for {date} (period "
                                        "check): ask the tenant's accountant to create it in Aden")
        return p

    @staticmethod
    def _closed(tenant_id: str, period: dict, what: str) -> SinkError:
        return SinkError("locked", f"tenant {tenant_id}: Aden's accounting period {period.get('period_name')} is "
                                   f"closed: {what} (nothing was changed). Ask the tenant's accountant to reopen the "
                                   "period in Aden, then re-run this month.", None,
                         {"field": "posting_period_id", "period_id": period.get("period_id")})

    # -- steps ----------------------------------------------------------------------------------------------
    def _action(self, tenant_id: str, e: dict, action: str, key: str, body: dict | None = None) -> dict:
        """A workflow action on `e`; answers are partial (merged into `e`), a replay or a status that moved
        meanwhile is re-read. `reverse` answers the reversing entry (a different entry)."""
        jeid = str(e["journal_entry_id"])
        try:
            data, replayed = self._request(tenant_id, "POST", api_path("journal-entries", jeid, action), body or {},
                                           key=key)
        except SinkError as err:
            if err.status == 409 and (err.detail or {}).get("code") == "INVALID_STATUS":
                fresh = self._get(tenant_id, jeid)
                if fresh is not None:
                    return self._check(tenant_id, fresh, key_of(e), "re-reading")
            raise
        if action == "reverse":
            return data
        if replayed or not isinstance(data, dict) or "status" not in data:
            fresh = self._get(tenant_id, jeid)
            if fresh is not None:
                return self._check(tenant_id, fresh, key_of(e), "re-reading")
        return _merge(e, data if isinstance(data, dict) else {})

    def _submit(self, tenant_id: str, e: dict, content_hash: str, why: str = "submit") -> dict:
        return self._action(tenant_id, e, "submit-for-approval", _key(key_of(e), content_hash, why, _version(e)))

    def _create_revision(self, tenant_id: str, entry: CanonicalEntry, revision: int, extra: dict,
                         retried: bool = False) -> RemoteEntry:
        """POST the Draft as `revision` and submit it; if that key is taken, converge on what holds it."""
        key = revision_key(entry.custom_id, revision)
        period = self._period_for(tenant_id, entry.transaction_date)
        if period["is_closed"]:
            raise self._closed(tenant_id, period, f"{key} cannot be posted")
        body = entry_body(entry, key, period["period_id"])
        try:
            data, replayed = self._request(tenant_id, "POST", "/journal-entries", body,
                                           key=_key(key, entry.content_hash, "create", period["period_id"]))
        except SinkError as err:
            if err.kind == "duplicate":
                return self._taken(tenant_id, entry, revision, extra, err)
            if _period_refused(err) and not retried:  # closed or gone since the cache was read
                self._periods(tenant_id, refresh=True)
                return self._create_revision(tenant_id, entry, revision, extra, retried=True)
            raise
        e = self._check(tenant_id, data, key, "creating")
        self._learn(tenant_id, e, key)
        if replayed:  # the key's first request created it; since then it may be deleted, reversed or voided
            fresh = self._get(tenant_id, str(e["journal_entry_id"]))
            if fresh is None:
                data, _ = self._request(tenant_id, "POST", "/journal-entries", body,
                                        key=_key(key, entry.content_hash, "create", e["journal_entry_id"]))
                fresh = self._check(tenant_id, data, key, "creating")
            elif fresh["status"] == "Voided" or fresh.get("reversed_by"):
                return self._taken(tenant_id, entry, revision, extra, None)
            e = self._check(tenant_id, fresh, key, "re-reading")
        if e["status"] == "Draft":
            e = self._submit(tenant_id, e, entry.content_hash)
        return self._remote(tenant_id, e, entry.custom_id, extra)

    def _taken(self, tenant_id: str, entry: CanonicalEntry, revision: int, extra: dict,
               err: SinkError | None) -> RemoteEntry:
        """Our key for `revision` is already used: converge on the live revision, or create the next one."""
        e, rev, extra = self._chain(tenant_id, entry.custom_id, {**extra, "revision": revision})
        if e is None and rev == revision:
            raise err or SinkError("uncertain", f"tenant {tenant_id}: Aden: {revision_key(entry.custom_id, revision)}"
                                                " is taken but cannot be read back; look it up again")
        return self._converge(tenant_id, entry, e, rev, extra)

    def _converge(self, tenant_id: str, entry: CanonicalEntry, e: dict | None, revision: int, extra: dict,
                  retried: bool = False) -> RemoteEntry:
        """Make Aden hold `entry` as the live revision, whatever state the current one is in."""
        if e is None:
            return self._create_revision(tenant_id, entry, revision, extra)
        same = parse_remote(e, entry.custom_id).matches(entry)
        status, h, key = e["status"], entry.content_hash, key_of(e)
        if status == "Posted":
            return (self._remote(tenant_id, e, entry.custom_id, extra) if same
                    else self._repost(tenant_id, entry, e, revision, extra))
        if status in (*SUBMITTED, "Rejected"):
            if same:
                return self._remote(tenant_id, e, entry.custom_id, extra)
            e = self._action(tenant_id, e, "request-change", _key(key, h, "request-change", _version(e)),
                             {"reason": OUR_CHANGE})
            if e["status"] != "Draft":  # moved meanwhile (approved and posted, ...): decide again
                return self._converge(tenant_id, entry, e, revision, extra, retried)
            status = "Draft"
        if status == "Draft":
            ours = not e.get("submitted_at") or not e.get("change_requested") or e.get("status_reason") == OUR_CHANGE
            if not same:
                body: dict = {"memo": entry.memo, "lines": _lines(entry)}  # update page: memo + the full lines
                if entry.exchange_rate is not None:  # a new rate alone is a change (the create body's fields)
                    body.update(currency=entry.currency, exchange_rate=entry.exchange_rate)
                if e["tran_date"] != entry.transaction_date.isoformat():
                    period = self._period_for(tenant_id, entry.transaction_date)
                    body.update(tran_date=entry.transaction_date.isoformat(), posting_period_id=period["period_id"])
                try:
                    data, _ = self._request(tenant_id, "PUT", api_path("journal-entries", e["journal_entry_id"]), body,
                                            key=_key(key, h, "update", _version(e)))
                except SinkError as err:
                    if err.status == 409 and not retried:  # the entry moved on in Aden meanwhile: re-read, retry
                        fresh = self._get(tenant_id, str(e["journal_entry_id"]))
                        fresh = None if fresh is None else self._check(tenant_id, fresh, key, "re-reading")
                        return self._converge(tenant_id, entry, fresh, revision, extra, retried=True)
                    raise
                e = self._check(tenant_id, data, key, "updating")
            if ours or not same:
                e = self._submit(tenant_id, e, h)
            return self._remote(tenant_id, e, entry.custom_id, extra)
        raise SinkError("rejected", f"tenant {tenant_id}: Aden holds {key} in status {status}: cannot converge")

    def _reversal_date(self, tenant_id: str, e: dict) -> tuple[dt.date, dict]:
        """The original's date when its period is open, else the first day of the first open period after it."""
        date = dt.date.fromisoformat(e["tran_date"])
        for refresh in (False, True):
            for p in sorted(self._periods(tenant_id, refresh), key=lambda p: p["start_date"]):
                if not p["is_closed"] and not p.get("is_adjustment_period") and p["end_date"] >= date.isoformat():
                    return max(dt.date.fromisoformat(p["start_date"]), date), p
            if self.cache.fresh(tenant_id):
                break
        raise SinkError("locked", f"tenant {tenant_id}: Aden has no open accounting period on or after {date} to "
                                  f"reverse {key_of(e)} in: ask the tenant's accountant to open one")

    def _reverse(self, tenant_id: str, e: dict, extra: dict, retried: bool = False) -> None:
        """POST .../reverse (a Draft reversing entry, reverse page), then submit it like any entry."""
        date, _ = self._reversal_date(tenant_id, e)
        jeid, key = str(e["journal_entry_id"]), key_of(e)
        body = {"reversal_date": date.isoformat(), "memo": f"Reversal of {key} ({e.get('memo')})"}
        try:
            r = self._action(tenant_id, e, "reverse", _key(key, jeid, "reverse", date), body)
        except SinkError as err:
            if _period_refused(err) and not retried:
                self._periods(tenant_id, refresh=True)
                return self._reverse(tenant_id, e, extra, retried=True)
            raise
        if str(r.get("journal_entry_id")) == jeid:  # already reversed (409 re-read): find its reversal
            reversal_id = r.get("reversed_by")
            r = self._get(tenant_id, str(reversal_id)) if reversal_id else None
        elif r.get("original_entry_id") not in (None, jeid):
            raise AdenKeyMismatch(tenant_id, jeid, str(r.get("original_entry_id")), "reversing")
        if r is not None and r.get("status") == "Draft":
            self._action(tenant_id, r, "submit-for-approval", _key(key_of(r), "reversal", "submit", _version(r)))
        extra["reversed"] = [*extra.get("reversed", []), jeid]
        if r is not None:
            extra["reversals"] = [*extra.get("reversals", []), str(r["journal_entry_id"])]
        return None

    def _repost(self, tenant_id: str, entry: CanonicalEntry, e: dict, revision: int, extra: dict) -> RemoteEntry:
        """Posted is immutable: check the new content can be posted, reverse the old, post the next revision."""
        self._periods(tenant_id, refresh=True)  # rare, and a reversal must never be stranded by a stale cache
        period = self._period_for(tenant_id, entry.transaction_date)
        if period["is_closed"]:
            raise self._closed(tenant_id, period, f"the posted entry {key_of(e)} cannot be corrected")
        self._reverse(tenant_id, e, extra)
        return self._create_revision(tenant_id, entry, revision + 1, extra)

    # -- LedgerSink -----------------------------------------------------------------------------------------
    def find(self, tenant_id: str, custom_id: str, hint: dict | None = None) -> RemoteEntry | None:
        e, _, extra = self._chain(tenant_id, custom_id, hint)
        if e is None:
            return None
        if e["status"] == "Draft" and (not e.get("submitted_at") or e.get("status_reason") == OUR_CHANGE):
            e = self._submit(tenant_id, e, "find")  # an interrupted create/update of ours: finish it
        return self._remote(tenant_id, e, custom_id, extra)

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        """Live entries dated in [start, end): ours (read whole, custom_id restored) and others' (no lines).
        The date window is re-applied here; an entry carrying our prefix but not this tenant's key is foreign."""
        rows = self._call(lambda: self.client.pages(tenant_id, "/journal-entries", {
            "start_date": start.isoformat(), "end_date": (end - dt.timedelta(days=1)).isoformat()}))
        ours: dict[str, str] = {}
        for month in clock.months_between(start, end - dt.timedelta(days=1)):
            cid = custom_id_for(tenant_id, month)
            ours[aden_key(cid)] = cid
        out = []
        for row in rows:
            try:
                date = dt.date.fromisoformat(str(row.get("tran_date")))
            except ValueError:
                continue
            if not start <= date < end or row.get("status") == "Voided" or row.get("reversed_by"):
                continue
            if row.get("original_entry_id") or row.get("entry_type") == "Reversing":
                continue
            key = key_of(row)
            base, _ = split_key(key)
            if base in ours:
                e = self._get(tenant_id, str(row["journal_entry_id"]))
                if e is None or key_of(e) != key:
                    continue  # listed but not this company's, or not the entry listed: never adopted
                out.append(parse_remote(e, ours[base]))
            elif not base.startswith(CUSTOM_ID_PREFIX):  # someone else's entry in this company (no lines read)
                out.append(parse_remote(row, key))
        return out

    def create(self, tenant_id: str, entries: list[CanonicalEntry]) -> list[CreateResult]:
        results = []
        for entry in entries:
            try:
                remote = self._create_revision(tenant_id, entry, 1, {})
            except SinkError as err:
                if err.kind in ("rejected", "locked", "account", "not_found"):
                    results.append(CreateResult(entry.custom_id, error=err))
                    continue
                raise
            results.append(CreateResult(entry.custom_id, remote=remote))
        return results

    def update(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        e, revision, extra = self._chain(tenant_id, entry.custom_id, remote.extra)
        return self._converge(tenant_id, entry, e, revision, extra)

    def delete(self, tenant_id: str, remote: RemoteEntry | str | int) -> None:
        """Draft -> DELETE; Posted -> reversed; submitted or rejected -> voided. `remote` may be a bare id."""
        if isinstance(remote, RemoteEntry) and remote.custom_id:
            e, _, extra = self._chain(tenant_id, remote.custom_id, remote.extra)
        else:
            e = self._get(tenant_id, str(remote.remote_id if isinstance(remote, RemoteEntry) else remote))
            extra = {}
            if e is not None and (e["status"] == "Voided" or e.get("reversed_by")):
                return
        if e is None:
            return
        key = key_of(e)
        if e["status"] == "Draft":
            self._request(tenant_id, "DELETE", api_path("journal-entries", e["journal_entry_id"]),
                          key=_key(key, "delete", _version(e)))
        elif e["status"] == "Posted":
            self._reverse(tenant_id, e, extra)
        else:
            self._action(tenant_id, e, "void", _key(key, "void", _version(e)),
                         {"void_reason": "ledger_pipeline: the month no longer has an entry in R2a"})
