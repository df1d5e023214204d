"""Aden's tenant tokens: a JWT per company from the Aden admin, sent as `Authorization: jwt <token>`.

The admin issues the token through an authorize page (login_hint = our tenant, redirect with a one-time code) and a
token endpoint (code -> JWT), so `ledger_pipeline.systems.authflow.connect_tenant` runs the same loopback flow
with the same single-use CSRF state. The JWT does not expire; there is nothing to refresh. `refresh` therefore only
asks the admin whether the token is still active (introspection): after a 401 a live token is retried, a revoked
one raises `NeedsReauth` (the vault marks the tenant, `connect` must run again).
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx

from ledger_pipeline.state.vault import NeedsReauth, TokenSet
from ledger_pipeline.systems.authflow import OAuthError

SYSTEM = "aden"
NO_EXPIRY = 10 * 365 * 86400  # the vault wants a lifetime; Aden's JWT has none (revocation ends it)


class AdenAuth:
    def __init__(self, base_url: str, client_id: str, client_secret: str, http: httpx.Client):
        self.base_url = base_url.rstrip("/")
        self.client_id, self.client_secret, self.http = client_id, client_secret, http

    def authorize_url(self, redirect_uri: str, state: str, login_hint: str | None = None) -> str:
        params = {"client_id": self.client_id, "response_type": "code", "redirect_uri": redirect_uri,
                  "state": state}
        if login_hint:
            params["login_hint"] = login_hint
        return f"{self.base_url}/authorize?{urlencode(params)}"

    def _post(self, tenant_id: str, path: str, payload: dict) -> httpx.Response:
        body = {"client_id": self.client_id, "client_secret": self.client_secret, **payload}
        try:
            return self.http.post(f"{self.base_url}{path}", json=body)
        except httpx.TransportError as exc:
            raise OAuthError(f"tenant {tenant_id}: Aden admin unreachable ({type(exc).__name__})") from exc

    def exchange_code(self, tenant_id: str, code: str, redirect_uri: str) -> TokenSet:
        resp = self._post(tenant_id, "/token", {"grant_type": "authorization_code", "code": code,
                                                "redirect_uri": redirect_uri})
        if resp.status_code != 200:
            raise OAuthError(f"tenant {tenant_id}: Aden admin refused the code ({resp.status_code}: "
                             f"{_error_code(resp)})")
        data = resp.json()
        token, company = data["token"], str(data["company_id"])
        return TokenSet(token, token, NO_EXPIRY, company, {"company_id": company})

    def refresh(self, tenant_id: str, refresh_token: str) -> TokenSet:
        """No refresh in Aden: check the token is still active (after a 401), else the tenant needs reconnecting."""
        resp = self._post(tenant_id, "/token/introspect", {"token": refresh_token})
        if resp.status_code != 200:
            raise OAuthError(f"tenant {tenant_id}: Aden token introspection answered {resp.status_code}")
        data = resp.json()
        if not data.get("active"):
            raise NeedsReauth(tenant_id, "the Aden admin revoked the company's token", SYSTEM)
        company = str(data.get("company_id"))
        return TokenSet(refresh_token, refresh_token, NO_EXPIRY, company, {"company_id": company})


def _error_code(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "unreadable answer"
