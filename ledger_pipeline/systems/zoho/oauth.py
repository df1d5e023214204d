"""Zoho's OAuth2 (accounts server): authorization code with `access_type=offline`, form-encoded token calls, an
`api_domain` in every token reply, and refresh tokens that never rotate.

Zoho's accounts server answers most refusals with HTTP 200 and `{"error": "invalid_code"}`, so the body decides,
not the status. After the code exchange the organization is looked up (`GET /books/v3/organizations` on the
api_domain) and stored with the tokens: every Books call carries `organization_id`.
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx

from ledger_pipeline.money import loads_exact
from ledger_pipeline.state.vault import NeedsReauth, TokenEndpointError, TokenSet
from ledger_pipeline.systems.authflow import OAuthError

SYSTEM = "zoho"
SCOPE = "ZohoBooks.fullaccess.all"
# Zoho's words for a grant that is gone (revoked, evicted as the 21st refresh token, or a used/expired code)
GRANT_GONE = {"invalid_code", "invalid_grant", "invalid_token", "invalid_refresh_token"}


class ZohoOAuth:
    """authorize_url / exchange_code / refresh, as `ledger_pipeline.systems.authflow.connect_tenant` expects."""

    def __init__(self, base_url: str, client_id: str, client_secret: str, http: httpx.Client,
                 default_api_domain: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.client_id, self.client_secret = client_id, client_secret
        self.http = http
        self.default_api_domain = default_api_domain  # when a token reply has no api_domain (older DCs)

    def authorize_url(self, redirect_uri: str, state: str, login_hint: str | None = None) -> str:
        params = {"scope": SCOPE, "client_id": self.client_id, "response_type": "code",
                  "access_type": "offline", "prompt": "consent", "redirect_uri": redirect_uri, "state": state}
        if login_hint:
            params["login_hint"] = login_hint
        return f"{self.base_url}/oauth/v2/auth?{urlencode(params)}"

    def _token(self, tenant_id: str, form: dict) -> dict:
        body = {"client_id": self.client_id, "client_secret": self.client_secret, **form}
        try:
            resp = self.http.post(f"{self.base_url}/oauth/v2/token", data=body)
        except httpx.TransportError as exc:
            raise TokenEndpointError(f"tenant {tenant_id}: Zoho's token endpoint is unreachable "
                                     f"({type(exc).__name__}); retried on the next run") from exc
        try:
            data = loads_exact(resp.content)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise TokenEndpointError(f"tenant {tenant_id}: Zoho's token endpoint answered {resp.status_code} "
                                     "without JSON; retried on the next run")
        error = data.get("error")
        if error in GRANT_GONE:
            raise NeedsReauth(tenant_id, f"Zoho refused the grant ({error}: revoked, evicted or expired)", SYSTEM)
        if error or resp.status_code >= 300 or "access_token" not in data:
            # invalid_client, "Access Denied" (too many tokens per refresh token), 5xx: not the tenant's grant
            raise TokenEndpointError(f"tenant {tenant_id}: Zoho's token endpoint answered {resp.status_code} "
                                     f"({error or 'no access_token'}: {str(data.get('error_description', ''))[:120]})")
        return data

    def exchange_code(self, tenant_id: str, code: str, redirect_uri: str) -> TokenSet:
        try:
            data = self._token(tenant_id, {"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": redirect_uri})
        except (NeedsReauth, TokenEndpointError) as exc:
            raise OAuthError(str(exc)) from exc
        if not data.get("refresh_token"):
            raise OAuthError(f"tenant {tenant_id}: Zoho gave no refresh token (was access_type=offline sent?)")
        api_domain = str(data.get("api_domain") or self.default_api_domain or "").rstrip("/")
        if not api_domain:
            raise OAuthError(f"tenant {tenant_id}: Zoho's token reply has no api_domain")
        org = self._organization(tenant_id, api_domain, str(data["access_token"]))
        extra = {"api_domain": api_domain, "organization_id": str(org["organization_id"]),
                 "organization_name": org.get("name"), "plan": org.get("plan_type"),
                 "scope": data.get("scope")}  # the granted scope, as the token reply names it (preflight reads it)
        return TokenSet(str(data["access_token"]), str(data["refresh_token"]), int(data.get("expires_in", 3600)),
                        str(org["organization_id"]), extra)

    def _organization(self, tenant_id: str, api_domain: str, access_token: str) -> dict:
        """The organization the grant opens (the default one when the user has several)."""
        try:
            resp = self.http.get(f"{api_domain}/books/v3/organizations",
                                 headers={"Authorization": f"Zoho-oauthtoken {access_token}"})
            data = loads_exact(resp.content)
        except (httpx.TransportError, ValueError) as exc:
            raise OAuthError(f"tenant {tenant_id}: listing Zoho organizations failed ({type(exc).__name__})") from exc
        orgs = data.get("organizations") if isinstance(data, dict) and data.get("code") == 0 else None
        if not orgs:
            raise OAuthError(f"tenant {tenant_id}: Zoho lists no organization for this grant "
                             f"({resp.status_code}: {data.get('message') if isinstance(data, dict) else ''})")
        return next((o for o in orgs if o.get("is_default_org")), orgs[0])

    def refresh(self, tenant_id: str, refresh_token: str) -> TokenSet:
        """A new access token. Zoho's refresh tokens never rotate: the one we hold is kept as it is, and the
        stored connection details (api_domain, organization_id) are left alone (extra=None)."""
        data = self._token(tenant_id, {"grant_type": "refresh_token", "refresh_token": refresh_token})
        return TokenSet(str(data["access_token"]), data.get("refresh_token") or refresh_token,
                        int(data.get("expires_in", 3600)))
