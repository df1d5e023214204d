"""Published snapshots of the DuckDB warehouse: versioned files beside LEDGER_WAREHOUSE, the stable path pointed at
the newest, old versions pruned.

Each publish writes `<stem>.<snapshot_id>.duckdb` (read-only, e.g. `warehouse.20260522T010203123456Z.duckdb`) beside
LEDGER_WAREHOUSE and then hard-links LEDGER_WAREHOUSE to it, so the stable path (DuckDB CLI, DBeaver, a new process)
is always the newest snapshot and no bytes are copied twice. Why versions: DuckDB caches one database instance per
path inside a process, so a long-lived process (a notebook) reopening the same path keeps reading the file it first
opened, even after the rename. A new path per snapshot has no such cache: `ledger_pipeline.warehouse.analyst.
open_latest()` opens the newest one. Every snapshot records itself in `meta.snapshot_log` (`meta.snapshot` is the one
you read): snapshot_id, published_at, run_id. Old versions are pruned (the newest SNAPSHOTS_KEPT and any younger than
SNAPSHOT_GRACE_SECONDS stay); on POSIX a connection open on a pruned file keeps reading it until closed.

The caller holds the work file's lock (`store.Warehouse.publish`); nothing here knows of Dagster.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb


def publish_snapshot(work_path: Path, publish_path: Path, run_id: str | None,
                     ensure_schema: Callable[[duckdb.DuckDBPyConnection], None]) -> Path:
    """Record the snapshot in the work file's `meta.snapshot_log`, checkpoint it, copy it to a new version file and
    point `publish_path` at it; prune old versions. Returns the version file. The caller holds the work-file lock."""
    snapshot_id = _new_snapshot_id(publish_path)
    version = snapshot_path(publish_path, snapshot_id)
    con = duckdb.connect(str(work_path))
    try:
        ensure_schema(con)
        con.execute("INSERT INTO meta.snapshot_log (snapshot_id, published_at, run_id, published_by, file) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [snapshot_id, _utc_now(), run_id, f"{socket.gethostname()}:{os.getpid()}", version.name])
        con.execute("CHECKPOINT")
    finally:
        con.close()
    _atomic_copy(work_path, version)
    _point_stable_path(version, publish_path)
    prune_snapshots(publish_path)
    return version


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
