"""The contract every accounting system in the registry (ledger_pipeline.systems.SYSTEMS) keeps, over real HTTP
against its sandbox emulation, through the posting engine: entries land with our amounts and reconcile; a re-run
writes nothing; late data updates the remote entry instead of adding a second; faults after the write still end
exactly once; a revoked grant fails that tenant permanently with the fix while the others post; a closed period is
refused with the fix. Adding a system to the registry runs all of it.

One sandbox server and one connection per system serve the whole module (each test uses its own tenants);
per-system files (test_system_<name>.py, test_jurnal_*.py) keep only what is the system's own (SyncToken, daily
caps, upload jobs, approvals, reversals, id quirks)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ledger_pipeline.ledger.sink import SinkError, custom_id_for
from ledger_pipeline.reconcile import reconcile_tenant
from ledger_pipeline.systems import SYSTEMS
from ledger_pipeline.testing import private_env
from ledger_pipeline.testing.systems import (
    FAULT_DRILL,
    MONTHS,
    WINDOW,
    MemoryStore,
    Sandbox,
    assert_exactly_once,
    chart_ids,
    connect_tenants,
    monthly_entries,
    open_system,
    post,
    sandbox_server,
)

JAN, FEB, MAR = MONTHS


@dataclass(frozen=True)
class Profile:
    """What the contract lets a system do its own way (everything else is asserted alike for every system)."""

    updates_in_place: bool = True  # late data changes the same remote entry (Aden reverses and re-posts instead)
    locked_fix: str = "reopen"  # the fix a closed-period refusal names
    drill_setup: Callable[[Sandbox, str, list[str]], None] | None = None  # before the fault drill
    between_runs: Callable[[Sandbox, str], None] | None = None  # what people do between two runs of the drill


def _aden_approvers(box: Sandbox, system: str, tenants: list[str]) -> None:
    for t in tenants[:4]:  # four tenants need a person's approval of every entry (Aden's workflow)
        box.control(system, t, "approval_threshold", {"approval_threshold": "1.00"})


def _aden_approve(box: Sandbox, system: str) -> None:
    for x in box.entries(system):
        if x["status"] == "Pending Approval":
            box.control(system, x["company_login"], "approvals", {"entry_id": x["id"], "action": "approve"})


PROFILES: dict[str, Profile] = {
    "jurnal": Profile(locked_fix="open the period"),
    "quickbooks": Profile(locked_fix="closing date"),
    "zoho": Profile(locked_fix="Transaction Locking"),
    "aden": Profile(updates_in_place=False, locked_fix="reopen the period", drill_setup=_aden_approvers,
                    between_runs=_aden_approve),
    "rootfi": Profile(locked_fix="reopen the period"),
}


@dataclass
class World:
    """The module's sandbox, its /_sandbox client and one open connection per system (opened on first use)."""

    server: Any
    box: Sandbox
    conns: dict[str, Any] = field(default_factory=dict)
    posted: dict[str, Posted] = field(default_factory=dict)

    def conn(self, system: str) -> Any:
        if system not in self.conns:
            self.conns[system] = open_system(system)
        return self.conns[system]

    def first_post(self, system: str) -> Posted:
        """Two tenants' three months posted once per system and module (the post, re-run and late-data tests
        start from it: the re-run uses the first tenant, late data the second)."""
        if system not in self.posted:
            tenants = _tenants(system, "p", 2)
            conn, wanted = _start(self, system, tenants)
            store = MemoryStore()
            outcomes = {t: post(conn, store, t, wanted[t]) for t in tenants}
            self.posted[system] = Posted(conn, store, wanted, outcomes)
        return self.posted[system]


@dataclass
class Posted:
    conn: Any
    store: MemoryStore
    wanted: dict[str, list]  # tenant -> the entries as last posted
    outcomes: dict[str, Any]  # tenant -> the first run's TenantOutcome


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("contract")
    with private_env(root, first_month="2024-01"), sandbox_server(root / "sandbox.sqlite") as (server, box):
        w = World(server, box)
        try:
            yield w
        finally:
            for c in w.conns.values():
                c.close()


@pytest.fixture(params=list(SYSTEMS))
def system(request: pytest.FixtureRequest, world: World) -> Iterator[str]:
    world.box.faults()
    yield request.param
    world.box.faults()


def _tenants(system: str, scenario: str, n: int) -> list[str]:
    """Tenants of one test: unique in the shared sandbox, short enough for every system's key (QuickBooks: 21)."""
    return [f"{scenario}{system[:2]}{i}" for i in range(n)]


