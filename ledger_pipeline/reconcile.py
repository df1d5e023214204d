"""Reconciliation: our journal entries for a window against what the sink holds (pure)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ledger_pipeline.ledger.sink import CUSTOM_ID_PREFIX, MEMO_PREFIX, CanonicalEntry, RemoteEntry
from ledger_pipeline.money import format_amount


@dataclass(frozen=True)
class ReconRow:
    tenant_id: str
    period: dt.date
    custom_id: str
    status: str  # match | missing_remote | duplicate_remote | amount_mismatch | unexpected_remote | not_checked
    remote_ids: str
    local_total_minor: int
    remote_total_minor: int
    detail: str


def reconcile_tenant(tenant_id: str, entries: list[CanonicalEntry], remotes: list[RemoteEntry]) -> list[ReconRow]:
    """Ours are matched by custom_id; a remote entry without custom_id but with our memo for the same month counts
    as a duplicate (someone re-keyed it by hand); a remote r2a-pl- entry we no longer have is unexpected."""
    by_id: dict[str, list[RemoteEntry]] = {}
    for r in remotes:
        if r.custom_id and r.custom_id.startswith(CUSTOM_ID_PREFIX):
            by_id.setdefault(r.custom_id, []).append(r)
    by_memo: dict[str, list[RemoteEntry]] = {}
    for r in remotes:
        if not r.custom_id and (r.memo or "").startswith(MEMO_PREFIX):
            by_memo.setdefault(r.memo, []).append(r)
    rows = []
    for e in entries:
        found = by_id.pop(e.custom_id, []) + by_memo.get(e.memo, [])
        ids = ",".join(str(r.remote_id) for r in found)
        remote_total = sum(r.total_debit_minor for r in found)
        if not found:
            status, detail = "missing_remote", "no entry with this custom_id in Jurnal: re-run jurnal_postings"
        elif len(found) > 1:
            status, detail = "duplicate_remote", f"{len(found)} entries in Jurnal for this month: delete the extra"
        elif not found[0].matches(e):
            status, detail = "amount_mismatch", (
                f"Jurnal holds {len(found[0].lines)} lines / {format_amount(found[0].total_debit_minor)}, we have "
                f"{len(e.lines)} lines / {format_amount(e.total_debit_minor)}")
        else:
            status, detail = "match", ""
        rows.append(ReconRow(tenant_id, e.period, e.custom_id, status, ids, e.total_debit_minor, remote_total,
                             detail))
    for cid, found in by_id.items():
        period = found[0].transaction_date.replace(day=1)
        rows.append(ReconRow(tenant_id, period, cid, "unexpected_remote", ",".join(str(r.remote_id) for r in found),
                             0, sum(r.total_debit_minor for r in found),
                             "in Jurnal but not in our ledger for this month (month rejected or removed?)"))
    return rows


def reconcile_from_state(entries: dict[str, list[CanonicalEntry]], state: dict[str, dict[str, dict]],
                         systems: dict[str, str]) -> list[tuple[str, ReconRow]]:
    """Reconciliation without a request: an entry whose create/update answer matched what we sent (verified_at) and
    whose content has not changed since is a match; the rest say what the posting state knows (pure).
    `state`: system -> tenant -> custom_id -> PostingRow."""
    out: list[tuple[str, ReconRow]] = []
    for tenant in sorted(set(entries) | {t for by_t in state.values() for t in by_t}):
        system = systems.get(tenant, "")
        rows = state.get(system, {}).get(tenant, {})
        local = {e.custom_id: e for e in entries.get(tenant, [])}
        for cid, e in local.items():
            row = rows.get(cid)
            same = row is not None and row.content_hash == e.content_hash and row.verified_at is not None
            if same and row.status == "posted":
                status, remote, detail = "match", e.total_debit_minor, (
                    f"verified from {system}'s answer at {row.verified_at:%Y-%m-%d %H:%M:%S} UTC")
            elif same and row.status == "awaiting_approval":
                status, remote, detail = "awaiting_approval", e.total_debit_minor, row.error or "awaiting approval"
            else:
                why = "never posted" if row is None else f"{row.status}: {row.error or 'changed since posted'}"
                status, remote, detail = "missing_remote", 0, f"not posted with this content ({why})"
            out.append((system, ReconRow(tenant, e.period, cid, status, (row.remote_id or "") if row else "",
                                         e.total_debit_minor, remote, detail)))
        for cid, row in rows.items():
            if cid not in local and row.status in ("posted", "awaiting_approval"):
                out.append((system, ReconRow(tenant, row.period, cid, "unexpected_remote", row.remote_id or "", 0,
                                             0, "posted earlier, no longer in our ledger (month rejected upstream "
                                                "or a delete refused or pending)")))
    return out
