"""Storage code tells lock waits through the `log` callable its caller passes (the resource passes the step's log),
and names the holder's run from the `run_id` it was given: it never asks Dagster for the current step."""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import pytest

from ledger_pipeline.resources import WarehouseResource
from ledger_pipeline.warehouse import store
from ledger_pipeline.warehouse.store import LockWaitTimeout, Warehouse


def test_a_wait_for_the_work_file_lock_goes_to_the_callers_log_naming_the_holders_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "LOCK_LOG_EVERY", 0.0)
    work, published = tmp_path / "work.duckdb", tmp_path / "warehouse.duckdb"
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with Warehouse(work, published, lock_timeout=30, run_id="run-A").connect():
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    told: list[str] = []
    try:
        assert holding.wait(30)
        waiting = Warehouse(work, published, lock_timeout=1.5, log=told.append, run_id="run-B")
        with pytest.raises(LockWaitTimeout, match="held by run run-A, pid"), waiting.connect():
            pass
    finally:
        release.set()
        holder.join(30)
    assert told and all("waiting for the DuckDB work-file lock" in m and "held by run run-A" in m for m in told)
    with Warehouse(work, published, lock_timeout=5, log=told.append, run_id="run-B").connect() as con:
        assert con.execute("SELECT 1").fetchone() == (1,)  # free again once the holder is done


def test_publish_records_the_warehouses_run(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "work.duckdb", tmp_path / "warehouse.duckdb", lock_timeout=5, run_id="run-C")
    wh.publish()
    import duckdb

    con = duckdb.connect(str(wh.publish_path), read_only=True)
    try:
        assert con.execute("SELECT run_id FROM meta.snapshot_log").fetchall() == [("run-C",)]
    finally:
        con.close()


def test_the_resource_hands_the_steps_log_and_run_to_storage(tmp_path: Path) -> None:
    seen: dict[str, tuple] = {}

    @dg.asset
    def probe(context, warehouse: WarehouseResource) -> None:  # noqa: ANN001 - a string annotation would not resolve
        wh = warehouse.warehouse
        wh.log("told by storage")
        seen["run"] = (wh.run_id, context.run_id)

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([probe], instance=instance, resources={"warehouse": WarehouseResource(
            work_path=str(tmp_path / "work.duckdb"), publish_path=str(tmp_path / "warehouse.duckdb"))})
        logged = [e for e in instance.all_logs(result.run_id) if e.user_message == "told by storage"]
    assert seen["run"] == (result.run_id, result.run_id)
    assert len(logged) == 1 and logged[0].level == 30 and logged[0].step_key == "probe"  # WARNING, in the step
