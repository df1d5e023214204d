"""Aden as a LedgerSink: an entry is a Draft submitted for approval; its workflow status is the RemoteEntry state.

Exactly once on Aden:
- Our custom_id is the client-chosen, unique `entry_id`. A create is `POST /journal-entries` (Draft) plus
  `submit-for-approval`, each with an `X-Idempotency-Key` derived from the entry_id, our content hash, the action and
  (for workflow actions) the version (`updated_at`) of the entry acted on, so a retry of the same step replays and a
  new step gets a new key. A create that finds our entry_id taken converges on what is there instead of failing.
- Posted entries are immutable: a change reverses the posted entry (dated in its own period when open, else the first
  open period) and posts the new content as the next revision, entry_id `<custom_id>~r<n>`. `extra` carries
  {"revision", "entry_id", "reversed", "reversals"}; `find(custom_id, hint)` walks the revisions from the hinted one.
- Below the company's approval threshold Aden auto-posts ("posted"); above it the entry waits for a person
  ("awaiting_approval", never a failure); a rejection is "rejected" with the approver's reason.
- `find` completes what an interrupted create or update left half-done (a Draft we created and never submitted, or
  one we sent back ourselves): it submits it, so an entry never stalls in Draft.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from ledger_pipeline.ledger.sink import CanonicalEntry, CreateResult, RemoteEntry, SinkError
from ledger_pipeline.money import from_minor, to_minor
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.aden.client import AdenClient, AdenError

T = TypeVar("T")
OUR_CHANGE = "ledger_pipeline: the content changed in R2a; resubmitting"  # our own request-change reason
_REVISION = re.compile(r"^(?P<base>.+)~r(?P<n>\d+)$")
SUBMITTED = ("Pending Approval", "On Hold", "Approved")


def revision_id(custom_id: str, revision: int) -> str:
    """Our entry_id for a revision: the custom_id itself, then `<custom_id>~r2`, `~r3`, ..."""
    return custom_id if revision <= 1 else f"{custom_id}~r{revision}"


def split_revision(entry_id: str) -> tuple[str, int]:
    m = _REVISION.match(entry_id or "")
    return (m["base"], int(m["n"])) if m else (entry_id, 1)


def _key(*parts: Any) -> str:
    return "r2a-" + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:40]


def _minor(value: object) -> int:
    return to_minor(value if isinstance(value, Decimal | int) else str(value))


def workflow_state(data: dict) -> tuple[str, str]:
    """Aden's status -> (RemoteEntry.state, state_detail)."""
    status, since = data["status"], data.get("status_changed_at") or ""
    reason = data.get("status_reason")
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


def parse_remote(data: dict, extra: dict | None = None) -> RemoteEntry:
    """An Aden journal entry -> RemoteEntry (exact amounts, custom_id without the revision suffix)."""
    base, revision = split_revision(data["entry_id"])
    state, detail = workflow_state(data)
    lines = tuple((str(ln["line_id"]), str(ln["account_id"]), _minor(ln.get("debit") or 0),
                   _minor(ln.get("credit") or 0)) for ln in data.get("lines", []))
    return RemoteEntry(
        remote_id=str(data["journal_entry_id"]), custom_id=base,
        transaction_date=dt.date.fromisoformat(data["tran_date"]), memo=data.get("memo"),
        total_debit_minor=_minor(data.get("total_debit") or 0),
        total_credit_minor=_minor(data.get("total_credit") or 0),
        lines=lines, state=state, state_detail=detail,  # type: ignore[arg-type]
        extra={"revision": revision, "entry_id": data["entry_id"], "status": data["status"], **(extra or {})},
    )


def entry_body(entry: CanonicalEntry, entry_id: str, period_id: str) -> dict:
    return {
        "entry_id": entry_id, "tran_date": entry.transaction_date.isoformat(), "memo": entry.memo,
        "entry_type": "Standard", "posting_period_id": period_id, "currency": entry.currency,
        "lines": [{"line_number": ln.line_no, "account_id": ln.account_id, "debit": from_minor(ln.debit_minor),
                   "credit": from_minor(ln.credit_minor), "memo": ln.description} for ln in entry.lines],
    }


