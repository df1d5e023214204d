"""A Jurnal session: the vault, the OAuth client and the API client, wired from settings. Secrets (client secret,
encryption key) are read from the environment when a session opens, never stored in Dagster config."""

from __future__ import annotations

from dataclasses import dataclass

from ledger_pipeline.settings import Settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.vault import TokenVault, load_key
from ledger_pipeline.systems.http import http_client
from ledger_pipeline.systems.jurnal.client import JurnalClient, host_limiter
from ledger_pipeline.systems.jurnal.oauth import OAuthClient


@dataclass
class JurnalSession:
    vault: TokenVault
    oauth: OAuthClient
    client: JurnalClient

    def close(self) -> None:
        self.client.close()
        self.oauth.http.close()


def open_session(settings: Settings, *, database_url: str | None = None, api_base_url: str | None = None,
                 oauth_base_url: str | None = None, rate_limit_scale: float | None = None, backoff_initial: float = 0.5,
                 timeout: float = 30.0) -> JurnalSession:
    engine = make_ops_engine(database_url or settings.ops_database_url)
    vault = TokenVault(engine, load_key(settings), settings.lock_dir)
    oauth = OAuthClient(oauth_base_url or settings.jurnal_oauth_base_url, settings.jurnal_client_id,
                        settings.jurnal_client_secret,
                        http_client(settings.source_address, timeout))  # token refreshes leave from our address too
    scale = rate_limit_scale if rate_limit_scale is not None else settings.rate_limit_scale

    def access_token(tenant_id: str, stale: str | None) -> str:
        return vault.access_token(tenant_id, lambda rt: oauth.refresh(tenant_id, rt), stale)

    base = api_base_url or settings.jurnal_api_base_url
    client = JurnalClient(base, access_token, host_limiter(settings, scale), source_address=settings.source_address,
                          backoff_initial=backoff_initial, backoff_max=max(backoff_initial * 60, 1.0),
                          timeout=timeout)
    return JurnalSession(vault, oauth, client)
