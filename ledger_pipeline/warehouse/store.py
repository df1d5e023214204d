"""The DuckDB warehouse: a private work file that runs write, and a published snapshot analysts open.

DuckDB allows one writing process per file, and with duckdb >= 2 even a read-only open fails while another
process writes. So runs never write `LEDGER_WAREHOUSE`: they write a private work file (serialised across
processes by a file lock, on top of Dagster's `duckdb` pool), and `publish()` checkpoints it and swaps a copy onto
`LEDGER_WAREHOUSE` with an atomic rename. An analyst's open connection keeps reading the snapshot it opened;
a new connection sees the newest one. Nobody ever sees a half-written window.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
from filelock import FileLock

from ledger_pipeline.warehouse import schema

_LOCKS: dict[str, FileLock] = {}


def _lock_for(path: Path, timeout: float) -> FileLock:
    """One re-entrant lock object per work file and process (thread-local, so threads contend too)."""
    key = str(path.resolve())
    if key not in _LOCKS:
        _LOCKS[key] = FileLock(key + ".lock", timeout=timeout)
    return _LOCKS[key]


class Warehouse:
    def __init__(self, work_path: Path, publish_path: Path, lock_timeout: float = 600):
        self.work_path = Path(work_path)
        self.publish_path = Path(publish_path)
        self.work_path.parent.mkdir(parents=True, exist_ok=True)
        self.publish_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_for(self.work_path, lock_timeout)

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An exclusive read-write connection to the work file, schema ensured."""
        with self._lock:
            con = duckdb.connect(str(self.work_path))
            try:
                for stmt in schema.ddl():
                    con.execute(stmt)
                yield con
            finally:
                con.close()

    def publish(self) -> Path:
        """Atomically replace LEDGER_WAREHOUSE with a consistent copy of the work file."""
        with self._lock:
            con = duckdb.connect(str(self.work_path))
            try:
                for stmt in schema.ddl():
                    con.execute(stmt)
                con.execute("CHECKPOINT")
            finally:
                con.close()
            fd, tmp = tempfile.mkstemp(dir=self.publish_path.parent, prefix=".snapshot-", suffix=".duckdb")
            os.close(fd)
            try:
                shutil.copyfile(self.work_path, tmp)
                os.replace(tmp, self.publish_path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
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
            con.execute(f"INSERT INTO {table} SELECT {schema.select_list(table)} FROM frame")
        finally:
            con.unregister("frame")
    return len(frame)


def window_where(column: str = "period") -> str:
    return f"{column} >= CAST(? AS DATE) AND {column} < CAST(? AS DATE)"
