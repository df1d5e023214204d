"""Dagster's production deployment on one machine, for the distributed test and bench/distributed.py.

Real processes on loopback: `dagster-webserver` (127.0.0.1), `dagster-daemon`, one Celery worker on `ledger-default`
(the DuckDB host) and one per shard queue, each shard worker with its own LEDGER_SOURCE_ADDRESS (127.0.0.2 ..) and
its own LEDGER_DATA_DIR and DAGSTER_HOME. Instance storage and the ledger's operational database are two fresh Postgres
databases, dropped at the end; RabbitMQ and Redis are the machine's. Every process is stopped by `Cluster.stop()`.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ledger_pipeline import clock
from ledger_pipeline.settings import PROJECT_ROOT
from ledger_pipeline.shards import DEFAULT_QUEUE, queue_for, shard_keys
from ledger_pipeline.testing.net import free_port, wait_for

# Dagster's GraphQL, as the UI launches and watches a backfill (test_e2e_dagster_dev.py).
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidStepError { invalidStepKey }
    ... on UnauthorizedError { message }
  }
}"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs(limit: 10) { runId status } }
  }
}"""


BIN = Path(sys.executable).parent
ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


@dataclass(frozen=True)
class Services:
    postgres: str  # a psycopg URL of an existing database (we create and drop our own next to it)
    broker: str
    backend: str


def services_from_env() -> Services | None:
    pg = os.environ.get("LEDGER_TEST_POSTGRES_URL")
    broker = os.environ.get("LEDGER_TEST_CELERY_BROKER")
    backend = os.environ.get("LEDGER_TEST_CELERY_BACKEND")
    return Services(pg, broker, backend) if pg and broker and backend else None


