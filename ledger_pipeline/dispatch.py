"""Posting a window, in this process or on the shard workers: the one place that knows where requests come from.

Both profiles run the same asset graph; only this differs, as a resource (`resources.PostingWorkers`):
- embedded: one shard, this process (`post_window` for every tenant);
- production: tenants split over shards (shards.py, table `shard_assignments`), one Celery task per shard on its
  queue `ledger-shard-N`, served by one worker that sends from its own source address (LEDGER_SOURCE_ADDRESS). The
  close's `postings` step waits for every shard, then records the merged result like the embedded one. A worker
  killed mid-shard (OOM, reboot) loses nothing: the task is acknowledged only when it ends (`acks_late`,
  `reject_on_worker_lost`), so the broker hands it to the restarted worker, which resumes exactly where the posting
  state says (posting is idempotent).

What crosses hosts is JSON (`to_wire`/`from_wire`), never pickle: a worker's answer cannot run code on the host
that reads it.
Sources: Celery's task options `acks_late` and `reject_on_worker_lost`
(https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-reject-on-worker-lost), `AsyncResult`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
from sqlalchemy import Engine, select

from ledger_pipeline.ledger.currency import CurrencyRejection
from ledger_pipeline.posting import DeleteGuard, TenantOutcome, WindowJob, WindowResult
from ledger_pipeline.posting.plan import PlanItem
from ledger_pipeline.progress import PostingProgress, report_progress
from ledger_pipeline.reconcile import DEFAULT_POLICY, RemoteChange, change_detail
from ledger_pipeline.settings import load_settings
from ledger_pipeline.systems import Connections, title, titles


class Log(Protocol):
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str) -> None: ...


@dataclass(frozen=True)
class PostingOptions:
    """How a window is posted (the `postings` asset's run config, as plain values that travel to a worker)."""

    dry_run: bool = False  # write the plan only
    allow_mass_delete: bool = False
    max_deletes: int = 20
    max_delete_fraction: float = 0.05
    progress_every: int = 0  # log progress every N tenants (0: about every 5% of the window's tenants)

    @property
    def guard(self) -> DeleteGuard:
        return DeleteGuard(self.allow_mass_delete, self.max_deletes, self.max_delete_fraction)


@dataclass
class PostedWindow:
    """What posting a window did: the asset turns it into tables, metadata and, on failures, a dg.Failure."""

    start: dt.date
    end: dt.date
    result: WindowResult
    requests: dict[str, int]
    systems: dict[str, str]  # tenant -> system, for the tenants this run covered
    seconds: float
    held: dict[str, set[dt.date]] | None = None  # tenant -> months rejected upstream (their remote entry is held)
    refused: list[dict[str, Any]] | None = None  # per entry refused by the currency plan: tenant_id, period, detail
    shards: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # shard -> worker, tenants, requests
    recharted: list[str] = dataclasses.field(default_factory=list)  # tenants whose chart a shard worker read again

    def plan(self) -> pd.DataFrame:
        return pd.DataFrame([{"system": s, **vars(p)} for s, p in self.result.plan],
                            columns=["system", "tenant_id", "period", "custom_id", "action", "reason"])

    def currency_rejections(self, run_id: str) -> pd.DataFrame:
        """ledger.rejections rows (stage "currency") for the entries the currency plan refused."""
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        return pd.DataFrame([{**r, "stage": "currency", "run_id": run_id, "recorded_at": now}
                             for r in self.refused or []],
                            columns=["tenant_id", "period", "stage", "reason", "detail", "run_id", "recorded_at"])


def post_window(log: Log, run_id: str, options: PostingOptions, ops_engine: Any, connections_for: Callable,
                start: dt.date, end: dt.date, *, tenants: list[str] | None = None,
                rechart: Callable[[Connections], Callable] | None = None,
                rate_limit_scale: float = 1.0, backoff: float = 0.5) -> PostedWindow:
    """Post [start, end) exactly once from the operational database (entries, state, tokens, remote changes and
    policies): every tenant, or only `tenants` (one shard). Needs only that database and the accounting systems
    (`connections_for()`: a context manager yielding `systems.Connections`), so any host with them can run it.
    Remote changes this run's reads saw are recorded; changes the run put right are resolved."""
    from ledger_pipeline.assets.metadata import describe_window
    from ledger_pipeline.connections import company_currencies, plan_window
    from ledger_pipeline.ledger.sink import custom_id_for
    from ledger_pipeline.rates import rate_table
    from ledger_pipeline.remote_changes import RemoteChangeStore
    from ledger_pipeline.state.ledger import load_window
    from ledger_pipeline.state.postings import SqlPostingStore
    from ledger_pipeline.state.vault import connected_systems

    store = SqlPostingStore(ops_engine, run_id)
    changes = RemoteChangeStore(ops_engine, run_id)
    entries, held = load_window(ops_engine, start, end, tenants)
    systems = connected_systems(ops_engine)
    if tenants is not None:
        systems = {t: systems[t] for t in tenants if t in systems}
    # each entry in the tenant's currency, with the loaded rate where the company keeps another (connections.py)
    entries, currency_held, refused = plan_window(entries, systems, company_currencies(ops_engine),
                                                  rate_table(ops_engine, start, end))
    for tenant, months in currency_held.items():
        held.setdefault(tenant, set()).update(months)
    known = changes.load(start, end, tenants)
    t0 = time.monotonic()
    every = options.progress_every or max(1, len(entries) // 20)

    with connections_for() as connections:
        def progress(p: PostingProgress) -> None:  # each system's requests per entry, allowed rate and cost
            report_progress("posting", p)
            if p.done % every == 0 or p.done == p.total:
                log.info(f"posting {describe_window(start, end)}: {p.describe()}")

        job = WindowJob(
            (start, end), systems, entries, store.load(start, end, tenants), held, lambda s: connections(s).sink,
            store, dry_run=options.dry_run, backoff=backoff, on_progress=progress,
            requests=connections.requests_by_system, rate_limit_scale=rate_limit_scale, guard=options.guard,
            rechart=rechart(connections) if rechart else None,
            reload=lambda system, tenant: store.load(start, end, [tenant]).get(system, {}).get(tenant, {}),
            known=known, policies=changes.policies(sorted(set(entries) | set(known))), titles=titles())
        result = job.run()
        requests = connections.requests_by_system()
    for exc in refused:  # a failed posting naming tenant, period, both currencies and the fix (nothing was sent)
        result.outcomes.append((exc.system, TenantOutcome(exc.tenant_id, failures=[
            (custom_id_for(exc.tenant_id, exc.period), str(exc), "rejected")])))
    if not options.dry_run:
        changes.record(result.changes())
        changes.resolve_verified(store.load(start, end, tenants), f"run {run_id}")
        for c in result.changes():
            log.warning(f"tenant {c.tenant_id} {c.period:%Y-%m} ({title(c.system)}): "
                        f"{change_detail(c, title(c.system), DEFAULT_POLICY)} [{c.action}]")
    return PostedWindow(start, end, result, requests, systems, time.monotonic() - t0, held,
                        [refusal(exc) for exc in refused])


def window_tenants(ops_engine: Engine, start: dt.date, end: dt.date) -> list[str]:
    """Tenants with an entry (or a held month) in [start, end), plus every connected tenant."""
    from ledger_pipeline.state.models import LedgerEntry
    from ledger_pipeline.state.vault import tenant_systems

    with ops_engine.connect() as conn:
        found = set(conn.execute(select(LedgerEntry.tenant_id).distinct()
                                 .where(LedgerEntry.period >= start, LedgerEntry.period < end)).scalars())
    return sorted(found | set(tenant_systems(ops_engine)))


def refusal(exc: CurrencyRejection) -> dict[str, Any]:
    reason = "no_rate" if "no exchange rate" in str(exc) else "currency_not_accepted"
    return {"tenant_id": exc.tenant_id, "period": exc.period, "reason": reason, "detail": str(exc)}


# -- JSON between hosts ------------------------------------------------------------------------------------------
def _date(value: str | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def _datetime(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in (sorted(value) if isinstance(value, set) else value)]
    return value


def to_wire(posted: PostedWindow) -> dict[str, Any]:
    """`posted` as JSON-safe values (dates as ISO strings); `from_wire` reads it back."""
    outcomes = [[system, {**vars(o), "changes": [vars(c) for c in o.changes]}] for system, o in posted.result.outcomes]
    return _plain({"start": posted.start, "end": posted.end, "requests": posted.requests, "systems": posted.systems,
                   "seconds": posted.seconds, "held": posted.held or {}, "refused": posted.refused or [],
                   "plan": [[system, vars(item)] for system, item in posted.result.plan], "outcomes": outcomes,
                   "refused_deletes": posted.result.refused_deletes, "shards": posted.shards,
                   "recharted": posted.recharted})


def from_wire(data: dict[str, Any]) -> PostedWindow:
    def change(c: dict) -> RemoteChange:
        return RemoteChange(**{**c, "period": _date(c["period"]), "found_at": _datetime(c.get("found_at")),
                               "resolved_at": _datetime(c.get("resolved_at"))})

    result = WindowResult(
        plan=[(system, PlanItem(**{**item, "period": _date(item["period"])})) for system, item in data["plan"]],
        outcomes=[(system, TenantOutcome(o["tenant_id"], dict(o["counts"]), [tuple(f) for f in o["failures"]],
                                         [change(c) for c in o["changes"]])) for system, o in data["outcomes"]],
        refused_deletes=data["refused_deletes"])
    return PostedWindow(_date(data["start"]), _date(data["end"]), result, dict(data["requests"]),
                        dict(data["systems"]), float(data["seconds"]),
                        {t: {_date(d) for d in days} for t, days in data["held"].items()},
                        [{**r, "period": _date(r["period"])} for r in data["refused"]], dict(data.get("shards", {})),
                        list(data.get("recharted", [])))


def merge(start: dt.date, end: dt.date, parts: dict[str, PostedWindow], seconds: float) -> PostedWindow:
    """Several shards' PostedWindows as one (requests summed per system, outcomes and plans concatenated)."""
    result, requests, systems, held, refused = WindowResult(), {}, {}, {}, []
    deletes = []
    for part in parts.values():
        result.plan += part.result.plan
        result.outcomes += part.result.outcomes
        if part.result.refused_deletes:
            deletes.append(part.result.refused_deletes)
        for system, n in part.requests.items():
            requests[system] = requests.get(system, 0) + n
        systems.update(part.systems)
        for tenant, months in (part.held or {}).items():
            held.setdefault(tenant, set()).update(months)
        refused += part.refused or []
    result.refused_deletes = " ".join(deletes) or None
    shards = {name: part.shards.get(name, {}) for name, part in parts.items()}
    recharted = sorted({t for part in parts.values() for t in part.recharted})
    return PostedWindow(start, end, result, requests, systems, seconds, held, refused, shards, recharted)


def worker_identity() -> dict[str, str]:
    """Where this code runs: host, pid, source address, private data dir, and the Celery node and queue (if any)."""
    s = load_settings()
    ident = {"host": socket.gethostname(), "pid": str(os.getpid()), "source_address": s.source_address or "default",
             "data_dir": str(s.data_dir.resolve())}
    try:
        from celery import current_task
    except ImportError:  # the embedded profile has no Celery
        return ident
    request = current_task.request if current_task else None
    if request is not None and request.id:
        ident["celery_worker"] = str(request.hostname)
        ident["celery_queue"] = str((request.delivery_info or {}).get("routing_key", "")).split(".")[0]
    return ident