def _start(world: World, system: str, tenants: list[str]) -> tuple[Any, dict[str, list]]:
    conn = world.conn(system)
    connect_tenants(conn, tenants)
    return conn, {t: monthly_entries(t, chart_ids(conn, t)) for t in tenants}


def _reconciled(conn: Any, tenant: str, entries: list) -> None:
    rows = reconcile_tenant(tenant, entries, conn.sink.list_period(tenant, *WINDOW))
    assert [r.status for r in rows] == ["match"] * len(entries), [(r.custom_id, r.status, r.detail) for r in rows]


def test_post_lands_our_amounts_and_reconciles(world: World, system: str) -> None:
    p = world.first_post(system)
    for t, out in p.outcomes.items():
        assert out.counts == {"create": 3} and not out.failures, (system, t, out)
    assert {r.status for r in p.store.rows.values()} == {"posted"}
    assert all(r.remote_id for r in p.store.rows.values()), "the remote id of every entry is kept"
    assert_exactly_once(world.box, system, [e for es in p.wanted.values() for e in es], tenants=p.wanted)
    for t, entries in p.wanted.items():
        _reconciled(p.conn, t, entries)


def test_rerun_makes_zero_writes(world: World, system: str) -> None:
    p = world.first_post(system)
    t = next(iter(p.wanted))
    world.box.reset_stats()
    out = post(p.conn, p.store, t, p.wanted[t])
    assert out.counts == {"skip": 3} and not out.failures
    stats = world.box.stats(system)
    assert stats["api_writes"] == 0 and stats["api_requests"] == 0, f"{system}: an unchanged re-run sends nothing"


def test_late_data_updates_the_remote_entry_not_a_second_one(world: World, system: str) -> None:
    p = world.first_post(system)
    t = list(p.wanted)[1]
    before = {cid: r.remote_id for cid, r in p.store.state(t).items()}
    late = monthly_entries(t, chart_ids(p.conn, t), bump={FEB: 12_345_00})  # late R2a rows change February
    out = post(p.conn, p.store, t, late)
    p.wanted[t] = late
    assert out.counts == {"update": 1, "skip": 2} and not out.failures, (system, out)
    assert_exactly_once(world.box, system, late, tenants=[t])  # February's new amounts, once; no second entry
    if PROFILES.get(system, Profile()).updates_in_place:
        assert {cid: r.remote_id for cid, r in p.store.state(t).items()} == before, "updated in place, same entry"
    assert p.store.rows[custom_id_for(t, FEB)].status == "posted"
    _reconciled(p.conn, t, late)
    world.box.reset_stats()
    assert post(p.conn, p.store, t, late).counts == {"skip": 3} and world.box.stats(system)["api_writes"] == 0


@pytest.mark.parametrize("fault", ["error_after_commit_rate", "drop_after_commit_rate"])
def test_a_5xx_or_a_lost_answer_after_the_write_ends_exactly_once(world: World, system: str, fault: str) -> None:
    """Every write of one run is applied and then answered with a 5xx, or its answer is lost (a timeout): the run
    looks the entries up before writing again and adopts them; what a multi-step workflow (Aden: create, submit)
    could not settle stays pending ("uncertain") and the next run settles it. Nothing is written twice."""
    [t] = _tenants(system, "w" if fault.startswith("error") else "d", 1)
    conn, wanted = _start(world, system, [t])
    jan = wanted[t][:1]
    store = MemoryStore()
    world.box.reset_stats()
    world.box.faults(**{fault: 1.0}, writes_only=True, systems=[system])
    first = post(conn, store, t, jan)
    world.box.faults()
    seen = Counter(r["status"] for r in world.box.stats()["requests"] if r["system"] == system)
    assert seen["dropped" if fault.startswith("drop") else 500] + seen[502] + seen[503] > 0, (system, seen)
    assert set(first.counts) <= {"adopted", "create"} and {k for _, _, k in first.failures} <= {"uncertain"}, first
    assert sum(first.counts.values()) + len(first.failures) == 1, first
    second = post(conn, store, t, jan)  # the next run, without faults
    assert not second.failures and {r.status for r in store.rows.values()} == {"posted"}, second
    assert_exactly_once(world.box, system, jan, tenants=[t])
    world.box.reset_stats()
    assert post(conn, store, t, jan).counts == {"skip": 1} and world.box.stats(system)["api_writes"] == 0


