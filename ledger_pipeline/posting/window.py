"""A whole window: every tenant, each on its own system's sink, behind the mass-delete guard, with per-system
progress (progress.PostingEta)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ledger_pipeline.ledger.sink import CanonicalEntry, LedgerSink, SinkError
from ledger_pipeline.posting.engine import PostingEngine, TenantOutcome
from ledger_pipeline.posting.plan import LIVE, PlanItem, PostingRow, PostingStore, plan_tenant
from ledger_pipeline.progress import PostingEta, PostingProgress
from ledger_pipeline.reconcile import DEFAULT_POLICY, Policy, RemoteChange


@dataclass(frozen=True)
class DeleteGuard:
    """Refuse a mass delete (R2a pointed at an empty or wrong database, a truncated table): more than `max_count`
    deletes, or more than `max_fraction` of the window's posted entries (at least 2), unless `allow`."""

    allow: bool = False
    max_count: int = 20
    max_fraction: float = 0.05

    def refusal(self, deletes: int, posted: int) -> str | None:
        if self.allow or not deletes:
            return None
        limit = min(self.max_count, max(2, int(self.max_fraction * posted)))
        if deletes <= limit:
            return None
        return (f"refused to delete {deletes} of the window's {posted} posted entries (limit {limit}: "
                f"max_deletes={self.max_count}, max_delete_fraction={self.max_fraction:g}); nothing was deleted. "
                "If R2a really lost these months, re-run with the posting config allow_mass_delete: true; otherwise "
                "check R2A_DATABASE_URL and the r2a_transactions table")


Progress = PostingProgress  # the posting progress line (per system since 0.3.0: progress.PostingProgress)


@dataclass
class WindowResult:
    plan: list[tuple[str, PlanItem]] = field(default_factory=list)  # (system, item)
    outcomes: list[tuple[str, TenantOutcome]] = field(default_factory=list)
    refused_deletes: str | None = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, o in self.outcomes:
            for k, v in o.counts.items():
                out[k] = out.get(k, 0) + v
        return out

    def failures(self) -> list[tuple[str, str, str, str, str]]:
        """(system, tenant, custom_id, error, kind)"""
        return [(s, o.tenant_id, cid, err, kind) for s, o in self.outcomes for cid, err, kind in o.failures]

    def changes(self) -> list[RemoteChange]:
        """Changes made by people in the systems, seen by this run's reads (held, re-created or overwritten)."""
        return [c for _, o in self.outcomes for c in o.changes]