@contextlib.contextmanager
def fresh_databases(base_url: str) -> Iterator[tuple[str, str]]:
    """Two new databases on the server of `base_url`: (ledger URL for psycopg 3, instance URL for psycopg2)."""
    name = f"ldist_{uuid.uuid4().hex[:10]}"
    url = make_url(base_url)
    admin = create_engine(url.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for db in (name, f"{name}_dagster"):
            conn.execute(text(f"CREATE DATABASE {db}"))
    try:
        yield (url.set(drivername="postgresql+psycopg", database=name, query={}).render_as_string(False),
               url.set(drivername="postgresql+psycopg2", database=f"{name}_dagster", query={}).render_as_string(False))
    finally:
        with admin.connect() as conn:
            for db in (name, f"{name}_dagster"):
                conn.execute(text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        admin.dispose()


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (this process), restoring the previous environment after."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def prepared(root: Path, services: Services, tenants: int, months: int, scale: float, seed: int = 13
             ) -> Iterator[tuple[Cluster, Any, Any, list[str]]]:
    """Fresh databases, the sandbox on 127.0.0.1, `tenants` seeded for the last `months` months, connected, their
    charts in the default host's warehouse: (cluster not yet started, sandbox, ledger engine, month keys).

    The setup runs in this process as the default host, with the sandbox's limits off; they are on (time-scaled by
    `scale`) when the block starts. The cluster's processes are stopped and the databases dropped at the end."""
    from cryptography.fernet import Fernet

    from ledger_pipeline.r2a import seed as seeding
    from ledger_pipeline.r2a.models import make_engine
    from ledger_pipeline.sandboxes.base import SandboxLimits
    from ledger_pipeline.sandboxes.server import SandboxServer
    from ledger_pipeline.testing import connect, materialize_gl

    with fresh_databases(services.postgres) as (ledger_url, dagster_url), \
            SandboxServer(root / "sandbox.sqlite", limits=SandboxLimits(scale=scale, enabled=False)) as sandbox:
        cluster = Cluster(root / "cluster", services, ledger_url, dagster_url, sandbox.env(), scale,
                          encryption_key=Fernet.generate_key().decode())
        setup_env = {k: v for k, v in cluster.env_for("default").items()
                     if k.startswith(("LEDGER_", "JURNAL_", "R2A_")) and k != "LEDGER_PROFILE"}
        engine = make_engine(ledger_url)
        setup_home = root / "setup_dagster_home"  # the setup's chart run: the committed embedded instance config
        setup_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", setup_home / "dagster.yaml")
        try:
            with environ({**setup_env, "LEDGER_RATE_LIMIT_SCALE": "1000",  # the sandbox's limits are off
                          "DAGSTER_HOME": str(setup_home)}):
                os.environ.pop("LEDGER_PROFILE", None)
                first = seeding.default_start(months)
                seeding.seed(engine, tenants, months, first, seed=seed)
                keys = [clock.add_months(first, i).strftime("%Y-%m-01") for i in range(months)]
                connect([f"t{i:05d}" for i in range(1, tenants + 1)])
                materialize_gl()  # the month's backfill does not refetch fresh charts
            sandbox.ctx.limits.enabled = True
            httpx.post(f"{sandbox.url}/_sandbox/stats/reset")
            yield cluster, sandbox, engine, keys
        finally:
            cluster.stop()
            engine.dispose()


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.argv, cwd=PROJECT_ROOT, env=self.env, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (a worker and its pool child): what an OOM kill or a power cut does."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stop(self, grace: float = 20) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
        with contextlib.suppress(ProcessLookupError):  # stray grandchildren (code servers) of the group
            os.killpg(self.popen.pid, signal.SIGKILL)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@dataclass
class Cluster:
    root: Path
    services: Services
    ledger_url: str
    dagster_url: str
    sandbox_env: dict[str, str]
    scale: float
    shards: int = 4
    addresses: list[str] = field(default_factory=lambda: list(ADDRESSES))
    encryption_key: str = ""
    poll_seconds: int = 2  # run monitoring and queue polling, shorter than production's for a quick test
    procs: dict[str, Proc] = field(default_factory=dict)
    port: int = 0

    @property
    def shard_names(self) -> list[str]:
        return shard_keys(self.shards)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "DAGSTER_", "JURNAL_", "R2A_"))}
        return {**env, **self.sandbox_env, "LEDGER_PROFILE": "production", "LEDGER_SHARDS": str(self.shards),
                "LEDGER_FIRST_MONTH": os.environ.get("LEDGER_FIRST_MONTH", "2024-01"),
                "R2A_DATABASE_URL": self.ledger_url, "LEDGER_OPS_DATABASE_URL": self.ledger_url,  # shared by hosts
                "LEDGER_ENCRYPTION_KEY": self.encryption_key,
                "DAGSTER_POSTGRES_URL": self.dagster_url, "LEDGER_CELERY_BROKER": self.services.broker,
                "LEDGER_CELERY_BACKEND": self.services.backend, "LEDGER_RATE_LIMIT_SCALE": str(self.scale),
                "LEDGER_WAREHOUSE": str(self.default_data_dir / "warehouse.duckdb"), "PYTHONUNBUFFERED": "1"}

    @property
    def default_data_dir(self) -> Path:
        return self.root / "default" / "data"

    def home(self, name: str) -> Path:
        """A private DAGSTER_HOME with the committed production instance config (polling shortened)."""
        home = self.root / name / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        config = yaml.safe_load((PROJECT_ROOT / "deploy" / "production" / "dagster.yaml").read_text())
        config["run_monitoring"]["poll_interval_seconds"] = self.poll_seconds
        config["run_launcher"]["config"]["ping_timeout"] = 1.0
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        return home

    def env_for(self, name: str, address: str | None = None) -> dict[str, str]:
        data = self.default_data_dir if name == "default" else self.root / name / "data"
        data.mkdir(parents=True, exist_ok=True)
        env = {**self.base_env(), "DAGSTER_HOME": str(self.home(name)), "LEDGER_DATA_DIR": str(data)}
        if address:
            env["LEDGER_SOURCE_ADDRESS"] = address
        return env

    def data_dir(self, name: str) -> Path:
        return self.default_data_dir if name == "default" else self.root / name / "data"

    # -- processes ----------------------------------------------------------------------------------------------
    def _proc(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = self.procs[name] = Proc(name, argv, env, self.root / f"{name}.log").start()
        return proc

    def start_worker(self, name: str, queue: str, address: str | None = None) -> Proc:
        argv = [str(BIN / "celery"), "-A", "ledger_pipeline.workers", "worker", "-Q", queue, "-n",
                f"{name}@%h", "-c", "1", "--prefetch-multiplier", "1", "-l", "INFO", "--without-gossip",
                "--without-mingle"]
        return self._proc(name, argv, self.env_for(name, address))

    def restart(self, name: str) -> Proc:
        old = self.procs[name]
        old.stop()
        return self._proc(name, old.argv, old.env)

    def start(self, workers: int | None = None) -> None:
        """Webserver, daemon, the default worker and `workers` shard workers (default: one per shard)."""
        self.purge_queues()
        self.port = free_port()
        self._proc("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port), "-w",
                                 str(PROJECT_ROOT / "workspace.yaml")], self.env_for("webserver"))
        self._proc("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
                   self.env_for("daemon"))
        self.start_worker("default", DEFAULT_QUEUE)
        for name, queues, address in self.worker_layout(workers or self.shards):
            self.start_worker(name, ",".join(queues), address)
        wait_for("the webserver", self._webserver_up, 180, 1)
        wait_for("every worker", self._workers_up, 120, 1)

    def worker_layout(self, workers: int) -> list[tuple[str, list[str], str]]:
        """(worker name, its shard queues, its source address): shards dealt round-robin over `workers`."""
        layout = []
        for w in range(workers):
            mine = [queue_for(s) for i, s in enumerate(self.shard_names) if i % workers == w]
            layout.append((f"worker-{w}" if workers != self.shards else self.shard_names[w], mine,
                           self.addresses[w]))
        return layout

    def _webserver_up(self) -> bool:
        for name in ("webserver", "daemon"):
            assert self.procs[name].alive(), f"{name} died:\n{self.procs[name].tail()}"
        try:
            return httpx.get(f"{self.url}/server_info", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def _workers_up(self) -> bool:
        from ledger_pipeline.workers import worker_app

        names = [n for n in self.procs if n not in ("webserver", "daemon")]
        for name in names:
            assert self.procs[name].alive(), f"worker {name} died:\n{self.procs[name].tail()}"
        with self._env():
            replies = worker_app().control.ping(timeout=1.0) or []
        up = {node.split("@")[0] for reply in replies for node in reply}
        return set(names) <= up

    def purge_queues(self) -> None:
        """Messages left by an earlier, interrupted run would start runs of an instance that no longer exists."""
        from ledger_pipeline.workers import worker_app

        with self._env():
            app = worker_app()
            with app.connection_for_write() as conn:
                for q in [DEFAULT_QUEUE, *map(queue_for, shard_keys(max(self.shards, 16)))]:
                    with contextlib.suppress(Exception):
                        conn.default_channel.queue_purge(q)

    def _env(self) -> contextlib.AbstractContextManager[None]:
        return environ({"LEDGER_CELERY_BROKER": self.services.broker, "LEDGER_CELERY_BACKEND": self.services.backend,
                        "DAGSTER_POSTGRES_URL": self.dagster_url, "LEDGER_SHARDS": str(self.shards)})

    @contextlib.contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        """The production instance (Postgres), for assertions."""
        with self._env(), dg.DagsterInstance.from_config(str(self.home("observer"))) as inst:
            yield inst

    def stop(self) -> None:
        """SIGTERM to every process group at once, then wait (SIGKILL after a grace period)."""
        for proc in self.procs.values():
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    # -- launching, as the UI does ------------------------------------------------------------------------------
    def graphql(self, query: str, variables: dict) -> dict:
        r = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60)
        r.raise_for_status()
        body = r.json()
        assert "errors" not in body, body
        return body["data"]

    def launch_close(self, month: str) -> str:
        """The month's close as the UI launches one partition of `monthly_close_job` (the job page's Partitions tab):
        queued, dequeued by the daemon onto the default worker, whose `postings` step posts on every shard's worker.
        Returns the run id."""
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)
        return client.submit_job_execution("monthly_close_job", repository_location_name="ledger_pipeline",
                                           tags={"dagster/partition": month})

    def wait_run(self, run_id: str, timeout: float) -> dg.DagsterRunStatus:
        """The run's final status, failing the wait if a process dies or it does not end within `timeout` s."""
        with self.instance() as instance:
            def done() -> dg.DagsterRunStatus | None:
                for name, proc in self.procs.items():
                    assert proc.alive(), f"{name} died:\n{proc.tail()}"
                run = instance.get_run_by_id(run_id)
                return run.status if run is not None and run.is_finished else None
            return wait_for(f"run {run_id}", done, timeout, 0.5)

    def logs(self) -> str:
        return "\n".join(f"== {n}\n{p.tail(3000)}" for n, p in self.procs.items())


