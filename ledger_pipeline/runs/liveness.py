"""Whether the process executing a run is alive, decided from the process, never from a timeout.

- CLI runs carry `ledger/pid`, `ledger/host` and `ledger/process_started` tags. The run is dead when, on this host,
  that pid no longer exists, is a zombie, or now belongs to a process started at another time (pid reuse).
- Runs launched by `dagster dev` (DefaultRunLauncher) record "Started process for run (pid: N)" as an engine event.
  On a local code server that pid must exist and have started no later than that event.
- Anything else (another host, no pid recorded) is `unknown` and treated as alive.

Reads /proc (or `ps` where there is none); knows nothing of slots or pools.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.tags import GRPC_INFO_TAG

TAG_PID = "ledger/pid"
TAG_HOST = "ledger/host"
TAG_STARTED = "ledger/process_started"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}  # noqa: S104 - names, not a bind


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
