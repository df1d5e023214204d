"""The supervised CLI run reads the pool tables only until its run holds a slot (issue 26: the CLI polled pool slots
four times a second for the whole run, 12 % of the posting loop's active time at month-end), on the committed
instance config (pool `duckdb`, limit 1)."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from ledger_pipeline import runs
from ledger_pipeline.testing import dagster_home

HOLD = 3.0  # seconds the step holds its slot


@dg.asset(pool="duckdb")
def holds_the_slot() -> int:
    time.sleep(HOLD)
    return 1


@dg.asset
def warm_up() -> int:  # no pool: the run is STARTED and holds nothing for a moment
    time.sleep(1.5)
    return 1


@dg.asset(pool="duckdb", deps=[warm_up])
def after_warm_up() -> int:
    return 1


DEFS = dg.Definitions(assets=[holds_the_slot, warm_up, after_warm_up],
                      jobs=[dg.define_asset_job("slot_job", selection=["holds_the_slot"]),
                            dg.define_asset_job("wait_job", selection=["warm_up", "after_warm_up"])])
JOB, WAIT_JOB = DEFS.resolve_job_def("slot_job"), DEFS.resolve_job_def("wait_job")


@pytest.fixture
def instance(tmp_path: Path) -> dg.DagsterInstance:
    with dg.DagsterInstance.from_config(str(dagster_home(tmp_path / "home"))) as inst:
        yield inst


def supervised(instance: dg.DagsterInstance, watch: runs.PoolWatch) -> runs.Outcome:
    return runs.execute_supervised(JOB, instance, tags={}, run_config={}, timeout=60, echo=print, watch=watch)


def test_pool_reads_stop_once_the_run_holds_its_slot(instance: dg.DagsterInstance) -> None:
    held = supervised(instance, runs.PoolWatch())
    assert held.exit_code == 0, held.message
    watch = runs.PoolWatch()
    # until held (four a second: slower on a loaded host), then every 5 s at most; four a second throughout is >= 10
    assert held.pool_reads <= 1 + (HOLD / watch.slow) + 8, held.pool_reads
    always = supervised(instance, runs.PoolWatch(slow=0.25))  # the old behaviour: four reads a second throughout
    assert always.exit_code == 0, always.message
    assert always.pool_reads >= HOLD / 0.25 - 2, always.pool_reads
    assert held.pool_reads < always.pool_reads
    assert not instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots  # freed at the end


def test_a_run_waiting_for_its_first_slot_is_read_four_times_a_second(instance: dg.DagsterInstance) -> None:
    """Before the run holds a slot it is watched closely: a wait on another run's slot is seen, logged and bounded."""
    import threading

    storage = instance.event_log_storage
    other = dg.DagsterRun(job_name="other", run_id="0" * 8 + "-0000-0000-0000-" + "0" * 12,
                          status=dg.DagsterRunStatus.STARTED, tags=runs.process_tags())

    def take_the_slot_once_started() -> None:  # while the run is in warm_up (no pool)
        deadline = time.time() + 30
        while not instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            assert time.time() < deadline
            time.sleep(0.02)
        instance.add_run(other)
        storage.initialize_concurrency_limit_to_default("duckdb")  # what a step's first claim does (limit 1)
        while not storage.claim_concurrency_slot("duckdb", other.run_id, "other_step", 0).is_claimed:
            assert time.time() < deadline
            time.sleep(0.01)

    taker = threading.Thread(target=take_the_slot_once_started, daemon=True)
    taker.start()
    lines: list[str] = []
    try:
        outcome = runs.execute_supervised(WAIT_JOB, instance, tags={}, run_config={}, timeout=2, echo=lines.append,
                                          every=0.5)
        taker.join(5)
        assert outcome.exit_code == 1, lines
        assert "waiting for a slot of pool duckdb" in " ".join(lines) and other.run_id in " ".join(lines)
        assert outcome.pool_reads >= (1.5 + 2) / 0.25 - 4, outcome.pool_reads
    finally:
        storage.free_concurrency_slots_for_run(other.run_id)
