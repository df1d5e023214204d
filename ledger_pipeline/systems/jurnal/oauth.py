"""Jurnal's (Mekari's) OAuth2 client: authorize URL, code exchange, single-use refresh tokens. The flow itself
(CSRF state, loopback callback) is systems/authflow.py."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx

from ledger_pipeline.state.vault import NeedsReauth, TokenSet
from ledger_pipeline.systems.authflow import OAuthError


class OAuthClient:
    def __init__(self, base_url: str, client_id: str, client_secret: str, http: httpx.Client | None = None):
        self.base_url = base_url.rstrip("/")
        self.client_id, self.client_secret = client_id, client_secret
        self.http = http or httpx.Client(timeout=30)

    def authorize_url(self, redirect_uri: str, state: str, login_hint: str | None = None) -> str:
        params = {"client_id": self.client_id, "response_type": "code", "scope": "jurnal",
                  "redirect_uri": redirect_uri, "state": state}
        if login_hint:
            params["login_hint"] = login_hint
        return f"{self.base_url}/auth?{urlencode(params)}"

    def _token(self, tenant_id: str, payload: dict) -> TokenSet:
        body = {"client_id": self.client_id, "client_secret": self.client_secret, **payload}
        try:
            resp = self.http.post(f"{self.base_url}/auth/oauth2/token", json=body)
        except httpx.TransportError as exc:
            raise OAuthError(f"tenant {tenant_id}: Jurnal token endpoint unreachable ({type(exc).__name__})") from exc
        if resp.status_code == 400 and resp.json().get("error") == "invalid_grant":
            raise NeedsReauth(tenant_id, "Jurnal refused the grant (invalid_grant: revoked, expired or already used)")
        if resp.status_code != 200:
            raise OAuthError(f"tenant {tenant_id}: token endpoint answered {resp.status_code}: {resp.text[:200]}")
        data = resp.json()
        return TokenSet(data["access_token"], data["refresh_token"], int(data.get("expires_in", 3600)),
                        str(data.get("company_id")) if data.get("company_id") is not None else None)

    def exchange_code(self, tenant_id: str, code: str, redirect_uri: str) -> TokenSet:
        return self._token(tenant_id, {"grant_type": "authorization_code", "code": code,
                                       "redirect_uri": redirect_uri})

    def refresh(self, tenant_id: str, refresh_token: str) -> TokenSet:
        return self._token(tenant_id, {"grant_type": "refresh_token", "refresh_token": refresh_token})
