"""Exactly-once posting: decide per entry from the posting state and the content hash, record intent before every
write, and resolve every uncertain outcome by looking the entry up before writing again.

- unchanged since the last successful post -> no request at all
- new -> create (several months of one tenant -> one batch call)
- changed -> update the remote entry in place
- gone from the ledger -> delete the remote entry (never when the month was rejected: that holds it as it is)
- pending (intent recorded, outcome unknown: timeout, dropped connection, 5xx, crash) -> look up by custom_id
  first, then adopt, update or create
Works against any LedgerSink; the state lives in a PostingStore (jurnal.postings).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from ledger_pipeline.ledger.sink import CanonicalEntry, LedgerSink, RemoteEntry, SinkError
from ledger_pipeline.money import format_amount

Action = Literal["skip", "create", "update", "recover", "delete", "hold"]
Status = Literal["pending", "posted", "failed", "deleted"]


@dataclass(frozen=True)
class PostingRow:
    tenant_id: str
    period: dt.date
    custom_id: str
    content_hash: str | None
    status: Status
    action: str
    remote_id: int | None = None
    remote_line_ids: tuple[int, ...] = ()
    attempts: int = 0
    error: str | None = None
    posted_at: dt.datetime | None = None


class PostingStore(Protocol):
    def save(self, rows: list[PostingRow]) -> None:
        """Durably upsert rows by custom_id (committed before returning)."""


@dataclass
class PlanItem:
    tenant_id: str
    period: dt.date
    custom_id: str
    action: Action
    reason: str


@dataclass
class TenantOutcome:
    tenant_id: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (custom_id, error)

    def add(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def plan_tenant(tenant_id: str, entries: list[CanonicalEntry], state: dict[str, PostingRow],
                held_periods: set[dt.date] = frozenset()) -> list[PlanItem]:
    """What to do for each of a tenant's entries and posting rows in the window (pure)."""
    items = []
    local = {e.custom_id: e for e in entries}
    for e in entries:
        row = state.get(e.custom_id)
        if row is None or row.status == "deleted":
            items.append(PlanItem(tenant_id, e.period, e.custom_id, "create", "new entry"))
        elif row.status == "pending":
            items.append(PlanItem(tenant_id, e.period, e.custom_id, "recover",
                                  f"last {row.action} had an unknown outcome: look it up first"))
        elif row.status == "posted" and row.content_hash == e.content_hash:
            items.append(PlanItem(tenant_id, e.period, e.custom_id, "skip", "unchanged since posted"))
        elif row.remote_id is not None:
            why = "changed since posted (late R2a rows)" if row.status == "posted" else f"retry after: {row.error}"
            items.append(PlanItem(tenant_id, e.period, e.custom_id, "update", why))
        else:
            items.append(PlanItem(tenant_id, e.period, e.custom_id, "create", f"retry after: {row.error}"))
    for cid, row in state.items():
        if cid in local or row.status == "deleted" or (row.status == "failed" and row.remote_id is None):
            continue
        if row.period in held_periods:
            items.append(PlanItem(tenant_id, row.period, cid, "hold",
                                  "month rejected upstream (see ledger.rejections): the remote entry is kept as is"))
        else:
            items.append(PlanItem(tenant_id, row.period, cid, "delete", "the month no longer has an entry"))
    return items


