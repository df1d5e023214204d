"""What runs hold, and clearing what dead runs left: a run whose process is gone never blocks the next one.

A run holds two things other runs wait for: a slot of the `duckdb` pool (`concurrency_slots` in the instance) and
the run tag `ledger/duckdb_writer` (limit 1 in the committed dagster.yaml). Dagster frees both when a run *ends*,
but a SIGKILLed or OOM-killed process never ends its run: it stays STARTED and keeps its slot forever. Whether a
run's process is alive comes from `runs.liveness`.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from ledger_pipeline.runs.liveness import TAG_PID, Liveness, liveness

WRITER_TAG = "ledger/duckdb_writer"
CLEAR_COMMAND = "ledger-pipeline runs --clear-dead"
IN_FLIGHT = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.QUEUED,
             dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.NOT_STARTED]


@dataclass
class RunInfo:
    run: dg.DagsterRun
    liveness: Liveness
    pools: list[tuple[str, str, dt.datetime | None]] = field(default_factory=list)  # (pool, step, since)
    started: dt.datetime | None = None

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def writer(self) -> bool:
        """Holds the `ledger/duckdb_writer` run-tag slot (an in-progress run with the tag)."""
        return WRITER_TAG in self.run.tags and self.run.status != dg.DagsterRunStatus.QUEUED

    @property
    def holds(self) -> str:
        held = [f"pool {p} ({step})" for p, step, _ in self.pools]
        if self.writer:
            held.append(f"run tag {WRITER_TAG}")
        return ", ".join(held) or "nothing"

    @property
    def since(self) -> dt.datetime | None:
        times = [t for _, _, t in self.pools if t] or ([self.started] if self.started else [])
        return min(times) if times else None

    def describe(self) -> str:
        since = f" since {self.since:%Y-%m-%d %H:%M:%S}" if self.since else ""
        return (f"run {self.run_id} ({self.run.status.value}, {self.liveness.state}: {self.liveness.detail}) "
                f"holding {self.holds}{since}")


def _slots_by_run(instance: dg.DagsterInstance) -> dict[str, list[tuple[str, str, dt.datetime | None]]]:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    held: dict[str, list[tuple[str, str, dt.datetime | None]]] = {}
    for key, info in storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).items():
        assigned = {(p.run_id, p.step_key): p.assigned_timestamp for p in info.pending_steps}
        for slot in info.claimed_slots:
            since = assigned.get((slot.run_id, slot.step_key))
            held.setdefault(slot.run_id, []).append((key, slot.step_key, since.astimezone() if since else None))
    return held


def runs_in_flight(instance: dg.DagsterInstance) -> list[RunInfo]:
    """In-flight runs, plus finished runs that still hold pool slots (leaked by a crash), with what they hold."""
    slots = _slots_by_run(instance)
    records = list(instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT)))
    seen = {r.dagster_run.run_id for r in records}
    leaked = [rid for rid in slots if rid not in seen]
    if leaked:
        records += list(instance.get_run_records(dg.RunsFilter(run_ids=leaked)))
    out = []
    for record in records:
        run = record.dagster_run
        state = liveness(instance, run) if not run.is_finished else Liveness("dead", f"run is {run.status.value}")
        started = dt.datetime.fromtimestamp(record.start_time).astimezone() if record.start_time else None
        out.append(RunInfo(run, state, slots.get(run.run_id, []), started or record.create_timestamp.astimezone()))
    return sorted(out, key=lambda i: i.started or dt.datetime.min.replace(tzinfo=dt.UTC))


def free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def clear_run(instance: dg.DagsterInstance, info: RunInfo, why: str) -> None:
    """Mark a dead run failed (which frees its run-tag slot) and free its pool slots."""
    run = info.run
    if not run.is_finished:
        instance.report_run_failed(run, f"{info.liveness.detail}: the run's process died without ending the run "
                                        f"(SIGKILL, OOM, reboot?). Marked failed by {why}; its pool slots were "
                                        "freed. Re-run the months: posting resumes exactly where it stopped.")
    free_slots(instance, run.run_id)


def clear_dead(instance: dg.DagsterInstance, why: str, echo: Callable[[str], None] = print) -> list[RunInfo]:
    """Clear every provably dead run (and any finished run still holding slots). Live and unknown runs untouched."""
    cleared = []
    for info in runs_in_flight(instance):
        if info.liveness.dead:
            clear_run(instance, info, why)
            echo(f"cleared dead {info.describe()}")
            cleared.append(info)
    return cleared


def blockers(instance: dg.DagsterInstance, run_id: str | None = None) -> list[RunInfo]:
    """Other runs that hold what a close needs: a `duckdb` pool slot or the writer run-tag slot."""
    return [i for i in runs_in_flight(instance) if i.run_id != run_id and (i.pools or i.writer)
            and not i.run.is_finished]


def pool_state(instance: dg.DagsterInstance, run_id: str) -> tuple[list[str], list[str]]:
    """(pools `run_id` has a step queued for and no slot yet, pools it holds a slot of), from one read."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return [], []
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
    held = [k for k, info in infos.items() if any(s.run_id == run_id for s in info.claimed_slots)]
    waiting = [k for k, info in infos.items()
               if any(p.run_id == run_id and p.assigned_timestamp is None for p in info.pending_steps)
               and k not in held]
    return waiting, held


def waiting_for_pool(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Pools `run_id` has a step queued for and no slot yet."""
    return pool_state(instance, run_id)[0]


def wait_message(holders: list[RunInfo], waited: float, limit: float, what: str) -> str:
    named = "; ".join(h.describe() for h in holders) or "another run"
    return (f"waited {waited:.0f}s of {limit:.0f}s (LEDGER_WAIT_TIMEOUT) for {what} held by {named}. "
            f"If that process is gone: `{CLEAR_COMMAND}`; if it is alive and stuck: "
            f"`ledger-pipeline runs --cancel {holders[0].run_id if holders else 'RUN_ID'}`")


def cancel(instance: dg.DagsterInstance, run_id: str) -> str:
    """Stop a live run: SIGTERM to a CLI run's own process (it cancels itself), else the launcher's terminate."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"no run {run_id}"
    if run.is_finished:
        free_slots(instance, run_id)
        return f"run {run_id} is already {run.status.value} (any slots it held are freed)"
    state = liveness(instance, run)
    if state.dead:
        clear_run(instance, RunInfo(run, state), "`ledger-pipeline runs --cancel`")
        return f"run {run_id}: {state.detail}; marked failed, slots freed"
    if TAG_PID in run.tags and state.state == "alive":
        os.kill(int(run.tags[TAG_PID]), signal.SIGTERM)
        return f"run {run_id}: SIGTERM sent to pid {run.tags[TAG_PID]}; it cancels within seconds"
    if run.status == dg.DagsterRunStatus.QUEUED:
        instance.report_run_canceled(run, "canceled by `ledger-pipeline runs --cancel` while queued")
        return f"run {run_id}: canceled while queued"
    ok = instance.run_launcher.terminate(run_id)
    return f"run {run_id}: termination {'requested' if ok else 'could not be requested'} ({state.detail})"
