"""Test helpers: run assets through Dagster against the test's settings, connect tenants through the real flow.
What bench/ also needs lives in ledger_pipeline.testing (re-exported here: one home)."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import dagster as dg
import duckdb
import httpx

from ledger_pipeline import testing
from ledger_pipeline.definitions import ASSETS, CHECKS
from ledger_pipeline.resources import AccountingResource, PostingWorkers, R2aDatabase, WarehouseResource
from ledger_pipeline.settings import Settings, load_settings
from ledger_pipeline.systems.authflow import connect_tenant, follow_redirects
from ledger_pipeline.systems.jurnal.session import JurnalSession, open_session
from ledger_pipeline.testing import CLOSE, range_tags, reset_stats, sandbox_stats
from ledger_pipeline.testing.systems import MemoryStore

__all__ = ["CLOSE", "MemoryStore", "connect", "connect_to", "live_entries", "materialize", "materialize_drift",
           "materialize_gl", "month", "query", "range_tags", "reset_stats", "resources", "sandbox_entries",
           "sandbox_stats", "session"]


def resources(s: Settings, r2a_url: str | None = None) -> dict:
    """The run's resources; a test that names `r2a_url` (a Postgres schema) keeps its operational tables there too,
    as `connect(..., r2a_url)` and `session(r2a_url)` do."""
    return {
        "r2a": R2aDatabase(url=r2a_url or s.r2a_database_url, ops_url=r2a_url or s.ops_database_url),
        "warehouse": WarehouseResource(work_path=str(s.work_warehouse_path), publish_path=str(s.warehouse_path)),
        "accounting": AccountingResource(rate_limit_scale=s.rate_limit_scale, backoff_initial=0.01, timeout=5),
        "posting": PostingWorkers(),  # this process: the embedded profile's one shard
    }


def materialize(selection: list[str], first: str, last: str | None = None, *, r2a_url: str | None = None,
                instance: dg.DagsterInstance | None = None, run_config: dict | None = None,
                raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Materialize `selection` (asset names) for a month or a range as one run, with its checks."""
    s = load_settings()
    partitioned = [a for a in selection if a not in ("gl_accounts", "reconciliation_drift")]
    with committed_instance(instance) as inst:
        return dg.materialize(
            [*ASSETS, *CHECKS], selection=dg.AssetSelection.assets(*selection)
            | dg.AssetSelection.checks_for_assets(*partitioned), resources=resources(s, r2a_url), instance=inst,
            tags=range_tags(first, last) if partitioned else None, run_config=run_config,
            raise_on_error=raise_on_error)


@contextlib.contextmanager
def committed_instance(instance: dg.DagsterInstance | None = None) -> Iterator[dg.DagsterInstance]:
    """The test's DAGSTER_HOME instance, which holds the committed dagster.yaml (pools, tag limits, monitoring):
    runs in tests claim the same slots users' runs do (conftest copies the file)."""
    if instance is not None:
        yield instance
        return
    with dg.DagsterInstance.get() as inst:
        yield inst


def materialize_gl(r2a_url: str | None = None, refresh: str = "all") -> dg.ExecuteInProcessResult:
    s = load_settings()
    with committed_instance() as inst:
        return dg.materialize([*ASSETS], selection=["gl_accounts"], resources=resources(s, r2a_url),
                              instance=inst,
                              run_config={"ops": {"gl_accounts": {"config": {"refresh": refresh}}}})


def materialize_drift(r2a_url: str | None = None, months: int = 3, **config: object) -> dg.ExecuteInProcessResult:
    s = load_settings()
    with committed_instance() as inst:
        return dg.materialize([*ASSETS], selection=["reconciliation_drift"], resources=resources(s, r2a_url),
                              instance=inst,
                              run_config={"ops": {"reconciliation_drift": {"config": {"months": months, **config}}}})


def session(r2a_url: str | None = None) -> JurnalSession:
    s = load_settings()
    return open_session(s, database_url=r2a_url, backoff_initial=0.01, timeout=5)


def connect(tenants: list[str], r2a_url: str | None = None) -> None:
    sess = session(r2a_url)
    try:
        for t in tenants:
            connect_tenant(sess.vault.engine, sess.vault, sess.oauth, t, follow_redirects(sess.oauth.http))
    finally:
        sess.close()


def query(s: Settings, sql: str, params: list | None = None) -> list[tuple]:
    """Read the published warehouse read-only, as an analyst would."""
    con = duckdb.connect(str(s.warehouse_path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def sandbox_entries(url: str, login: str | None = None) -> list[dict]:
    params = {"login": login} if login else {}
    return httpx.get(f"{url}/_sandbox/journal_entries", params=params, timeout=60).json()["journal_entries"]


def month(key: str) -> dt.date:
    return dt.date.fromisoformat(key)


def connect_to(system: str, tenants: list[str], r2a_url: str | None = None) -> None:
    """Connect tenants to `system` through its own flow against the sandbox (auto-approving)."""
    testing.connect(tenants, system, r2a_url)


def live_entries(url: str, system: str | None = None) -> list[dict]:
    """Every system's entries as the sandbox holds them, reversed/voided ones (Aden) left out."""
    params = {"system": system} if system else {}
    entries = httpx.get(f"{url}/_sandbox/journal_entries", params=params, timeout=60).json()["journal_entries"]
    return [e for e in entries if e.get("live", True)]


def set_company_currency(sandbox, system: str, tenant: str, **body: object) -> dict:  # noqa: ANN001
    """The emulated company's home currency / multicurrency through the `currency` control every emulator serves
    (sandboxes/currency.py); asserts the control accepted it."""
    from ledger_pipeline.sandboxes.currency import currency_control_url

    resp = httpx.post(currency_control_url(sandbox.url, system, tenant), json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()
