"""QuickBooks Online (Intuit): OAuth2 with a realm id and rotating refresh tokens, `requestid` idempotency, SyncToken
updates, batches of at most 30, 500 requests/min and at most 10 concurrent requests per realm.

Endpoints default to the sandbox (`<LEDGER_SANDBOX_URL>/quickbooks`); production sets
QUICKBOOKS_API_BASE_URL=https://quickbooks.api.intuit.com, QUICKBOOKS_AUTHORIZE_URL=
https://appcenter.intuit.com/connect/oauth2, QUICKBOOKS_TOKEN_URL=https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer
and QUICKBOOKS_CLIENT_ID / QUICKBOOKS_CLIENT_SECRET.
"""

from __future__ import annotations

from collections.abc import Callable

from ledger_pipeline.ledger.sink import SinkError
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.vault import NeedsReauth, TokenVault, load_key
from ledger_pipeline.systems import ChartAccount, OpenOptions
from ledger_pipeline.systems.core import open_core
from ledger_pipeline.systems.http import http_client
from ledger_pipeline.systems.quickbooks.client import QuickBooksClient, QuickBooksDialect, QuickBooksError
from ledger_pipeline.systems.quickbooks.oauth import QuickBooksOAuth, connect_tenant
from ledger_pipeline.systems.quickbooks.sink import QuickBooksSink, classify

SYSTEM = "quickbooks"


def endpoints(settings: Settings) -> dict[str, str]:
    """Where QuickBooks is: env overrides, else the sandbox under its prefix."""
    from ledger_pipeline.sandboxes.quickbooks import CLIENT_ID, CLIENT_SECRET, PREFIX

    sandbox = settings.sandbox_url + PREFIX
    oauth = settings.system_env(SYSTEM, "OAUTH_BASE_URL", sandbox)
    return {
        "api": settings.system_env(SYSTEM, "API_BASE_URL", sandbox),
        "authorize": settings.system_env(SYSTEM, "AUTHORIZE_URL", f"{oauth}/connect/oauth2"),
        "token": settings.system_env(SYSTEM, "TOKEN_URL", f"{oauth}/oauth2/v1/tokens/bearer"),
        "client_id": settings.system_env(SYSTEM, "CLIENT_ID", CLIENT_ID),
        "client_secret": settings.system_env(SYSTEM, "CLIENT_SECRET", CLIENT_SECRET),
    }


class QuickBooksConnection:
    system = SYSTEM

    def __init__(self, settings: Settings, options: OpenOptions, page_size: int = 1000):
        ep = endpoints(settings)
        engine = make_ops_engine(options.database_url)
        self.vault = TokenVault(engine, load_key(settings), settings.lock_dir, system=SYSTEM)
        self.oauth = QuickBooksOAuth(ep["authorize"], ep["token"], ep["client_id"], ep["client_secret"],
                                     http_client(settings.source_address, options.timeout))

        def access_token(tenant_id: str, stale: str | None) -> str:
            return self.vault.access_token(tenant_id, lambda rt: self.oauth.refresh(tenant_id, rt), stale)

        def realm_of(tenant_id: str) -> str:
            realm, extra = self.vault.details(tenant_id)
            realm = realm or extra.get("realm_id")
            if not realm:
                raise NeedsReauth(tenant_id, "no QuickBooks realm stored", SYSTEM)
            return str(realm)

        dialect = QuickBooksDialect(ep["api"], access_token, realm_of, options.rate_limit_scale)
        self.client = QuickBooksClient(open_core(dialect, settings, timeout=options.timeout,
                                                 backoff_initial=options.backoff_initial, priority=options.priority),
                                       page_size)
        self.sink = QuickBooksSink(self.client)

    @property
    def requests(self) -> int:
        return self.client.requests

    def fetch_chart(self, tenant_id: str) -> list[ChartAccount]:
        try:
            accounts = self.client.accounts(tenant_id)
        except (QuickBooksError, NeedsReauth) as exc:
            raise classify(exc) from exc
        return [ChartAccount(str(a["Id"]), a.get("AcctNum") or "", a["Name"], a.get("AccountType"),
                             str(a["ParentRef"]["value"]) if a.get("ParentRef") else None,
                             not bool(a.get("Active", True))) for a in accounts]

    def connect_tenant(self, tenant_id: str, open_url: Callable[[str], None]) -> None:
        connect_tenant(self.vault.engine, self.vault, self.oauth, tenant_id, open_url)

    def close(self) -> None:
        self.client.close()
        self.oauth.http.close()


def open_connection(settings: Settings, options: OpenOptions) -> QuickBooksConnection:
    return QuickBooksConnection(settings, options)


__all__ = ["QuickBooksConnection", "SinkError", "open_connection"]
