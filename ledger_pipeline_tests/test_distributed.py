"""Dagster's production deployment on one machine: Postgres instance, daemon, webserver, Celery workers per shard.

Four shard workers, each bound to its own source address (127.0.0.2 .. 127.0.0.5) with a private data directory and
DAGSTER_HOME, one default worker (the close's run: the DuckDB host), the sandbox on 127.0.0.1 with Jurnal's limits
time-scaled x1.5 (the per-address limit binds: 50 tenants per worker need more than one window). A month is launched
as the UI does (GraphQL: `monthly_close_job`, the month's partition): the same graph as the embedded profile, one run,
whose `postings` step posts on the four shard workers. Runs when LEDGER_TEST_POSTGRES_URL,
LEDGER_TEST_CELERY_BROKER and LEDGER_TEST_CELERY_BACKEND name the services (.ci/run sets them); skips otherwise. At
the end, drift reconciliation (the same asset and job as the embedded profile) finds an entry deleted by hand.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
from dagster_graphql import DagsterGraphQLClient
from sqlalchemy import select

from ledger_pipeline import clock
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.shards import assignments, queue_for
from ledger_pipeline.state.models import LedgerEntry, Posting, RemoteChangeRecord
from ledger_pipeline.testing.cluster import (
    Cluster,
    close_runs,
    one_address_floor,
    posting_span,
    prepared,
    services_from_env,
    timeline,
    wait_for,
)
from ledger_pipeline_tests.helpers import sandbox_entries, sandbox_stats

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
    """The month's entries in the operational database (what the journal built; rejected months excluded)."""
    start = dt.date.fromisoformat(month)
    with engine.connect() as conn:
        return set(conn.execute(select(LedgerEntry.custom_id).where(
            LedgerEntry.period >= start, LedgerEntry.period < clock.add_months(start, 1),
            LedgerEntry.rejected == 0)).scalars())


def test_a_month_on_four_workers_each_from_its_own_address(services, tmp_path: Path) -> None:  # noqa: ANN001
    with prepared(tmp_path, services, TENANTS, 2, SCALE) as (cluster, sandbox, engine, months):
        try:
            t0 = time.time()
            cluster.start()
            print(f"cluster up in {time.time() - t0:.1f}s")  # noqa: T201
            run_the_month_and_kill_a_worker(cluster, sandbox, engine, months)
        except BaseException:
            print(cluster.logs())  # noqa: T201 - the processes' last words, in the test's report
            raise


def run_the_month_and_kill_a_worker(cluster: Cluster, sandbox: SandboxServer, engine, months: list[str]) -> None:  # noqa: ANN001
    month, second = months
    t0 = time.time()
    assert cluster.wait_run(cluster.launch_close(month), 300) == dg.DagsterRunStatus.SUCCESS, cluster.logs()
    stats = sandbox_stats(sandbox.url)
    with cluster.instance() as instance:
        wall, requests, shards = posting_span(instance, month)  # month one's requests, exactly
        close = close_runs(instance, month)[-1].dagster_run
    # one run on the default queue (the same graph as the embedded profile), its posting on every shard's worker
    assert close.job_name == "monthly_close_job", close.job_name
    assert close.tags["dagster-celery/queue"] == "ledger-default"
    assert sorted(shards) == cluster.shard_names, shards
    for shard, where in shards.items():
        assert where["celery_worker"].split("@")[0] == shard and where["celery_queue"] == queue_for(shard)
        assert where["source_address"] == cluster.addresses[cluster.shard_names.index(shard)]
    expected = expected_entries(engine, month)
    remote = [e["custom_id"] for e in sandbox_entries(sandbox.url) if e["custom_id"] in expected]
    assert len(remote) == len(set(remote)) == len(expected) >= TENANTS * 0.75, "every tenant posted exactly once"
    limits = sandbox.ctx.limits
    one_worker = one_address_floor(requests, limits)  # no single address does it faster (see bench/distributed.py)
    print(f"posting {len(expected)} entries on 4 workers: {requests} requests, {wall:.1f}s; one worker needs "  # noqa: T201
          f">= {one_worker:.0f}s (rate floor {requests / limits.per_ip_minute * 60 / limits.scale:.0f}s): "
          f"{wall / one_worker:.2f}x")
    assert requests <= stats["api_requests"]
    assert wall <= 0.35 * one_worker, f"{wall:.1f}s on 4 workers vs >= {one_worker:.0f}s on one"

    # -- a shard worker dies mid-task (SIGKILL of the whole worker, pool child included) and comes back: its task,
    # acknowledged only at the end, goes back to the broker and the restarted worker resumes it; the close succeeds
    victim, address = cluster.shard_names[1], cluster.addresses[1]
    second_close = cluster.launch_close(second)
    wait_for(f"{victim} to be posting the next month", lambda: sandbox_stats(sandbox.url)["by_address"][address][
        "api_requests"] >= stats["by_address"][address]["api_requests"] + 10, 240, 0.1)
    cluster.procs[victim].kill()
    posted_when_killed = len([e for e in sandbox_entries(sandbox.url) if e["custom_id"] in expected_entries(
        engine, second)])
    cluster.restart(victim)
    assert cluster.wait_run(second_close, 300) == dg.DagsterRunStatus.SUCCESS, cluster.logs()
    with cluster.instance() as instance:
        wait_for("no run in flight", lambda: not instance.get_run_records(dg.RunsFilter(statuses=[
            dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED])), 120, 1)
        print(timeline(instance, t0))  # noqa: T201
        assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_run_records())
        _, _, shards = posting_span(instance, second)
    assert shards[victim]["celery_worker"].split("@")[0] == victim, "the restarted worker finished its shard"

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

    # -- the same drift reconciliation as the embedded profile: an entry deleted by hand is found by the hourly job
    # (default queue, the DuckDB host), recorded in remote_changes, and shown in the analysts' reconciliation --------
    first = min(expected_entries(engine, months[-1]))
    tenant = next(e["company_login"] for e in sandbox_entries(sandbox.url) if e["custom_id"] == first)
    httpx.post(f"{sandbox.url}/_sandbox/companies/{tenant}/entries", json={"custom_id": first, "delete": True})
    client = DagsterGraphQLClient("127.0.0.1", port_number=cluster.port, timeout=60)
    drift_run = client.submit_job_execution(  # a small budget: the least recently checked tenants, t00001 first
        "reconciliation_drift_job", repository_location_name="ledger_pipeline",
        run_config={"ops": {"reconciliation_drift": {"config": {"max_requests": 3}}}})
    with cluster.instance() as instance:
        wait_for("the drift run", lambda: instance.get_run_by_id(drift_run).is_finished, 240, 1)
        run = instance.get_run_by_id(drift_run)
        assert run.status == dg.DagsterRunStatus.SUCCESS, cluster.logs()
        assert run.tags["dagster-celery/queue"] == "ledger-default"
    with engine.connect() as conn:
        kinds = dict(conn.execute(select(RemoteChangeRecord.custom_id, RemoteChangeRecord.kind)).all())
    assert kinds.get(first) == "deleted", kinds
    con = duckdb.connect(str(cluster.default_data_dir / "warehouse.duckdb"), read_only=True)
    found = con.execute("SELECT status, checked_by FROM accounting.reconciliation WHERE custom_id = ?",
                        [first]).fetchall()
    con.close()
    assert found == [("missing_remote", "remote_read")], found
