"""Every tenant's connection, as the operator page and `ledger-pipeline connect --status` show it.

Read from the operational database (connections in `integrations`, what the service learnt in
`connection_health`, the newest posted month in `postings`) and R2a's `tenants` (so never-connected tenants show
too). No secret is read: tokens stay encrypted and unread.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from ledger_pipeline.settings import Settings
from ledger_pipeline.state.models import Posting
from ledger_pipeline.state.vault import Integration

STATUSES = ("connected", "needs re-auth", "revoked", "never connected")
NEEDS_LINK = ("needs re-auth", "revoked", "never connected")


@dataclass
class ConnectionRow:
    tenant_id: str
    tenant_name: str | None
    system: str | None
    company_id: str | None
    company_name: str | None
    home_currency: str | None
    status: str  # one of STATUSES
    status_detail: str | None
    last_ok_at: dt.datetime | None  # the last successful request recorded (connect, preflight, a posting)
    last_posted_month: str | None  # 'YYYY-MM'
    last_check_ok: bool | None
    last_check_at: dt.datetime | None
    link: str | None = None  # filled by the operator page for rows that need one

    @property
    def company(self) -> str | None:
        if self.company_name and self.company_id and self.company_name != self.company_id:
            return f"{self.company_name} ({self.company_id})"
        return self.company_name or self.company_id

    @property
    def last_ok(self) -> str | None:
        return f"{self.last_ok_at:%Y-%m-%d %H:%M} UTC" if self.last_ok_at else None

    @property
    def last_check(self) -> str | None:
        if self.last_check_at is None:
            return None
        return f"{'passed' if self.last_check_ok else 'FAILED'} {self.last_check_at:%Y-%m-%d %H:%M}"


def status_of(raw: str | None) -> str:
    return {None: "never connected", "connected": "connected", "revoked": "revoked"}.get(raw, "needs re-auth")


def connection_rows(settings: Settings, ops: Engine, health: dict[tuple[str, str], dict]) -> list[ConnectionRow]:
    """One row per tenant (R2a's tenants, plus any tenant with a connection but not in R2a), its current system
    (the newest connection when it moved), sorted by tenant id."""
    tenants = _r2a_tenants(settings)
    with ops.connect() as conn:
        integrations = conn.execute(select(
            Integration.tenant_id, Integration.source_system, Integration.company_id, Integration.status,
            Integration.status_detail, Integration.updated_at)).all()
        posted = conn.execute(select(Posting.tenant_id, Posting.system, func.max(Posting.period),
                                     func.max(Posting.posted_at))
                              .where(Posting.status == "posted").group_by(Posting.tenant_id, Posting.system)).all()
    current: dict[str, object] = {}
    for r in sorted(integrations, key=lambda r: r.updated_at or dt.datetime.min):
        current[r.tenant_id] = r
    last_posted = {(t, s): (p, at) for t, s, p, at in posted}
    rows = []
    for tenant_id in sorted(set(tenants) | set(current)):
        r = current.get(tenant_id)
        system = r.source_system if r is not None else None
        h = health.get((tenant_id, system), {}) if system else {}
        month, posted_at = last_posted.get((tenant_id, system), (None, None))
        last_ok = max([t for t in (h.get("last_ok_at"), posted_at) if t is not None], default=None)
        rows.append(ConnectionRow(
            tenant_id=tenant_id, tenant_name=tenants.get(tenant_id), system=system,
            company_id=r.company_id if r is not None else None, company_name=h.get("company_name"),
            home_currency=h.get("home_currency"), status=status_of(r.status if r is not None else None),
            status_detail=r.status_detail if r is not None else None, last_ok_at=last_ok,
            last_posted_month=f"{month:%Y-%m}" if month else None,
            last_check_ok=None if h.get("last_check_ok") is None else bool(h["last_check_ok"]),
            last_check_at=h.get("last_check_at")))
    return rows


def _r2a_tenants(settings: Settings) -> dict[str, str | None]:
    """{tenant_id: name} from R2a; empty when R2a cannot be read (the page then lists connected tenants only)."""
    from sqlalchemy import create_engine

    from ledger_pipeline.r2a.models import Tenant

    engine = create_engine(settings.r2a_database_url)
    try:
        with engine.connect() as conn:
            return {t: n for t, n in conn.execute(select(Tenant.tenant_id, Tenant.name))}
    except Exception:  # noqa: BLE001 - R2a is someone else's database: a read failure must not take the page down
        return {}
    finally:
        engine.dispose()
