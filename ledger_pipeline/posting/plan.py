"""The posting planner (pure): what to do for each of a tenant's entries, from its posting state, the entries' content
hashes, the remote changes already known and the tenant's policy. No I/O; the engine (posting.engine) carries it out.

- unchanged since the last successful post -> skip (no request at all)
- new -> create; changed -> update; gone from the ledger -> delete (never when the month was rejected upstream)
- pending (intent recorded, outcome unknown) -> recover (look up first); submitted / awaiting approval -> refresh
- changed in the system by a person -> the tenant's Policy (reconcile.py): hold, recover (re-create or update)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ledger_pipeline.ledger.sink import CanonicalEntry
from ledger_pipeline.reconcile import DEFAULT_POLICY, FOUND_BY, Policy, RemoteChange, change_detail, repost_command

Action = Literal["skip", "create", "update", "recover", "refresh", "delete", "hold"]
Status = Literal["pending", "posted", "failed", "deleted", "awaiting_approval", "rejected", "submitted"]
# Statuses that hold a remote entry we own (the planner deletes or updates it when the ledger changes).
LIVE = ("posted", "pending", "awaiting_approval", "submitted", "rejected")


@dataclass(frozen=True)
class PostingRow:
    system: str
    tenant_id: str
    period: dt.date
    custom_id: str
    content_hash: str | None
    status: Status
    action: str
    remote_id: str | None = None
    remote_line_ids: tuple[str, ...] = ()
    remote_state: dict = field(default_factory=dict, compare=False, hash=False)  # the sink's hint for next time
    attempts: int = 0
    error: str | None = None
    posted_at: dt.datetime | None = None
    verified_at: dt.datetime | None = None  # the system's own answer matched what we sent


class PostingStore(Protocol):
    def save(self, rows: list[PostingRow]) -> None:
        """Durably upsert rows by (system, custom_id), committed before returning."""


@dataclass
class PlanItem:
    tenant_id: str
    period: dt.date
    custom_id: str
    action: Action
    reason: str


def _known_action(e: CanonicalEntry, row: PostingRow | None, change: RemoteChange, policy: Policy,
                  title: str) -> tuple[Action, str] | None:
    """What a known remote change makes of an entry (None: nothing, plan from the posting state)."""
    if row is not None and row.status in ("pending", "submitted"):
        return None  # our own write is unresolved: the look-up settles it (and classifies what it sees)
    when = f"{change.found_at:%Y-%m-%d %H:%M} UTC" if change.found_at else "earlier"
    by = FOUND_BY.get(change.found_by, "a read")
    if change.status == "accepted":
        if change.content_hash == e.content_hash:
            return "skip", f"{title}'s version (changed by hand) was accepted as the truth: left as it is"
        if policy.holds("edited"):
            return "hold", (f"our ledger changed since {title}'s edited version was accepted "
                            f"({policy.describe('edited')}): decide with "
                            f"`{repost_command(e.tenant_id, e.period)}` (ours) or "
                            f"`{repost_command(e.tenant_id, e.period, accept=True)}` (theirs)")
        return "recover", f"our ledger changed since {title}'s version was accepted: re-read it, then update it"
    if change.status != "open":
        return None
    if policy.holds(change.kind):
        return "hold", f"found {when} by {by}: {change_detail(change, title, policy)}"
    if change.kind == "deleted":
        return "recover", (f"deleted in {title} by hand (found {when} by {by}): look it up, re-create it if it is "
                           f"still gone ({policy.describe('deleted')})")
    return "recover", (f"{change.kind} in {title} by hand (found {when} by {by}): re-read it, then update it against "
                       f"the entry as it is now ({policy.describe(change.kind)})")


def plan_tenant(tenant_id: str, entries: list[CanonicalEntry], state: dict[str, PostingRow],
                held_periods: set[dt.date] = frozenset(), known: dict[str, RemoteChange] | None = None,
                policy: Policy = DEFAULT_POLICY, reread: set[str] = frozenset(),
                title: str = "the accounting system") -> list[PlanItem]:
    """What to do for each of a tenant's entries and posting rows in the window (pure).

    `known`: remote changes (custom_id -> open or accepted change) that decide before the posting state, under the
    tenant's `policy`; `reread`: entries an operator asked to re-read whatever the state says (`repost`)."""
    items = []
    local = {e.custom_id: e for e in entries}
    known = known or {}

    def add(e: CanonicalEntry, action: Action, reason: str) -> None:
        items.append(PlanItem(tenant_id, e.period, e.custom_id, action, reason))

    for e in entries:
        row = state.get(e.custom_id)
        same = row is not None and row.content_hash == e.content_hash
        decided = _known_action(e, row, known[e.custom_id], policy, title) if e.custom_id in known else None
        if e.custom_id in reread:
            add(e, "recover", "operator's repost: re-read the entry, then re-create, update or leave it")
        elif decided is not None:
            add(e, *decided)
        elif row is None or row.status == "deleted":
            add(e, "create", "new entry")
        elif row.status == "pending":
            add(e, "recover", f"last {row.action} had an unknown outcome: look it up first")
        elif row.status == "submitted":
            add(e, "refresh", "submitted, the system was still processing it: look it up")
        elif row.status == "awaiting_approval" and same:
            add(e, "refresh", f"{row.error or 'awaiting approval'}: look up the workflow")
        elif row.status == "rejected" and same:
            add(e, "skip", f"rejected in the system ({row.error}); change the data or re-submit it there")
        elif row.status == "posted" and same:
            add(e, "skip", "unchanged since posted")
        elif row.remote_id is not None:
            why = "changed since posted (late R2a rows)" if row.status in LIVE else f"retry after: {row.error}"
            add(e, "update", why)
        else:
            add(e, "create", f"retry after: {row.error}")
    for cid, row in state.items():
        if cid in local or row.status not in LIVE and not (row.status == "failed" and row.remote_id is not None):
            continue
        if row.period in held_periods:
            items.append(PlanItem(tenant_id, row.period, cid, "hold",
                                  "month rejected upstream (see ledger.rejections): the remote entry is kept as is"))
        else:
            items.append(PlanItem(tenant_id, row.period, cid, "delete", "the month no longer has an entry"))
    return items
