"""Reconciliation and remote changes: our journal entries against what each tenant's system holds (pure).

Tenants' accountants work in the books we post to. What they do to an entry we posted is a first-class outcome,
classified the same way by the drift read (reconciliation_drift), every close (the posting engine's look-ups) and
`ledger-pipeline repost`:

- deleted: we saw the entry posted (a verified answer) and the system no longer has it;
- edited: the system's entry is not what we left there (lines, accounts, amounts), shown line by line;
- moved: edited so that its date falls in another month (often a closed period).

"What we left there" is a fingerprint of the remote entry (date and the multiset of (account, debit, credit) lines:
what `RemoteEntry.matches` compares) kept in the posting state when the system's answer was verified. A remote entry
that still has that fingerprint while our ledger changed (late R2a rows) is ours to update, not an edit.

What the next close does with a change is the tenant's `Policy`: a deleted entry is re-created (the books are
otherwise missing a month); an edited one is held and reported with its diff until an operator decides (a careful
finance team does not want an accountant's correction silently overwritten), unless the policy says `overwrite`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shlex
from collections import Counter
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal

from ledger_pipeline.ledger.sink import CUSTOM_ID_PREFIX, MEMO_PREFIX, CanonicalEntry, RemoteEntry
from ledger_pipeline.money import format_amount

ChangeKind = Literal["deleted", "edited", "moved"]
# open: found, not acted on yet (or held for a decision); resolved: the entry is ours again (re-created, updated or
# seen matching); accepted: an operator accepted the system's version as the truth (`repost --accept-remote`).
ChangeStatus = Literal["open", "resolved", "accepted"]
OnEdit = Literal["hold", "overwrite"]
OnDelete = Literal["recreate", "hold"]
# The posting state's remote_state key holding the fingerprint of what we left in the system (never sent to a sink).
FINGERPRINT_KEY = "_ledger_fingerprint"


@dataclass(frozen=True)
class Policy:
    """What the next close does when a person changed an entry we posted (per tenant; see remote_changes.py).

    on_edit: "hold" (default) leaves an edited or moved entry as it is and reports it with its diff until an operator
    decides (`ledger-pipeline repost`, with or without --accept-remote); "overwrite" re-reads it and updates it to our
    entry, against the entry as it is now. on_delete: "recreate" (default) posts the entry again; "hold" reports it.
    """

    on_edit: OnEdit = "hold"
    on_delete: OnDelete = "recreate"

    def holds(self, kind: ChangeKind) -> bool:
        return self.on_delete == "hold" if kind == "deleted" else self.on_edit == "hold"

    def describe(self, kind: ChangeKind) -> str:
        return f"tenant policy on deletes: {self.on_delete}" if kind == "deleted" else \
            f"tenant policy on edits: {self.on_edit}"


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class RemoteChange:
    """A change a person made in the system to an entry we posted, as seen by a read (drift, close or repost)."""

    system: str
    tenant_id: str
    period: dt.date
    custom_id: str
    kind: ChangeKind
    remote_id: str = ""
    diff: str = ""  # line by line, "; "-separated; empty for a deletion
    remote_hash: str | None = None  # fingerprint of the system's entry as seen (None when deleted)
    content_hash: str | None = None  # our ledger entry's content hash when seen
    status: ChangeStatus = "open"
    action: str = ""  # what the reader did on sight: reported | held | recreated | overwritten | accepted
    found_by: str = "remote_read"  # remote_read (drift job) | close | repost
    found_at: dt.datetime | None = None  # naive UTC
    locked: bool = False  # the system reports the entry in a closed period
    resolution: str = ""
    resolved_at: dt.datetime | None = None


# -- fingerprints and differences ----------------------------------------------------------------------------------
def _digest(date: dt.date, lines: list[tuple[str, int, int]], rate: Decimal | None = None) -> str:
    """A foreign rate (not None, not 1) joins the payload; without one the fingerprint is what it was before
    currencies, so fingerprints kept for entries in the company's own currency stay valid."""
    body: dict = {"date": date.isoformat(), "lines": sorted([list(x) for x in lines])}
    if rate is not None and rate != 1:
        body["rate"] = str(rate.normalize())
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def remote_fingerprint(remote: RemoteEntry) -> str:
    """The remote entry's date, (account, debit, credit) lines and foreign exchange rate, hashed: what `matches`
    compares (a rate changed by hand is a change a person made)."""
    return _digest(remote.transaction_date, [(str(acc), int(d), int(c)) for _, acc, d, c in remote.lines],
                   remote.rate)


