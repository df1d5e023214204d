"""Crash safety on the committed instance config (pools and the writer tag limit on): a killed run never wedges the
next one, waits are visible and bounded, SIGTERM cancels promptly, `ledger-pipeline runs` shows and clears dead runs,
and Dagster's run monitoring fails a `dagster dev` run whose worker was killed."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from ledger_pipeline import runs
from ledger_pipeline.cli import main
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.settings import PROJECT_ROOT, Settings
from ledger_pipeline_tests.helpers import connect, query, sandbox_entries
from ledger_pipeline_tests.test_posting import assert_exactly_once

pytestmark = pytest.mark.slow
START = dt.date(2025, 1, 1)


@pytest.fixture
def home(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DAGSTER_HOME with the committed dagster.yaml (never an ephemeral instance here); partitions from START."""
    monkeypatch.setenv("LEDGER_FIRST_MONTH", f"{START:%Y-%m}")
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", settings.dagster_home / "dagster.yaml")
    return settings.dagster_home


@pytest.fixture
def instance(home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert isinstance(inst.run_launcher, runs.LedgerRunLauncher) and inst.run_monitoring_enabled
        yield inst


def seed_and_connect(settings: Settings, tenants: int, months: int) -> None:
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, tenants, months, START, seed=11)
    with engine.connect() as conn:
        connect([r[0] for r in conn.execute(text("SELECT tenant_id FROM tenants ORDER BY 1"))])


def cli(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ledger_pipeline.cli", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def runs_cmd(*args: str) -> tuple[int, str]:
    """`ledger-pipeline runs ...` in-process (no interpreter start-up per call)."""
    result = CliRunner().invoke(main, ["runs", *args])
    return result.exit_code, result.output


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def kill_mid_posting(url: str, proc: subprocess.Popen, sig: int, at_least: int = 5) -> None:
    deadline = time.time() + 90
    while len(sandbox_entries(url)) < at_least and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(sig)


def assert_books_exact(settings: Settings, url: str) -> None:
    """Every ledger entry in Jurnal exactly once with our totals and lines; reconciliation all match."""
    assert_exactly_once(settings, url)
    assert set(query(settings, "SELECT status FROM jurnal.reconciliation")) == {("match",)}


def slots_of(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    info = instance.event_log_storage.get_concurrency_info("duckdb")
    return [s.step_key for s in info.claimed_slots if s.run_id == run_id]


def only_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    records = instance.get_run_records()
    assert len(records) == 1, [r.dagster_run.status for r in records]
    return records[0].dagster_run


def test_sigkill_mid_posting_then_next_run_clears_it_and_books_are_exact(settings, sandbox, instance) -> None:  # noqa: ANN001
    seed_and_connect(settings, 10, 2)
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={"latency_ms": 150, "writes_only": True})
    proc = cli("run", "--month", "2025-01", "--to", "2025-02")
    kill_mid_posting(sandbox.url, proc, signal.SIGKILL, at_least=3)
    proc.communicate()
    killed = only_run(instance)
    assert killed.status == dg.DagsterRunStatus.STARTED and slots_of(instance, killed.run_id), \
        "the killed run is left STARTED holding the duckdb slot (the state that used to wedge every later run)"
    partial = len(sandbox_entries(sandbox.url))
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={})

    t0 = time.time()
    code, out = finish(cli("run", "--month", "2025-01", "--to", "2025-02"), timeout=150)
    assert code == 0, out[-3000:]
    assert time.time() - t0 < 120
    assert f"cleared dead run {killed.run_id}" in out and "is gone" in out
    dead = instance.get_run_by_id(killed.run_id)
    assert dead.status == dg.DagsterRunStatus.FAILURE and not slots_of(instance, killed.run_id)
    failure = instance.get_records_for_run(killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert "died without ending the run" in failure[0].event_log_entry.dagster_event.message
    assert partial < query(settings, "SELECT COUNT(*) FROM ledger.journal_entries")[0][0], "killed before the end"
    assert_books_exact(settings, sandbox.url)


def test_sigterm_cancels_within_10s_frees_slots_and_rerun_is_exact(settings, sandbox, instance) -> None:  # noqa: ANN001
    seed_and_connect(settings, 10, 2)
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={"latency_ms": 150, "writes_only": True})
    proc = cli("run", "--month", "2025-01", "--to", "2025-02")
    kill_mid_posting(sandbox.url, proc, signal.SIGTERM, at_least=3)
    t0 = time.time()
    code, out = finish(proc, timeout=30)
    assert time.time() - t0 < 10, f"took {time.time() - t0:.1f}s to stop"
    assert code == 128 + signal.SIGTERM, out[-3000:]
    run = only_run(instance)
    assert run.status == dg.DagsterRunStatus.CANCELED and not slots_of(instance, run.run_id)
    assert not runs.blockers(instance)
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={})

    code, out = finish(cli("run", "--month", "2025-01", "--to", "2025-02"), timeout=150)
    assert code == 0, out[-3000:]
    assert "cleared dead" not in out, "a canceled run leaves nothing to clear"
    assert_books_exact(settings, sandbox.url)


