"""The operator's side, through the real command in a subprocess (as a user or a cron job runs it): `run` exits
0 / 3 / 1 (completed / completed with tenant-months not posted / failed), `repost` re-creates or refuses with the
tenant's own system named, `decisions` lists what waits for a decision."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from ledger_pipeline.cli import main
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import R2aTransaction, make_engine
from ledger_pipeline_tests.helpers import connect, query, sandbox_entries


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ledger_pipeline.cli", *args], env={**os.environ},
                          capture_output=True, text=True, timeout=300)


def in_process(*args: str):  # noqa: ANN201  (click.testing.Result)
    """The same command in this process, for answers that start no run (usage errors, listings): the entry point
    and exit codes of the runs are proven by the subprocesses; these only skip a Python start."""
    return CliRunner().invoke(main, list(args))


def shown(out: subprocess.CompletedProcess) -> str:
    return out.stdout[-4000:] + out.stderr[-4000:]


@pytest.mark.slow
def test_run_exit_codes_and_repost_from_the_command_line(settings, sandbox) -> None:  # noqa: ANN001
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, 3, 2, dt.date(2025, 1, 1), seed=17)
    with engine.connect() as conn:
        tenants = [r[0] for r in conn.execute(text("SELECT tenant_id FROM tenants ORDER BY 1"))]
    connect(tenants)
    first, second, third = tenants

    out = cli("run", "--month", "2025-01")
    assert out.returncode == 0 and "succeeded" in out.stdout, shown(out)

    # a revoked grant (a failed posting) and a rejected tenant-month: the run completes, and says so with exit 3
    httpx.post(f"{sandbox.url}/_sandbox/companies/{second}/revoke")
    with engine.begin() as conn:  # a typo in a category: the tenant-month is rejected upstream
        conn.execute(R2aTransaction.__table__.insert(), [{
            "tenant_id": third, "txn_date": dt.date(2025, 2, 15), "category": "revnue", "subcategory": "sales",
            "amount": 150000, "currency": "IDR"}])
    out = cli("run", "--month", "2025-02")
    assert out.returncode == 3, shown(out)
    assert "completed with problems" in out.stdout and "exit 3" in out.stdout, shown(out)
    assert f"{second} 2025-02" in out.stdout and f"{third} 2025-02 (rejected upstream)" in out.stdout, shown(out)

    # a deleted entry re-posted by the operator, in the tenant's own system; then nothing left to do
    cid = f"r2a-pl-{first}-202501"
    httpx.post(f"{sandbox.url}/_sandbox/companies/{first}/entries", json={"custom_id": cid, "delete": True})
    out = cli("repost", "--tenant", first, "--month", "2025-01", "--accept-remote")
    assert out.returncode == 3 and "nothing to accept" in out.stdout and "Jurnal.id (Mekari)" in out.stdout, \
        shown(out)
    out = cli("repost", "--tenant", first, "--month", "2025-01")
    assert out.returncode == 0 and "re-created in Jurnal.id (Mekari)" in out.stdout, shown(out)
    assert [e["custom_id"] for e in sandbox_entries(sandbox.url, first)].count(cid) == 1
    assert query(settings, "SELECT status, checked_by FROM accounting.reconciliation WHERE custom_id = ?",
                 [cid]) == [("match", "repost")]
    out = cli("repost", "--tenant", first, "--month", "2025-01")
    assert out.returncode == 0 and "holds exactly our entry" in out.stdout, shown(out)
    assert [e["custom_id"] for e in sandbox_entries(sandbox.url, first)].count(cid) == 1

    usage = in_process("repost", "--tenant", "nobody", "--month", "2025-01")
    assert usage.exit_code == 2 and "not connected" in usage.stderr, usage.output
    usage = in_process("repost", "--tenant", third, "--month", "2025-02")
    assert usage.exit_code == 2 and "rejected upstream" in usage.stderr, usage.output
    listed = in_process("decisions")
    assert listed.exit_code == 0 and "no tenant-month needs a decision" in listed.stdout, listed.output

    # a crash is not a problem report: exit 1
    settings.work_warehouse_path.write_bytes(b"this is not a DuckDB file" * 100)
    out = cli("run", "--month", "2025-01")
    assert out.returncode == 1, shown(out)