def close_runs(instance: dg.DagsterInstance, month: str) -> list[dg.RunRecord]:
    """The runs that closed `month` (a partition key, '2025-01-01'), oldest first."""
    return [r for r in instance.get_run_records(dg.RunsFilter(), ascending=True)
            if month in (r.dagster_run.tags.get("dagster/partition"),
                         r.dagster_run.tags.get("dagster/asset_partition_range_start"))]


def timeline(instance: dg.DagsterInstance, since: float) -> str:
    """Every run: partition, queue, seconds from `since` to its start and end (for reports)."""
    lines = []
    for r in instance.get_run_records(dg.RunsFilter(), ascending=True):
        t = r.dagster_run.tags
        part = t.get("dagster/partition") or (t.get("dagster/asset_partition_range_start", "") + "..")
        lines.append(f"{r.dagster_run.job_name:<26} {part:<12} {r.dagster_run.status.value:<8} "
                     f"{t.get('dagster-celery/queue', ''):<16} created {r.create_timestamp.timestamp() - since:6.1f} "
                     f"start {(r.start_time or since) - since:6.1f} end {(r.end_time or since) - since:6.1f}")
    return "\n".join(lines)


def posting_metadata(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    """The `postings` materialization metadata of a run, as plain values ({} if it recorded none)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for r in records:
        m = r.event_log_entry.asset_materialization
        if m.asset_key == dg.AssetKey("postings"):
            return {k: v.value for k, v in m.metadata.items()}
    return {}


def posting_span(instance: dg.DagsterInstance, month: str) -> tuple[float, int, dict[str, dict]]:
    """(seconds from the shard tasks' dispatch to the last answer, their API requests, each shard's worker) of the
    month's successful close."""
    done = [r for r in close_runs(instance, month) if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
    meta = posting_metadata(instance, done[-1].dagster_run.run_id)
    return float(meta["seconds"]), int(meta["api_requests"]), meta.get("shards", {})


def one_address_floor(requests: int, limits: Any) -> float:
    """A lower bound of the time any one source address needs for `requests`: the sandbox (like Jurnal) allows
    `per_ip_minute` per fixed window of 60/scale seconds, so N requests span at least ceil(N/limit) - 1 windows."""
    window = 60 / limits.scale
    return (math.ceil(requests / limits.per_ip_minute) - 1) * window
