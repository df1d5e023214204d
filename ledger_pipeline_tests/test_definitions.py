"""Definitions load and validate; the jobs, schedules, pools and lineage an operator relies on; the CLI's run."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys

import dagster as dg
import httpx
import pytest
import time_machine
from sqlalchemy import text

from ledger_pipeline import clock
from ledger_pipeline.definitions import defs as load_defs
from ledger_pipeline.partitions import (
    PLACEHOLDER_FIRST_MONTH,
    build_monthly_partitions,
    closed_window,
    month_key,
    monthly_partitions,
    settings_partitions,
)
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.settings import PROJECT_ROOT, load_settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline_tests.helpers import connect, query


def test_definitions_validate_with_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dg_check_defs() -> None:
    dg_cli = os.path.join(os.path.dirname(sys.executable), "dg")
    out = subprocess.run([dg_cli, "check", "defs"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and "loaded successfully" in out.stdout + out.stderr, out.stdout + out.stderr


def test_jobs_schedules_and_graph() -> None:
    defs = load_defs()
    job = defs.resolve_job_def("monthly_close_job")
    assert job.partitions_def == settings_partitions(load_settings())
    assert job.tags["ledger/duckdb_writer"] == "1"
    schedule = defs.resolve_schedule_def("monthly_close_job_schedule")
    assert schedule.cron_schedule == "0 2 3 * *" and schedule.execution_timezone == "Asia/Jakarta"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert defs.resolve_schedule_def("gl_accounts_daily_schedule").cron_schedule == "0 1 * * *"
    graph = defs.resolve_asset_graph()
    up = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
          for k in graph.get_all_asset_keys()}
    assert up["r2a_pl_monthly"] == {"r2a_transactions"}
    assert up["journal_entries"] == {"r2a_pl_monthly", "gl_accounts", "gl_accounts_fresh"}
    assert up["gl_accounts_fresh"] == {"gl_accounts"}, "the close's stale-chart step, in the lineage"
    assert up["postings"] == {"journal_entries", "journal_lines"}
    assert up["reconciliation"] == {"postings"}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if key.to_user_string() not in ("r2a_transactions", "gl_accounts_fresh"):  # a source; a step on gl_accounts
            assert "dagster/column_schema" in node.metadata, key
    assert job.partitions_def.get_first_partition_key() == "2024-01-01"  # the tests' LEDGER_FIRST_MONTH (conftest)
    assert month_key("2025-11") == "2025-11-01"


@pytest.mark.parametrize("profile", ["embedded", "production"])
def test_a_partitioned_jobs_backfill_has_only_its_partitions_and_one_policy(profile: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The UI's "Materialize all" backfill of a partitioned job previews every asset with the chosen partitions
    ("No partitions available to materialize" for an unpartitioned one) and one backfill policy (else it warns of
    "varying backfill policies"): every asset of such a job has the job's partitions and the same policy, single
    run for the monthly jobs (a range is one run)."""
    monkeypatch.setenv("LEDGER_PROFILE", profile)
    defs = load_defs()
    months = settings_partitions(load_settings())
    graph = defs.resolve_asset_graph()
    jobs = [j for j in defs.resolve_all_job_defs()  # the implicit __ASSET_JOB is the Lineage page's, not a job's
            if j.partitions_def is not None and not j.name.startswith("__ASSET_JOB")]
    assert {j.name for j in jobs} >= {"monthly_close_job"}, "one graph: the same close in both profiles"
    for job in jobs:
        nodes = [graph.get(k) for k in job.asset_layer.executable_asset_keys]
        assert nodes, job.name
        assert all(n.partitions_def == job.partitions_def for n in nodes), (
            job.name, [n.key.to_user_string() for n in nodes if n.partitions_def != job.partitions_def])
        policies = {n.backfill_policy for n in nodes}
        assert len(policies) == 1, (job.name, policies)
        if job.partitions_def == months:
            assert policies == {dg.BackfillPolicy.single_run()}, (job.name, policies)
    close = defs.resolve_job_def("monthly_close_job").asset_layer.executable_asset_keys
    assert dg.AssetKey("gl_accounts") not in close and dg.AssetKey("gl_accounts_fresh") in close
    assert graph.get(dg.AssetKey("gl_accounts")).partitions_def is None, "one table of current charts"



def test_the_profile_is_read_when_dagster_loads_the_definitions_not_at_import() -> None:
    """`defs` is an `@dg.definitions` function: the module imports with one environment and the definitions follow
    the environment at load time (what a code-location reload sees)."""
    code = ("import os, ledger_pipeline.definitions as d; os.environ['LEDGER_PROFILE'] = 'production'; "
            "os.environ['LEDGER_SHARDS'] = '3'; print(d.defs().resources['posting'].shards)")
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_PROFILE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["3"], out.stdout + out.stderr


@pytest.mark.parametrize(("name", "value", "error"), [
    ("LEDGER_TIMEZONE", "Not/AZone", "LEDGER_TIMEZONE='Not/AZone' is not an IANA timezone name"),
    ("LEDGER_FIRST_MONTH", "garbage", "LEDGER_FIRST_MONTH: 'garbage' is not a month (expected YYYY-MM)"),
])
def test_importing_the_definitions_reads_no_setting(name: str, value: str, error: str) -> None:
    """A bad setting does not break the import (modules declare the placeholder partitions, nothing reads the
    environment); building the definitions reads it and fails naming the variable and its value."""
    code = ("import ledger_pipeline.definitions as d, ledger_pipeline.schedules, ledger_pipeline.jobs; "
            "print('imported', flush=True); d.defs()")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, name: value}, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.split() == ["imported"], out.stdout + out.stderr
    assert out.returncode != 0 and error in out.stderr, out.stderr[-3000:]


