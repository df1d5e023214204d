"""Dagster resources: thin configurable handles on the adapters. Defaults come from settings (env vars)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy import Engine

from ledger_pipeline.dispatch import PostedWindow, PostingOptions, post_window
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.settings import Settings, load_settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.systems import Connections, OpenOptions, Priority
from ledger_pipeline.warehouse.store import Warehouse


class R2aDatabase(dg.ConfigurableResource):
    """R2a's SQL database (SQLite file by default, Postgres in production), read only: `engine` never writes nor runs
    DDL there. And the operational database (posting state, tokens, OAuth states, entries to post, shards), a
    database of its own: `ops_url`, else LEDGER_OPS_DATABASE_URL (default data/ops.sqlite), migrated on open."""

    url: str
    ops_url: str | None = None

    _engine: Engine | None = PrivateAttr(default=None)
    _ops_engine: Engine | None = PrivateAttr(default=None)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url, read_only=True)
        return self._engine

    @property
    def ops_database_url(self) -> str:
        return self.ops_url or load_settings().ops_database_url

    @property
    def ops_engine(self) -> Engine:
        if self._ops_engine is None:
            self._ops_engine = make_ops_engine(self.ops_database_url)
        return self._ops_engine


class AccountingResource(dg.ConfigurableResource):
    """The accounting systems (Jurnal, QuickBooks, Zoho, Aden, Rootfi): endpoints from the environment (settings.py),
    tokens from the operational database. Secrets are read when a connection opens, never stored in config."""

    rate_limit_scale: float = 1.0  # the clients' pacing clock: match the sandbox's --rate-limit-scale
    backoff_initial: float = 0.5
    timeout: float = 30.0

    def connections(self, database_url: str, priority: Priority = "posting") -> Connections:
        return Connections(load_settings(), OpenOptions(database_url, self.rate_limit_scale, self.backoff_initial,
                                                        self.timeout, priority))


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB work file runs write, and the snapshot analysts open (LEDGER_WAREHOUSE). Inside a run, waits for the
    work-file lock go to the run's log and the lock's holder names the run (storage code never asks Dagster)."""

    work_path: str
    publish_path: str

    _log: Callable[[str], None] | None = PrivateAttr(default=None)
    _run_id: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.log is not None:
            self._log = context.log.warning
        self._run_id = context.run_id

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(Path(self.work_path), Path(self.publish_path), log=self._log, run_id=self._run_id)


class PostingWorkers(dg.ConfigurableResource):
    """Where the close's posting requests come from: the one thing the two profiles do differently (dispatch.py).

    `shards` 0 (embedded): one shard, this process, every tenant. N >= 1 (production): tenants split over N shards,
    each posted by the Celery worker of its queue `ledger-shard-K`, from that worker's own source address
    (workers.post_on_shards); the step waits up to `timeout` seconds for every shard."""

    shards: int = 0
    timeout: float = 6 * 3600.0

    def post(self, log: Any, run_id: str, options: PostingOptions, r2a: R2aDatabase, accounting: AccountingResource,
             start: dt.date, end: dt.date, rechart: Callable | None = None) -> PostedWindow:
        """Post [start, end) exactly once; `rechart` is this process's chart retry (a shard worker uses its own)."""
        if self.shards < 1:
            return post_window(log, run_id, options, r2a.ops_engine,
                               lambda: accounting.connections(r2a.ops_database_url), start, end, rechart=rechart,
                               rate_limit_scale=accounting.rate_limit_scale, backoff=accounting.backoff_initial)
        from ledger_pipeline.workers import post_on_shards

        return post_on_shards(log, run_id, options, r2a.ops_engine, {
            "rate_limit_scale": accounting.rate_limit_scale, "backoff": accounting.backoff_initial,
            "timeout": accounting.timeout}, start, end, self.shards, self.timeout)


def default_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources of the profile (LEDGER_PROFILE): the production profile posts on its shard workers
    (LEDGER_SHARDS), the embedded one in this process. `settings` default: read now."""
    s = settings or load_settings()
    return {
        "r2a": R2aDatabase(url=s.r2a_database_url, ops_url=s.ops_database_url),
        "warehouse": WarehouseResource(work_path=str(s.work_warehouse_path), publish_path=str(s.warehouse_path)),
        "accounting": AccountingResource(rate_limit_scale=s.rate_limit_scale),
        "posting": PostingWorkers(shards=s.shards if s.profile == "production" else 0),
    }
