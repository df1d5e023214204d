"""The posting engine: one tenant's window against its system's LedgerSink, in rounds (look up, create, update,
delete), intent recorded before every write and every uncertain outcome resolved by a look-up before writing again.

Every update re-reads the entry first when the posting state knows what we left there, so a person's edit is never
overwritten unseen, and the update goes against the entry's current lines (and SyncToken, revision).
Works against any LedgerSink; the state lives in a PostingStore (the operational database's `postings`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ledger_pipeline.ledger.sink import CanonicalEntry, ErrorKind, LedgerSink, RemoteEntry, SinkError
from ledger_pipeline.money import format_amount
from ledger_pipeline.posting.plan import Action, PlanItem, PostingRow, PostingStore, Status, plan_tenant
from ledger_pipeline.reconcile import (
    DEFAULT_POLICY,
    FINGERPRINT_KEY,
    Policy,
    RemoteChange,
    classify,
    expected_fingerprint,
    posted_fingerprint,
    remote_fingerprint,
    sink_hint,
)

TRANSIENT: tuple[ErrorKind, ...] = ("uncertain", "retryable")


@dataclass
class TenantOutcome:
    tenant_id: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (custom_id, error, kind)
    changes: list[RemoteChange] = field(default_factory=list)  # changes made by people, seen by this run's reads

    def add(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def failed(self, kind: str) -> list[str]:
        """custom_ids that failed with this kind of error."""
        return [cid for cid, _, k in self.failures if k == kind]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass
class TenantRound:
    """One tenant's posting as it goes: its entries, its rows as they change, what the system holds, what is left.

    Every change of a row is saved (committed) before the engine moves on: intent before a write, outcome after."""

    system: str
    tenant_id: str
    entries: dict[str, CanonicalEntry]
    rows: dict[str, PostingRow]
    store: PostingStore
    outcome: TenantOutcome
    todo: dict[str, Action] = field(default_factory=dict)
    remotes: dict[str, RemoteEntry | None] = field(default_factory=dict)
    last_error: SinkError | None = None
    title: str = ""  # the system's name as people know it ("QuickBooks Online"), for messages
    known: dict[str, RemoteChange] = field(default_factory=dict)
    policy: Policy = DEFAULT_POLICY
    reread: set[str] = field(default_factory=set)  # an operator's repost: act whatever the policy says

    def save(self, *changed: PostingRow) -> None:
        for r in changed:
            self.rows[r.custom_id] = r
        self.store.save(list(changed))

    def intent(self, cid: str, action: str) -> PostingRow:
        e, prev = self.entries.get(cid), self.rows.get(cid)
        base = prev or PostingRow(self.system, self.tenant_id, e.period, cid, None, "pending", action)
        return replace(base, status="pending", action=action, attempts=base.attempts + 1, error=None,
                       content_hash=e.content_hash if e else base.content_hash)

    def record_intent(self, *cids_actions: tuple[str, str]) -> None:
        self.save(*[self.intent(cid, action) for cid, action in cids_actions])

    def fail(self, cid: str, message: str, kind: str = "rejected", remote: RemoteEntry | None = None,
             keep_pending: bool = False) -> None:
        row = self.rows.get(cid) or self.intent(cid, self.todo.get(cid, "create"))
        status: Status = "pending" if keep_pending else "failed"
        self.save(replace(row, status=status, error=message,
                          remote_id=remote.remote_id if remote else row.remote_id,
                          remote_line_ids=tuple(remote.line_ids) if remote else row.remote_line_ids))
        self.outcome.failures.append((cid, message, kind))
        self.todo.pop(cid, None)

    def done(self, cid: str, remote: RemoteEntry, what: str) -> None:
        """The system answered with `remote` for our entry: verify it, then record what state it is in."""
        e, row = self.entries[cid], self.rows[cid]
        hint = dict(remote.extra) if remote.extra else sink_hint(row.remote_state)
        if remote.state in ("posted", "awaiting_approval") and remote.matches(e):
            hint[FINGERPRINT_KEY] = remote_fingerprint(remote)  # what we left there: a later read compares with it
        ids = {"remote_id": remote.remote_id or row.remote_id, "remote_line_ids": tuple(remote.line_ids),
               "remote_state": hint, "content_hash": e.content_hash}
        self.todo.pop(cid, None)
        if remote.state == "processing":
            self.save(replace(row, status="submitted", error=remote.state_detail or "still processing", **ids))
            self.outcome.add("submitted")
            return
        if remote.state == "rejected":
            message = f"rejected in {self.title or self.system}: {remote.state_detail or 'no reason given'}"
            self.save(replace(row, status="rejected", error=message, **ids))
            self.outcome.failures.append((cid, message, "rejected"))
            return
        if not remote.matches(e):
            theirs = remote.currency or e.currency
            if theirs != e.currency:
                why = (f"it booked the entry in {theirs}, we sent {e.currency}: check the company's currencies "
                       f"(multicurrency, {e.currency} added) and the tenant's currency in R2a")
            elif not remote.same_rate(e):
                why = (f"it booked the entry at the exchange rate {remote.rate}, we sent "
                       f"{e.exchange_rate if e.exchange_rate is not None else 1}: check the company's rate settings "
                       "(a rate it overrides) and the loaded rate (`ledger-pipeline rates list`)")
            else:
                why = ("it may have dropped a line it could not resolve. Check the accounts; the next run updates "
                       "the entry in place.")
            self.fail(cid, f"{self.title or self.system} answered OK but holds {len(remote.lines)} lines, debit "
                           f"{format_amount(remote.total_debit_minor, theirs)} {theirs} (we sent {len(e.lines)} "
                           f"lines, debit {format_amount(e.total_debit_minor, e.currency)} {e.currency}): {why}",
                      "mismatch", remote)
            return
        now = _now()
        if remote.state == "awaiting_approval":
            self.save(replace(row, status="awaiting_approval", error=remote.state_detail or "awaiting approval",
                              verified_at=now, **ids))
            self.outcome.add("awaiting_approval")
            return
        self.save(replace(row, status="posted", error=None, posted_at=row.posted_at if what == "refresh" and
                          row.posted_at else now, verified_at=now, **ids))
        self.outcome.add(what)

    def stub(self, cid: str) -> RemoteEntry:
        """The remote entry as the posting state knows it (ids and the sink's hint, no lines)."""
        row = self.rows[cid]
        e = self.entries.get(cid)
        return RemoteEntry(row.remote_id or "", cid, e.transaction_date if e else row.period, None, 0, 0,
                           tuple((i, "", 0, 0) for i in row.remote_line_ids), extra=sink_hint(row.remote_state))

    def give_up(self, message: str, kind: str) -> None:
        """Stop the tenant for this run: nothing more was sent for what is left (reauth, quota)."""
        for cid in list(self.todo):
            row = self.rows.get(cid)
            if row is None:
                self.outcome.failures.append((cid, message, kind))
                continue
            status: Status = "pending" if row.status == "pending" else "failed"
            self.save(replace(row, status=status, error=message))
            self.outcome.failures.append((cid, message, kind))
        self.todo.clear()


class PostingEngine:
    def __init__(self, sink: LedgerSink, store: PostingStore, max_rounds: int = 6, backoff: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep, title: str | None = None):
        self.sink, self.store = sink, store
        self.max_rounds, self.backoff, self.sleep = max_rounds, backoff, sleep
        self.title = title or sink.name  # the system's name in messages ("QuickBooks Online")

    def post_tenant(self, tenant_id: str, entries: list[CanonicalEntry], state: dict[str, PostingRow],
                    window: tuple[dt.date, dt.date], held_periods: set[dt.date] = frozenset(),
                    known: dict[str, RemoteChange] | None = None, policy: Policy = DEFAULT_POLICY,
                    reread: set[str] = frozenset()) -> TenantOutcome:
        """Post one tenant's window; `known`, `policy`, `reread` as in `plan_tenant`. Remote changes seen by this
        run's reads are in the outcome's `changes` (the caller records them)."""
        r = TenantRound(self.sink.name, tenant_id, {e.custom_id: e for e in entries}, dict(state), self.store,
                        TenantOutcome(tenant_id), title=self.title, known=dict(known or {}), policy=policy,
                        reread=set(reread))
        for item in plan_tenant(tenant_id, entries, state, held_periods, r.known, policy, r.reread, self.title):
            if item.action in ("skip", "hold"):
                r.outcome.add(item.action)
                self._held_again(r, item)
            else:
                r.todo[item.custom_id] = item.action
        for round_no in range(self.max_rounds):
            if not r.todo:
                break
            if round_no:
                self.sleep(self.backoff * 2 ** (round_no - 1))
            try:
                self._look_up(r, window)
                self._create(r)
                self._update(r)
                self._delete(r)
            except SinkError as err:
                r.last_error = err
                if err.kind == "needs_reauth":
                    r.give_up(err.message, err.kind)
                elif err.kind == "deferred":
                    r.give_up(f"deferred to the next run: {err.message}", err.kind)
                elif err.kind not in TRANSIENT:
                    raise
                # transient: the failing call marked its entries for a look-up; the next round does it
        for cid, action in list(r.todo.items()):
            if cid not in r.rows:
                r.record_intent((cid, action))
            unknown = action == "recover" or r.rows[cid].status == "pending" and (
                r.last_error is None or r.last_error.kind == "uncertain")
            last = r.last_error.message if r.last_error else (
                f"{self.title} answered every request but the entry did not settle")
            r.fail(cid, f"{action}: {last}; still failing after {self.max_rounds} rounds: " + (
                "the outcome is unknown, the entry stays pending and the next run looks it up before writing"
                if unknown else "nothing was sent, the next run tries again"),
                "uncertain" if unknown else "retryable", keep_pending=unknown)
        return r.outcome

    # -- steps ---------------------------------------------------------------------------------------------
    def _find_one(self, r: TenantRound, cid: str, hint: dict | None = None) -> None:
        """Look one entry up; an answer that is final for this entry alone (the entry found is not ours, refused,
        locked) fails that entry with the system's words and leaves the tenant's other entries going. Transient and
        tenant-wide kinds (needs_reauth, deferred) propagate to the round."""
        try:
            r.remotes[cid] = self.sink.find(r.tenant_id, cid, hint) if hint else self.sink.find(r.tenant_id, cid)
        except SinkError as err:
            if err.kind in (*TRANSIENT, "needs_reauth", "deferred"):
                raise
            r.remotes[cid] = None
            r.fail(cid, err.message, err.kind)

    def _look_up(self, r: TenantRound, window: tuple[dt.date, dt.date]) -> None:
        """Resolve pending and waiting entries from what the system holds (reads only); re-read an entry before
        updating it when the posting state knows what we left there (a person may have changed it since)."""
        wanted = [cid for cid, a in r.todo.items() if a in ("recover", "refresh") or (
            a == "update" and cid not in r.remotes and cid in r.rows
            and posted_fingerprint(r.rows[cid].remote_state) is not None)]
        if not wanted:
            return
        hinted = [cid for cid in wanted if cid in r.rows and sink_hint(r.rows[cid].remote_state)]
        plain = [cid for cid in wanted if cid not in hinted]
        if len(plain) > 1:  # one listing instead of one look-up per entry
            found = {x.custom_id: x for x in self.sink.list_period(r.tenant_id, *window) if x.custom_id}
            for cid in plain:
                r.remotes[cid] = found.get(cid)
                if r.remotes[cid] is None and (getattr(self.sink, "async_writes", False) or self._seen(r, cid)):
                    # still queued in an upload job, or moved out of the window by a person: look it up by our id
                    r.remotes[cid] = self.sink.find(r.tenant_id, cid)
        elif plain:
            self._find_one(r, plain[0])
        for cid in hinted:
            self._find_one(r, cid, sink_hint(r.rows[cid].remote_state))
        for cid in wanted:
            if cid not in r.todo:  # refused for this entry alone (e.g. the key found is not ours): failed above
                continue
            remote, e = r.remotes[cid], r.entries.get(cid)
            if e is None:  # a delete was in flight
                if remote is None:
                    r.save(replace(r.rows[cid], status="deleted", error=None))
                    r.outcome.add("delete")
                    r.todo.pop(cid)
                else:
                    r.todo[cid] = "delete"
                continue
            if remote is not None and (remote.state in ("processing", "rejected") or remote.matches(e)):
                r.done(cid, remote, "refresh" if r.todo[cid] == "refresh" else "adopted")
                continue
            row = r.rows.get(cid)
            _, change = classify(e, remote, expected_fingerprint(row, e), self._seen(r, cid), r.system, r.title,
                                 accepted=r.known.get(cid), found_by="repost" if cid in r.reread else "close",
                                 now=_now())
            if change is not None and r.policy.holds(change.kind) and cid not in r.reread:
                r.outcome.changes.append(replace(change, action="held"))
                r.outcome.add("hold")
                r.todo.pop(cid)
                continue
            if change is not None:
                r.outcome.changes.append(replace(change, action="recreated" if change.kind == "deleted"
                                                 else "overwritten"))
            r.todo[cid] = "create" if remote is None else "update"

    @staticmethod
    def _held_again(r: TenantRound, item: PlanItem) -> None:
        """An accepted remote version held because our ledger changed since: open again, for a new decision."""
        known, e = r.known.get(item.custom_id), r.entries.get(item.custom_id)
        if item.action == "hold" and known is not None and known.status == "accepted" and e is not None:
            r.outcome.changes.append(replace(
                known, status="open", action="held", found_by="close", found_at=_now(), content_hash=e.content_hash,
                diff=f"{known.diff} (our ledger changed since {r.title}'s version was accepted)"))

    @staticmethod
    def _seen(r: TenantRound, cid: str) -> bool:
        """The posting state saw this entry in the system (a verified answer): its absence is a deletion."""
        row = r.rows.get(cid)
        return row is not None and bool(row.remote_id) and row.status not in ("deleted", "submitted") and (
            row.verified_at is not None or posted_fingerprint(row.remote_state) is not None) and not (
            row.status == "pending" and row.action == "create")

    def _create(self, r: TenantRound) -> None:
        creates = [r.entries[cid] for cid, a in r.todo.items() if a == "create"]
        for lo in range(0, len(creates), self.sink.max_batch):
            chunk = creates[lo: lo + self.sink.max_batch]
            r.record_intent(*[(e.custom_id, "create") for e in chunk])
            try:
                results = self.sink.create(r.tenant_id, chunk)
            except SinkError as err:
                if err.kind == "retryable":  # nothing reached the system
                    r.save(*[replace(r.rows[e.custom_id], status="failed", error=err.message) for e in chunk])
                # the whole call was refused (not_found included): nothing was created
                self._write_failed(r, [e.custom_id for e in chunk], "create", err)
                continue
            for res in results:
                if res.remote is not None:
                    r.done(res.custom_id, res.remote, "create")
                elif res.pending is not None:
                    r.done(res.custom_id, RemoteEntry("", res.custom_id, r.entries[res.custom_id].transaction_date,
                                                      None, 0, 0, (), state="processing",
                                                      state_detail="submitted, still processing",
                                                      extra=res.pending), "create")
                elif res.error.kind == "duplicate":  # already there: adopt it (or update it) after a look-up
                    r.todo[res.custom_id] = "recover"
                else:
                    r.fail(res.custom_id, res.error.message, res.error.kind)

    @staticmethod
    def _write_failed(r: TenantRound, cids: list[str], action: str, err: SinkError) -> None:
        """One rule for a failed create, update or delete of `cids`: a transient error ends the round and is raised
        (retried as `action`, or looked up first when its outcome is uncertain), so are needs_reauth and deferred;
        any other kind fails the entries, named with the system's message."""
        if err.kind in TRANSIENT:
            for cid in cids:
                r.todo[cid] = "recover" if err.kind == "uncertain" else action
            raise err
        if err.kind in ("needs_reauth", "deferred"):
            raise err
        for cid in cids:
            r.fail(cid, err.message, err.kind)

    def _update(self, r: TenantRound) -> None:
        for cid in [c for c, a in r.todo.items() if a == "update"]:
            remote = r.remotes.get(cid) or r.stub(cid)
            r.record_intent((cid, "update"))
            try:
                updated = self.sink.update(r.tenant_id, remote, r.entries[cid])
            except SinkError as err:
                if err.kind == "not_found":
                    r.todo[cid] = "recover"  # deleted or edited in the system meanwhile: look again
                else:
                    self._write_failed(r, [cid], "update", err)
                continue
            r.done(cid, updated, "update")

    def _delete(self, r: TenantRound) -> None:
        for cid in [c for c, a in r.todo.items() if a == "delete"]:
            remote = r.remotes.get(cid) or (r.stub(cid) if r.rows[cid].remote_id else None)
            if remote is None:
                r.todo[cid] = "recover"
                continue
            r.record_intent((cid, "delete"))
            try:
                self.sink.delete(r.tenant_id, remote)
            except SinkError as err:
                if err.kind != "not_found":  # not found: already gone, which is what we wanted
                    self._write_failed(r, [cid], "delete", err)
                    continue
            r.save(replace(r.rows[cid], status="deleted", error=None))
            r.outcome.add("delete")
            r.todo.pop(cid)