def fake_holder(instance: dg.DagsterInstance, pid: int) -> str:
    """A STARTED run of process `pid` holding the duckdb slot and the writer tag, as a live `run` would."""
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="monthly_close_job", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                   tags={runs.WRITER_TAG: "1", **runs.process_tags(pid)}))
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default("duckdb")
    assert storage.claim_concurrency_slot("duckdb", run_id, "postings", 0).is_claimed
    return run_id


def test_wait_on_a_live_holder_is_logged_and_bounded_then_runs_clears_it_once_dead(  # noqa: ANN001
        settings, sandbox, instance) -> None:
    seed_and_connect(settings, 2, 1)
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        holder = fake_holder(instance, sleeper.pid)
        t0 = time.time()
        code, out = finish(cli("run", "--month", "2025-01", LEDGER_WAIT_TIMEOUT="7"), timeout=60)
        waited = time.time() - t0
        assert code == 1 and 7 <= waited < 40, (waited, out[-3000:])
        assert out.count("waiting for the DuckDB writer slot") >= 1 and f"run {holder}" in out
        assert "LEDGER_WAIT_TIMEOUT" in out and f"ledger-pipeline runs --cancel {holder}" in out
        assert "ledger-pipeline runs --clear-dead" in out
        assert instance.get_run_by_id(holder).status == dg.DagsterRunStatus.STARTED, "a live holder is never failed"

        code, out = runs_cmd()
        assert code == 0 and holder in out and "process: alive" in out and "pool duckdb (postings)" in out
        assert f"run tag {runs.WRITER_TAG}" in out
        code, out = runs_cmd("--clear-dead")
        assert "cleared 0 dead run(s)" in out and instance.get_run_by_id(holder).status.value == "STARTED"
    finally:
        sleeper.kill()
        sleeper.wait()
    code, out = runs_cmd()
    assert "process: dead" in out and "is gone" in out and "--clear-dead" in out
    code, out = runs_cmd("--clear-dead")
    assert code == 0 and f"cleared dead run {holder}" in out and "cleared 1 dead run(s)" in out
    assert instance.get_run_by_id(holder).status == dg.DagsterRunStatus.FAILURE
    assert not slots_of(instance, holder) and not runs.blockers(instance)
    code, out = runs_cmd()
    assert "no runs in flight" in out


def test_run_waiting_in_the_claim_loop_logs_the_holder_and_fails_after_the_limit(  # noqa: ANN001
        settings, sandbox, instance) -> None:
    seed_and_connect(settings, 3, 1)
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={"latency_ms": 300})
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        proc = cli("run", "--month", "2025-01", LEDGER_WAIT_TIMEOUT="6")
        holder, deadline = None, time.time() + 60
        while holder is None and time.time() < deadline:  # take the pool slot while the run is between steps
            started = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            if started:
                holder = str(uuid.uuid4())
                instance.add_run(dg.DagsterRun(job_name="monthly_close_job", run_id=holder,
                                               status=dg.DagsterRunStatus.STARTED,
                                               tags=runs.process_tags(sleeper.pid)))
                while not instance.event_log_storage.claim_concurrency_slot(
                        "duckdb", holder, "other_step", 0).is_claimed:
                    time.sleep(0.01)
            time.sleep(0.05)
        assert holder is not None
        code, out = finish(proc, timeout=90)
        run = started[0].dagster_run
        assert code == 1, out[-3000:]
        assert "waiting for a slot of pool duckdb" in out and f"run {holder}" in out
        assert f"ledger-pipeline runs --cancel {holder}" in out
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not slots_of(instance, run.run_id)
        assert instance.get_run_by_id(holder).status == dg.DagsterRunStatus.STARTED
    finally:
        sleeper.kill()
        sleeper.wait()
        httpx.post(f"{sandbox.url}/_sandbox/faults", json={})


def test_launcher_health_check_fails_only_provably_dead_workers(instance) -> None:  # noqa: ANN001
    launcher = instance.run_launcher
    gone = subprocess.Popen(["true"])
    gone.wait()

    def run_with(tags: dict[str, str]) -> dg.DagsterRun:
        return instance.add_run(dg.DagsterRun(job_name="monthly_close_job", run_id=str(uuid.uuid4()),
                                              status=dg.DagsterRunStatus.STARTED, tags=tags))

    alive = launcher.check_run_worker_health(run_with(runs.process_tags()))
    dead = launcher.check_run_worker_health(run_with(runs.process_tags(gone.pid)))
    reused = launcher.check_run_worker_health(run_with({**runs.process_tags(), runs.TAG_STARTED: "1000.00"}))
    elsewhere = launcher.check_run_worker_health(run_with({**runs.process_tags(gone.pid), runs.TAG_HOST: "other"}))
    unknown = launcher.check_run_worker_health(run_with({}))
    assert alive.status.value == "RUNNING" and dead.status.value == "FAILED" and "is gone" in dead.msg
    assert reused.status.value == "FAILED" and "another process" in reused.msg
    assert elsewhere.status.value == "RUNNING" and unknown.status.value == "RUNNING"
