"""Tokens at rest: Fernet-encrypted in the operational database's `integrations` table (one row per tenant and
system), refreshed once per tenant at a time. Every system's tokens live here; a vault instance serves one system.

Mekari and QuickBooks refresh tokens are single use / rotating: two processes refreshing the same grant at once
would burn it. Refreshes are serialised per tenant (a thread lock, a file lock across processes on this machine,
and SELECT ... FOR UPDATE on Postgres), and the new pair is written in the same transaction that read the old one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from filelock import FileLock
from sqlalchemy import Engine, select, update

from ledger_pipeline.settings import Settings
from ledger_pipeline.state.models import Integration

DEFAULT_SYSTEM = "jurnal"


def load_key(settings: Settings) -> bytes:
    """LEDGER_ENCRYPTION_KEY, else a key generated on first use into a 0600 file under data/."""
    if settings.encryption_key:
        return settings.encryption_key.encode()
    path = settings.key_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key())
    return path.read_bytes().strip()


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str
    expires_in: int
    company_id: str | None = None
    extra: dict | None = None  # non-secret connection details (Zoho's api_domain, QuickBooks' realm), kept as JSON

    def __repr__(self) -> str:  # never print secrets
        return f"TokenSet(expires_in={self.expires_in}, company_id={self.company_id!r})"


class TokenEndpointError(Exception):
    """The token endpoint failed (5xx, garbage, no answer) while refreshing one tenant's token: that tenant is
    retried later; the others go on."""


class NeedsReauth(Exception):
    """The tenant's grant is gone (revoked, expired or burnt): someone must run `connect` again."""

    def __init__(self, tenant_id: str, detail: str, system: str = DEFAULT_SYSTEM):
        super().__init__(f"tenant {tenant_id}: {system} connection needs re-authorisation ({detail}); "
                         f"run `ledger-pipeline connect --tenant {tenant_id} --system {system}`")
        self.tenant_id, self.system = tenant_id, system


