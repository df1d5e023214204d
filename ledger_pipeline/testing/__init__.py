"""Helpers shared by the benchmarks (bench/) and the tests (the one home of the test harness; tests and bench/ import
it from here, never bench/ from the tests): a private environment per run (data dir, SQLite,
DuckDB, encryption key, DAGSTER_HOME holding the committed dagster.yaml, the first monthly partition), assets run
through Dagster against it, tenants connected through each system's real OAuth flow against the sandbox.

Nothing here is used by the pipeline at run time; it imports only public parts of `ledger_pipeline`.

    from ledger_pipeline.testing import private_env, materialize
    with private_env(first_month=dt.date(2025, 1, 1)) as env:   # os.environ pointed at a fresh temp dir
        ...
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ledger_pipeline import clock
from ledger_pipeline.testing.net import free_port, wait_for

__all__ = ["CLOSE", "LOCAL_CLOSE", "PrivateEnv", "connect", "dagster_home", "env_vars", "environ", "free_port",
           "materialize", "materialize_gl", "private_env", "range_tags", "reset_stats", "resources", "sandbox_stats",
           "tenant_ids", "wait_for"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
COMMITTED_INSTANCE = PROJECT_ROOT / "dagster_home" / "dagster.yaml"

# The whole monthly close, in dependency order (the monthly job's assets: ledger_pipeline.jobs.CLOSE_ASSETS).
CLOSE = ["gl_accounts_fresh", "r2a_pl_monthly", "journal_entries", "journal_lines", "postings",
         "reconciliation"]
LOCAL_CLOSE = ["r2a_pl_monthly", "journal_entries", "journal_lines"]  # no request: extract, build, validate, land


@dataclass(frozen=True)
class PrivateEnv:
    """Where a private run keeps its files; `vars` is what was set in os.environ (also for child processes)."""

    root: Path
    vars: dict[str, str]

    @property
    def dagster_home(self) -> Path:
        return Path(self.vars["DAGSTER_HOME"])

    @property
    def r2a_url(self) -> str:
        return self.vars["R2A_DATABASE_URL"]

    @property
    def warehouse(self) -> Path:
        return Path(self.vars["LEDGER_WAREHOUSE"])


def dagster_home(path: Path) -> Path:
    """A DAGSTER_HOME at `path` holding the committed dagster.yaml (pools, run-tag limits, run monitoring), so runs
    claim the same slots users' runs do. Raises FileNotFoundError naming the file when the checkout lacks it."""
    if not COMMITTED_INSTANCE.exists():
        raise FileNotFoundError(f"{COMMITTED_INSTANCE} is missing: a DAGSTER_HOME for a private run copies the "
                                "committed instance config; restore it from git")
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(COMMITTED_INSTANCE, path / "dagster.yaml")
    return path


def env_vars(root: Path, *, first_month: dt.date | str | None = None, rate_limit_scale: float = 1.0,
             r2a_url: str | None = None, encryption_key: str | None = None) -> dict[str, str]:
    """The environment of a private run under `root` (created): SQLite R2a database, DuckDB warehouse, a fresh
    Fernet key, its own DAGSTER_HOME, the clients' pacing clock `rate_limit_scale` (LEDGER_RATE_LIMIT_SCALE), and
    LEDGER_FIRST_MONTH ('YYYY-MM') when `first_month` is given (the monthly partitions start there: closing a month
    before it is refused)."""
    from cryptography.fernet import Fernet

    root.mkdir(parents=True, exist_ok=True)
    out = {
        "LEDGER_DATA_DIR": str(root), "R2A_DATABASE_URL": r2a_url or f"sqlite:///{root / 'r2a.sqlite'}",
        "LEDGER_WAREHOUSE": str(root / "warehouse.duckdb"),
        "LEDGER_ENCRYPTION_KEY": encryption_key or Fernet.generate_key().decode(),
        "DAGSTER_HOME": str(dagster_home(root / "dagster_home")), "LEDGER_RATE_LIMIT_SCALE": f"{rate_limit_scale:g}",
    }
    if first_month is not None:
        out["LEDGER_FIRST_MONTH"] = clock.month_key(first_month)[:7]
    return out


@contextlib.contextmanager
def private_env(root: Path | None = None, *, keep: bool = False, **kwargs: object) -> Iterator[PrivateEnv]:
    """os.environ pointed at a private run under `root` (default: a new temp dir, removed on exit unless `keep`);
    the previous values are restored on exit. Keyword arguments as `env_vars`."""
    made = root is None
    root = Path(tempfile.mkdtemp(prefix="ledger-private-")) if root is None else root
    values = env_vars(root, **kwargs)  # type: ignore[arg-type]
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield PrivateEnv(root, values)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if made and not keep:
            shutil.rmtree(root, ignore_errors=True)


