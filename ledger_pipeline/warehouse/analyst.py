"""For analysts in a long-lived Python process (a notebook): always open the newest published snapshot.

    from ledger_pipeline.warehouse.analyst import open_latest, snapshot_info
    con = open_latest()                 # read-only, the newest snapshot at the time of the call
    con.sql("FROM analytics.pl_by_month").show()
    snapshot_info(con)                  # {'snapshot_id': ..., 'published_at': ..., 'run_id': ..., ...}
    con = open_latest()                 # again later: the newest snapshot again (runs have published since)
    df = frame("FROM analytics.pl_by_month WHERE currency = ?", ["IDR"])   # pandas with exact money

Money in pandas: DuckDB's own `.df()` turns DECIMAL columns into float64 (680291300.125 becomes 6.802913e+08, and
sums drift). `frame()` goes through Arrow instead and keeps every column typed by Arrow (`pd.ArrowDtype`): DECIMAL
money stays `decimal128(21, 3)` (each value a `decimal.Decimal`, sums exact), dates stay dates, strings strings.

Why not `duckdb.connect(LEDGER_WAREHOUSE, read_only=True)` twice: DuckDB keeps one database instance per path in
a process, so the second connect returns the first file even after a publish replaced it. Each publish writes a new
version file (`warehouse.<snapshot_id>.duckdb`, see warehouse/snapshots.py), and `open_latest()` opens the newest
version by its own path. A connection keeps the snapshot it opened for as long as it is open; call `open_latest()`
to move on. A new process (DuckDB CLI, DBeaver) can simply open LEDGER_WAREHOUSE: it is always the newest snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd

from ledger_pipeline.warehouse.store import latest_snapshot


def _published(path: str | Path | None) -> Path:
    if path is not None:
        return Path(path)
    from ledger_pipeline.settings import load_settings

    return load_settings().warehouse_path


def latest_path(path: str | Path | None = None) -> Path:
    """The newest snapshot file of LEDGER_WAREHOUSE (or of `path`)."""
    published = _published(path)
    found = latest_snapshot(published)
    if found is not None:
        return found
    if published.exists():
        return published  # published before snapshots were versioned
    raise FileNotFoundError(f"no warehouse published at {published} yet: run the pipeline (make demo) first")


def open_latest(path: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the newest published snapshot of LEDGER_WAREHOUSE (or of `path`)."""
    for _ in range(3):
        target = latest_path(path)
        if target == _published(path):  # an unversioned file: a fresh instance, never the process-cached one
            con = duckdb.connect(":memory:")
            con.execute(f"ATTACH '{str(target).replace(chr(39), chr(39) * 2)}' AS warehouse (READ_ONLY)")
            con.execute("USE warehouse")
            return con
        try:
            return duckdb.connect(str(target), read_only=True)
        except duckdb.IOException:
            if target.exists():
                raise
            # pruned between listing and opening (only when newer ones exist): take the newest again
    raise RuntimeError(f"could not open the newest snapshot of {_published(path)}")


def snapshot_info(con: duckdb.DuckDBPyConnection) -> dict:
    """What `con` reads: {snapshot_id, published_at (UTC), run_id, published_by, file} from meta.snapshot."""
    cur = con.execute("SELECT * FROM meta.snapshot")
    row = cur.fetchone()
    return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else {}


def frame(sql: str, params: Sequence[object] | None = None, *, con: duckdb.DuckDBPyConnection | None = None,
          path: str | Path | None = None) -> pd.DataFrame:
    """The result of `sql` as a pandas frame with exact money: Arrow-backed columns (`pd.ArrowDtype`), DECIMAL as
    `decimal128` (values are `decimal.Decimal`), never float64. Runs on `con`, else on a fresh `open_latest(path)`
    connection closed afterwards. Raises duckdb.Error for bad SQL, FileNotFoundError when nothing is published."""
    own = con is None
    con = con or open_latest(path)
    try:
        table = (con.execute(sql, list(params)) if params else con.sql(sql)).to_arrow_table()
        return table.to_pandas(types_mapper=pd.ArrowDtype)
    finally:
        if own:
            con.close()
