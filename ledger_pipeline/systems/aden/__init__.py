"""Aden (general ledger with an approval workflow): a JWT per company from the Aden admin, the client-chosen
`entry_id` as our id, `X-Idempotency-Key` on every write, Draft -> approval -> Posted, reversals for posted entries."""

from __future__ import annotations

from collections.abc import Callable

from ledger_pipeline.ledger.sink import SinkError
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.vault import NeedsReauth, TokenVault, load_key
from ledger_pipeline.systems import ChartAccount, OpenOptions
from ledger_pipeline.systems.aden.auth import AdenAuth
from ledger_pipeline.systems.aden.client import AdenClient, AdenError, AdenLimiter
from ledger_pipeline.systems.aden.sink import AdenSink, classify
from ledger_pipeline.systems.authflow import connect_tenant
from ledger_pipeline.systems.http import http_client

SYSTEM = "aden"


def _defaults(settings: Settings) -> dict[str, str]:
    """Where Aden is: the environment (ADEN_API_BASE_URL, ...), else the local sandbox and its public client."""
    from ledger_pipeline.sandboxes.aden import ADMIN, API, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

    base = settings.sandbox_url
    return {"api": settings.system_env(SYSTEM, "API_BASE_URL", f"{base}{API}"),
            "admin": settings.system_env(SYSTEM, "OAUTH_BASE_URL", f"{base}{ADMIN}"),
            "client_id": settings.system_env(SYSTEM, "CLIENT_ID", SANDBOX_CLIENT_ID),
            "client_secret": settings.system_env(SYSTEM, "CLIENT_SECRET", SANDBOX_CLIENT_SECRET)}


class AdenConnection:
    system = SYSTEM

    def __init__(self, settings: Settings, options: OpenOptions):
        where = _defaults(settings)
        self.vault = TokenVault(make_ops_engine(options.database_url), load_key(settings), settings.lock_dir,
                                system=SYSTEM)
        self._auth_http = http_client(settings.source_address, options.timeout)
        self.auth = AdenAuth(where["admin"], where["client_id"], where["client_secret"], self._auth_http)

        def access_token(tenant_id: str, refused: str | None) -> str:
            return self.vault.access_token(tenant_id, lambda token: self.auth.refresh(tenant_id, token), refused)

        self.client = AdenClient(where["api"], access_token, AdenLimiter(settings, options.rate_limit_scale),
                                 http_client(settings.source_address, options.timeout),
                                 backoff_initial=options.backoff_initial,
                                 backoff_max=max(options.backoff_initial * 60, 1.0), priority=options.priority)
        self.sink = AdenSink(self.client)

    @property
    def requests(self) -> int:
        return self.client.requests

    def fetch_chart(self, tenant_id: str) -> list[ChartAccount]:
        try:
            rows = self.client.pages(tenant_id, "/accounts")
        except (AdenError, NeedsReauth) as exc:
            raise classify(exc) from exc
        return [ChartAccount(str(a["account_id"]), str(a.get("account_number") or ""), a["account_name"],
                             a.get("account_type"),
                             None if a.get("parent_account_id") is None else str(a["parent_account_id"]),
                             bool(a.get("is_inactive"))) for a in rows]

    def connect_tenant(self, tenant_id: str, open_url: Callable[[str], None]) -> None:
        connect_tenant(self.vault.engine, self.vault, self.auth, tenant_id, open_url)

    def close(self) -> None:
        self.client.close()
        self._auth_http.close()


def open_connection(settings: Settings, options: OpenOptions) -> AdenConnection:
    return AdenConnection(settings, options)


__all__ = ["AdenConnection", "SinkError", "open_connection"]
