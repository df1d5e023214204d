"""What people look at: exact previews and metadata, described tables, fresh snapshots in a long-lived process."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ledger_pipeline.assets.metadata import (
    column_schema,
    describe_window,
    preview_markdown,
    table_result_metadata,
)
from ledger_pipeline.warehouse import analyst, descriptions, schema
from ledger_pipeline.warehouse.analyst import latest_path, open_latest, snapshot_info
from ledger_pipeline.warehouse.store import Warehouse, prune_snapshots, snapshot_files

HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def entries_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "tenant_id": ["t00001", "t00002"], "period": pd.to_datetime(["2026-05-01", "2026-06-01"]),
        "custom_id": ["r2a-pl-t00001-202605", "r2a-pl-t00002-202606"],
        "transaction_date": pd.to_datetime(["2026-05-31", "2026-06-30"]), "memo": ["a | b", "c"],
        "currency": ["IDR", "IDR"], "line_count": [5, 4],
        "total_debit_minor": [54_893_000_012, 100], "total_credit_minor": [54_893_000_012, 100],
        "net_income_minor": [-3_623_820_000, 0], "content_hash": [HASH, HASH], "source_rows": [12, 3],
    })


def test_preview_shows_amounts_dates_and_hashes_as_the_books_hold_them() -> None:
    md = preview_markdown(entries_frame())
    assert "548,930,000.12" in md and "-36,238,200.00" in md and "1.00" in md
    assert "e+" not in md and "5.4893" not in md
    assert "2026-05-01" in md and "00:00:00" not in md and "2026-05-31" in md
    assert HASH not in md and HASH[:12] + "…" in md
    assert "a \\| b" in md  # a pipe in a value does not break the table
    header = md.splitlines()[0]
    assert header.index("total_debit") < header.index("total_credit") < header.index("content_hash")
    assert "_minor" not in header


def test_preview_of_duckdb_money_is_exact_whether_decimal_or_float() -> None:
    con = duckdb.connect()
    rel = "SELECT 't1' AS tenant_id, DATE '2026-05-01' AS period, 548930000.12::DECIMAL(18,2) AS debit, " \
          "-36238200.00::DECIMAL(18,2) AS credit, 99999999999.99::DECIMAL(18,2) AS local_total"
    as_pandas = con.execute(rel).fetchdf()  # DECIMAL -> float64 in pandas
    as_python = pd.DataFrame(con.execute(rel).fetchall(), columns=["tenant_id", "period", "debit", "credit",
                                                                   "local_total"])  # Decimal, datetime.date
    assert isinstance(as_python["debit"][0], Decimal)
    for frame in (as_pandas, as_python):
        md = preview_markdown(frame)
        assert "548,930,000.12" in md and "-36,238,200.00" in md and "99,999,999,999.99" in md, md
        assert "2026-05-01" in md and "00:00:00" not in md and "e+" not in md
    assert preview_markdown(as_pandas.iloc[0:0]) == "_(no rows)_"


def test_metadata_keys_and_totals_read_well() -> None:
    meta = table_result_metadata("ledger.journal_entries", entries_frame())
    assert meta["total_debit"] == "548,930,001.12" and meta["total_credit"] == "548,930,001.12"
    assert meta["total_net_income"] == "-36,238,200.00"
    assert not [k for k in meta if k.startswith("total_total")]


def test_windows_read_as_inclusive_months() -> None:
    assert describe_window(dt.date(2026, 5, 1), dt.date(2026, 8, 1)) == "2026-05 .. 2026-07"
    assert describe_window(dt.datetime(2026, 5, 1), dt.datetime(2026, 6, 1)) == "2026-05"
    assert describe_window("2025-12-01", "2026-02-01") == "2025-12 .. 2026-01"


def test_every_table_and_column_is_described() -> None:
    """Fails (instead of a run) when someone adds a table or column to schema.TABLES without a description."""
    views = {name: [] for name in {**schema.VIEWS, **schema.META_VIEWS}}
    missing = descriptions.missing({**schema.TABLES, **schema.META_TABLES, **views})
    assert not missing, f"add descriptions to ledger_pipeline/warehouse/descriptions.py for: {missing}"
    for table in schema.TABLES:
        assert all(c.description for c in column_schema(table).columns), table


def test_duckdb_shows_the_descriptions(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    for stmt in schema.ddl():
        con.execute(stmt)
    rows = con.execute("SELECT schema_name || '.' || table_name, column_name, comment FROM duckdb_columns() "
                       "WHERE schema_name IN ('r2a', 'ledger', 'accounting', 'meta') AND NOT internal").fetchall()
    expected = {(t, c) for t, cols in {**schema.TABLES, **schema.META_TABLES}.items() for c, _ in cols}
    described = {(t, c) for t, c, comment in rows if comment}
    assert expected <= described, expected - described
    tables = dict(con.execute("SELECT schema_name || '.' || table_name, comment FROM duckdb_tables()").fetchall())
    assert tables["ledger.journal_entries"] == descriptions.table_description("ledger.journal_entries")
    for stmt in schema.ddl():  # idempotent: every process runs it again on its first connection
        con.execute(stmt)


def write_month(wh: Warehouse, tenant: str) -> None:
    with wh.connect() as con:
        con.execute("INSERT INTO ledger.journal_entries (tenant_id, period, total_debit) "
                    "VALUES (?, DATE '2026-05-01', 548930000.12)", [tenant])


def count(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT COUNT(*) FROM ledger.journal_entries").fetchone()[0]


def test_one_process_open_publish_open_again_sees_the_new_snapshot(tmp_path: Path) -> None:
    published = tmp_path / "warehouse.duckdb"
    wh = Warehouse(tmp_path / "work" / "w.duckdb", published)
    write_month(wh, "t00001")
    wh.publish(run_id="run-1")
    first = open_latest(published)
    plain = duckdb.connect(str(published), read_only=True)  # what a notebook did before: the path, cached
    assert count(first) == count(plain) == 1
    assert snapshot_info(first)["run_id"] == "run-1"

    write_month(wh, "t00002")
    assert wh.publish(run_id="run-2") == published  # the stable path, as before
    second = open_latest(published)
    assert count(second) == 2, "a new open_latest() sees the newest snapshot in the same process"
    info = snapshot_info(second)
    assert info["run_id"] == "run-2" and info["file"] == latest_path(published).name
    assert isinstance(info["published_at"], dt.datetime)
    assert count(first) == 1, "an open connection keeps the snapshot it opened"
    log = second.execute("SELECT run_id FROM meta.snapshot_log ORDER BY published_at").fetchall()
    assert log == [("run-1",), ("run-2",)]
    # the stable path (CLI, DBeaver, a new process) is the newest snapshot, the same file, not a second copy
    assert os.stat(published).st_ino == os.stat(latest_path(published)).st_ino
    out = subprocess.run([sys.executable, "-c", "import duckdb, sys; print(duckdb.connect(sys.argv[1], "
                          "read_only=True).execute('SELECT run_id FROM meta.snapshot').fetchone()[0])",
                          str(published)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "run-2"
    wh.publish()  # no run (a script): still recorded
    third = open_latest(published)
    assert snapshot_info(third)["run_id"] is None and count(third) == 2
    for con in (first, plain, second, third):
        con.close()


def test_old_snapshots_are_pruned_but_open_ones_keep_reading(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    published = tmp_path / "warehouse.duckdb"
    wh = Warehouse(tmp_path / "work" / "w.duckdb", published)
    write_month(wh, "t00001")
    wh.publish(run_id="old")
    held = open_latest(published)
    for i in range(5):
        write_month(wh, f"t1000{i}")
        wh.publish(run_id=f"r{i}")
    assert len(snapshot_files(published)) == 6  # all younger than the grace period
    removed = prune_snapshots(published, keep=3, grace=0)
    assert len(removed) == 3 and len(snapshot_files(published)) == 3
    assert count(held) == 1, "a connection open on a pruned snapshot keeps reading it"
    assert count(open_latest(published)) == 6
    held.close()


def test_open_latest_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no warehouse published"):
        open_latest(tmp_path / "nothing.duckdb")


def test_partitions_start_at_the_configured_month(tmp_path: Path) -> None:
    """LEDGER_FIRST_MONTH wins; unset, the default is the first of the 12 months the demo seeds, and Dagster's last
    partition is the product clock's last complete month (both computed in the business timezone)."""
    code = ("from ledger_pipeline.definitions import defs; "
            "m = defs().resolve_job_def('monthly_close_job').partitions_def; "
            "print(m.get_first_partition_key(), m.get_last_partition_key())")
    env = {**os.environ, "LEDGER_FIRST_MONTH": "2024-01", "LEDGER_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "2024-01-01"
    env.pop("LEDGER_FIRST_MONTH")
    from ledger_pipeline import clock

    before = clock.recent_months(12)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    after = clock.recent_months(12)  # the same unless a month ended during the subprocess
    got = tuple(out.stdout.split())
    assert got in {(f"{m[0]:%Y-%m-%d}", f"{m[-1]:%Y-%m-%d}") for m in (before, after)}


def test_a_0_1_0_warehouse_is_migrated_on_first_use(tmp_path: Path) -> None:
    """jurnal.* tables of 0.1.0 become rows of accounting.* (system jurnal) and views; BIGINT ids become VARCHAR."""
    work = tmp_path / "work.duckdb"
    con = duckdb.connect(str(work))
    con.execute("CREATE SCHEMA jurnal; CREATE SCHEMA ledger")
    con.execute("CREATE TABLE jurnal.postings (tenant_id VARCHAR, period DATE, custom_id VARCHAR, remote_id BIGINT, "
                "remote_line_ids VARCHAR, content_hash VARCHAR, action VARCHAR, status VARCHAR, attempts INTEGER, "
                "error VARCHAR, posted_at TIMESTAMP, updated_at TIMESTAMP, run_id VARCHAR)")
    con.execute("INSERT INTO jurnal.postings VALUES ('t00001', '2025-01-01', 'r2a-pl-t00001-202501', 42, '1,2', 'h', "
                "'create', 'posted', 1, NULL, NULL, NULL, 'r0')")
    con.execute("CREATE TABLE ledger.journal_lines (tenant_id VARCHAR, period DATE, custom_id VARCHAR, "
                "line_no INTEGER, account_id BIGINT)")
    con.execute("INSERT INTO ledger.journal_lines VALUES ('t00001', '2025-01-01', 'r2a-pl-t00001-202501', 1, 77)")
    con.close()
    with Warehouse(work, tmp_path / "warehouse.duckdb").connect() as con:
        assert con.execute("SELECT system, remote_id, status FROM accounting.postings").fetchall() == [
            ("jurnal", "42", "posted")]
        assert con.execute("SELECT remote_id FROM jurnal.postings").fetchall() == [(42,)], "0.1.0's name, a view"
        assert con.execute("SELECT account_id FROM ledger.journal_lines").fetchall() == [("77",)]
        kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables "
                                 "WHERE table_schema = 'jurnal'").fetchall())
    assert kinds["postings"] == "VIEW"


