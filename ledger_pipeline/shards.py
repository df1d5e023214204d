"""Tenant shards for the production profile: which posting worker (Celery queue, source address) owns a tenant.

Why shards: the binding month-end limit is per source address for Jurnal (40 requests/min; the other systems limit per
token or per organisation, see each client's limits): one host posts 2,400 Jurnal tenants an hour; N hosts, each with
its own address, post N times as many. A tenant belongs to exactly one shard, and one shard is served
by one worker at a time (its queue `ledger-shard-N` has one consumer running one task at a time, and one close runs at
a time), so a tenant's token and its rotating refresh token are only ever used from one place.

The assignment is a table in the operational database (`shard_assignments`), written once per tenant and never
changed implicitly:
- a new tenant goes to the least-loaded shard (ties: the lowest shard), in one transaction that holds a lock so two
  runs assigning at once cannot disagree;
- `rebalance` is explicit (`ledger-pipeline shards --rebalance [--count N]`): tenants on shards beyond the count move
  to the least-loaded kept shard, then the fewest tenants move from the fullest to the emptiest shard until the
  counts differ by at most one. Run it only while no posting run is in flight (the command checks the instance).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from ledger_pipeline.state.models import ShardAssignment

SHARD_PREFIX = "shard-"
QUEUE_PREFIX = "ledger-"
DEFAULT_QUEUE = "ledger-default"  # every run (the close, charts, drift, repost): the DuckDB host
POSTING_JOBS = ("monthly_close_job", "repost_job")  # the runs that post (and so read shard assignments)


def shard_keys(count: int) -> list[str]:
    """Static partition keys `shard-0` .. `shard-<count-1>`."""
    if count < 1:
        raise ValueError(f"LEDGER_SHARDS must be at least 1, not {count}")
    return [f"{SHARD_PREFIX}{i}" for i in range(count)]


def queue_for(shard: str) -> str:
    """The Celery queue serving a shard: `ledger-shard-2` (its worker runs `-Q ledger-shard-2`)."""
    return f"{QUEUE_PREFIX}{shard}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _lock(conn, engine: Engine) -> None:  # noqa: ANN001
    """Serialise assigners: a table lock on Postgres; SQLite's write lock is taken by the first write."""
    if engine.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE shard_assignments IN SHARE ROW EXCLUSIVE MODE"))


def ensure_table(engine: Engine) -> None:
    ShardAssignment.__table__.create(engine, checkfirst=True)


def assignments(engine: Engine) -> dict[str, str]:
    """tenant -> shard, every assigned tenant."""
    with engine.connect() as conn:
        return dict(conn.execute(select(ShardAssignment.tenant_id, ShardAssignment.shard)).all())


def tenants_of(engine: Engine, shard: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(ShardAssignment.tenant_id).where(ShardAssignment.shard == shard)
                                 .order_by(ShardAssignment.tenant_id)).scalars())


def counts(engine: Engine, keys: list[str]) -> dict[str, int]:
    """Tenants per shard (every key listed, plus any shard still holding tenants beyond the keys)."""
    found = Counter(assignments(engine).values())
    return {**{k: found.get(k, 0) for k in keys}, **{k: n for k, n in sorted(found.items()) if k not in keys}}


def assign_new(engine: Engine, tenants: list[str], keys: list[str]) -> dict[str, str]:
    """Assign each tenant without a shard to the least-loaded shard among `keys`; returns the new assignments.

    Existing assignments are never touched (stable), whatever `keys` is now: shrinking is a rebalance."""
    ensure_table(engine)
    insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert
    with engine.begin() as conn:
        _lock(conn, engine)
        current = dict(conn.execute(select(ShardAssignment.tenant_id, ShardAssignment.shard)).all())
        todo = sorted(set(tenants) - set(current))
        if not todo:
            return {}
        load = {k: 0 for k in keys}
        for shard in current.values():
            if shard in load:
                load[shard] += 1
        new: dict[str, str] = {}
        for tenant in todo:
            shard = min(keys, key=lambda k: (load[k], keys.index(k)))
            new[tenant] = shard
            load[shard] += 1
        now = _now()
        stmt = insert(ShardAssignment).values([{"tenant_id": t, "shard": s, "assigned_at": now}
                                               for t, s in new.items()])
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["tenant_id"]))
    return new


