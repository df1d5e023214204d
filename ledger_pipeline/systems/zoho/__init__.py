"""Zoho Books: OAuth2 with non-rotating refresh tokens and a per-tenant `api_domain`, `organization_id` on every
call, no idempotency key (our id in `reference_number`, searched before any repeated create), 100 requests/min per
organization plus a daily cap per plan (a tenant over it is deferred to the next run)."""

from __future__ import annotations

from collections.abc import Callable

from ledger_pipeline.ledger.sink import SinkError
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.vault import NeedsReauth, TokenVault, load_key
from ledger_pipeline.systems import ChartAccount, OpenOptions
from ledger_pipeline.systems.authflow import connect_tenant
from ledger_pipeline.systems.core import open_core
from ledger_pipeline.systems.http import http_client
from ledger_pipeline.systems.zoho.client import MAX_PER_PAGE, ZohoClient, ZohoDialect, ZohoError
from ledger_pipeline.systems.zoho.oauth import ZohoOAuth
from ledger_pipeline.systems.zoho.sink import ZohoSink, classify

SYSTEM = "zoho"


def endpoints(settings: Settings) -> dict[str, str]:
    """ZOHO_API_BASE_URL / ZOHO_OAUTH_BASE_URL / ZOHO_CLIENT_ID / ZOHO_CLIENT_SECRET, defaulting to the sandbox."""
    from ledger_pipeline.sandboxes.zoho import API, PREFIX, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

    return {
        "api_base": settings.system_env(SYSTEM, "API_BASE_URL", settings.sandbox_url + API),
        "oauth_base": settings.system_env(SYSTEM, "OAUTH_BASE_URL", settings.sandbox_url + PREFIX),
        "client_id": settings.system_env(SYSTEM, "CLIENT_ID", SANDBOX_CLIENT_ID),
        "client_secret": settings.system_env(SYSTEM, "CLIENT_SECRET", SANDBOX_CLIENT_SECRET),
    }


class ZohoConnection:
    system = SYSTEM

    def __init__(self, settings: Settings, options: OpenOptions, chart_per_page: int = MAX_PER_PAGE):
        ends = endpoints(settings)
        self.vault = TokenVault(make_ops_engine(options.database_url), load_key(settings), settings.lock_dir,
                                system=SYSTEM)
        api_base = ends["api_base"]
        # the API base is the fallback for a connection stored without api_domain; the OAuth reply decides
        self.oauth = ZohoOAuth(ends["oauth_base"], ends["client_id"], ends["client_secret"],
                               http_client(settings.source_address, options.timeout),
                               default_api_domain=api_base.removesuffix("/books/v3"))
        oauth, vault = self.oauth, self.vault

        def access_token(tenant_id: str, stale: str | None) -> str:
            return vault.access_token(tenant_id, lambda rt: oauth.refresh(tenant_id, rt), stale)

        dialect = ZohoDialect(api_base, access_token, vault.details, options.rate_limit_scale)
        self.client = ZohoClient(open_core(dialect, settings, timeout=options.timeout,
                                           backoff_initial=options.backoff_initial, priority=options.priority))
        self.sink = ZohoSink(self.client)
        self.chart_per_page = chart_per_page

    @property
    def requests(self) -> int:
        return self.client.requests

    def fetch_chart(self, tenant_id: str) -> list[ChartAccount]:
        try:
            accounts = self.client.chart_of_accounts(tenant_id, self.chart_per_page)
        except (ZohoError, NeedsReauth) as exc:
            raise classify(exc) from exc
        return [ChartAccount(str(a["account_id"]), a.get("account_code") or "", a["account_name"],
                             a.get("account_type"), str(a["parent_account_id"]) if a.get("parent_account_id") else None,
                             not a.get("is_active", True)) for a in accounts]

    def connect_tenant(self, tenant_id: str, open_url: Callable[[str], None]) -> None:
        connect_tenant(self.vault.engine, self.vault, self.oauth, tenant_id, open_url)

    def close(self) -> None:
        self.client.close()
        self.oauth.http.close()


def open_connection(settings: Settings, options: OpenOptions) -> ZohoConnection:
    return ZohoConnection(settings, options)


__all__ = ["SinkError", "ZohoConnection", "open_connection"]
