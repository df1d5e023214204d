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

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
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
        table = con.sql(sql, params=list(params) if params else None).to_arrow_table()  # no extra copy of the rows
        return table.to_pandas(types_mapper=pd.ArrowDtype)
    finally:
        if own:
            con.close()


def close_summary(path: str | Path, start: dt.date, end: dt.date) -> list[str]:
    """What a close of [start, end) left in the newest published snapshot, as the lines `ledger-pipeline run` and
    `demo` print: entries and tenants, total debit per currency (never mixed), postings and reconciliation by system
    and status, rejections and unposted entries (first 15 each); the last line names the snapshot to open."""
    from ledger_pipeline.money import format_amount, to_minor

    con = open_latest(path)  # the newest snapshot, even if this process opened an older one before
    try:
        snap = snapshot_info(con)
        w = "period >= CAST(? AS DATE) AND period < CAST(? AS DATE)"
        q = lambda sql: con.execute(sql, [start, end]).fetchall()  # noqa: E731
        tenants, entries = q(f"SELECT COUNT(DISTINCT tenant_id), COUNT(*) FROM ledger.journal_entries WHERE {w}")[0]
        by_currency = q(f"SELECT currency, CAST(SUM(total_debit) AS VARCHAR) FROM ledger.journal_entries "
                        f"WHERE {w} GROUP BY currency ORDER BY currency")
        totals = "; ".join(f"{format_amount(to_minor(Decimal(v), c), c)} {c}" for c, v in by_currency) or "0"
        last = end - dt.timedelta(days=1)
        out = [f"\nsummary {start:%Y-%m} .. {last:%Y-%m}",
               f"  journal entries : {entries:,} for {tenants:,} tenants, total debit {totals}"]
        out += [f"  postings {system:<10} {status:<17}: {n:,}" for system, status, n in q(
            f"SELECT system, status, COUNT(*) FROM accounting.postings WHERE {w} GROUP BY ALL ORDER BY 1, 2")]
        out += [f"  reconciliation {system:<10} {status}: {n:,}" for system, status, n in q(
            f"SELECT system, status, COUNT(*) FROM accounting.reconciliation WHERE {w} GROUP BY ALL ORDER BY 1, 2")]
        rejections = q(f"SELECT tenant_id, period, stage, detail FROM ledger.rejections WHERE {w} ORDER BY 2, 1")
        out.append(f"  rejections      : {len(rejections)}")
        out += [f"    - [{stage}] {detail}" for _tenant, _period, stage, detail in rejections[:15]]
        failed = q(f"SELECT system, custom_id, status, error FROM accounting.postings WHERE {w} AND status IN "
                   "('failed', 'pending', 'rejected', 'awaiting_approval', 'submitted') ORDER BY 1, 2")
        out += [f"    - {system} {cid} {status}: {error}" for system, cid, status, error in failed[:15]]
        where = f"\nwarehouse (open read-only any time): duckdb {path}"
        if snap:
            where += (f"\n  snapshot {snap['snapshot_id']} published {snap['published_at']:%Y-%m-%d %H:%M:%S} UTC"
                      f" by run {snap['run_id'] or '-'} (SELECT * FROM meta.snapshot)")
        out.append(where + "\n  e.g. SELECT * FROM analytics.posting_status LIMIT 20;")
        return out
    finally:
        con.close()
