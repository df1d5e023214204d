"""Dagster resources: thin configurable handles on the adapters. Defaults come from settings (env vars)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy import Engine

from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.settings import load_settings
from ledger_pipeline.warehouse.store import Warehouse


class R2aDatabase(dg.ConfigurableResource):
    """R2a's SQL database (SQLite file by default, Postgres in production)."""

    url: str

    _engine: Engine | None = PrivateAttr(default=None)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB work file runs write, and the snapshot analysts open (LEDGER_WAREHOUSE)."""

    work_path: str
    publish_path: str

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(Path(self.work_path), Path(self.publish_path))


def default_resources() -> dict[str, dg.ConfigurableResource]:
    from ledger_pipeline.systems.jurnal.resource import JurnalResource

    s = load_settings()
    return {
        "r2a": R2aDatabase(url=s.r2a_database_url),
        "warehouse": WarehouseResource(work_path=str(s.work_warehouse_path), publish_path=str(s.warehouse_path)),
        "jurnal": JurnalResource.from_settings(s),
    }