def entry_fingerprint(entry: CanonicalEntry) -> str:
    """The fingerprint a remote entry has when it holds exactly `entry`."""
    return _digest(entry.transaction_date, [(str(ln.account_id), ln.debit_minor, ln.credit_minor)
                                            for ln in entry.lines], entry.exchange_rate)


def posted_fingerprint(remote_state: dict | None) -> str | None:
    return (remote_state or {}).get(FINGERPRINT_KEY)


def expected_fingerprint(row, entry: CanonicalEntry) -> str | None:  # noqa: ANN001  (a PostingRow or None)
    """What the system should hold if nobody touched it: the fingerprint kept with the last verified answer, or (a
    row verified before fingerprints were kept) the entry's own when its content has not changed since; else None."""
    if row is None:
        return None
    fp = posted_fingerprint(row.remote_state)
    if fp is not None:
        return fp
    if row.status in ("posted", "awaiting_approval") and row.verified_at is not None and \
            row.content_hash == entry.content_hash:
        return entry_fingerprint(entry)
    return None


def sink_hint(remote_state: dict | None) -> dict:
    """The posting state's remote_state without our own keys: what the sink gets back as `hint`."""
    return {k: v for k, v in (remote_state or {}).items() if k != FINGERPRINT_KEY}


def _side(debit: int, credit: int, currency: str | None = None) -> str:
    return f"debit {format_amount(debit, currency)}" if debit else f"credit {format_amount(credit, currency)}"


def rate_of(remote: RemoteEntry) -> Decimal | None:
    """The exchange rate the system reports on an entry (ledger/sink.py RemoteEntry.rate); None when none."""
    return remote.rate


def same_rate(remote: RemoteEntry, entry: CanonicalEntry) -> bool:
    """The rate matches where the system reports one: ours for a foreign entry, 1 for an entry in the company's own
    currency (a system that reports no rate is not compared; RemoteEntry.same_rate)."""
    return remote.same_rate(entry)


def currency_diff(entry: CanonicalEntry, remote: RemoteEntry, title: str) -> list[str]:
    """The currency and rate differences, both currencies named: [] when the same (or the system reports none)."""
    out = []
    if remote.currency is not None and remote.currency != entry.currency:
        out.append(f"currency: {title} holds the entry in {remote.currency}, ours is in {entry.currency} "
                   f"({format_amount(remote.total_debit_minor, remote.currency)} {remote.currency} there, "
                   f"{format_amount(entry.total_debit_minor, entry.currency)} {entry.currency} ours)")
    if not same_rate(remote, entry):
        out.append(f"exchange rate {rate_of(remote)} in {title}, ours "
                   f"{entry.exchange_rate if entry.exchange_rate is not None else 1}")
    return out


def same_money(remote: RemoteEntry, entry: CanonicalEntry) -> bool:
    """Lines, totals, date, currency (where reported) and rate (where reported) agree (RemoteEntry.matches)."""
    return remote.matches(entry)


