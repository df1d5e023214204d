"""QuickBooks Online OAuth2: authorization code with the company's `realmId` on the redirect, 1-hour access tokens,
rotating refresh tokens (each refresh returns a new one and the old one is refused with `invalid_grant`).

The token endpoint takes a form-encoded body with HTTP Basic client authentication. The redirect carries `realmId`
next to the code (systems/authflow.py's flow hands every callback parameter on); it is stored as the company_id.
Refreshes go through the vault, which serialises them per tenant and writes the newest refresh token in the
transaction that read the old one.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

import httpx
from sqlalchemy import Engine

from ledger_pipeline.state.vault import NeedsReauth, TokenEndpointError, TokenSet, TokenVault
from ledger_pipeline.systems.authflow import OAuthError, authorize

SYSTEM = "quickbooks"
SCOPE = "com.intuit.quickbooks.accounting"


class QuickBooksOAuth:
    """Intuit's authorize and token endpoints (authorize on appcenter, tokens on oauth.platform in production)."""

    def __init__(self, authorize_endpoint: str, token_endpoint: str, client_id: str, client_secret: str,
                 http: httpx.Client | None = None):
        self.authorize_endpoint, self.token_endpoint = authorize_endpoint, token_endpoint
        self.client_id, self.client_secret = client_id, client_secret
        self.http = http or httpx.Client(timeout=30)

    def authorize_url(self, redirect_uri: str, state: str, login_hint: str | None = None) -> str:
        params = {"client_id": self.client_id, "response_type": "code", "scope": SCOPE,
                  "redirect_uri": redirect_uri, "state": state}
        if login_hint:
            params["login_hint"] = login_hint
        return f"{self.authorize_endpoint}?{urlencode(params)}"

    def _token(self, tenant_id: str, form: dict, realm_id: str | None = None) -> TokenSet:
        try:
            resp = self.http.post(self.token_endpoint, data=form, auth=(self.client_id, self.client_secret),
                                  headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            raise TokenEndpointError(f"tenant {tenant_id}: QuickBooks token endpoint unreachable "
                                     f"({type(exc).__name__})") from exc
        error = _oauth_error(resp)
        if resp.status_code == 400 and error == "invalid_grant":
            raise NeedsReauth(tenant_id, "QuickBooks refused the grant (invalid_grant: revoked, expired or an "
                                         "already rotated refresh token)", SYSTEM)
        if resp.status_code != 200:
            # the body is Intuit's error object, never a token; keep only its error code
            raise TokenEndpointError(f"tenant {tenant_id}: QuickBooks token endpoint answered {resp.status_code}"
                                     f" ({error or 'no error code'})")
        data = resp.json()
        return TokenSet(data["access_token"], data["refresh_token"], int(data.get("expires_in", 3600)),
                        realm_id, {"realm_id": realm_id} if realm_id else None)

    def exchange_code(self, tenant_id: str, code: str, redirect_uri: str, realm_id: str | None = None) -> TokenSet:
        """The code for tokens; `realm_id` is the redirect's `realmId` (the token reply does not carry it)."""
        if not realm_id:
            raise OAuthError(f"tenant {tenant_id}: the QuickBooks redirect carried no realmId")
        return self._token(tenant_id, {"grant_type": "authorization_code", "code": code,
                                       "redirect_uri": redirect_uri}, realm_id)

    def refresh(self, tenant_id: str, refresh_token: str) -> TokenSet:
        """A new access token and a new refresh token (the old one is dead from now on); the realm stays."""
        return self._token(tenant_id, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def _oauth_error(resp: httpx.Response) -> str | None:
    try:
        data = resp.json()
    except ValueError:
        return None
    return str(data.get("error")) if isinstance(data, dict) and data.get("error") else None


def connect_tenant(engine: Engine, vault: TokenVault, oauth: QuickBooksOAuth, tenant_id: str,
                   open_url: Callable[[str], None], timeout: float = 600) -> str:
    """The whole flow with a loopback callback; `open_url` shows the authorize URL (or follows it in the sandbox)."""
    query, redirect_uri = authorize(
        engine, tenant_id, lambda uri, state: oauth.authorize_url(uri, state, login_hint=tenant_id), open_url, timeout)
    if "code" not in query:
        raise OAuthError(f"tenant {tenant_id}: the QuickBooks callback carried no code")
    vault.store(tenant_id, oauth.exchange_code(tenant_id, query["code"], redirect_uri, query.get("realmId")))
    return tenant_id