def test_fault_drill_ends_exactly_once(world: World, system: str) -> None:
    """10 tenants x 3 months under 5xx before and after the write, lost answers and refused tokens: each run
    re-runs what is not posted yet (as the next Dagster run would) until all is, each entry exactly once."""
    profile = PROFILES.get(system, Profile())
    tenants = _tenants(system, "f", 10)
    conn, wanted = _start(world, system, tenants)
    if profile.drill_setup:
        profile.drill_setup(world.box, system, tenants)
    everything = [e for t in tenants for e in wanted[t]]
    store = MemoryStore()
    world.box.reset_stats()
    world.box.faults(**FAULT_DRILL, systems=[system])
    for _run in range(5):
        todo = store.unposted(everything)
        if not todo:
            break
        for t in sorted(todo):
            post(conn, store, t, wanted[t])
        if profile.between_runs:
            profile.between_runs(world.box, system)
    world.box.faults()
    faulted = Counter(r["status"] for r in world.box.stats()["requests"] if r["system"] == system)
    assert sum(faulted[s] for s in (401, 500, 502, 503, "dropped")) > 0, f"{system}: the drill bit ({faulted})"
    assert store.unposted(everything) == set(), f"{system}: still not posted after 5 runs"
    assert len(store.rows) == 30 and {r.status for r in store.rows.values()} == {"posted"}
    assert all(r.verified_at is not None for r in store.rows.values()), "every entry read back after its write"
    dead = [x for x in world.box.entries(system) if x["company_login"] in tenants and not x.get("live", True)]
    assert dead == [], f"{system}: no entry needed reversing or voiding"
    assert world.box.stats(system)["rate_limited"] == 0, "paced under the system's limits, faults or not"
    assert_exactly_once(world.box, system, everything, tenants=tenants)
    for t in tenants:
        _reconciled(conn, t, wanted[t])
    world.box.reset_stats()
    for t in tenants:
        assert post(conn, store, t, wanted[t]).counts == {"skip": 3}
    assert world.box.stats(system)["api_writes"] == 0


def test_revoked_grant_fails_permanently_with_the_fix_and_others_go_on(world: World, system: str) -> None:
    gone, fine = _tenants(system, "g", 2)
    conn, wanted = _start(world, system, [gone, fine])
    world.box.control(system, gone, "revoke")
    store = MemoryStore()
    out = {t: post(conn, store, t, wanted[t]) for t in (gone, fine)}
    assert out[fine].counts == {"create": 3} and not out[fine].failures, "the other tenants go on"
    failed = out[gone].failures
    assert not out[gone].counts and {k for _, _, k in failed} == {"needs_reauth"}, (system, failed)
    assert all(f"connect --tenant {gone}" in m and f"--system {system}" in m for _, m, _ in failed), failed
    assert conn.vault.statuses()[gone][0] == "needs_reauth", "recorded: the tenant is skipped until reconnected"
    with pytest.raises(SinkError) as err:
        conn.sink.find(gone, wanted[gone][0].custom_id)
    assert err.value.kind == "needs_reauth"
    assert world.box.entries(system, gone) == []
    world.box.reset_stats()
    still = post(conn, store, gone, wanted[gone])
    assert {k for _, _, k in still.failures} == {"needs_reauth"} and not still.counts
    sent = [r for r in world.box.stats()["requests"] if r["system"] == system]
    assert sent == [], f"{system}: permanent: the next run sends nothing for the tenant, token refresh included"
    # the tenant reconnects (the fix); the next run posts its months, each once
    connect_tenants(conn, [gone])
    again = post(conn, store, gone, wanted[gone])
    assert again.counts == {"create": 3} and not again.failures, (system, again)
    assert_exactly_once(world.box, system, [*wanted[gone], *wanted[fine]], tenants=[gone, fine])


def test_closed_period_is_refused_with_the_fix(world: World, system: str) -> None:
    [t] = _tenants(system, "c", 1)
    conn, wanted = _start(world, system, [t])
    world.box.control(system, t, "lock_date", {"lock_date": "2025-01-31"})
    store = MemoryStore()
    out = post(conn, store, t, wanted[t])
    assert out.counts == {"create": 2}, (system, out)
    [(cid, message, kind)] = out.failures
    assert (cid, kind) == (custom_id_for(t, JAN), "locked"), (system, out.failures)
    fix = PROFILES.get(system, Profile()).locked_fix
    assert fix.lower() in message.lower(), f"{system}: the refusal names the fix ({fix!r}): {message}"
    assert store.rows[cid].status != "posted"
    assert_exactly_once(world.box, system, wanted[t][1:], tenants=[t])
    # the period is reopened: the next run (a new process: nothing cached of the periods) posts January once
    world.box.control(system, t, "lock_date", {"lock_date": None})
    next_run = open_system(system)
    try:
        assert post(next_run, store, t, wanted[t]).counts == {"create": 1, "skip": 2}
    finally:
        next_run.close()
    assert_exactly_once(world.box, system, wanted[t], tenants=[t])