# ---- Dagster ---------------------------------------------------------------------------------------------------

def resources(r2a_url: str | None = None, *, backoff_initial: float = 0.01, timeout: float = 5) -> dict:
    """The job's resources from the current environment (load_settings), with short retries for loopback."""
    from ledger_pipeline.resources import AccountingResource, PostingWorkers, R2aDatabase, WarehouseResource
    from ledger_pipeline.settings import load_settings

    s = load_settings()
    return {
        "r2a": R2aDatabase(url=r2a_url or s.r2a_database_url),
        "warehouse": WarehouseResource(work_path=str(s.work_warehouse_path), publish_path=str(s.warehouse_path)),
        "accounting": AccountingResource(rate_limit_scale=s.rate_limit_scale, backoff_initial=backoff_initial,
                                         timeout=timeout),
        "posting": PostingWorkers(),  # this process: the embedded profile's one shard
    }


def range_tags(first: str, last: str | None = None) -> dict[str, str]:
    """Run tags of one month ('YYYY-MM-01') or a range of months run as one (single-run backfill policy)."""
    last = last or first
    if first == last:
        return {"dagster/partition": first}
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def materialize(selection: list[str], first: str | dt.date, last: str | dt.date | None = None, *,
                r2a_url: str | None = None, run_config: dict | None = None, raise_on_error: bool = True,
                instance: object | None = None, checks: bool = True) -> object:
    """Materialize `selection` (asset names) for a month or a range of months as one run (with the partitioned
    assets' checks unless `checks` is False) on the DAGSTER_HOME instance, with the environment's partitions (its
    LEDGER_TIMEZONE's months, as the code location has them); returns dagster's ExecuteInProcessResult."""
    import dagster as dg

    from ledger_pipeline.definitions import ASSETS, CHECKS
    from ledger_pipeline.partitions import settings_partitions, with_partitions
    from ledger_pipeline.settings import load_settings

    first_key = clock.month_key(first)
    last_key = clock.month_key(last) if last is not None else None
    unpartitioned = {"gl_accounts", "reconciliation_drift"}
    partitioned = [a for a in selection if a not in unpartitioned]
    chosen = dg.AssetSelection.assets(*selection).without_checks()  # (assets() alone brings their checks)
    if checks and partitioned:
        chosen = chosen | dg.AssetSelection.checks_for_assets(*partitioned)
    with _instance(instance) as inst:
        assets = with_partitions(ASSETS, settings_partitions(load_settings()))
        return dg.materialize([*assets, *CHECKS], selection=chosen, resources=resources(r2a_url), instance=inst,
                              tags=range_tags(first_key, last_key) if partitioned else None, run_config=run_config,
                              raise_on_error=raise_on_error)


def materialize_gl(r2a_url: str | None = None, refresh: str = "all") -> object:
    """The daily GL job's asset (every connected tenant's chart of accounts)."""
    return materialize(["gl_accounts"], clock.current_month(), r2a_url=r2a_url,
                       run_config={"ops": {"gl_accounts": {"config": {"refresh": refresh}}}})


@contextlib.contextmanager
def _instance(instance: object | None) -> Iterator[object]:
    if instance is not None:
        yield instance
        return
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        raise RuntimeError("DAGSTER_HOME is not set: use ledger_pipeline.testing.private_env() (or env_vars()) to "
                           "give this run its own instance with the committed dagster.yaml")
    with dg.DagsterInstance.get() as inst:
        yield inst


# ---- tenants ---------------------------------------------------------------------------------------------------

def connect(tenants: list[str], system: str = "jurnal", r2a_url: str | None = None) -> None:
    """Connect `tenants` to `system` through its own OAuth flow against the sandbox (which auto-approves)."""
    import httpx

    from ledger_pipeline.settings import load_settings
    from ledger_pipeline.systems import OpenOptions, open_connection
    from ledger_pipeline.systems.authflow import follow_redirects

    s = load_settings()
    connection = open_connection(system, s, OpenOptions(r2a_url or s.ops_database_url, s.rate_limit_scale, 0.01, 5))
    http = httpx.Client(timeout=10)
    try:
        for t in tenants:
            connection.connect_tenant(t, follow_redirects(http))
    finally:
        http.close()
        connection.close()


def tenant_ids(n: int) -> list[str]:
    """The seed's tenant ids: t00001 .. tNNNNN."""
    return [f"t{i:05d}" for i in range(1, n + 1)]


def sandbox_stats(url: str) -> dict:
    import httpx

    return httpx.get(f"{url}/_sandbox/stats").json()


def reset_stats(url: str) -> None:
    import httpx

    httpx.post(f"{url}/_sandbox/stats/reset")


def environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of os.environ plus `extra`, for a child process."""
    return {**os.environ, **(extra or {})}