def diff_entry(entry: CanonicalEntry, remote: RemoteEntry, title: str) -> list[str]:
    """What the system holds against our entry, line by line: changed amounts per account, lines only we have,
    lines only the system has, the date and the totals. Accounts by our number where the account is ours."""
    out: list[str] = currency_diff(entry, remote, title)
    cur = entry.currency
    if remote.transaction_date != entry.transaction_date:
        out.append(f"date {entry.transaction_date} -> {remote.transaction_date}")
    number = {str(ln.account_id): ln.account_number for ln in entry.lines}
    ours = Counter((str(ln.account_id), ln.debit_minor, ln.credit_minor) for ln in entry.lines)
    theirs = Counter((str(acc), int(d), int(c)) for _, acc, d, c in remote.lines)
    only_ours, only_theirs = ours - theirs, theirs - ours
    line_no = {(str(ln.account_id), ln.debit_minor, ln.credit_minor): ln.line_no for ln in entry.lines}
    by_account: dict[str, tuple[list, list]] = {}
    for (acc, d, c), n in sorted(only_ours.items()):
        by_account.setdefault(acc, ([], []))[0].extend([(d, c)] * n)
    for (acc, d, c), n in sorted(only_theirs.items()):
        by_account.setdefault(acc, ([], []))[1].extend([(d, c)] * n)
    for acc, (mine, remote_lines) in by_account.items():
        label = f"account {number[acc]}" if acc in number else f"account id {acc}"
        for (d, c), (rd, rc) in zip(mine, remote_lines, strict=False):
            out.append(f"line {line_no.get((acc, d, c), '?')} {label}: {_side(d, c, cur)} -> {_side(rd, rc, cur)}")
        for d, c in mine[len(remote_lines):]:
            out.append(f"line {line_no.get((acc, d, c), '?')} {label} {_side(d, c, cur)}: not in {title}")
        for d, c in remote_lines[len(mine):]:
            out.append(f"{title} has an extra line: {label} {_side(d, c, cur)}")
    if remote.total_debit_minor != entry.total_debit_minor or remote.total_credit_minor != entry.total_debit_minor:
        out.append(f"totals debit/credit {format_amount(entry.total_debit_minor, cur)}/"
                   f"{format_amount(entry.total_debit_minor, cur)} -> {format_amount(remote.total_debit_minor, cur)}/"
                   f"{format_amount(remote.total_credit_minor, cur)}")
    return out


def month_of(date: dt.date) -> dt.date:
    return date.replace(day=1)


def repost_command(tenant_id: str, period: dt.date, accept: bool = False) -> str:
    return (f"ledger-pipeline repost --tenant {shlex.quote(tenant_id)} --month {period:%Y-%m}"
            + (" --accept-remote" if accept else ""))


def change_detail(change: RemoteChange, title: str, policy: Policy,
                  window: tuple[dt.date, dt.date] | None = None) -> str:
    """What the change is and what happens next (the reconciliation's detail, the close's reason, the decisions).
    `window`: the months a listing covered (a deletion seen by a listing may be a move out of them)."""
    if change.kind == "deleted":
        what = f"deleted in {title} after we posted it" + (f" (it was {title} id {change.remote_id})"
                                                           if change.remote_id else "")
        if window is not None:
            last = window[1] - dt.timedelta(days=1)
            what += (f", or re-dated outside {window[0]:%Y-%m} .. {last:%Y-%m} (the close looks it up by our id "
                     "before re-creating anything)")
    elif change.kind == "moved":
        what = f"moved in {title} by hand" + (" into a closed period" if change.locked else "") + \
            f": {change.diff}"
    else:
        what = f"edited in {title} by hand" + (" (in a closed period)" if change.locked else "") + \
            f": {change.diff}"
    return f"{what}. {change_next(change, title, policy)}"


FOUND_BY = {"remote_read": "the drift read", "close": "a close", "repost": "a repost"}


def change_next(change: RemoteChange, title: str, policy: Policy) -> str:
    """What happens next with a change, and the commands that decide (one sentence)."""
    t, p = change.tenant_id, change.period
    if change.status == "accepted":
        return f"{title}'s version was accepted as the truth: the close leaves it"
    if change.status == "resolved":
        return f"Resolved: {change.resolution}"
    if change.kind == "deleted":
        nxt = (f"the next close re-creates it ({policy.describe('deleted')}); now: `{repost_command(t, p)}`"
               if not policy.holds("deleted") else
               f"held ({policy.describe('deleted')}): re-create it with `{repost_command(t, p)}`")
    elif policy.holds(change.kind):
        nxt = (f"held for a decision ({policy.describe(change.kind)}): keep {title}'s version with "
               f"`{repost_command(t, p, accept=True)}`, or put our entry back with `{repost_command(t, p)}`")
    else:
        nxt = (f"the next close re-reads it and puts our entry back ({policy.describe(change.kind)}); "
               f"to keep {title}'s version instead: `{repost_command(t, p, accept=True)}`")
    return f"{nxt[:1].upper()}{nxt[1:]}"


