"""Run liveness and slot bookkeeping: a run whose process is gone never blocks the next one.

A run holds two things other runs wait for: a slot of the `duckdb` pool (`concurrency_slots` in the instance) and
the run tag `ledger/duckdb_writer` (limit 1 in the committed dagster.yaml). Dagster frees both when a run *ends*,
but a SIGKILLed or OOM-killed process never ends its run: it stays STARTED and keeps its slot forever.

Liveness is decided from the process, never from a timeout, so a slow live run is never failed:
- CLI runs carry `ledger/pid`, `ledger/host` and `ledger/process_started` tags. The run is dead when, on this host,
  that pid no longer exists, is a zombie, or now belongs to a process started at another time (pid reuse).
- Runs launched by `dagster dev` (DefaultRunLauncher) record "Started process for run (pid: N)" as an engine event.
  On a local code server that pid must exist and have started no later than that event.
- Anything else (another host, no pid recorded) is `unknown` and treated as alive.

`LedgerRunLauncher` plugs the same check into Dagster's run monitoring (dagster.yaml `run_monitoring`), so the daemon
fails dead UI runs; the CLI clears dead runs itself before it waits (`clear_dead`), and `ledger-pipeline runs` shows
and clears them by hand.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher
from dagster._core.storage.tags import GRPC_INFO_TAG, REPOSITORY_LABEL_TAG

TAG_PID = "ledger/pid"
TAG_HOST = "ledger/host"
TAG_STARTED = "ledger/process_started"
WRITER_TAG = "ledger/duckdb_writer"
CLEAR_COMMAND = "ledger-pipeline runs --clear-dead"
IN_FLIGHT = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.QUEUED,
             dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.NOT_STARTED]
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}  # noqa: S104 - names, not a bind


# ---- processes ------------------------------------------------------------------------------------------------

def host() -> str:
    return socket.gethostname()


def process_started(pid: int) -> float | None:
    """Epoch seconds the process started, or None when there is no such (living) process. Zombies count as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            return None
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    try:  # no /proc (macOS): ps
        out = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True,  # noqa: S607
                             timeout=5, check=False).stdout.strip()
        if not out or out.startswith("Z"):
            return None
        return dt.datetime.strptime(out.split(None, 1)[1].strip(), "%a %b %d %H:%M:%S %Y").timestamp()
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def process_tags(pid: int | None = None) -> dict[str, str]:
    """Tags that identify this process for good: pid + host + start time (a reused pid has another start time)."""
    pid = pid or os.getpid()
    return {TAG_PID: str(pid), TAG_HOST: host(), TAG_STARTED: f"{process_started(pid) or 0:.2f}"}


@dataclass(frozen=True)
class Liveness:
    state: str  # alive | dead | unknown | queued
    detail: str

    @property
    def dead(self) -> bool:
        return self.state == "dead"


def worker_pid_event(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The run worker's pid and when it was recorded, from the engine event the code server writes."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=50).records
    for record in records:
        event = record.event_log_entry
        message = event.dagster_event.message if event.dagster_event else ""
        if message and message.startswith("Started process for run (pid:"):
            pid = event.dagster_event.event_specific_data.metadata.get("pid")
            if pid is not None:
                return int(pid.value), event.timestamp
    return None


def liveness(instance: dg.DagsterInstance, run: dg.DagsterRun) -> Liveness:
    """Whether the process executing `run` is alive. `dead` only when provably gone; never guesses from time."""
    if run.status == dg.DagsterRunStatus.QUEUED:
        return Liveness("queued", "waiting in the run queue (no process yet)")
    tags = run.tags
    if TAG_PID in tags:
        pid, where = int(tags[TAG_PID]), tags.get(TAG_HOST, "?")
        if where != host():
            return Liveness("unknown", f"pid {pid} on another host ({where}): not checked from here")
        started = process_started(pid)
        recorded = float(tags.get(TAG_STARTED) or 0)
        if started is None:
            return Liveness("dead", f"process {pid} on {where} is gone")
        if recorded and abs(started - recorded) > 1.0:
            return Liveness("dead", f"process {pid} on {where} is gone (the pid now belongs to another process)")
        return Liveness("alive", f"pid {pid} on {where}")
    grpc = json.loads(tags[GRPC_INFO_TAG]) if GRPC_INFO_TAG in tags else None
    if grpc is None:
        return Liveness("unknown", "no process recorded for this run")
    if grpc.get("host") and grpc["host"] not in _LOCAL_HOSTS | {host()}:
        return Liveness("unknown", f"run worker on code server host {grpc['host']}: not checked from here")
    found = worker_pid_event(instance, run.run_id)
    if found is None:
        return Liveness("unknown", "run worker not started yet")
    pid, at = found
    started = process_started(pid)
    if started is None:
        return Liveness("dead", f"run worker process {pid} is gone")
    if started > at + 1.0:
        return Liveness("dead", f"run worker process {pid} is gone (the pid now belongs to a newer process)")
    return Liveness("alive", f"run worker pid {pid}")


# ---- what runs hold -------------------------------------------------------------------------------------------

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


# ---- the run launcher: Dagster's run monitoring uses the same liveness check ----------------------------------

class LedgerRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher plus a worker health check, so `run_monitoring` fails runs whose process is gone.

    DefaultRunLauncher itself has no health check: a run whose worker (or code server) died stays STARTED.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        state = liveness(self._instance, run)
        if state.dead:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"{state.detail}: the run's process died without "
                                        "ending the run; run monitoring marks it failed and frees its slots")
        return CheckRunHealthResult(WorkerStatus.RUNNING, state.detail)


