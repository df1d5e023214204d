"""A supervised CLI run (`ledger-pipeline run`, `demo`): visible, bounded waits and prompt, clean cancellation.

The job runs in a thread (`execute_in_process`) while the main thread handles SIGTERM/SIGINT, watches pool waits
(`PoolWatch`) and clears dead holders; a stop is raised in the run's thread between two Python statements (ctypes
`PyThreadState_SetAsyncExc`), since Dagster's in-process claim loop captures interrupts.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from ledger_pipeline.runs.liveness import process_tags
from ledger_pipeline.runs.slots import blockers, clear_dead, clear_run, free_slots, pool_state, wait_message


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
