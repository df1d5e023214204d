"""Dagster runs seen from the process that executes them: a run whose process is gone never blocks the next one.

- `liveness`: whether a run's process is alive (/proc: pid, host, start time), never guessed from a timeout.
- `slots`: what runs hold (the `duckdb` pool, the `ledger/duckdb_writer` run tag), clearing dead runs, cancelling.
- `launcher`: `LedgerRunLauncher`, the committed dagster.yaml's run launcher (run monitoring uses the same check).
- `supervisor`: the CLI's supervised execution (signals, bounded pool waits, the UI's job tags).

Every name is re-exported here: `ledger_pipeline.runs.X` keeps working (dagster.yaml names this module).
"""

from ledger_pipeline.runs.launcher import LedgerRunLauncher
from ledger_pipeline.runs.liveness import (
    TAG_HOST,
    TAG_PID,
    TAG_STARTED,
    Liveness,
    host,
    liveness,
    process_started,
    process_tags,
    worker_pid_event,
)
from ledger_pipeline.runs.slots import (
    CLEAR_COMMAND,
    IN_FLIGHT,
    WRITER_TAG,
    RunInfo,
    blockers,
    cancel,
    clear_dead,
    clear_run,
    free_slots,
    pool_state,
    runs_in_flight,
    wait_message,
    waiting_for_pool,
)
from ledger_pipeline.runs.supervisor import (
    CODE_LOCATION,
    REPOSITORY,
    Outcome,
    PoolWatch,
    StopRun,
    execute_supervised,
    ui_tags,
    wait_until_free,
)

__all__ = [
    "CLEAR_COMMAND", "CODE_LOCATION", "IN_FLIGHT", "REPOSITORY", "TAG_HOST", "TAG_PID", "TAG_STARTED", "WRITER_TAG",
    "LedgerRunLauncher", "Liveness", "Outcome", "PoolWatch", "RunInfo", "StopRun", "blockers", "cancel",
    "clear_dead", "clear_run", "execute_supervised", "free_slots", "host", "liveness", "pool_state",
    "process_started", "process_tags", "runs_in_flight", "ui_tags", "wait_message", "wait_until_free",
    "waiting_for_pool", "worker_pid_event",
]