def classify(entry: CanonicalEntry, remote: RemoteEntry | None, seen: str | None, was_posted: bool,
             system: str, title: str, *, accepted: RemoteChange | None = None, found_by: str = "remote_read",
             now: dt.datetime | None = None) -> tuple[str, RemoteChange | None]:
    """What one read of our entry shows: ("match" | "ours" | "accepted" | "missing" | a change kind, the change).

    `seen`: the fingerprint of what we last left in the system (`expected_fingerprint`), None if unknown (then a
    differing entry is taken as ours, to update: the behaviour before fingerprints were kept); `was_posted`:
    the posting state saw it in the system (a verified answer); `accepted`: an accepted remote version, if any.
    "ours": the system holds what we left there and our ledger changed since (the next close updates it)."""
    base = dict(system=system, tenant_id=entry.tenant_id, period=entry.period, custom_id=entry.custom_id,
                content_hash=entry.content_hash, found_by=found_by, found_at=now)
    if remote is None:
        if was_posted:
            return "deleted", RemoteChange(kind="deleted", **base)
        return "missing", None
    if same_money(remote, entry):
        return "match", None
    fp = remote_fingerprint(remote)
    kind: ChangeKind = "moved" if month_of(remote.transaction_date) != entry.period else "edited"
    diff = "; ".join(diff_entry(entry, remote, title)) or "the lines differ"
    if accepted is not None and accepted.status == "accepted" and fp == accepted.remote_hash:
        if accepted.content_hash == entry.content_hash:
            return "accepted", None
        # our ledger changed since the system's version was accepted: a new decision
        return kind, RemoteChange(kind=kind, remote_id=str(remote.remote_id or ""), remote_hash=fp,
                                  diff=f"{diff} (our ledger changed since {title}'s version was accepted)",
                                  locked=bool(remote.locked), **base)
    if seen is None or fp == seen:
        return "ours", None  # what we left there (or unknown: nothing says a person changed it)
    return kind, RemoteChange(kind=kind, remote_id=str(remote.remote_id or ""), diff=diff, remote_hash=fp,
                              locked=bool(remote.locked), **base)


# -- reconciliation rows ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReconRow:
    tenant_id: str
    period: dt.date
    custom_id: str
    # match | missing_remote | duplicate_remote | amount_mismatch | moved_remote | accepted_remote | unexpected_remote
    # | awaiting_approval | not_checked
    status: str
    remote_ids: str
    local_total_minor: int
    remote_total_minor: int
    detail: str
    checked_by: str | None = None  # who saw it: remote_read | posting_response | repost (None: the frame's default)
    checked_at: dt.datetime | None = None  # when it was seen (None: now)
    currency: str | None = None  # the entry's ISO 4217 code (the totals' unit; set by read_tenant/reconcile_from_state)


CHANGE_STATUS = {"deleted": "missing_remote", "edited": "amount_mismatch", "moved": "moved_remote"}


def reconcile_tenant(tenant_id: str, entries: list[CanonicalEntry], remotes: list[RemoteEntry],
                     title: str = "the accounting system") -> list[ReconRow]:
    """Our entries against a listing of the system's, without posting state (see `read_tenant`)."""
    return read_tenant(tenant_id, entries, remotes, title)[0]