class TokenVault:
    def __init__(self, engine: Engine, key: bytes, lock_dir: Path, system: str = DEFAULT_SYSTEM):
        self.engine, self.system = engine, system
        self.fernet = Fernet(key)
        self.lock_dir = lock_dir
        self._thread_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _enc(self, value: str) -> str:
        return self.fernet.encrypt(value.encode()).decode()

    def _dec(self, value: str | None, tenant_id: str) -> str:
        try:
            return self.fernet.decrypt((value or "").encode()).decode()
        except InvalidToken as exc:
            raise NeedsReauth(tenant_id, "stored tokens cannot be decrypted with this LEDGER_ENCRYPTION_KEY",
                              self.system) from exc

    def store(self, tenant_id: str, tokens: TokenSet) -> None:
        now = _now()
        values = dict(
            company_id=tokens.company_id, access_token=self._enc(tokens.access_token),
            refresh_token=self._enc(tokens.refresh_token), expires_at=now + dt.timedelta(seconds=tokens.expires_in),
            status="connected", status_detail=None, updated_at=now,
            extra=json.dumps(tokens.extra) if tokens.extra else None,
        )
        with self.engine.begin() as conn:
            row = conn.execute(select(Integration).where(
                Integration.tenant_id == tenant_id, Integration.source_system == self.system)).first()
            if row is None:
                conn.execute(Integration.__table__.insert().values(tenant_id=tenant_id, source_system=self.system,
                                                                   token_version=1, **values))
            else:
                conn.execute(update(Integration).where(
                    Integration.tenant_id == tenant_id, Integration.source_system == self.system
                ).values(token_version=Integration.token_version + 1, **values))

    def connected_tenants(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(Integration.tenant_id).where(
                Integration.source_system == self.system, Integration.status == "connected"
            ).order_by(Integration.tenant_id)).scalars())

    def statuses(self) -> dict[str, tuple[str, str | None]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(Integration.tenant_id, Integration.status, Integration.status_detail).where(
                Integration.source_system == self.system))
            return {r.tenant_id: (r.status, r.status_detail) for r in rows}

    def details(self, tenant_id: str) -> tuple[str | None, dict]:
        """(company_id, extra) of a tenant's connection: the non-secret parts."""
        with self.engine.connect() as conn:
            row = self._row(conn, tenant_id)
            return row.company_id, json.loads(row.extra) if row.extra else {}

    def mark_needs_reauth(self, tenant_id: str, detail: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(Integration).where(
                Integration.tenant_id == tenant_id, Integration.source_system == self.system
            ).values(status="needs_reauth", status_detail=detail, updated_at=_now()))

    def _row(self, conn, tenant_id: str, for_update: bool = False) -> Integration:  # noqa: ANN001
        stmt = select(Integration).where(Integration.tenant_id == tenant_id, Integration.source_system == self.system)
        if for_update:
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            raise NeedsReauth(tenant_id, "not connected", self.system)
        row = row[0] if isinstance(row[0], Integration) else row
        if row.status != "connected":
            raise NeedsReauth(tenant_id, row.status_detail or row.status, self.system)
        return row

    def access_token(self, tenant_id: str, refresh: Callable[[str], TokenSet],
                     stale: str | None = None) -> str:
        """A live access token; refreshed first when it is about to expire, or when `stale` was refused (401)."""
        with self.engine.connect() as conn:
            row = self._row(conn, tenant_id)
            token = self._dec(row.access_token, tenant_id)
            if not self._due(row) and token != stale:
                return token
        try:
            with self._locks(tenant_id), self.engine.begin() as conn:
                row = self._row(conn, tenant_id, for_update=True)  # re-read: another worker may have refreshed
                token = self._dec(row.access_token, tenant_id)
                if not self._due(row) and token != stale:
                    return token
                try:
                    fresh = refresh(self._dec(row.refresh_token, tenant_id))
                except (NeedsReauth, TokenEndpointError):
                    raise
                except Exception as exc:  # garbage from the token endpoint: this tenant's problem, not the run's
                    raise TokenEndpointError(
                        f"tenant {tenant_id}: refreshing the {self.system} token failed ({type(exc).__name__}); "
                        "the tenant is retried on the next run (nothing was sent)") from exc
                now = _now()
                conn.execute(update(Integration).where(
                    Integration.tenant_id == tenant_id, Integration.source_system == self.system
                ).values(access_token=self._enc(fresh.access_token), refresh_token=self._enc(fresh.refresh_token),
                         expires_at=now + dt.timedelta(seconds=fresh.expires_in), updated_at=now,
                         token_version=Integration.token_version + 1,
                         **({"extra": json.dumps(fresh.extra)} if fresh.extra else {})))
                return fresh.access_token
        except NeedsReauth as exc:
            self.mark_needs_reauth(tenant_id, str(exc))  # its own transaction: the refresh one rolled back
            raise

    @staticmethod
    def _due(row: Integration) -> bool:
        if row.expires_at is None:
            return True
        lifetime = (row.expires_at - (row.updated_at or row.expires_at)).total_seconds()
        margin = min(60.0, max(lifetime, 0) * 0.2)
        return (row.expires_at - _now()).total_seconds() <= margin

    class _Locks:
        def __init__(self, thread_lock: threading.Lock, file_lock: FileLock):
            self.t, self.f = thread_lock, file_lock

        def __enter__(self) -> None:
            self.t.acquire()
            try:
                self.f.acquire()
            except BaseException:
                self.t.release()
                raise

        def __exit__(self, *exc: object) -> None:
            self.f.release()
            self.t.release()

    def _locks(self, tenant_id: str) -> TokenVault._Locks:
        with self._guard:
            lock = self._thread_locks.setdefault(tenant_id, threading.Lock())
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        bucket = zlib.crc32(tenant_id.encode()) % 64
        return TokenVault._Locks(lock, FileLock(str(self.lock_dir / f"token-refresh-{bucket}.lock"), timeout=120))


def connected_systems(engine: Engine) -> dict[str, str]:
    """{tenant_id: system} for every tenant with an integration (connected or needing re-authorisation)."""
    return {t: system for t, (system, _, _) in tenant_systems(engine).items()}


def tenant_systems(engine: Engine) -> dict[str, tuple[str, str, str | None]]:
    """{tenant_id: (system, status, status_detail)}: each tenant's accounting system (the newest integration when
    a tenant was moved from one system to another)."""
    with engine.connect() as conn:
        rows = conn.execute(select(Integration.tenant_id, Integration.source_system, Integration.status,
                                   Integration.status_detail, Integration.updated_at)).all()
    out: dict[str, tuple] = {}
    for r in sorted(rows, key=lambda r: (r.updated_at or dt.datetime.min)):
        out[r.tenant_id] = (r.source_system, r.status, r.status_detail)
    return out


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
