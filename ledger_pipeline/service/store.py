"""The connection service's own state in the operational database (LEDGER_OPS_DATABASE_URL): three tables defined
with the other operational tables (ledger_pipeline/state/models.py, Alembic revision 0002).

- `service_link_uses`: one row per link that completed a connection (its nonce): a second use is refused. Rows are
  purged once the link has expired (a replay is then refused for being expired).
- `service_flows`: one row per authorisation in progress, keyed by its OAuth state (the state itself lives in
  `oauth_states`, systems/authflow.py): the system, the tenant, the link's nonce and flags, and the SHA-256 of the
  browser-binding secret kept in an HttpOnly cookie (RFC 6749 section 10.12: a callback is accepted only in the
  browser that started it).
- `connection_health`: per (tenant, system), what we learnt of the connection without reading secrets: the
  company's name and home currency when the system exposes them, the last successful request (connect,
  preflight), the last preflight's verdict.

Timestamps are naive UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass

from sqlalchemy import (
    Engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from ledger_pipeline.connections import upsert_connection_health
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.models import connection_health, service_flows, service_link_uses

link_uses, flows = service_link_uses, service_flows

_engines: dict[str, Engine] = {}
_guard = threading.Lock()


def ops_engine(url: str) -> Engine:
    """The operational database (migrated to the newest schema on first open; one engine per URL and process)."""
    with _guard:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_ops_engine(url)
        return engine


@dataclass(frozen=True)
class Flow:
    state: str
    system: str
    tenant_id: str
    nonce: str
    flags: str
    binding_sha256: str
    link_expires_at: dt.datetime
    expires_at: dt.datetime


class ServiceStore:
    """Link uses, flows in progress and connection health on one engine (thread-safe: one transaction per call)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # -- links --------------------------------------------------------------------------------------------------
    def link_used(self, nonce: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(link_uses.c.nonce).where(link_uses.c.nonce == nonce)).first() is not None

    def claim_link(self, nonce: str, tenant_id: str, system: str, link_expires_at: dt.datetime,
                   now: dt.datetime) -> bool:
        """Record the link as used; False when it already was (the insert is the atomic single-use test)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(link_uses).where(link_uses.c.expires_at < now))
                conn.execute(insert(link_uses).values(nonce=nonce, tenant_id=tenant_id, system=system, used_at=now,
                                                      expires_at=link_expires_at))
        except IntegrityError:
            return False
        return True

    # -- flows --------------------------------------------------------------------------------------------------
    def add_flow(self, flow: Flow, now: dt.datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(flows).where(flows.c.expires_at < now))
            conn.execute(insert(flows).values(**flow.__dict__))

    def flow(self, state: str) -> Flow | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(flows).where(flows.c.state == state)).mappings().first()
        return Flow(**row) if row else None

    def drop_flow(self, state: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(flows).where(flows.c.state == state))

    # -- disconnect ---------------------------------------------------------------------------------------------
    def disconnect(self, tenant_id: str, now: dt.datetime, by: str = "the operator") -> str | None:
        """Mark the tenant's current connection `revoked` and forget its credentials (the encrypted tokens are
        cleared; the company on record, connection_health and every posting row are kept, so a reconnect to the same
        company carries on exactly where it stopped). The vault then refuses every request for the tenant
        (NeedsReauth with this detail) until the tenant connects again through a new link. Returns the system, or
        None when the tenant has no connection."""
        from ledger_pipeline.state.vault import Integration, tenant_systems

        current = tenant_systems(self.engine).get(tenant_id)
        if current is None:
            return None
        system = current[0]
        detail = (f"disconnected by {by} at {now:%Y-%m-%d %H:%M} UTC: nothing is sent for this tenant until it "
                  f"connects again (`ledger-pipeline connect --link --tenant {tenant_id} --system {system}`)")
        with self.engine.begin() as conn:
            conn.execute(update(Integration).where(Integration.tenant_id == tenant_id,
                                                   Integration.source_system == system).values(
                status="revoked", status_detail=detail, access_token=None, refresh_token=None, expires_at=None,
                updated_at=now))
        return system

    # -- health -------------------------------------------------------------------------------------------------
    def _upsert(self, tenant_id: str, system: str, values: dict) -> None:
        upsert_connection_health(self.engine, tenant_id, system, values)

    def record_connected(self, tenant_id: str, system: str, now: dt.datetime, via: str,
                         company_name: str | None = None, home_currency: str | None = None) -> None:
        values = {"connected_at": now, "connected_via": via, "last_ok_at": now, "company_name": company_name,
                  "home_currency": home_currency}
        self._upsert(tenant_id, system, values)

    def record_check(self, tenant_id: str, system: str, now: dt.datetime, ok: bool, detail: str | None,
                     reached: bool, company_name: str | None = None, home_currency: str | None = None,
                     failures: list[dict] | None = None) -> None:
        """A preflight's verdict: `detail` in words, `failures` as data ([{"name", "detail", "fix"}], stored as
        JSON); `reached`: a request to the system succeeded (its time becomes last_ok_at)."""
        values: dict = {"last_check_at": now, "last_check_ok": int(ok), "last_check_detail": detail,
                        "last_check_failures": json.dumps(failures or [])}
        if reached:
            values["last_ok_at"] = now
        if company_name:
            values["company_name"] = company_name
        if home_currency:
            values["home_currency"] = home_currency
        self._upsert(tenant_id, system, values)

    def health(self) -> dict[tuple[str, str], dict]:
        """{(tenant_id, system): row as a dict}."""
        with self.engine.connect() as conn:
            return {(r["tenant_id"], r["system"]): dict(r)
                    for r in conn.execute(select(connection_health)).mappings()}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