@dataclass(frozen=True)
class Move:
    tenant_id: str
    source: str
    target: str


def plan_rebalance(current: dict[str, str], keys: list[str]) -> list[Move]:
    """The fewest moves that put every tenant on a shard in `keys` with counts differing by at most one."""
    by_shard: dict[str, list[str]] = {k: [] for k in keys}
    orphans: list[tuple[str, str]] = []
    for tenant, shard in sorted(current.items()):
        if shard in by_shard:
            by_shard[shard].append(tenant)
        else:
            orphans.append((tenant, shard))
    moves: list[Move] = []

    def emptiest() -> str:
        return min(keys, key=lambda k: (len(by_shard[k]), keys.index(k)))

    for tenant, shard in orphans:
        target = emptiest()
        by_shard[target].append(tenant)
        moves.append(Move(tenant, shard, target))
    while True:
        full = max(keys, key=lambda k: (len(by_shard[k]), -keys.index(k)))
        empty = emptiest()
        if len(by_shard[full]) - len(by_shard[empty]) <= 1:
            return moves
        tenant = by_shard[full].pop()  # the last tenant id: deterministic
        by_shard[empty].append(tenant)
        moves.append(Move(tenant, full, empty))


def rebalance(engine: Engine, keys: list[str], dry_run: bool = False) -> list[Move]:
    """Apply `plan_rebalance` in one locked transaction (nothing when `dry_run`)."""
    ensure_table(engine)
    with engine.begin() as conn:
        _lock(conn, engine)
        current = dict(conn.execute(select(ShardAssignment.tenant_id, ShardAssignment.shard)).all())
        moves = plan_rebalance(current, keys)
        if not dry_run:
            now = _now()
            for m in moves:
                conn.execute(update(ShardAssignment).where(ShardAssignment.tenant_id == m.tenant_id)
                             .values(shard=m.target, assigned_at=now))
    return moves


def posting_runs_in_flight() -> list[str] | None:
    """Run ids of posting runs (POSTING_JOBS) queued or running in the instance at DAGSTER_HOME; None if it cannot be
    read."""
    try:
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            records = instance.get_run_records(dg.RunsFilter(statuses=[
                dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]))
            return [r.dagster_run.run_id for r in records if r.dagster_run.job_name in POSTING_JOBS
                    or r.dagster_run.job_name.startswith("__ASSET_JOB")]  # a UI materialization of `postings`
    except Exception:  # noqa: BLE001 - no instance here (no DAGSTER_HOME, services unreachable): say so
        return None


def command(engine: Engine, tenants: list[str], count: int, *, assign: bool, rebalance_: bool, dry_run: bool,
            force: bool, echo: Callable[[str], None]) -> int:
    """`ledger-pipeline shards`: show, assign new tenants, or rebalance. Returns the exit code."""
    keys = shard_keys(count)
    if assign:
        new = {} if dry_run else assign_new(engine, tenants, keys)
        echo(f"assigned {len(new)} new tenant(s)" if not dry_run else "dry run: nothing assigned")
    if rebalance_:
        if not dry_run and not force:
            busy = posting_runs_in_flight()
            if busy is None:
                echo("cannot read the Dagster instance (DAGSTER_HOME, DAGSTER_POSTGRES_URL) to check that no posting "
                     "run is in flight; check it yourself, then pass --force")
                return 2
            if busy:
                echo(f"{len(busy)} posting run(s) queued or running ({', '.join(busy[:5])}): a tenant moved now "
                     "could be posted by two workers at once. Wait for them (or cancel them), then rebalance.")
                return 2
        moves = rebalance(engine, keys, dry_run)
        for source, target in sorted(Counter((m.source, m.target) for m in moves)):
            n = sum(1 for m in moves if (m.source, m.target) == (source, target))
            echo(f"{'would move' if dry_run else 'moved'} {n} tenant(s) {source} -> {target}")
        echo(f"{len(moves)} tenant(s) {'to move' if dry_run else 'moved'}")
    per_shard = counts(engine, keys)
    unassigned = len(set(tenants) - set(assignments(engine)))
    for shard, n in per_shard.items():
        echo(f"{shard:<10} {n:>7,} tenant(s)  queue {queue_for(shard)}{'' if shard in keys else '  (beyond --count)'}")
    echo(f"unassigned connected tenants: {unassigned:,} (the next close assigns them)")
    return 0
