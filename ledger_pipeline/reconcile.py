"""Reconciliation: our journal entries for a window against what the sink holds (pure)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

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


def _rate_of(remote: RemoteEntry) -> Decimal | None:
    """The exchange rate the system reports on an entry (QuickBooks ExchangeRate, Zoho/Aden exchange_rate, Jurnal
    currency_rate), as the sinks keep it in `extra`; None when it reports none."""
    for key in ("ExchangeRate", "exchange_rate", "currency_rate"):
        if remote.extra.get(key) not in (None, ""):
            try:
                return Decimal(str(remote.extra[key]))
            except InvalidOperation:
                return None
    return None


def same_rate(remote: RemoteEntry, entry: CanonicalEntry) -> bool:
    """The rate matches where the system reports one: ours for a foreign entry; 1 (or none) for an entry in the
    company's own currency."""
    theirs = _rate_of(remote)
    if theirs is None:
        return True
    return theirs == (entry.exchange_rate if entry.exchange_rate is not None else Decimal(1))


def mismatch_detail(remote: RemoteEntry, entry: CanonicalEntry) -> str:
    """Both sides with their currencies (and rates where known), amounts in each currency's own decimals."""
    theirs_cur, ours_cur = remote.currency, entry.currency
    theirs_amt = format_amount(remote.total_debit_minor, theirs_cur or ours_cur)
    ours_amt = format_amount(entry.total_debit_minor, ours_cur)
    text = (f"the system holds {len(remote.lines)} lines / {theirs_amt} {theirs_cur or '(currency not reported)'}"
            f", we have {len(entry.lines)} lines / {ours_amt} {ours_cur}")
    if theirs_cur and theirs_cur != ours_cur:
        text += f": the entry is in {theirs_cur} there, ours is in {ours_cur}"
    rate = _rate_of(remote)
    if rate is not None and not same_rate(remote, entry):
        text += f"; rate {rate} there, ours {entry.exchange_rate if entry.exchange_rate is not None else 1}"
    return text


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
        elif not found[0].matches(e) or not same_rate(found[0], e):
            status, detail = "amount_mismatch", mismatch_detail(found[0], e)
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