def test_an_analysts_pandas_frame_keeps_money_exact(tmp_path: Path) -> None:
    """`warehouse.analyst.frame` on the analytics views: DECIMAL stays decimal (Arrow), never float64."""
    published = tmp_path / "warehouse.duckdb"
    wh = Warehouse(tmp_path / "work" / "w.duckdb", published)
    with wh.connect() as con:
        con.execute("INSERT INTO r2a.pl_monthly (tenant_id, period, revenue, cogs, expenses, net_income, currency) "
                    "VALUES ('t1', DATE '2026-05-01', 680291300.12, 0.01, 0, 680291300.11, 'KWD'), "
                    "('t2', DATE '2026-05-01', 0.10, 0.20, 0, -0.10, 'IDR')")
    wh.publish(run_id="run-1")
    with open_latest(published) as con:
        assert con.sql("SELECT SUM(revenue) FROM r2a.pl_monthly").df().dtypes.iloc[0] == "float64"  # the trap
    df = analyst.frame("SELECT * FROM r2a.pl_monthly ORDER BY tenant_id DESC", path=published)
    assert str(df["revenue"].dtype).startswith("decimal128")
    assert df["revenue"].tolist() == [Decimal("0.100"), Decimal("680291300.12")]
    assert df.loc[df["currency"] == "KWD", "net_income"].sum() == Decimal("680291300.11")
    one = analyst.frame("SELECT revenue FROM r2a.pl_monthly WHERE tenant_id = ?", ["t1"], path=published)
    assert one["revenue"][0] == Decimal("680291300.12")
