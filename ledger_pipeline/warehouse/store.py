"""The DuckDB warehouse: a private work file that runs write, and a published snapshot analysts open.

DuckDB allows one writing process per file, and with duckdb >= 2 even a read-only open fails while another
process writes. So runs never write `LEDGER_WAREHOUSE`: they write a private work file (serialised across
processes by a file lock, on top of Dagster's `duckdb` pool), and `publish()` checkpoints it and swaps a copy onto
`LEDGER_WAREHOUSE` with an atomic rename. Nobody ever sees a half-written window.

Snapshots are versioned: each publish writes `<stem>.<snapshot_id>.duckdb` (read-only, e.g.
`warehouse.20260522T010203123456Z.duckdb`) beside LEDGER_WAREHOUSE and then hard-links LEDGER_WAREHOUSE to it, so
the stable path (DuckDB CLI, DBeaver, a new process) is always the newest snapshot and no bytes are copied twice.
Why versions: DuckDB caches one database instance per path inside a process, so a long-lived process (a notebook)
reopening the same path keeps reading the file it first opened, even after the rename. A new path per snapshot
has no such cache: `ledger_pipeline.warehouse.analyst.open_latest()` opens the newest one. Every snapshot records
itself in `meta.snapshot_log` (`meta.snapshot` is the one you read): snapshot_id, published_at, run_id.
Old versions are pruned (the newest SNAPSHOTS_KEPT and any younger than SNAPSHOT_GRACE_SECONDS stay); on POSIX a
connection open on a pruned file keeps reading it until closed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
from filelock import FileLock, Timeout

from ledger_pipeline.warehouse import schema

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


def _current_run_id() -> str | None:
    with contextlib.suppress(Exception):
        import dagster as dg

        return dg.OpExecutionContext.get().run_id
    return None


def _tell(message: str) -> None:
    """A wait message where the operator looks: the Dagster run's log inside a step, else Python logging."""
    with contextlib.suppress(Exception):
        import dagster as dg

        dg.OpExecutionContext.get().log.warning(message)
        return
    _log.warning(message)


def _describe_holder(lock: FileLock) -> str:
    try:
        h = json.loads(_holder_path(lock).read_text())
    except (OSError, ValueError):
        return "another process (holder unknown)"
    run = f"run {h['run_id']}, " if h.get("run_id") else ""
    return f"{run}pid {h.get('pid')} on {h.get('host')} since {h.get('since')} ({h.get('cmd', '')[:120]})"


class Warehouse:
    def __init__(self, work_path: Path, publish_path: Path, lock_timeout: float | None = None):
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
                    _tell(f"waiting for the DuckDB work-file lock ({waited:.0f}s/{self.lock_timeout:.0f}s): held by "
                          f"{_describe_holder(lock)}")
        try:
            with contextlib.suppress(OSError):
                _holder_path(lock).write_text(json.dumps({
                    "pid": os.getpid(), "host": socket.gethostname(), "run_id": _current_run_id(),
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

        `run_id` (the Dagster run, `context.run_id`) is recorded in `meta.snapshot_log` with the time.
        Returns LEDGER_WAREHOUSE (the stable path); `latest_snapshot()` gives the version file.
        """
        with self._locked():
            snapshot_id = _new_snapshot_id(self.publish_path)
            version = snapshot_path(self.publish_path, snapshot_id)
            con = duckdb.connect(str(self.work_path))
            try:
                _ensure_schema(con, self.work_path)
                con.execute("INSERT INTO meta.snapshot_log (snapshot_id, published_at, run_id, published_by, file) "
                            "VALUES (?, ?, ?, ?, ?)",
                            [snapshot_id, _utc_now(), run_id, f"{socket.gethostname()}:{os.getpid()}", version.name])
                con.execute("CHECKPOINT")
            finally:
                con.close()
            _atomic_copy(self.work_path, version)
            _point_stable_path(version, self.publish_path)
            prune_snapshots(self.publish_path)
        return self.publish_path


SNAPSHOTS_KEPT = 3
SNAPSHOT_GRACE_SECONDS = 600
_SNAPSHOT_ID = r"\d{8}T\d{12}Z"


def snapshot_path(publish_path: Path, snapshot_id: str) -> Path:
    publish_path = Path(publish_path)
    return publish_path.with_name(f"{publish_path.stem}.{snapshot_id}{publish_path.suffix}")


def snapshot_files(publish_path: Path) -> list[Path]:
    """The snapshot versions of LEDGER_WAREHOUSE, oldest first (the id sorts by time)."""
    publish_path = Path(publish_path)
    pattern = re.compile(re.escape(publish_path.stem) + r"\.(" + _SNAPSHOT_ID + ")" + re.escape(publish_path.suffix))
    if not publish_path.parent.is_dir():
        return []
    found = [p for p in publish_path.parent.iterdir() if pattern.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.name)


def latest_snapshot(publish_path: Path) -> Path | None:
    files = snapshot_files(publish_path)
    return files[-1] if files else None


def prune_snapshots(publish_path: Path, keep: int = SNAPSHOTS_KEPT,
                    grace: float = SNAPSHOT_GRACE_SECONDS) -> list[Path]:
    """Delete old versions; never the newest `keep`, one younger than `grace` s, or the one LEDGER_WAREHOUSE is."""
    files = snapshot_files(publish_path)
    try:
        current = os.stat(publish_path).st_ino
    except OSError:
        current = None
    removed = []
    for path in files[:-keep] if keep else files:
        try:
            st = path.stat()
            if st.st_ino == current or time.time() - st.st_mtime < grace:
                continue
            path.unlink()
            removed.append(path)
        except OSError:
            continue  # gone already, or in use where unlink is refused (Windows): next publish tries again
    return removed


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _new_snapshot_id(publish_path: Path) -> str:
    while True:
        snapshot_id = _utc_now().strftime("%Y%m%dT%H%M%S%fZ")
        if not snapshot_path(publish_path, snapshot_id).exists():
            return snapshot_id
        time.sleep(0.001)


def _atomic_copy(source: Path, target: Path) -> None:
    """Copy to a temporary file beside `target`, make it read-only, rename: `target` appears complete or not at all."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".snapshot-", suffix=target.suffix)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _point_stable_path(version: Path, publish_path: Path) -> None:
    """Atomically make `publish_path` the same file as `version` (a hard link; a copy where links are refused)."""
    tmp = publish_path.with_name(f".{publish_path.name}.{os.getpid()}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(version, tmp)
        os.replace(tmp, publish_path)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _atomic_copy(version, publish_path)


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


def window_where(column: str = "period") -> str:
    return f"{column} >= CAST(? AS DATE) AND {column} < CAST(? AS DATE)"