# ---- a supervised CLI run: visible, bounded waits and prompt, clean cancellation ------------------------------

class StopRun(dg.DagsterExecutionInterruptedError):
    """Raised in the run's thread to stop it between two Python statements (between HTTP requests)."""


def _raise_in(thread: threading.Thread) -> None:
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(StopRun))


@dataclass
class Outcome:
    run_id: str
    result: dg.ExecuteInProcessResult | None = None
    status: dg.DagsterRunStatus | None = None
    message: str = ""
    exit_code: int = 0
    pool_reads: int = 0  # how often the supervisor read the pool tables (see PoolWatch)


def wait_until_free(instance: dg.DagsterInstance, timeout: float, echo: Callable[[str], None],
                    stop: Callable[[], bool], every: float = 5.0) -> str | None:
    """Before starting: clear dead runs, then wait (visibly, bounded) while live runs hold the writer slots.

    Returns None when free, else the message to fail with.
    """
    t0, last_log = time.time(), 0.0
    while True:
        clear_dead(instance, f"`ledger-pipeline run` (pid {os.getpid()})", echo)
        holders = blockers(instance)
        if not holders:
            return None
        waited = time.time() - t0
        if waited >= timeout:
            return "not started: " + wait_message(holders, waited, timeout, "the DuckDB writer slot")
        if stop():
            return "not started: stopped while waiting for " + "; ".join(h.describe() for h in holders)
        if time.time() - last_log >= every:
            last_log = time.time()
            echo(f"waiting for the DuckDB writer slot ({waited:.0f}s/{timeout:.0f}s): "
                 + "; ".join(h.describe() for h in holders))
        time.sleep(0.5)


# The code location name of workspace.yaml and pyproject's [tool.dagster] (`dagster dev`, `make dev`), and the name
# Dagster gives the repository of a Definitions object (dagster._core.definitions.repository_definition
# SINGLETON_REPOSITORY_NAME).
CODE_LOCATION = "ledger_pipeline"
REPOSITORY = "__repository__"


def ui_tags(location: str = CODE_LOCATION, repository: str = REPOSITORY) -> dict[str, str]:
    """The tag a run started in the UI carries (DagsterRun.tags_for_storage: `.dagster/repository` =
    `repository@location`, from its remote job origin) and that the job's Runs tab and partition run matrix filter
    on (`runsFilter: {pipelineName, tags: [{key: ".dagster/repository", value: "__repository__@ledger_pipeline"}]}`
    in dagster-webserver 1.13): a CLI run (execute_in_process, no remote origin) carries it too, so it is listed
    with the job's runs."""
    return {REPOSITORY_LABEL_TAG: f"{repository}@{location}"}