def classify(err: AdenError | NeedsReauth) -> SinkError:
    if isinstance(err, NeedsReauth):
        return SinkError("needs_reauth", str(err))
    if err.kind != "rejected":
        return SinkError(err.kind, err.message, err.status)
    text, code, field = err.text, err.code, err.field
    if code == "DUPLICATE_ENTRY":
        return SinkError("duplicate", f"Aden already holds this entry_id ({text})", err.status)
    if err.status == 404:
        return SinkError("not_found", text, err.status)
    if code == "VALIDATION_ERROR" and field == "posting_period_id" and "closed" in text:
        return SinkError("locked", f"Aden refused: the posting period is closed ({text}). Ask the tenant's "
                                   "accountant to reopen the period in Aden, then re-run this month. Nothing was "
                                   "changed in Aden.", err.status, {"field": field})
    if code == "VALIDATION_ERROR" and field == "tran_date" and "outside" in text:
        return SinkError("rejected", f"Aden refused the period check: {text}", err.status, {"field": field})
    if code == "VALIDATION_ERROR" and "account" in field:
        return SinkError("account", f"Aden refused an account ({text}): it is missing or inactive in the tenant's "
                                    "chart", err.status, {"field": field})
    return SinkError("rejected", f"Aden refused ({err.status}): {text}", err.status, {"code": code, "field": field})