@dataclass
class WindowJob:
    """Post a window: each tenant's entries to its own system's sink, against the posting state."""

    window: tuple[dt.date, dt.date]
    systems: dict[str, str]  # tenant -> its accounting system
    entries: dict[str, list[CanonicalEntry]]
    state: dict[str, dict[str, dict[str, PostingRow]]]  # system -> tenant -> custom_id -> row
    held: dict[str, set[dt.date]]
    sink_for: Callable[[str], LedgerSink]
    store: PostingStore
    dry_run: bool = False
    guard: DeleteGuard = DeleteGuard()
    backoff: float = 0.5
    progress: Callable[[int, int], None] | None = None  # (done, total), after each tenant with work
    # Per-system progress after each tenant with work (progress.PostingProgress: requests per entry and allowed rate
    # per system, an ETA from each system's cost); `requests` gives the requests sent so far per system.
    on_progress: Callable[[PostingProgress], None] | None = None
    requests: Callable[[], dict[str, int]] | None = None
    rate_limit_scale: float = 1.0  # the clients' pacing clock: each system's allowed rate is time-scaled by it
    clock: Callable[[], float] = time.monotonic
    # A tenant whose entry failed on a missing/archived account: refresh its chart and re-resolve the entries'
    # accounts -> (entries to retry, or None with the reason they cannot be).
    rechart: Callable[[str, str, list[CanonicalEntry]], tuple[list[CanonicalEntry] | None, str]] | None = None
    reload: Callable[[str, str], dict[str, PostingRow]] | None = None  # (system, tenant) -> rows after a try
    known: dict[str, dict[str, RemoteChange]] = field(default_factory=dict)  # tenant -> custom_id -> change
    policies: dict[str, Policy] = field(default_factory=dict)  # tenant -> policy (default: DEFAULT_POLICY)
    titles: dict[str, str] = field(default_factory=dict)  # system -> its name in messages
    reread: set[str] = field(default_factory=set)  # custom_ids an operator asked to re-read (repost)

    def run(self) -> WindowResult:
        result = WindowResult()
        tenants = sorted(set(self.entries) | {t for by_t in self.state.values() for t in by_t})
        work: list[tuple[str, str]] = []
        for tenant in tenants:
            system = self.systems.get(tenant)
            if system is None:
                for e in self.entries.get(tenant, []):
                    result.plan.append(("", PlanItem(tenant, e.period, e.custom_id, "skip", "not connected")))
                result.outcomes.append(("", TenantOutcome(tenant, failures=[
                    ("*", f"tenant {tenant} is not connected to an accounting system: run `ledger-pipeline connect "
                          f"--tenant {tenant} --system <{'|'.join(self.titles) or 'SYSTEM'}>`", "needs_reauth")])))
                continue
            items = plan_tenant(tenant, self.entries.get(tenant, []), self._rows(system, tenant),
                                self.held.get(tenant, set()), self.known.get(tenant), self._policy(tenant),
                                self.reread, self.titles.get(system, system))
            result.plan += [(system, it) for it in items]
            if any(it.action not in ("skip", "hold") for it in items):
                work.append((system, tenant))
        deletes = sum(1 for _, it in result.plan if it.action == "delete")
        posted = sum(1 for by_t in self.state.values() for rows in by_t.values() for r in rows.values()
                     if r.status in LIVE)
        result.refused_deletes = self.guard.refusal(deletes, posted)
        if self.dry_run:
            return result
        writes: dict[tuple[str, str], int] = {}
        for system, it in result.plan:
            if it.action not in ("skip", "hold"):
                writes[(system, it.tenant_id)] = writes.get((system, it.tenant_id), 0) + 1
        eta = PostingEta([(system, writes.get((system, tenant), 0)) for system, tenant in work],
                         scale=self.rate_limit_scale)
        t0 = self.clock()
        for i, (system, tenant) in enumerate(work, 1):
            sent, started = self._sent(system), self.clock()
            result.outcomes.append((system, self._post(system, tenant, result.refused_deletes is not None)))
            eta.tenant_done(system, self._sent(system) - sent, self.clock() - started)
            if self.progress:
                self.progress(i, len(work))
            if self.on_progress:
                self.on_progress(eta.progress(self.clock() - t0))
        return result

    def _sent(self, system: str) -> int:
        """Requests sent so far to `system` (0 without a counter)."""
        return self.requests().get(system, 0) if self.requests else 0

    def _rows(self, system: str, tenant: str) -> dict[str, PostingRow]:
        return self.state.get(system, {}).get(tenant, {})

    def _policy(self, tenant: str) -> Policy:
        return self.policies.get(tenant, DEFAULT_POLICY)

    def _post(self, system: str, tenant: str, no_deletes: bool) -> TenantOutcome:
        engine = PostingEngine(self.sink_for(system), self.store, backoff=self.backoff,
                               title=self.titles.get(system, system))
        context = {"known": self.known.get(tenant), "policy": self._policy(tenant), "reread": self.reread}
        entries = self.entries.get(tenant, [])
        held = set(self.held.get(tenant, set()))
        if no_deletes:  # a refused mass delete holds every remote entry of the window as it is
            held |= {r.period for r in self._rows(system, tenant).values()}
        try:
            outcome = engine.post_tenant(tenant, entries, self._rows(system, tenant), self.window, held, **context)
        except SinkError as exc:  # an unexpected classification: record it, keep going
            return TenantOutcome(tenant, failures=[("*", str(exc), exc.kind)])
        bad = outcome.failed("account")
        if not bad or self.rechart is None:
            return outcome
        retry, why = self.rechart(system, tenant, entries)
        rows = self.reload(system, tenant) if self.reload else self._rows(system, tenant)
        if retry is None:  # the reason goes where operators look: the posting state and the run's failure
            outcome.failures = [(c, f"{e}; {why}" if k == "account" else e, k) for c, e, k in outcome.failures]
            self.store.save([replace(rows[c], error=f"{rows[c].error}; {why}") for c in bad if c in rows])
            return outcome
        second = engine.post_tenant(tenant, retry, rows, self.window, held, **context)
        merged = TenantOutcome(tenant, dict(outcome.counts), second.failures, outcome.changes + second.changes)
        for k, v in second.counts.items():
            if k != "skip":  # what the first try posted is a skip now
                merged.counts[k] = merged.counts.get(k, 0) + v
        return merged