def read_tenant(tenant_id: str, entries: list[CanonicalEntry], remotes: list[RemoteEntry],
                title: str = "the accounting system", *, system: str = "", rows: dict | None = None,
                known: dict[str, RemoteChange] | None = None, policy: Policy = DEFAULT_POLICY,
                now: dt.datetime | None = None, window: tuple[dt.date, dt.date] | None = None,
                ) -> tuple[list[ReconRow], list[RemoteChange]]:
    """One tenant's window read from its system: a row per entry (and per unexpected remote entry of ours), and the
    remote changes seen. Ours are matched by custom_id; a remote entry without custom_id but with our memo for the
    same month counts as a duplicate (someone re-keyed it by hand); a remote r2a-pl- entry we no longer have is
    unexpected. `rows`: the posting state (custom_id -> PostingRow); `known`: open or accepted changes; `window`: the
    listing's months (an entry re-dated outside them looks deleted here: the close looks it up by our id before
    re-creating anything, and classifies it as moved)."""
    rows, known = rows or {}, known or {}
    by_id: dict[str, list[RemoteEntry]] = {}
    for r in remotes:
        if r.custom_id and r.custom_id.startswith(CUSTOM_ID_PREFIX):
            by_id.setdefault(r.custom_id, []).append(r)
    by_memo: dict[str, list[RemoteEntry]] = {}
    for r in remotes:
        if not r.custom_id and (r.memo or "").startswith(MEMO_PREFIX):
            by_memo.setdefault(r.memo, []).append(r)
    out, changes = [], []
    for e in entries:
        hits = by_id.pop(e.custom_id, []) + by_memo.get(e.memo, [])
        ids = ",".join(str(r.remote_id) for r in hits)
        remote_total = sum(r.total_debit_minor for r in hits)
        row = rows.get(e.custom_id)
        if len(hits) > 1:
            out.append(ReconRow(tenant_id, e.period, e.custom_id, "duplicate_remote", ids, e.total_debit_minor,
                                remote_total, f"{len(hits)} entries in {title} for this month: delete the extra "
                                              "(the one without our id)"))
            continue
        verdict, change = classify(e, hits[0] if hits else None, expected_fingerprint(row, e), _was_posted(row),
                                   system, title, accepted=known.get(e.custom_id), now=now)
        if change is not None:
            change = _keep_history(replace(change, remote_id=change.remote_id or (row.remote_id or "")),
                                   known.get(e.custom_id))
            changes.append(change)
            status, detail = CHANGE_STATUS[change.kind], change_detail(change, title, policy, window)
        elif verdict == "match":
            status, detail = "match", ""
        elif verdict == "accepted":
            status, detail = "accepted_remote", (f"{title}'s version (changed by hand) was accepted as the truth: "
                                                 "the close leaves it")
        elif verdict == "ours":
            status, detail = "amount_mismatch", (
                f"{title} holds {len(hits[0].lines)} lines / "
                f"{format_amount(hits[0].total_debit_minor, e.currency)}, our ledger has {len(e.lines)} lines / "
                f"{format_amount(e.total_debit_minor, e.currency)}: "
                f"{''.join(d + '; ' for d in currency_diff(e, hits[0], title))}changed in our ledger since posted "
                "(late R2a rows); the next close updates it")
        else:
            why = "never posted" if row is None else f"{row.status}: {row.error or 'not posted yet'}"
            status, detail = "missing_remote", (f"not in {title} ({why}): the next close posts it; now: "
                                                f"`{repost_command(tenant_id, e.period)}`")
        out.append(ReconRow(tenant_id, e.period, e.custom_id, status, ids, e.total_debit_minor, remote_total,
                            detail))
    for cid, hits in by_id.items():
        period = month_of(hits[0].transaction_date)
        out.append(ReconRow(tenant_id, period, cid, "unexpected_remote", ",".join(str(r.remote_id) for r in hits),
                            0, sum(r.total_debit_minor for r in hits),
                            f"in {title} but not in our ledger for this month (month rejected or removed?)"))
    # each row's totals are in its entry's currency (an unexpected remote's: the system's), never mixed
    units = {**{cid: hits[0].currency for cid, hits in by_id.items()}, **{e.custom_id: e.currency for e in entries}}
    return [replace(r, currency=r.currency or units.get(r.custom_id)) for r in out], changes


def _was_posted(row) -> bool:  # noqa: ANN001  (a PostingRow or None)
    """The posting state saw the entry in the system: a verified answer (or an accepted remote version)."""
    return row is not None and row.status not in ("deleted", "pending", "submitted") and bool(row.remote_id) and (
        row.verified_at is not None or posted_fingerprint(row.remote_state) is not None)


def _keep_history(change: RemoteChange, known: RemoteChange | None) -> RemoteChange:
    """The same change seen again keeps when it was first found (the decisions list sorts by it)."""
    if known is not None and known.status == "open" and known.kind == change.kind and \
            known.remote_hash == change.remote_hash and known.found_at is not None:
        return replace(change, found_at=known.found_at, found_by=known.found_by)
    return change