class AdenSink:
    name = "aden"
    max_batch = 1  # Aden has no batch endpoint

    def __init__(self, client: AdenClient):
        self.client = client
        self._periods: dict[str, list[dict]] = {}

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
        try:
            data, _ = self._request(tenant_id, "GET", f"/journal-entries/{jeid}")
        except SinkError as err:
            if err.kind == "not_found":
                return None
            raise
        return data["data"]

    def _by_entry_id(self, tenant_id: str, entry_id: str) -> dict | None:
        data, _ = self._request(tenant_id, "GET", "/journal-entries", params={"entry_id": entry_id, "limit": 1})
        return data["data"][0] if data["data"] else None

    def _chain(self, tenant_id: str, custom_id: str, hint: dict | None) -> tuple[dict | None, int, dict]:
        """(the live revision or None, its revision number or the next free one, extra) from the hinted revision."""
        hint = hint or {}
        revision = max(1, int(hint.get("revision") or 1))
        extra = {"reversed": list(hint.get("reversed") or []), "reversals": list(hint.get("reversals") or [])}
        while True:
            e = self._by_entry_id(tenant_id, revision_id(custom_id, revision))
            if e is None:
                return None, revision, extra
            if e["status"] != "Voided" and not e.get("reversed_by"):
                return e, revision, extra
            if e.get("reversed_by"):
                for k, v in (("reversed", e["journal_entry_id"]), ("reversals", e["reversed_by"])):
                    if v not in extra[k]:
                        extra[k].append(v)
            revision += 1

    def _periods_of(self, tenant_id: str, fresh: bool = False) -> list[dict]:
        if fresh or tenant_id not in self._periods:
            self._periods[tenant_id] = self._call(lambda: self.client.pages(tenant_id, "/posting-periods"))
        return self._periods[tenant_id]

    def _period_for(self, tenant_id: str, date: dt.date, fresh: bool = False) -> dict:
        for p in self._periods_of(tenant_id, fresh):
            if p["start_date"] <= date.isoformat() <= p["end_date"]:
                return p
        raise SinkError("rejected", f"Aden has no posting period for {date} (period check): ask the tenant's "
                                    "accountant to create it")

    def _action(self, tenant_id: str, e: dict, action: str, key: str, body: dict | None = None) -> dict:
        """A workflow action; a replayed answer or a status that moved meanwhile is re-read, never trusted."""
        try:
            data, replayed = self._request(tenant_id, "POST", f"/journal-entries/{e['journal_entry_id']}/{action}",
                                           body or {}, key=key)
        except SinkError as err:
            if err.status == 409 and (err.detail or {}).get("code") == "INVALID_STATUS":
                fresh = self._get(tenant_id, e["journal_entry_id"])
                if fresh is not None:
                    return fresh
            raise
        if replayed and action != "reverse":
            return self._get(tenant_id, e["journal_entry_id"]) or data["data"]
        return data["data"]

    # -- steps ----------------------------------------------------------------------------------------------
    def _submit(self, tenant_id: str, e: dict, content_hash: str) -> dict:
        return self._action(tenant_id, e, "submit-for-approval",
                            _key(e["entry_id"], content_hash, "submit", e["updated_at"]))

    def _create_revision(self, tenant_id: str, entry: CanonicalEntry, revision: int, extra: dict) -> RemoteEntry:
        """POST the Draft as `revision` and submit it; if that entry_id is taken, converge on what holds it."""
        entry_id = revision_id(entry.custom_id, revision)
        body = entry_body(entry, entry_id, self._period_for(tenant_id, entry.transaction_date)["posting_period_id"])
        key = _key(entry_id, entry.content_hash, "create")
        try:
            data, replayed = self._request(tenant_id, "POST", "/journal-entries", body, key=key)
        except SinkError as err:
            if err.kind != "duplicate":
                raise
            return self._taken(tenant_id, entry, revision, extra, err)
        e = data["data"]
        if replayed:  # the key's first request created it; since then it may be deleted, reversed or voided
            fresh = self._get(tenant_id, e["journal_entry_id"])
            if fresh is None:
                data, _ = self._request(tenant_id, "POST", "/journal-entries", body,
                                        key=_key(entry_id, entry.content_hash, "create", e["journal_entry_id"]))
                fresh = data["data"]
            elif fresh["status"] == "Voided" or fresh.get("reversed_by"):
                return self._taken(tenant_id, entry, revision, extra, None)
            e = fresh
        if e["status"] == "Draft":
            e = self._submit(tenant_id, e, entry.content_hash)
        return parse_remote(e, extra)

    def _taken(self, tenant_id: str, entry: CanonicalEntry, revision: int, extra: dict,
               err: SinkError | None) -> RemoteEntry:
        """Our entry_id for `revision` is already used: converge on the live revision, or create the next one."""
        e, rev, extra = self._chain(tenant_id, entry.custom_id, {**extra, "revision": revision})
        if e is None and rev == revision:
            raise err or SinkError("uncertain", f"Aden: {revision_id(entry.custom_id, revision)} is taken but "
                                                "cannot be read back; look it up again")
        return self._converge(tenant_id, entry, e, rev, extra)

    def _converge(self, tenant_id: str, entry: CanonicalEntry, e: dict | None, revision: int,
                  extra: dict) -> RemoteEntry:
        """Make Aden hold `entry` as the live revision, whatever state the current one is in."""
        if e is None:
            return self._create_revision(tenant_id, entry, revision, extra)
        same = parse_remote(e).matches(entry)
        status, h = e["status"], entry.content_hash
        if status == "Posted":
            return parse_remote(e, extra) if same else self._repost(tenant_id, entry, e, revision, extra)
        if status in (*SUBMITTED, "Rejected"):
            if same:
                return parse_remote(e, extra)
            e = self._action(tenant_id, e, "request-change", _key(e["entry_id"], h, "request-change",
                                                                   e["updated_at"]), {"reason": OUR_CHANGE})
            if e["status"] != "Draft":  # moved meanwhile (approved and posted, ...): decide again
                return self._converge(tenant_id, entry, e, revision, extra)
            status = "Draft"
        if status == "Draft":
            ours = not e.get("submitted_at") or not e.get("change_requested") or e.get("status_reason") == OUR_CHANGE
            if not same:
                body = entry_body(entry, e["entry_id"],
                                  self._period_for(tenant_id, entry.transaction_date)["posting_period_id"])
                data, _ = self._request(tenant_id, "PUT", f"/journal-entries/{e['journal_entry_id']}", body,
                                        key=_key(e["entry_id"], h, "update", e["updated_at"]))
                e = data["data"]
            if ours or not same:
                e = self._submit(tenant_id, e, h)
            return parse_remote(e, extra)
        raise SinkError("rejected", f"Aden holds {e['entry_id']} in status {status}: cannot converge")

    def _reversal_date(self, tenant_id: str, e: dict) -> tuple[dt.date, dict]:
        """The original's date when its period is open, else the first day of the first open period after it."""
        date = dt.date.fromisoformat(e["tran_date"])
        for p in self._periods_of(tenant_id, fresh=True):
            if p["status"] == "Open" and p["end_date"] >= date.isoformat():
                start = dt.date.fromisoformat(p["start_date"])
                return max(start, date), p
        raise SinkError("locked", f"Aden has no open posting period on or after {date} to reverse "
                                  f"{e['entry_id']} in: ask the tenant's accountant to open one")

    def _reverse(self, tenant_id: str, e: dict, extra: dict) -> None:
        date, period = self._reversal_date(tenant_id, e)
        body = {"reversal_date": date.isoformat(), "posting_period_id": period["posting_period_id"],
                "entry_id": f"{e['entry_id']}~reversal", "memo": f"Reversal of {e['entry_id']} ({e['memo']})"}
        r = self._action(tenant_id, e, "reverse", _key(e["entry_id"], e["journal_entry_id"], "reverse"), body)
        reversal_id = r.get("journal_entry_id") if r.get("reversal_of") else r.get("reversed_by")
        extra["reversed"] = [*extra.get("reversed", []), e["journal_entry_id"]]
        if reversal_id:
            extra["reversals"] = [*extra.get("reversals", []), reversal_id]

    def _repost(self, tenant_id: str, entry: CanonicalEntry, e: dict, revision: int, extra: dict) -> RemoteEntry:
        """Posted is immutable: check the new content can be posted, reverse the old, post the next revision."""
        period = self._period_for(tenant_id, entry.transaction_date, fresh=True)
        if period["status"] != "Open":
            raise SinkError("locked", f"Aden's posting period {period['period_name']} is closed: the posted entry "
                                      f"{e['entry_id']} cannot be corrected (nothing was changed). Ask the tenant's "
                                      "accountant to reopen it, then re-run this month.")
        self._reverse(tenant_id, e, extra)
        return self._create_revision(tenant_id, entry, revision + 1, extra)

    # -- LedgerSink -----------------------------------------------------------------------------------------
    def find(self, tenant_id: str, custom_id: str, hint: dict | None = None) -> RemoteEntry | None:
        e, _, extra = self._chain(tenant_id, custom_id, hint)
        if e is None:
            return None
        if e["status"] == "Draft" and (not e.get("submitted_at") or e.get("status_reason") == OUR_CHANGE):
            # an interrupted create/update of ours: finish it (idempotent by the entry's version)
            e = self._action(tenant_id, e, "submit-for-approval", _key(e["entry_id"], "find", "submit",
                                                                        e["updated_at"]))
        return parse_remote(e, extra)

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        last = end - dt.timedelta(days=1)
        rows = self._call(lambda: self.client.pages(tenant_id, "/journal-entries", {
            "from_date": start.isoformat(), "to_date": last.isoformat()}))
        return [parse_remote(e) for e in rows
                if e["status"] != "Voided" and not e.get("reversed_by") and not e.get("reversal_of")]

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
            custom_id, hint = split_revision(remote.custom_id)[0], remote.extra
        else:
            found = self._get(tenant_id, str(remote.remote_id if isinstance(remote, RemoteEntry) else remote))
            if found is None:
                return
            custom_id, hint = split_revision(found["entry_id"])[0], {}
        e, _, extra = self._chain(tenant_id, custom_id, hint)
        if e is None:
            return
        if e["status"] == "Draft":
            self._request(tenant_id, "DELETE", f"/journal-entries/{e['journal_entry_id']}",
                          key=_key(e["entry_id"], "delete", e["updated_at"]))
        elif e["status"] == "Posted":
            self._reverse(tenant_id, e, extra)
        else:
            self._action(tenant_id, e, "void", _key(e["entry_id"], "void", e["updated_at"]),
                         {"reason": "ledger_pipeline: the month no longer has an entry in R2a"})
