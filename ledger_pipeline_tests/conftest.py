"""Shared fixtures: a private data dir per test (SQLite, DuckDB, key, DAGSTER_HOME), the sandbox on loopback, and
Postgres when LEDGER_TEST_POSTGRES_URL names it."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from ledger_pipeline.sandboxes.base import SandboxLimits
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.settings import PROJECT_ROOT, Settings, load_settings
from ledger_pipeline.systems import OpenOptions, open_connection
from ledger_pipeline.systems.authflow import follow_redirects

PG_ENV = "LEDGER_TEST_POSTGRES_URL"
TEST_FIRST_MONTH = "2024-01"


@pytest.fixture(autouse=True, scope="session")
def first_month() -> Iterator[None]:
    """The tests close fixed historic months (from 2024-01, in the CLI's subprocesses and the code locations they
    load too): the first partition is 2024-01 unless LEDGER_FIRST_MONTH says otherwise. Settings are read when they
    are used, never at import, so a fixture is early enough (session scope: before the module-scoped ones)."""
    mp = pytest.MonkeyPatch()
    if not os.environ.get("LEDGER_FIRST_MONTH"):
        mp.setenv("LEDGER_FIRST_MONTH", TEST_FIRST_MONTH)
    yield
    mp.undo()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("R2A_DATABASE_URL", f"sqlite:///{tmp_path / 'data' / 'r2a.sqlite'}")
    monkeypatch.setenv("LEDGER_WAREHOUSE", str(tmp_path / "data" / "warehouse.duckdb"))
    monkeypatch.setenv("LEDGER_ENCRYPTION_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("JURNAL_RATE_LIMIT_SCALE", raising=False)  # the deprecated name (it would warn)
    monkeypatch.setenv("LEDGER_RATE_LIMIT_SCALE", "1")
    (tmp_path / "dagster_home").mkdir()
    # the committed instance config (pools, run-tag limits, run monitoring): what users run, never skipped
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", tmp_path / "dagster_home" / "dagster.yaml")
    return load_settings()


@pytest.fixture
def sandbox(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    """The Jurnal sandbox with its limits time-scaled x1000 (fast, but still enforced), env pointed at it."""
    with SandboxServer(settings.data_dir / "sandbox.sqlite", limits=SandboxLimits(scale=1000)) as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("LEDGER_RATE_LIMIT_SCALE", "1000")
        yield server


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema in the Postgres named by LEDGER_TEST_POSTGRES_URL, dropped afterwards."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"Postgres tests need {PG_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def connect(sandbox) -> Iterator:  # noqa: ANN001
    """connect(system, tenant) -> the system's Connection on the sandbox, the tenant connected through its own flow
    (each system opened once per test, closed at the end)."""
    s = load_settings()
    opened, http = {}, httpx.Client(timeout=10)

    def go(system: str, tenant: str):  # noqa: ANN202
        if system not in opened:
            opened[system] = open_connection(system, s, OpenOptions(s.ops_database_url, 1000, 0.01, 5))
        opened[system].connect_tenant(tenant, follow_redirects(http))
        return opened[system]
    yield go
    http.close()
    for c in opened.values():
        c.close()


# Known-long tests (seconds on a loaded 2-core machine, `--durations`), started first so that under `make test`
# (`-n 6 --maxschedchunk 1`: one test handed out at a time) they spread over the workers, which then finish together
# instead of one picking up a 3-minute test at the end. Order only: nothing skipped.
SLOW_FIRST = {
    "test_distributed.py": 200, "test_e2e_dagster_dev.py::test_killed_ui_run": 150,
    "test_e2e_dagster_dev.py": 110, "test_remote_changes_cli.py": 75, "test_ui.py": 85,
    "test_close_operations.py::test_a_stopped_run": 55, "test_bench_smoke.py": 30, "test_runs.py": 30,
    "test_posting.py": 25, "test_remote_changes.py": 10, "test_close_operations.py": 20, "test_journal.py": 20,
    "test_mixed_systems.py": 18, "test_jurnal_connection.py": 18, "test_ratelimit.py": 12, "test_shards.py": 12,
    "test_definitions.py": 12, "test_hostile_rows.py": 12, "test_operator_retry.py": 10,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def weight(item: pytest.Item) -> int:
        nodeid = item.nodeid.rsplit("/", 1)[-1]
        return max((w for key, w in SLOW_FIRST.items() if nodeid.startswith(key)), default=0)

    items.sort(key=weight, reverse=True)  # stable: same order on every xdist worker, file order kept within a weight
