"""A run publishes the DuckDB warehouse once (assets/publishing.py): after its last step that writes it, or once
after a step fails, so analysts still see what the run recorded. A publish copies the whole file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
from sqlalchemy import text, update

from ledger_pipeline.assets.publishing import (
    publish_after_failure,
    publish_before_blocking_failure,
    publish_if_last,
)
from ledger_pipeline.definitions import defs
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.resources import WarehouseResource
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.models import Integration
from ledger_pipeline_tests.helpers import CLOSE, connect, materialize, materialize_gl, query
from ledger_pipeline_tests.test_hostile_rows import insert


def snapshots(settings, run_id: str) -> int:  # noqa: ANN001
    """How many snapshots `run_id` published (meta.snapshot_log of the published file)."""
    return query(settings, "SELECT COUNT(*) FROM meta.snapshot_log WHERE run_id = ?", [run_id])[0][0]


def seeded(settings, tenants: int) -> list[str]:  # noqa: ANN001
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, tenants, 1, dt.date(2025, 1, 1), seed=3)
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT tenant_id FROM tenants ORDER BY 1"))]
    connect(ids)
    return ids


def test_the_monthly_close_publishes_once(settings, sandbox) -> None:  # noqa: ANN001
    seeded(settings, 3)
    gl = materialize_gl()
    assert snapshots(settings, gl.run_id) == 1, "a run of one asset publishes at its step"
    with dg.DagsterInstance.get() as instance:  # the job operators launch (UI, schedule, `ledger-pipeline run`)
        result = defs().resolve_job_def("monthly_close_job").execute_in_process(
            instance=instance, partition_key="2025-01-01")
    assert result.success
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert {"gl_accounts_fresh", "r2a_pl_monthly", "journal", "postings", "reconciliation"} <= steps
    assert snapshots(settings, result.run_id) == 1
    # published after the last step: the snapshot holds every table the close wrote
    assert query(settings, "SELECT DISTINCT run_id FROM accounting.reconciliation") == [(result.run_id,)]
    assert query(settings, "SELECT COUNT(*) FROM accounting.postings WHERE status = 'posted'")[0][0] == 3
    assert query(settings, "SELECT run_id FROM meta.snapshot") == [(result.run_id,)]
    # the same close as a selection of assets (the UI's Materialize, the tests' helper): once too
    again = materialize(CLOSE, "2025-01-01")
    assert again.success and snapshots(settings, again.run_id) == 1


def test_a_single_asset_materialization_publishes(settings, sandbox) -> None:  # noqa: ANN001
    seeded(settings, 2)
    result = materialize(["r2a_pl_monthly"], "2025-01-01")
    assert result.success and snapshots(settings, result.run_id) == 1
    assert query(settings, "SELECT DISTINCT run_id FROM r2a.pl_monthly") == [(result.run_id,)]


def test_a_failing_close_publishes_once_what_it_recorded(settings, sandbox) -> None:  # noqa: ANN001
    tenants = seeded(settings, 4)
    victim = tenants[1]
    insert(make_engine(settings.r2a_database_url), " t00004", "5", "2025-01-15")  # rejected at extract (whitespace)
    materialize_gl()  # charts are fresh: posting is the first request that needs the victim's new token
    with make_ops_engine(settings.ops_database_url).begin() as conn:
        conn.execute(update(Integration).where(Integration.tenant_id == victim).values(
            expires_at=dt.datetime(2020, 1, 1)))
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={"token_failure": "5xx", "token_failure_logins": [victim]})
    result = materialize(CLOSE, "2025-01-01", raise_on_error=False)
    assert not result.success
    failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    started = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
    assert failed == ["postings"] and "reconciliation" not in started, (failed, started)  # skipped
    assert snapshots(settings, result.run_id) == 1
    rejected = query(settings, "SELECT tenant_id, stage, run_id FROM ledger.rejections")
    assert ("t00004", "extract", result.run_id) in rejected, rejected
    postings = dict(query(settings, "SELECT tenant_id, status FROM accounting.postings"))
    assert postings[victim] != "posted" and postings[tenants[0]] == "posted", postings


# -- the rule on small assets (no sandbox): which step publishes --------------------------------------------------

def _resource(tmp_path: Path) -> WarehouseResource:
    return WarehouseResource(work_path=str(tmp_path / "work.duckdb"), publish_path=str(tmp_path / "wh.duckdb"))


def _snapshots(tmp_path: Path) -> tuple[list[str], set[str]]:
    """The run ids of every snapshot published, and the steps whose writes the newest one (LEDGER_WAREHOUSE) holds."""
    path = tmp_path / "wh.duckdb"
    if not path.exists():
        return [], set()
    con = duckdb.connect(str(path), read_only=True)
    try:
        runs = [r for (r,) in con.execute("SELECT run_id FROM meta.snapshot_log ORDER BY published_at").fetchall()]
        return runs, {r for (r,) in con.execute("SELECT step FROM main.steps").fetchall()}
    finally:
        con.close()


FAILING: set[str] = set()  # the toy steps (or the blocking check) that fail in this test


def _step(name: str, deps: list[str] | None = None) -> dg.AssetsDefinition:
    @dg.asset(name=name, deps=deps or [], hooks={publish_after_failure})
    def step(context, warehouse: WarehouseResource) -> None:  # noqa: ANN001 (dagster refuses a string)
        wh = warehouse.warehouse
        with wh.connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS main.steps (step VARCHAR)")
            con.execute("INSERT INTO main.steps VALUES (?)", [name])
        publish_if_last(context, wh)
        if name in FAILING:  # after its writes and publish_if_last, as postings fails (failed tenants)
            raise dg.Failure(f"{name} failed after writing")
    return step


@dg.asset(deps=["extract"])
def no_duckdb() -> None:
    """An asset whose step does not publish (no hook): never waited for."""


@dg.asset_check(asset="extract", blocking=True)
def extract_ok(context, warehouse: WarehouseResource) -> dg.AssetCheckResult:  # noqa: ANN001
    if "extract_ok" in FAILING:
        publish_before_blocking_failure(context, warehouse.warehouse)
    return dg.AssetCheckResult(passed="extract_ok" not in FAILING)


# as the close: charts and extract (independent) -> journal -> post -> reconcile
TOY = [_step("charts"), _step("extract"), _step("journal", ["charts", "extract"]), _step("post", ["journal"]),
       _step("reconcile", ["post"]), no_duckdb]
ALL = ["charts", "extract", "journal", "post", "reconcile"]


@pytest.mark.parametrize(("selection", "failing", "published"), [
    (ALL, set(), 1),  # the last step publishes
    (["extract"], set(), 1),
    (["extract", "no_duckdb"], set(), 1),  # its only downstream does not publish: not waited for
    (["charts", "reconcile"], set(), 2),  # not connected in this run: each publishes
    (ALL, {"post"}, 1),  # the failure publishes; reconcile is skipped
    (["post"], {"post"}, 1),  # published (the last step) before failing: the hook leaves it
    (ALL, {"charts"}, None),  # then extract, if it runs after charts failed, publishes too (journal is skipped)
    (["extract", "journal", "post"], {"extract_ok"}, 1),  # the blocking check about to fail publishes
])
def test_which_step_publishes(tmp_path: Path, selection: list[str], failing: set[str], published: int | None
                              ) -> None:
    FAILING.clear()
    FAILING.update(failing)
    try:
        chosen = dg.AssetSelection.assets(*selection).without_checks()
        if "extract_ok" in failing:
            chosen = chosen | dg.AssetSelection.checks(extract_ok)
        result = dg.materialize([*TOY, extract_ok], selection=chosen, resources={"warehouse": _resource(tmp_path)},
                                instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    finally:
        FAILING.clear()
    assert result.success is not failing
    started = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
    if published is None:  # in-process order: charts before extract (by key) publishes twice, else once
        published = 2 if started.index("charts") < started.index("extract") else 1
    runs, shown = _snapshots(tmp_path)
    assert runs == [result.run_id] * published
    assert shown == set(started) & set(ALL), "the newest snapshot holds every write of the run"