def execute_supervised(job: dg.JobDefinition, instance: dg.DagsterInstance, *, tags: Mapping[str, str],
                       run_config: dict, timeout: float, echo: Callable[[str], None],
                       grace: float = 6.0, every: float = 5.0, watch: PoolWatch | None = None) -> Outcome:
    """Run `job` in a thread while the main thread handles signals and watches pool waits.

    Dagster's in-process claim loop busy-waits for a pool slot with interrupts captured, so neither SIGTERM nor
    Ctrl-C would stop it; here the main thread turns them into CANCELED, and bounds the wait.
    """
    import uuid

    stop: dict[str, int] = {}
    handlers = {}

    def on_signal(signum: int, _frame: object) -> None:
        stop.setdefault("signum", signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        handlers[sig] = signal.signal(sig, on_signal)
    try:
        why = wait_until_free(instance, timeout, echo, lambda: "signum" in stop, every)
        run_id = str(uuid.uuid4())
        if why is not None:
            return Outcome(run_id, message=why, exit_code=128 + stop["signum"] if "signum" in stop else 1)
        box: dict[str, object] = {}

        def work() -> None:
            try:
                box["result"] = job.execute_in_process(instance=instance, tags={**ui_tags(), **tags, **process_tags()},
                                                       run_config=run_config, run_id=run_id, raise_on_error=False)
            except BaseException as exc:  # noqa: BLE001 - reported by the supervisor
                box["error"] = exc

        worker = threading.Thread(target=work, name=f"run-{run_id[:8]}", daemon=True)
        worker.start()
        return _supervise(instance, worker, run_id, box, stop, timeout, echo, grace, every, watch)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@dataclass
class PoolWatch:
    """How often the supervisor reads the pool tables (each read is a few SQL queries on the instance's storage,
    taken while the run's own thread competes for the GIL and the same SQLite file).

    Until the run first holds a pool slot it reads every `fast` seconds (a wait is seen at once); from then on it
    only reads every `slow` seconds: the run's later steps normally reclaim the slot at once (the writer tag keeps
    other closes out), and a wait there is still seen, logged and bounded, `slow` seconds later at most."""

    fast: float = 0.25
    slow: float = 5.0
    reads: int = 0
    held_at: float | None = None  # when the run was first seen holding a slot (time.time())
    next_read: float = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_read

    def read(self, instance: dg.DagsterInstance, run_id: str, now: float) -> list[str]:
        """The pools the run waits for (and remembers whether it has held a slot yet)."""
        self.reads += 1
        waiting, held = pool_state(instance, run_id)
        if held and self.held_at is None:
            self.held_at = now
        self.next_read = now + (self.fast if self.held_at is None or waiting else self.slow)
        return waiting


def _supervise(instance: dg.DagsterInstance, worker: threading.Thread, run_id: str, box: dict, stop: dict,
               timeout: float, echo: Callable[[str], None], grace: float, every: float,
               watch: PoolWatch | None = None) -> Outcome:
    waiting_since: float | None = None
    last_log, stop_at, last_raise, message = 0.0, None, 0.0, ""
    failed_by_wait = False
    watch = watch if watch is not None else PoolWatch()
    box["watch"] = watch
    while worker.is_alive():
        worker.join(watch.fast)
        now = time.time()
        if "signum" in stop and stop_at is None:
            name = signal.Signals(stop["signum"]).name
            message = f"stopped by {name}: run canceled, slots freed; re-run to finish (posting resumes exactly)"
            echo(f"{name} received: canceling run {run_id}")
            run = instance.get_run_by_id(run_id)
            if run is not None and not run.is_finished:
                with contextlib.suppress(Exception):
                    instance.report_run_canceling(run, f"{name} received by ledger-pipeline run")
            stop_at = now
        if stop_at is None and not failed_by_wait and watch.due(now):
            pools = watch.read(instance, run_id, now)
            if not pools:
                waiting_since = None
            else:
                waiting_since = waiting_since or now
                holders = [i for i in blockers(instance, run_id) if any(p in pools for p, _, _ in i.pools)]
                if any(h.liveness.dead for h in holders):
                    for h in holders:
                        if h.liveness.dead:
                            clear_run(instance, h, f"`ledger-pipeline run` {run_id}")
                            echo(f"cleared dead {h.describe()}")
                    continue
                what = f"a slot of pool {', '.join(pools)}"
                if now - waiting_since >= timeout:
                    message = wait_message(holders, now - waiting_since, timeout, what)
                    echo(message)
                    run = instance.get_run_by_id(run_id)
                    if run is not None and not run.is_finished:
                        instance.report_run_failed(run, message)
                    failed_by_wait, stop_at = True, now
                elif now - last_log >= every:
                    last_log = now
                    echo(f"waiting for {what} ({now - waiting_since:.0f}s/{timeout:.0f}s): "
                         + "; ".join(h.describe() for h in holders))
        if stop_at is not None:
            if now - last_raise >= 2.0:  # re-raise in case a cleanup path swallowed it
                _raise_in(worker)
                last_raise = now
            if now - stop_at > grace:
                echo(f"run {run_id} did not stop within {grace:.0f}s: ending the process")
                break
    return _finish(instance, run_id, box, stop, message, failed_by_wait)


def _finish(instance: dg.DagsterInstance, run_id: str, box: dict, stop: dict, message: str,
            failed_by_wait: bool) -> Outcome:
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        if "signum" in stop:
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message or "the run's thread ended without ending the run")
    free_slots(instance, run_id)
    run = instance.get_run_by_id(run_id)
    status = run.status if run else None
    if "signum" in stop:
        code = 128 + stop["signum"]
    elif failed_by_wait or "error" in box or status != dg.DagsterRunStatus.SUCCESS:
        code = 1
    else:
        code = 0
    if "error" in box and not message:
        message = f"{type(box['error']).__name__}: {box['error']}"
    watch = box.get("watch")
    return Outcome(run_id, box.get("result"), status, message, code,  # type: ignore[arg-type]
                   watch.reads if isinstance(watch, PoolWatch) else 0)
