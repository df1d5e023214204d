"""`dagster dev` for tests: on a free loopback port with the committed instance config, GraphQL as the UI uses it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from ledger_pipeline.partitions import settings_partitions
from ledger_pipeline.settings import PROJECT_ROOT, load_settings
from ledger_pipeline.testing.net import free_port

# The UI's own GraphQL: launch a partition backfill, read its status and runs.


def partition_keys() -> list[str]:
    """The months the code location offers: the settings' partitions (this environment's, which `dagster dev`
    started from it loads)."""
    return settings_partitions(load_settings()).get_partition_keys()


def graphql(url: str, query: str, variables: dict) -> dict:
    r = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30)
    r.raise_for_status()
    return r.json()["data"]


@contextlib.contextmanager
def dagster_dev(tmp_path: Path, home: Path | None = None, startup: float = 120) -> Iterator[str]:
    """`dagster dev` (webserver + daemon) with the committed dagster.yaml copied into `home` (DAGSTER_HOME by
    default); yields its URL; stops the whole process group, whatever happens."""
    home = home or Path(os.environ["DAGSTER_HOME"])
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    log_path = tmp_path / "dagster_dev.log"
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port), "-w",
         str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT, env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + startup
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
