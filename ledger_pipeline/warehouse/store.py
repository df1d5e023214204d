"""The DuckDB warehouse's work file: runs write a private work file, serialised across processes by a file lock (on
top of Dagster's `duckdb` pool), and `publish()` turns it into a snapshot analysts open (warehouse/snapshots.py).

DuckDB allows one writing process per file, and with duckdb >= 2 even a read-only open fails while another
process writes. So runs never write `LEDGER_WAREHOUSE`: they write the work file, and `publish()` checkpoints it
and swaps a copy onto `LEDGER_WAREHOUSE` with an atomic rename. Nobody ever sees a half-written window. A publish
copies the whole file, so a Dagster run publishes once, after its last step that writes (assets/publishing.py
decides when; nothing here knows of runs).

Storage code knows nothing of Dagster: a wait for the lock is told through the `log` callable the caller passes
(the resource passes the step's `context.log.warning`), and the holder file names the caller's `run_id`.
Writes: `transaction`, `replace_rows`; the SQL the assets read is in warehouse/sql.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pandas as pd
from filelock import FileLock, Timeout

from ledger_pipeline.warehouse import schema
from ledger_pipeline.warehouse.snapshots import (  # noqa: F401 - re-exported: store's names before the split
    SNAPSHOT_GRACE_SECONDS,
    SNAPSHOTS_KEPT,
    latest_snapshot,
    prune_snapshots,
    publish_snapshot,
    snapshot_files,
    snapshot_path,
)
from ledger_pipeline.warehouse.sql import window_where  # noqa: F401 - re-exported: store's name before the split

_LOCKS: dict[str, FileLock] = {}
_log = logging.getLogger(__name__)
LOCK_LOG_EVERY = 5.0  # seconds between "still waiting for the lock" lines


class LockWaitTimeout(TimeoutError):
    """The DuckDB work-file lock stayed held by another live process for longer than LEDGER_WAIT_TIMEOUT."""


def _lock_for(path: Path, timeout: float) -> FileLock:
    """One re-entrant lock object per work file and process (thread-local, so threads contend too).

    An OS lock (flock): the kernel releases it when its process dies, so a dead holder never blocks anyone.
    `timeout` is kept for callers; waiting is bounded by `Warehouse._locked`.
    """
    key = str(path.resolve())
    if key not in _LOCKS:
        _LOCKS[key] = FileLock(key + ".lock", timeout=timeout)
    return _LOCKS[key]


_SCHEMA_READY: set[tuple[str, int]] = set()  # (work file, inode) whose schema this process already ensured


def _ensure_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Migrate and create the schema once per work file and process (about 0.1 s of DDL and comments), not on every
    connection; a file replaced since (another inode) is ensured again."""
    key = (str(path.resolve()), path.stat().st_ino)
    if key not in _SCHEMA_READY:
        schema.ensure(con)
        _SCHEMA_READY.add(key)


def _holder_path(lock: FileLock) -> Path:
    return Path(lock.lock_file + ".holder")


def _describe_holder(lock: FileLock) -> str:
    try:
        h = json.loads(_holder_path(lock).read_text())
    except (OSError, ValueError):
        return "another process (holder unknown)"
    run = f"run {h['run_id']}, " if h.get("run_id") else ""
    return f"{run}pid {h.get('pid')} on {h.get('host')} since {h.get('since')} ({h.get('cmd', '')[:120]})"


class Warehouse:
    """The work file (`work_path`) and LEDGER_WAREHOUSE (`publish_path`). `log`: where a wait for the work-file lock
    is told (default: Python logging's warning); `run_id`: the run recorded as the lock's holder and in the snapshot."""

    def __init__(self, work_path: Path, publish_path: Path, lock_timeout: float | None = None,
                 log: Callable[[str], None] | None = None, run_id: str | None = None):
        self.log = log or _log.warning
        self.run_id = run_id
        self.work_path = Path(work_path)
        self.publish_path = Path(publish_path)
        self.work_path.parent.mkdir(parents=True, exist_ok=True)
        self.publish_path.parent.mkdir(parents=True, exist_ok=True)
        if lock_timeout is None:
            from ledger_pipeline.settings import load_settings

            lock_timeout = load_settings().wait_timeout
        self.lock_timeout = lock_timeout
        self._lock = _lock_for(self.work_path, lock_timeout)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The work-file lock; waiting says every few seconds who holds it, and gives up after `lock_timeout`."""
        lock = self._lock
        if lock.is_locked:  # re-entrant in this thread
            with lock:
                yield
            return
        t0 = last = time.time()
        while True:
            try:
                lock.acquire(timeout=min(1.0, max(self.lock_timeout - (time.time() - t0), 0.01)))
                break
            except Timeout:
                waited = time.time() - t0
                if waited >= self.lock_timeout:
                    raise LockWaitTimeout(
                        f"waited {waited:.0f}s (LEDGER_WAIT_TIMEOUT) for the DuckDB work-file lock {lock.lock_file} "
                        f"held by {_describe_holder(lock)}. See `ledger-pipeline runs`; stop the holder with "
                        "`ledger-pipeline runs --cancel RUN_ID` (or `kill PID`), then re-run") from None
                if time.time() - last >= LOCK_LOG_EVERY:
                    last = time.time()
                    self.log(f"waiting for the DuckDB work-file lock ({waited:.0f}s/{self.lock_timeout:.0f}s): held by "
                          f"{_describe_holder(lock)}")
        try:
            with contextlib.suppress(OSError):
                _holder_path(lock).write_text(json.dumps({
                    "pid": os.getpid(), "host": socket.gethostname(), "run_id": self.run_id,
                    "since": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "cmd": " ".join(Path(f"/proc/{os.getpid()}/cmdline").read_text().split("\0")).strip()
                    if Path("/proc/self/cmdline").exists() else ""}))
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An exclusive read-write connection to the work file, schema ensured."""
        with self._locked():
            con = duckdb.connect(str(self.work_path))
            try:
                _ensure_schema(con, self.work_path)
                yield con
            finally:
                con.close()

    def publish(self, run_id: str | None = None) -> Path:
        """Publish a consistent copy of the work file as a new snapshot version and point LEDGER_WAREHOUSE at it.

        `run_id` (the Dagster run, `context.run_id`; default the Warehouse's) is recorded in `meta.snapshot_log`
        with the time. Returns LEDGER_WAREHOUSE (the stable path); `latest_snapshot()` gives the version file.
        Copies the whole work file: Dagster assets publish through `assets/publishing.py` (`publish_if_last`),
        so a run publishes once; an op of its own (repost) or a script calls this directly.
        """
        with self._locked():
            publish_snapshot(self.work_path, self.publish_path, run_id or self.run_id,
                             lambda con: _ensure_schema(con, self.work_path))
        return self.publish_path


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: a crash or error inside leaves the previous rows intact."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def replace_rows(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, where: str,
                 params: list | tuple = ()) -> int:
    """Delete the rows matching `where` and insert `frame` (call inside `transaction`)."""
    con.execute(f"DELETE FROM {table} WHERE {where}", list(params))
    if len(frame):
        con.register("frame", frame)
        try:
            con.execute(f"INSERT INTO {table} SELECT {schema.select_list(table, columns=frame.columns)} FROM frame")
        finally:
            con.unregister("frame")
    return len(frame)