def reconcile_from_state(entries: dict[str, list[CanonicalEntry]], state: dict[str, dict[str, dict]],
                         systems: dict[str, str], *, titles: dict[str, str] | None = None,
                         known: dict[str, dict[str, RemoteChange]] | None = None,
                         policies: dict[str, Policy] | None = None,
                         remote_reads: dict[str, ReconRow] | None = None) -> list[tuple[str, ReconRow]]:
    """Reconciliation without a request (pure). `state`: system -> tenant -> custom_id -> PostingRow.

    An entry whose create/update answer matched what we sent (verified_at) and whose content has not changed since is
    a match *as of that answer* (checked_by posting_response), unless something newer was seen since: an open remote
    change (`known`, tenant -> custom_id -> change) found after that answer shows the change, and a drift read
    (`remote_reads`, custom_id -> row) newer than the answer is kept as it is. An accepted remote version is
    accepted_remote; the rest say what the posting state knows."""
    titles, known, policies, remote_reads = titles or {}, known or {}, policies or {}, remote_reads or {}
    out: list[tuple[str, ReconRow]] = []
    for tenant in sorted(set(entries) | {t for by_t in state.values() for t in by_t}):
        system = systems.get(tenant, "")
        title = titles.get(system, system)
        rows = state.get(system, {}).get(tenant, {})
        changes = known.get(tenant, {})
        local = {e.custom_id: e for e in entries.get(tenant, [])}
        for cid, e in local.items():
            row, change, read = rows.get(cid), changes.get(cid), remote_reads.get(cid)
            verified = row.verified_at if row is not None else None
            same = row is not None and row.content_hash == e.content_hash and verified is not None
            if change is not None and change.status == "open" and (
                    verified is None or change.found_at is None or change.found_at >= verified):
                out.append((system, ReconRow(
                    tenant, e.period, cid, CHANGE_STATUS[change.kind], change.remote_id or
                    ((row.remote_id or "") if row else ""), e.total_debit_minor, 0,
                    change_detail(change, title, policies.get(tenant, DEFAULT_POLICY)),
                    "remote_read" if change.found_by == "remote_read" else change.found_by, change.found_at)))
                continue
            if change is not None and change.status == "accepted" and change.content_hash == e.content_hash:
                out.append((system, ReconRow(
                    tenant, e.period, cid, "accepted_remote", (row.remote_id or "") if row else "",
                    e.total_debit_minor, 0, change_detail(change, title, DEFAULT_POLICY), "repost", change.found_at)))
                continue
            if same and row.status == "posted":
                if read is not None and read.checked_at is not None and read.checked_at > verified:
                    out.append((system, read))  # a later read of the system: it says more than our old answer
                    continue
                status, remote, detail = "match", e.total_debit_minor, (
                    f"verified from {title}'s answer at {verified:%Y-%m-%d %H:%M:%S} UTC (not re-read since)")
            elif same and row.status == "awaiting_approval":
                status, remote, detail = "awaiting_approval", e.total_debit_minor, row.error or "awaiting approval"
            else:
                why = "never posted" if row is None else f"{row.status}: {row.error or 'changed since posted'}"
                status, remote, detail = "missing_remote", 0, f"not posted to {title} with this content ({why})"
            out.append((system, ReconRow(tenant, e.period, cid, status, (row.remote_id or "") if row else "",
                                         e.total_debit_minor, remote, detail, "posting_response", verified)))
        for cid, row in rows.items():
            if cid not in local and row.status in ("posted", "awaiting_approval"):
                out.append((system, ReconRow(tenant, row.period, cid, "unexpected_remote", row.remote_id or "", 0,
                                             0, f"posted to {title} earlier, no longer in our ledger (month rejected "
                                                "upstream or a delete refused or pending)", "posting_response",
                                             row.verified_at)))
    units = {e.custom_id: e.currency for items in entries.values() for e in items}  # totals in the entry's currency
    return [(system, replace(r, currency=r.currency or units.get(r.custom_id))) for system, r in out]