class PostingEngine:
    def __init__(self, sink: LedgerSink, store: PostingStore, max_rounds: int = 6, backoff: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep):
        self.sink, self.store = sink, store
        self.max_rounds, self.backoff, self.sleep = max_rounds, backoff, sleep

    def post_tenant(self, tenant_id: str, entries: list[CanonicalEntry], state: dict[str, PostingRow],
                    window: tuple[dt.date, dt.date], held_periods: set[dt.date] = frozenset()) -> TenantOutcome:
        out = TenantOutcome(tenant_id)
        local = {e.custom_id: e for e in entries}
        rows = dict(state)
        todo: dict[str, Action] = {}
        for item in plan_tenant(tenant_id, entries, state, held_periods):
            if item.action in ("skip", "hold"):
                out.add(item.action)
            else:
                todo[item.custom_id] = item.action
        remotes: dict[str, RemoteEntry | None] = {}

        def save(*changed: PostingRow) -> None:
            for r in changed:
                rows[r.custom_id] = r
            self.store.save(list(changed))

        def intent(cid: str, action: str) -> PostingRow:
            e, prev = local.get(cid), rows.get(cid)
            base = prev or PostingRow(tenant_id, e.period, cid, None, "pending", action)
            return replace(base, status="pending", action=action, attempts=base.attempts + 1, error=None,
                           content_hash=e.content_hash if e else base.content_hash)

        def fail(cid: str, message: str, remote: RemoteEntry | None = None, keep_pending: bool = False) -> None:
            row = rows[cid]
            save(replace(row, status="pending" if keep_pending else "failed", error=message,
                         remote_id=remote.remote_id if remote else row.remote_id,
                         remote_line_ids=tuple(remote.line_ids) if remote else row.remote_line_ids))
            out.failures.append((cid, message))
            todo.pop(cid, None)

        def done(cid: str, remote: RemoteEntry, what: str) -> None:
            e = local[cid]
            if not remote.matches(e):
                fail(cid, f"Jurnal answered OK but holds {len(remote.lines)} lines, debit "
                          f"{format_amount(remote.total_debit_minor)} (we sent {len(e.lines)} lines, debit "
                          f"{format_amount(e.total_debit_minor)}): Jurnal may have dropped a line it could not "
                          "resolve. Check the accounts; the next run updates the entry in place.", remote)
                return
            save(replace(rows[cid], status="posted", remote_id=remote.remote_id,
                         remote_line_ids=tuple(remote.line_ids), error=None, content_hash=e.content_hash,
                         posted_at=dt.datetime.now(dt.UTC).replace(tzinfo=None)))
            out.add(what)
            todo.pop(cid, None)

        def reauth(err: SinkError) -> None:
            for cid in list(todo):
                if cid not in rows:
                    save(intent(cid, todo[cid]))
                row = rows[cid]
                # nothing reached Jurnal for these; keep a known remote id for the next run
                save(replace(row, status="failed" if row.status != "pending" else "pending", error=err.message))
                out.failures.append((cid, err.message))
            todo.clear()

        for round_no in range(self.max_rounds):
            if not todo:
                break
            if round_no:
                self.sleep(self.backoff * 2 ** (round_no - 1))
            try:
                self._recover(tenant_id, todo, local, rows, remotes, window, done, save, out)
                self._creates(tenant_id, todo, local, rows, intent, save, done, fail)
                self._updates(tenant_id, todo, local, rows, remotes, intent, save, done, fail)
                self._deletes(tenant_id, todo, rows, remotes, intent, save, fail, out)
            except SinkError as err:
                if err.kind == "needs_reauth":
                    reauth(err)
                    break
                if err.kind not in ("uncertain", "retryable"):
                    raise
                # the failing call marked its entries for recovery; the next round looks them up
        for cid, action in list(todo.items()):
            message = (f"{action}: outcome still unknown after {self.max_rounds} rounds (Jurnal unreachable or "
                       "failing); the entry stays pending and the next run looks it up before writing")
            if cid not in rows:
                save(intent(cid, action))
            fail(cid, message, keep_pending=True)
        return out

    # -- steps ---------------------------------------------------------------------------------------------
    def _recover(self, tenant_id, todo, local, rows, remotes, window, done, save, out) -> None:  # noqa: ANN001
        pending = [cid for cid, a in todo.items() if a == "recover"]
        if not pending:
            return
        if len(pending) > 1:  # one listing instead of one GET per entry
            found = {r.custom_id: r for r in self.sink.list_period(tenant_id, *window) if r.custom_id}
            for cid in pending:
                remotes[cid] = found.get(cid)
        else:
            remotes[pending[0]] = self.sink.find(tenant_id, pending[0])
        for cid in pending:
            remote, e = remotes[cid], local.get(cid)
            if e is None:  # a delete was in flight
                if remote is None:
                    save(replace(rows[cid], status="deleted", error=None))
                    out.add("delete")
                    todo.pop(cid)
                else:
                    todo[cid] = "delete"
            elif remote is None:
                todo[cid] = "create"
            elif remote.matches(e):
                done(cid, remote, "adopted")
            else:
                todo[cid] = "update"

    def _creates(self, tenant_id, todo, local, rows, intent, save, done, fail) -> None:  # noqa: ANN001
        creates = [local[cid] for cid, a in todo.items() if a == "create"]
        for lo in range(0, len(creates), self.sink.max_batch):
            chunk = creates[lo : lo + self.sink.max_batch]
            save(*[intent(e.custom_id, "create") for e in chunk])
            try:
                results = self.sink.create(tenant_id, chunk)
            except SinkError as err:
                if err.kind in ("uncertain", "retryable"):
                    for e in chunk:
                        todo[e.custom_id] = "recover"
                raise
            for res in results:
                if res.remote is not None:
                    done(res.custom_id, res.remote, "create")
                elif res.error.kind == "duplicate":  # already there: adopt it (or update it) after a look-up
                    todo[res.custom_id] = "recover"
                else:
                    fail(res.custom_id, res.error.message)

    def _updates(self, tenant_id, todo, local, rows, remotes, intent, save, done, fail) -> None:  # noqa: ANN001
        for cid in [c for c, a in todo.items() if a == "update"]:
            row = rows[cid]
            remote = remotes.get(cid) or RemoteEntry(row.remote_id, cid, local[cid].transaction_date, None, 0, 0,
                                                     tuple((i, 0, 0, 0) for i in row.remote_line_ids))
            save(intent(cid, "update"))
            try:
                updated = self.sink.update(tenant_id, remote, local[cid])
            except SinkError as err:
                if err.kind in ("uncertain", "retryable"):
                    todo[cid] = "recover"
                    raise
                if err.kind == "not_found" or (err.kind == "rejected" and "not found" in err.message):
                    todo[cid] = "recover"  # deleted or edited in Jurnal meanwhile: look again
                    continue
                fail(cid, err.message)
                continue
            done(cid, updated, "update")

    def _deletes(self, tenant_id, todo, rows, remotes, intent, save, fail, out) -> None:  # noqa: ANN001
        for cid in [c for c, a in todo.items() if a == "delete"]:
            row = rows[cid]
            remote_id = remotes[cid].remote_id if remotes.get(cid) else row.remote_id
            if remote_id is None:
                todo[cid] = "recover"
                continue
            save(intent(cid, "delete"))
            try:
                self.sink.delete(tenant_id, remote_id)
            except SinkError as err:
                if err.kind in ("uncertain", "retryable"):
                    todo[cid] = "recover"
                    raise
                if err.kind != "not_found":
                    fail(cid, err.message)
                    continue
            save(replace(rows[cid], status="deleted", error=None))
            out.add("delete")
            todo.pop(cid)