@pytest.mark.parametrize("profile", ["embedded", "production"])
def test_each_load_has_its_settings_months_and_timezone(profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two loads in one process, no module reloaded (a code-location reload after a settings change): each has its
    settings' first month and timezone on every partitioned asset, job and schedule; the first is left as it was."""
    monkeypatch.setenv("LEDGER_PROFILE", profile)
    loads = []
    for first, tz in (("2024-03", "America/New_York"), ("2025-07", "Pacific/Kiritimati")):
        monkeypatch.setenv("LEDGER_FIRST_MONTH", first)
        monkeypatch.setenv("LEDGER_TIMEZONE", tz)
        loads.append((first, tz, load_defs()))
    for first, tz, defs in loads:
        months = build_monthly_partitions(first, tz)
        graph = defs.resolve_asset_graph()
        partitioned = {graph.get(k).partitions_def for k in graph.get_all_asset_keys()} - {None}
        assert partitioned == {months}, (first, tz, partitioned)  # one graph: the same months in both profiles
        close = "monthly_close_job"
        assert defs.resolve_job_def(close).partitions_def == months
        schedules = defs.get_repository_def().schedule_defs
        assert {s.execution_timezone for s in schedules} == {tz}
        assert [s.cron_schedule for s in schedules if s.job_name == close] == ["0 2 3 * *"]
    assert monthly_partitions.get_first_partition_key() == month_key(PLACEHOLDER_FIRST_MONTH), "never changed"


def test_closed_window_refuses_a_month_open_in_the_partitions_timezone() -> None:
    """closed_window reads the business timezone from the asset's partitions (the settings' once the definitions are
    built): at 12:00 UTC on 30 Nov 2026 November has ended in Kiritimati (UTC+14) but not in Jakarta (UTC+7), where
    only the allow-open-month tag lets it run."""
    def run(tz: str, **tags: str) -> dg.ExecuteInProcessResult:
        @dg.asset(partitions_def=build_monthly_partitions("2026-01", tz))
        def window(context) -> None:  # noqa: ANN001 - dagster reads the annotation, a string here (__future__)
            context.add_output_metadata({"window": str(closed_window(context))})
        return dg.materialize([window], tags={"dagster/partition": "2026-11-01", **tags}, raise_on_error=False)

    with time_machine.travel(dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)):
        kiritimati, jakarta = run("Pacific/Kiritimati"), run(clock.DEFAULT_TIMEZONE)
        allowed = run(clock.DEFAULT_TIMEZONE, **{clock.ALLOW_OPEN_MONTH_TAG: "true"})
    assert kiritimati.success and allowed.success
    assert not jakarta.success
    [failure] = [e for e in jakarta.all_events if e.is_step_failure]
    assert "2026-11 has not ended in Asia/Jakarta" in failure.step_failure_data.error.cause.message

@pytest.mark.slow
def test_cli_run_is_recorded_in_dagster_home(settings, sandbox) -> None:  # noqa: ANN001
    seeding.seed(make_engine(settings.r2a_database_url), 4, 2, seeding.default_start(2))
    connect([f"t{i:05d}" for i in range(1, 5)])
    month = seeding.default_start(1).strftime("%Y-%m")
    out = subprocess.run([sys.executable, "-m", "ledger_pipeline.cli", "run", "--month", month],
                         env={**os.environ}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "summary" in out.stdout and re.search(r"postings jurnal +posted +: 4", out.stdout), out.stdout
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
        assert runs[0].tags["dagster/partition"] == month + "-01"
    assert query(settings, "SELECT COUNT(*) FROM jurnal.postings WHERE status = 'posted'")[0][0] >= 3
    # a deliberate early close of the month in progress (business timezone): allowed by the flag, and tagged
    current = clock.current_month().strftime("%Y-%m")
    out = subprocess.run([sys.executable, "-m", "ledger_pipeline.cli", "run", "--month", current, "--dry-run",
                          "--allow-open-month"], env={**os.environ}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with dg.DagsterInstance.get() as instance:
        early = [r for r in instance.get_runs() if r.tags.get("dagster/partition") == current + "-01"]
        assert len(early) == 1 and early[0].tags[clock.ALLOW_OPEN_MONTH_TAG] == "true"


def test_cli_connects_tenants_to_each_system(settings, sandbox) -> None:  # noqa: ANN001
    seeding.seed(make_engine(settings.r2a_database_url), 5, 1, seeding.default_start(1))
    cli = [sys.executable, "-m", "ledger_pipeline.cli", "connect"]
    for args in (["--tenant", "t00001"], ["--tenant", "t00002", "--system", "quickbooks"],
                 ["--tenant", "t00003", "--system", "aden"]):
        out = subprocess.run([*cli, *args, "--auto-approve"], env={**os.environ}, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0 and "connected 1 tenant(s)" in out.stdout, out.stdout + out.stderr
    # the interactive flow: the command prints the URL, a person's browser follows it to the loopback callback
    proc = subprocess.Popen([*cli, "--tenant", "t00005", "--system", "rootfi"], env={**os.environ},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        url = lines[1].strip()
        assert url.startswith(sandbox.url + "/rootfi/"), lines
        httpx.get(url, follow_redirects=True, timeout=10)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
    out = subprocess.run([*cli, "--all", "--system", "zoho"], env={**os.environ}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "connected 1 tenant(s) to zoho" in out.stdout, out.stdout + out.stderr
    with make_ops_engine(settings.ops_database_url).connect() as conn:  # connections are operational state
        systems = dict(conn.execute(text("SELECT tenant_id, source_system FROM integrations")).fetchall())
    assert systems == {"t00001": "jurnal", "t00002": "quickbooks", "t00003": "aden", "t00004": "zoho",
                       "t00005": "rootfi"}
