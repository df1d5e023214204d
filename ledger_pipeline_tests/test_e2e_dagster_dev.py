"""End to end: `dagster dev` on loopback (webserver + daemon) with the committed instance config, backfills
launched through GraphQL as the UI does, an analyst holding a DuckDB connection open the whole time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest

from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.testing.cluster import BACKFILL_STATUS, LAUNCH_BACKFILL
from ledger_pipeline.testing.net import wait_for
from ledger_pipeline_tests.dev_server import dagster_dev, graphql, partition_keys
from ledger_pipeline_tests.helpers import connect, materialize_gl, sandbox_entries

pytestmark = pytest.mark.slow

ANALYST = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)  # opened once, held for the whole test
print("ready", flush=True)
while True:
    try:
        n = con.execute("SELECT COUNT(*) FROM jurnal.gl_accounts").fetchone()[0]
        print(f"ok {n}", flush=True)
    except Exception as exc:
        print(f"ERROR {exc}", flush=True)
    time.sleep(0.5)
"""
PARTITIONED = ["r2a_pl_monthly", "journal_entries", "journal_lines", "postings", "reconciliation"]


def launch_backfill(url: str, first: str, last: str) -> str:
    keys = partition_keys()
    keys = keys[keys.index(first):keys.index(last) + 1]
    result = graphql(url, LAUNCH_BACKFILL, {"params": {
        "partitionNames": keys, "assetSelection": [{"path": [a]} for a in PARTITIONED],
        "title": f"test backfill {first}..{last}"}})["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def backfill(url: str, first: str, last: str, timeout: float = 240) -> dict:
    """Launch the months' backfill as the UI does and wait until it ends; its status and runs."""
    backfill_id = launch_backfill(url, first, last)
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = graphql(url, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if status["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            return status
        time.sleep(1)
    raise AssertionError(f"backfill {first}..{last} did not finish in {timeout}s: {status}")


def test_backfills_from_the_ui_with_an_analyst_connected(settings, sandbox, tmp_path) -> None:  # noqa: ANN001
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, 8, 6, seeding.default_start(6), seed=4)
    connect([f"t{i:05d}" for i in range(1, 9)])
    materialize_gl()
    analyst = None
    with dagster_dev(tmp_path) as url:
        try:
            # an analyst process opens the warehouse and keeps its connection open through the backfill
            analyst = subprocess.Popen([sys.executable, "-c", ANALYST, str(settings.warehouse_path)],
                                       stdout=subprocess.PIPE, text=True)
            assert analyst.stdout.readline().strip() == "ready"
            keys = partition_keys()
            status = backfill(url, keys[-6], keys[-1])  # six months, as an operator selects them in the UI
            assert status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), status
            assert [r["status"] for r in status["runs"]] == ["SUCCESS"], "a ranged backfill is one run"
            fresh = duckdb.connect(str(settings.warehouse_path), read_only=True)
            months = fresh.execute("SELECT COUNT(DISTINCT period) FROM ledger.journal_entries").fetchone()[0]
            entries = fresh.execute("SELECT COUNT(*) FROM ledger.journal_entries").fetchone()[0]
            recon = fresh.execute("SELECT DISTINCT status FROM accounting.reconciliation").fetchall()
            fresh.close()
            remote = [e for e in sandbox_entries(sandbox.url) if e["custom_id"]]
            assert months == 6 and entries >= 40 and recon == [("match",)]
            assert len(remote) == entries == len({e["custom_id"] for e in remote}), "each entry exactly once"
            assert "Could not set lock" not in (tmp_path / "dagster_dev.log").read_text()
            # SIGKILL: it cannot be blocked (an xdist worker's children may inherit a blocked SIGTERM); the lines the
            # analyst printed stay in the pipe
            analyst.kill()
            seen = analyst.communicate(timeout=60)[0].splitlines()
            assert len(seen) >= 10 and all(line.startswith("ok") for line in seen), "the analyst never saw an error"
        finally:
            if analyst is not None and analyst.poll() is None:
                analyst.kill()


def test_killed_ui_run_is_failed_by_run_monitoring_and_the_next_backfill_succeeds(settings, sandbox,  # noqa: ANN001
                                                                                    tmp_path) -> None:
    from ledger_pipeline.runs import worker_pid_event

    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, 12, 12, seeding.default_start(12), seed=5)
    connect([f"t{i:05d}" for i in range(1, 13)])
    materialize_gl()
    home = Path(os.environ["DAGSTER_HOME"])
    keys = partition_keys()
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={"latency_ms": 150, "writes_only": True})
    with dagster_dev(tmp_path, home) as url, dg.DagsterInstance.from_config(str(home)) as instance:
        launch_backfill(url, keys[-3], keys[-1])
        run = wait_for("the backfill's run", lambda: instance.get_run_records(
            dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])), 90, 0.2)[0].dagster_run
        wait_for("posting to start", lambda: len(sandbox_entries(sandbox.url)) >= 2, 90, 0.05)
        pid, _ = worker_pid_event(instance, run.run_id)
        os.kill(pid, signal.SIGKILL)
        partial = len(sandbox_entries(sandbox.url))

        failed = wait_for("the killed run to be marked failed", lambda: (
            r := instance.get_run_by_id(run.run_id)).status == dg.DagsterRunStatus.FAILURE and r, 60, 0.5)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        wait_for("its duckdb slot to be freed", lambda: run.run_id not in {
            s.run_id for s in instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots}, 30, 0.5)

        httpx.post(f"{sandbox.url}/_sandbox/faults", json={})
        backfill_id = launch_backfill(url, keys[-3], keys[-1])

        def finished() -> dict | None:
            state = graphql(url, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            return state if state["status"] not in ("REQUESTED", "CANCELING", "FAILING") else None
        backfill_status = wait_for("the new backfill", finished, 180, 1)
        assert backfill_status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill_status
        assert [r["status"] for r in backfill_status["runs"]] == ["SUCCESS"]
    fresh = duckdb.connect(str(settings.warehouse_path), read_only=True)
    entries = fresh.execute("SELECT COUNT(*) FROM ledger.journal_entries").fetchone()[0]
    recon = fresh.execute("SELECT DISTINCT status FROM jurnal.reconciliation").fetchall()
    fresh.close()
    remote = [e["custom_id"] for e in sandbox_entries(sandbox.url) if e["custom_id"]]
    assert 0 < partial < entries, "killed mid-posting"
    assert len(remote) == len(set(remote)) == entries and recon == [("match",)]
