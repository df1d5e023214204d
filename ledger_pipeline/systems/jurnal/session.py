"""A Jurnal session: the vault, the OAuth client and the API client, wired from settings. Secrets (client secret,
encryption key) are read from the environment when a session opens, never stored in Dagster config.

Each connection (one tenant) holds its own auth mode, stored with its credentials in the vault (`integrations`):
- ``oauth`` (the default, `connect`): Bearer tokens on the partner API, JURNAL_API_BASE_URL
  (e.g. https://api.jurnal.id/partner/core/api/v1);
- ``hmac`` (`JurnalConnection.connect_hmac`): the company's Mekari HMAC client id and secret, both Fernet-encrypted
  like tokens, on Mekari's gateway, JURNAL_GATEWAY_BASE_URL (https://api.mekari.com/public/jurnal/api/v1; default:
  the sandbox's `/public/jurnal/api/v1`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from ledger_pipeline.settings import Settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.vault import NeedsReauth, TokenSet, TokenVault, load_key
from ledger_pipeline.systems.core import open_core
from ledger_pipeline.systems.http import http_client
from ledger_pipeline.systems.jurnal.auth import GATEWAY_PREFIX, AuthMode, Credentials
from ledger_pipeline.systems.jurnal.client import JurnalClient, JurnalDialect
from ledger_pipeline.systems.jurnal.oauth import OAuthClient

HMAC_LIFETIME = 100 * 365 * 86400  # seconds: HMAC credentials do not expire; the vault never "refreshes" them


class JurnalVault(TokenVault):
    """The token vault plus Jurnal's HMAC connections: client id and secret stored in the access/refresh token
    columns (both encrypted), `{"auth": "hmac"}` in the connection's non-secret `extra`."""

    def store_hmac(self, tenant_id: str, client_id: str, client_secret: str, company_id: str | None = None) -> None:
        self.store(tenant_id, TokenSet(client_id, client_secret, HMAC_LIFETIME, company_id, {"auth": "hmac"}))

    def auth_mode(self, tenant_id: str) -> AuthMode:
        """How this tenant's connection authorises requests; raises NeedsReauth when it is not connected."""
        with self.engine.connect() as conn:
            row = self._row(conn, tenant_id)
        return "hmac" if json.loads(row.extra or "{}").get("auth") == "hmac" else "oauth"

    def hmac_credentials(self, tenant_id: str) -> tuple[str, str]:
        """(client id, client secret), decrypted; raises NeedsReauth when the connection is not live."""
        with self.engine.connect() as conn:
            row = self._row(conn, tenant_id)
            return self._dec(row.access_token, tenant_id), self._dec(row.refresh_token, tenant_id)


@dataclass
class JurnalSession:
    vault: JurnalVault
    oauth: OAuthClient
    client: JurnalClient

    def close(self) -> None:
        self.client.close()
        self.oauth.http.close()


def gateway_base_url(settings: Settings) -> str:
    """JURNAL_GATEWAY_BASE_URL, else the sandbox's emulation of Mekari's gateway."""
    return settings.system_env("jurnal", "GATEWAY_BASE_URL", f"{settings.sandbox_url}{GATEWAY_PREFIX}")


def credential_resolver(vault: JurnalVault, refresh: Callable[[str, str], TokenSet], partner_url: str,
                        gateway_url: str) -> Callable[[str, Credentials | None], Credentials]:
    """(tenant, refused credentials or None) -> live credentials: OAuth tokens refreshed through the vault (once
    per refusal), HMAC credentials as stored; refused HMAC credentials mark the connection needs_reauth."""

    def credentials(tenant_id: str, refused: Credentials | None) -> Credentials:
        if vault.auth_mode(tenant_id) == "hmac":
            if refused is not None:
                detail = ("Mekari's gateway refused the HMAC signature (401): the client id/secret are wrong or "
                          "revoked; store new ones with JurnalConnection.connect_hmac")
                vault.mark_needs_reauth(tenant_id, detail)
                raise NeedsReauth(tenant_id, detail)
            return Credentials.hmac(gateway_url, *vault.hmac_credentials(tenant_id))
        stale = refused.token if refused is not None and refused.mode == "oauth" else None
        return Credentials.bearer(partner_url, vault.access_token(tenant_id, lambda rt: refresh(tenant_id, rt),
                                                                  stale))

    return credentials


def open_session(settings: Settings, *, database_url: str | None = None, api_base_url: str | None = None,
                 oauth_base_url: str | None = None, rate_limit_scale: float | None = None, backoff_initial: float = 0.5,
                 timeout: float = 30.0, gateway_url: str | None = None) -> JurnalSession:
    engine = make_ops_engine(database_url or settings.ops_database_url)
    vault = JurnalVault(engine, load_key(settings), settings.lock_dir)
    oauth = OAuthClient(oauth_base_url or settings.jurnal_oauth_base_url, settings.jurnal_client_id,
                        settings.jurnal_client_secret,
                        http_client(settings.source_address, timeout))  # token refreshes leave from our address too
    scale = rate_limit_scale if rate_limit_scale is not None else settings.rate_limit_scale
    partner, gateway = api_base_url or settings.jurnal_api_base_url, gateway_url or gateway_base_url(settings)
    resolver = credential_resolver(vault, oauth.refresh, partner, gateway)
    dialect = JurnalDialect(resolver, lambda t: gateway if vault.auth_mode(t) == "hmac" else partner,
                            scale=scale, source_address=settings.source_address)
    client = JurnalClient(open_core(dialect, settings, timeout=timeout, backoff_initial=backoff_initial))
    return JurnalSession(vault, oauth, client)
