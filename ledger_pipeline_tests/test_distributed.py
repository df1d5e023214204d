"""Dagster's production deployment on one machine: Postgres instance, daemon, webserver, Celery workers per shard.

Four shard workers, each bound to its own source address (127.0.0.2 .. 127.0.0.5) with a private data directory and
DAGSTER_HOME, one default worker (prepare, publish: the DuckDB host), the sandbox on 127.0.0.1 with Jurnal's limits
time-scaled x1.5 (the per-address limit binds: 50 tenants per worker need more than one window). A month is launched
as the UI does (GraphQL `launchPartitionBackfill`). Runs when LEDGER_TEST_POSTGRES_URL, LEDGER_TEST_CELERY_BROKER and
LEDGER_TEST_CELERY_BACKEND name the services (.ci/run sets them); skips otherwise.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.sandboxes.base import Limits
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.shards import assignments, queue_for
from ledger_pipeline.state.models import LedgerEntry, Posting
from ledger_pipeline_tests.cluster import (
    Cluster,
    fresh_databases,
    services_from_env,
    shard_runs,
    timeline,
    wait_for,
)
from ledger_pipeline_tests.helpers import connect, materialize_gl, sandbox_entries, sandbox_stats

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(600)]

TENANTS = 200
SCALE = 1.5  # Jurnal's limits x1.5: 60 requests/min per address, a 40 s window


@pytest.fixture
def services():  # noqa: ANN201
    found = services_from_env()
    if found is None:
        pytest.skip("the distributed test needs LEDGER_TEST_POSTGRES_URL, LEDGER_TEST_CELERY_BROKER and "
                    "LEDGER_TEST_CELERY_BACKEND (e.g. amqp://guest:guest@127.0.0.1:5672//, redis://127.0.0.1:6379/0)")
    return found


def expected_entries(engine, month: str) -> set[str]:  # noqa: ANN001
    start = dt_month(month)
    end = dt_month(month, 1)
    with engine.connect() as conn:
        return set(conn.execute(select(LedgerEntry.custom_id).where(
            LedgerEntry.period >= start, LedgerEntry.period < end, LedgerEntry.rejected == 0)).scalars())


def dt_month(month: str, plus: int = 0):  # noqa: ANN201
    import datetime as dt

    d = dt.date.fromisoformat(month)
    index = d.year * 12 + d.month - 1 + plus
    return dt.date(index // 12, index % 12 + 1, 1)


def test_a_month_on_four_workers_each_from_its_own_address(services, tmp_path: Path,  # noqa: ANN001
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key().decode()
    with fresh_databases(services.postgres) as (ledger_url, dagster_url), \
            SandboxServer(tmp_path / "sandbox.sqlite", limits=Limits(scale=SCALE, enabled=False)) as sandbox:
        cluster = Cluster(tmp_path / "cluster", services, ledger_url, dagster_url, sandbox.env(), SCALE,
                          encryption_key=key)
        # the test process plays the default host for the setup: same operational database, same warehouse
        for k, v in cluster.env_for("default").items():
            if k.startswith(("LEDGER_", "JURNAL_", "R2A_")) and k != "LEDGER_PROFILE":
                monkeypatch.setenv(k, v)
        engine = make_engine(ledger_url)
        first = seeding.default_start(2)
        seeding.seed(engine, TENANTS, 2, first, seed=13)
        months = [first.strftime("%Y-%m-01"), dt_month(first.strftime("%Y-%m-01"), 1).isoformat()]
        connect([f"t{i:05d}" for i in range(1, TENANTS + 1)])
        materialize_gl()  # the charts, in the default host's warehouse (the month's backfill does not refetch them)
        sandbox.ctx.limits.enabled = True
        httpx.post(f"{sandbox.url}/_sandbox/stats/reset")
        try:
            cluster.start()
            run_the_month_and_kill_a_worker(cluster, sandbox, engine, months)
        except BaseException:
            print(cluster.logs())  # noqa: T201 - the processes' last words, in the test's report
            raise
        finally:
            cluster.stop()
            engine.dispose()


def run_the_month_and_kill_a_worker(cluster: Cluster, sandbox: SandboxServer, engine, months: list[str]) -> None:  # noqa: ANN001, C901
    month, second = months
    t0 = time.time()
    first_backfill = cluster.launch_month(month)
    # the next month queues behind it (one run per shard at a time); its shard-1 run is the one we kill
    second_backfill = cluster.launch_month(second)
    status = cluster.wait_backfill(first_backfill, 300)
    print(f"month {month}: {status} after {time.time() - t0:.0f}s")  # noqa: T201
    assert status == "COMPLETED_SUCCESS", cluster.logs()

    with cluster.instance() as instance:
        runs = [r for r in shard_runs(instance) if r.dagster_run.tags["dagster/partition/month"] == month]
        print(timeline(instance, t0))  # noqa: T201
    assert sorted(r.dagster_run.tags["dagster/partition/shard"] for r in runs) == cluster.shard_names
    # each shard's run went to its shard's queue and ran on that shard's worker, from its address
    for r in runs:
        tags, shard = r.dagster_run.tags, r.dagster_run.tags["dagster/partition/shard"]
        index = cluster.shard_names.index(shard)
        assert r.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert tags["dagster-celery/queue"] == queue_for(shard)
        assert tags["ledger/celery_worker"].split("@")[0] == shard
        assert tags["ledger/source_address"] == cluster.addresses[index]
    wall = max(r.end_time for r in runs) - min(r.start_time for r in runs)

    stats = sandbox_stats(sandbox.url)
    expected = expected_entries(engine, month)
    remote = [e["custom_id"] for e in sandbox_entries(sandbox.url) if e["custom_id"] in expected]
    assert len(remote) == len(set(remote)) == len(expected) >= TENANTS * 0.75, "every tenant posted exactly once"
    requests = stats["api_requests"]
    limits = sandbox.ctx.limits
    window = 60 / limits.scale  # the sandbox counts fixed windows per address
    one_worker = (math.ceil(requests / limits.per_ip_minute) - 1) * window  # no single address does it faster
    print(f"posting {len(expected)} entries on 4 workers: {requests} requests, {wall:.1f}s; one worker needs "  # noqa: T201
          f">= {one_worker:.0f}s (rate floor {requests / (limits.per_ip_minute / window):.0f}s): "
          f"{wall / one_worker:.2f}x")
    assert wall <= 0.35 * one_worker, f"{wall:.1f}s on 4 workers vs >= {one_worker:.0f}s on one"

    # -- a worker dies mid-run (SIGKILL of the whole worker, pool child included), comes back, the month re-runs ----
    victim = cluster.shard_names[1]
    address = cluster.addresses[1]
    before = sandbox_stats(sandbox.url)["by_address"].get(address, {}).get("api_requests", 0)
    with cluster.instance() as instance:
        def victim_run() -> dg.DagsterRun | None:
            for r in shard_runs(instance):
                t = r.dagster_run.tags
                if (t["dagster/partition/month"] == second and t["dagster/partition/shard"] == victim
                        and r.dagster_run.status == dg.DagsterRunStatus.STARTED):
                    return r.dagster_run
            return None
        killed = wait_for("the next month's shard-1 run", victim_run, 240, 0.2)
        wait_for("it to be posting", lambda: sandbox_stats(sandbox.url)["by_address"][address]["api_requests"]
                 >= before + 10, 120, 0.1)
        cluster.procs[victim].kill()
        posted_when_killed = len([e for e in sandbox_entries(sandbox.url)
                                  if e["custom_id"] in expected_entries(engine, second)])
        cluster.restart(victim)
        wait_for("run monitoring to fail the killed run", lambda: instance.get_run_by_id(
            killed.run_id).status == dg.DagsterRunStatus.FAILURE, 120, 0.5)
        why = [e.message for e in instance.all_logs(killed.run_id) if e.message and "worker" in e.message]
        assert any(victim in m for m in why), why
    print(f"killed {victim} mid-run; month {second}: {cluster.wait_backfill(second_backfill, 300)}")  # noqa: T201
    rerun = cluster.launch_month(second, "re-run after a worker died")
    assert cluster.wait_backfill(rerun, 300) == "COMPLETED_SUCCESS", cluster.logs()
    with cluster.instance() as instance:
        wait_for("no run in flight", lambda: not instance.get_run_records(dg.RunsFilter(statuses=[
            dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED])), 120, 1)
        all_shard_runs = shard_runs(instance)

    # exact books, no duplicates, both months
    for m in months:
        expected = expected_entries(engine, m)
        remote = [e for e in sandbox_entries(sandbox.url) if e["custom_id"] in expected]
        assert len(remote) == len({e["custom_id"] for e in remote}) == len(expected), m
    assert 0 < posted_when_killed < len(expected_entries(engine, second)), "killed mid-run"
    with engine.connect() as conn:
        states = set(conn.execute(select(Posting.status).distinct()).scalars())
    assert states == {"posted"}, states
    con = duckdb.connect(str(cluster.default_data_dir / "warehouse.duckdb"), read_only=True)
    published = con.execute("SELECT COUNT(*) FROM accounting.postings WHERE status = 'posted'").fetchone()[0]
    recon = con.execute("SELECT DISTINCT status FROM accounting.reconciliation").fetchall()
    con.close()
    assert published == sum(len(expected_entries(engine, m)) for m in months) and recon == [("match",)]

    # every shard's runs (both months, the killed one and any retry included) on its own worker only
    for r in all_shard_runs:
        tags = r.dagster_run.tags
        shard = tags["dagster/partition/shard"]
        assert tags["dagster-celery/queue"] == queue_for(shard)
        if "ledger/celery_worker" in tags:
            assert tags["ledger/celery_worker"].split("@")[0] == shard
            assert tags["ledger/source_address"] == cluster.addresses[cluster.shard_names.index(shard)]
    # each tenant's requests came from one address: its shard's worker's; no 429 anywhere
    stats = sandbox_stats(sandbox.url)
    shard_of = assignments(engine)
    seen: dict[str, set[str]] = {}
    for addr, per in stats["by_address"].items():
        for tenant in per["companies"]:
            seen.setdefault(tenant, set()).add(addr)
    assert len(seen) >= TENANTS * 0.75
    for tenant, addrs in seen.items():
        assert addrs == {cluster.addresses[cluster.shard_names.index(shard_of[tenant])]}, (tenant, addrs)
    assert stats["rate_limited"] == 0 and all(a["rate_limited"] == 0 for a in stats["by_address"].values())
    # a worker never needs another host's disk: each has only its own limiter file, no DuckDB
    for index, shard in enumerate(cluster.shard_names):
        files = sorted(p.relative_to(cluster.data_dir(shard)).as_posix()
                       for p in cluster.data_dir(shard).rglob("*") if p.is_file())
        assert f"locks/ratelimit-{cluster.addresses[index]}.sqlite" in files, files
        assert not [f for f in files if "duckdb" in f or not f.startswith("locks/")], files
    assert os.path.exists(cluster.default_data_dir / "warehouse.duckdb")
