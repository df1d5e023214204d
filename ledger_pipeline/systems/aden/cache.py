"""What the Aden sink remembers about a company across runs: its accounting periods and how the server addresses
entries, kept in the operational database (the tenant's `integrations.extra` JSON, key "aden_cache", beside the
non-secret connection details) and in memory for the process.

Shape of "aden_cache": {"periods": [{"period_id", "period_name", "start_date", "end_date", "is_closed"}],
"fetched_at": ISO time, "addressing": "entry_id" | "server_id" | absent}.

Periods change rarely (a month is closed or reopened, a fiscal year added), so a posting run reads none: a create names
the period from here. The cache is re-read (one `GET /accounting-periods` sweep) when it is empty, when no cached period
contains the date, when Aden refuses a write for a closed or unknown period, and before a period cached as closed is
reported locked unless it was read in this process (so a reopened period is noticed). `connect` fills it.
"""

from __future__ import annotations

import datetime as dt
import json
import threading

from sqlalchemy import Engine, select, update

from ledger_pipeline.state.models import Integration

SYSTEM = "aden"
KEY = "aden_cache"
PERIOD_FIELDS = ("period_id", "period_name", "start_date", "end_date", "is_closed")


class AdenCache:
    """Per-tenant periods and addressing; `engine` None keeps them in memory only."""

    def __init__(self, engine: Engine | None):
        self.engine = engine
        self._mem: dict[str, dict] = {}
        self._fresh: set[str] = set()  # tenants whose periods were read from Aden in this process
        self._lock = threading.Lock()

    def _load(self, tenant_id: str) -> dict:
        with self._lock:
            if tenant_id in self._mem:
                return self._mem[tenant_id]
        blob: dict = {}
        if self.engine is not None:
            with self.engine.connect() as conn:
                raw = conn.execute(select(Integration.extra).where(
                    Integration.tenant_id == tenant_id, Integration.source_system == SYSTEM)).scalar_one_or_none()
            try:
                blob = dict((json.loads(raw) if raw else {}).get(KEY) or {})
            except (ValueError, TypeError, AttributeError):
                blob = {}
        with self._lock:
            return self._mem.setdefault(tenant_id, blob)

    def _save(self, tenant_id: str, blob: dict) -> None:
        with self._lock:
            self._mem[tenant_id] = blob
        if self.engine is None:
            return
        with self.engine.begin() as conn:
            raw = conn.execute(select(Integration.extra).where(
                Integration.tenant_id == tenant_id, Integration.source_system == SYSTEM)).scalar_one_or_none()
            try:
                extra = json.loads(raw) if raw else {}
            except ValueError:
                extra = {}
            extra = extra if isinstance(extra, dict) else {}
            extra[KEY] = blob
            conn.execute(update(Integration).where(
                Integration.tenant_id == tenant_id, Integration.source_system == SYSTEM
            ).values(extra=json.dumps(extra)))

    def periods(self, tenant_id: str) -> list[dict] | None:
        """The cached periods (None: never read)."""
        periods = self._load(tenant_id).get("periods")
        return list(periods) if isinstance(periods, list) else None

    def fresh(self, tenant_id: str) -> bool:
        """Were the periods read from Aden in this process?"""
        return tenant_id in self._fresh

    def put_periods(self, tenant_id: str, periods: list[dict]) -> None:
        blob = dict(self._load(tenant_id))
        blob["periods"] = [{k: p.get(k) for k in PERIOD_FIELDS} for p in periods]
        blob["fetched_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self._save(tenant_id, blob)
        self._fresh.add(tenant_id)

    def addressing(self, tenant_id: str) -> str | None:
        return self._load(tenant_id).get("addressing")

    def set_addressing(self, tenant_id: str, how: str) -> None:
        if self.addressing(tenant_id) != how:
            self._save(tenant_id, {**self._load(tenant_id), "addressing": how})

    def forget(self, tenant_id: str) -> None:
        """Drop the process's copy (the next look-up reloads from the database)."""
        with self._lock:
            self._mem.pop(tenant_id, None)
            self._fresh.discard(tenant_id)
