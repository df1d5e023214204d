"""Test helpers: run assets through Dagster against the test's settings, connect tenants through the real flow."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import dagster as dg
import duckdb
import httpx

from ledger_pipeline.definitions import ASSETS, CHECKS
from ledger_pipeline.posting import PostingRow
from ledger_pipeline.resources import AccountingResource, R2aDatabase, WarehouseResource
from ledger_pipeline.settings import Settings, load_settings
from ledger_pipeline.systems.authflow import connect_tenant, follow_redirects
from ledger_pipeline.systems.jurnal.session import JurnalSession, open_session

CLOSE = ["gl_accounts_fresh", "r2a_pl_monthly", "journal_entries", "journal_lines", "postings",
         "reconciliation"]


def resources(s: Settings, r2a_url: str | None = None) -> dict:
    """The run's resources; a test that names `r2a_url` (a Postgres schema) keeps its operational tables there too,
    as `connect(..., r2a_url)` and `session(r2a_url)` do."""
    return {
        "r2a": R2aDatabase(url=r2a_url or s.r2a_database_url, ops_url=r2a_url or s.ops_database_url),
        "warehouse": WarehouseResource(work_path=str(s.work_warehouse_path), publish_path=str(s.warehouse_path)),
        "accounting": AccountingResource(rate_limit_scale=s.rate_limit_scale, backoff_initial=0.01, timeout=5),
    }


def range_tags(first: str, last: str | None = None) -> dict[str, str]:
    last = last or first
    if first == last:
        return {"dagster/partition": first}
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


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
    return httpx.get(f"{url}/_sandbox/journal_entries", params=params).json()["journal_entries"]


def sandbox_stats(url: str) -> dict:
    return httpx.get(f"{url}/_sandbox/stats").json()


def reset_stats(url: str) -> None:
    httpx.post(f"{url}/_sandbox/stats/reset")


def month(key: str) -> dt.date:
    return dt.date.fromisoformat(key)


def connect_to(system: str, tenants: list[str], r2a_url: str | None = None) -> None:
    """Connect tenants to `system` through its own flow against the sandbox (auto-approving)."""
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


def live_entries(url: str, system: str | None = None) -> list[dict]:
    """Every system's entries as the sandbox holds them, reversed/voided ones (Aden) left out."""
    params = {"system": system} if system else {}
    entries = httpx.get(f"{url}/_sandbox/journal_entries", params=params).json()["journal_entries"]
    return [e for e in entries if e.get("live", True)]


class MemoryStore:
    """An in-memory PostingStore, to drive the posting engine directly against a sink."""

    def __init__(self) -> None:
        self.rows: dict[str, PostingRow] = {}
        self.saves = 0

    def save(self, rows: list[PostingRow]) -> None:
        self.saves += 1
        for r in rows:
            self.rows[r.custom_id] = r

    def state(self, tenant_id: str) -> dict[str, PostingRow]:
        return {cid: r for cid, r in self.rows.items() if r.tenant_id == tenant_id}
