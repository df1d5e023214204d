"""Aden's tenant credentials: a JWT the tenant's Aden administrator issues, sent as `Authorization: jwt <token>`.

Aden documents no OAuth flow and no token endpoint: "Contact your Aden administrator to obtain your API credentials
and JWT token" (https://docs.adenhq.com/quickstart, https://docs.adenhq.com/mcp-server/configuration), and every
request carries `Authorization: jwt YOUR_TOKEN` (https://docs.adenhq.com/development). So:
- `connect` takes the JWT as given (`ledger-pipeline connect --tenant T --system aden --token-file FILE`, `-` for
  stdin) and the vault keeps it encrypted. Its claims are read without verifying the signature (we do not hold
  Aden's key): `exp`, when present, becomes the vault's expiry; `company_id` (or `sub`), when present, is recorded.
- There is nothing to refresh. After a 401 the vault calls `check`: an expired token, or a token refused by
  `GET /accounts?limit=1` three times in a row, raises `NeedsReauth` (the tenant is marked, someone must obtain a new
  JWT and connect again); a token the probe accepts was refused spuriously and is used again.
- Against the sandbox only, `sandbox_issue` plays the administrator: `POST /_sandbox/aden/companies/<login>/jwt`
  (the login also in the body, since a path segment cannot carry "/").
"""

from __future__ import annotations

import time

import httpx
import jwt

from ledger_pipeline.state.vault import NeedsReauth, TokenEndpointError, TokenSet
from ledger_pipeline.systems.authflow import OAuthError

SYSTEM = "aden"
NO_EXPIRY = 10 * 365 * 86400  # the vault wants a lifetime; an admin-issued JWT without `exp` has none
PROBES = 3  # consecutive 401s on the probe before a token counts as revoked


class AdenTokenError(OAuthError):
    """The JWT handed to `connect` is not usable (malformed, expired, refused by Aden)."""


def _reconnect(tenant_id: str) -> str:
    return (f"ask the tenant's Aden administrator for a new JWT, then run `ledger-pipeline connect --tenant "
            f"{tenant_id} --system aden --token-file FILE`")


class AdenAuth:
    """JWT handling for one Aden API base URL (`api_base`, e.g. https://kube.acho.io/service/general-ledger)."""

    def __init__(self, api_base: str, http: httpx.Client, sandbox_url: str | None = None):
        self.api_base = api_base.rstrip("/")
        self.http = http
        self.sandbox_url = sandbox_url.rstrip("/") if sandbox_url else None

    @staticmethod
    def claims(token: str) -> dict:
        """The JWT's claims, unverified (the signature is Aden's business). Raises AdenTokenError if malformed."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AdenTokenError(f"the Aden token is not a JWT ({type(exc).__name__}): paste the token exactly as "
                                 "the Aden administrator issued it") from exc
        return claims if isinstance(claims, dict) else {}

    def token_set(self, tenant_id: str, token: str) -> TokenSet:
        """What the vault stores for a JWT: the token as both access and "refresh" token, its expiry, its company."""
        token = token.strip()
        if token.lower().startswith("jwt "):
            token = token[4:].strip()
        claims = self.claims(token)
        lifetime = NO_EXPIRY
        if isinstance(claims.get("exp"), int | float):
            lifetime = int(claims["exp"] - time.time())
            if lifetime <= 0:
                raise AdenTokenError(f"tenant {tenant_id}: the Aden JWT expired at {int(claims['exp'])}; "
                                     + _reconnect(tenant_id))
        company = claims.get("company_id") or claims.get("sub")
        company = None if company is None else str(company)
        return TokenSet(token, token, lifetime, company, {"company_id": company} if company else None)

    def check(self, tenant_id: str, token: str) -> TokenSet:
        """The vault's refresh callback after a 401: the same token if Aden still accepts it, else NeedsReauth."""
        claims = self.claims(token)
        if isinstance(claims.get("exp"), int | float) and claims["exp"] <= time.time():
            raise NeedsReauth(tenant_id, "the Aden JWT has expired; " + _reconnect(tenant_id), SYSTEM)
        for _ in range(PROBES):
            try:
                resp = self.http.get(f"{self.api_base}/accounts", params={"limit": 1},
                                     headers={"Authorization": f"jwt {token}", "Accept": "application/json"})
            except httpx.TransportError as exc:
                raise TokenEndpointError(f"tenant {tenant_id}: Aden unreachable while checking the JWT "
                                         f"({type(exc).__name__})") from exc
            if resp.status_code == 200:
                lifetime = int(claims["exp"] - time.time()) if isinstance(claims.get("exp"), int | float) else None
                return TokenSet(token, token, lifetime or NO_EXPIRY, None, None)
            if resp.status_code != 401:
                raise TokenEndpointError(f"tenant {tenant_id}: Aden answered {resp.status_code} while checking the "
                                         "JWT; the tenant is retried on the next run")
        raise NeedsReauth(tenant_id, f"Aden refused the company's JWT {PROBES} times (401): it was revoked or "
                                     "replaced; " + _reconnect(tenant_id), SYSTEM)

    def sandbox_issue(self, tenant_id: str) -> str:
        """The sandbox's administrator: a JWT for the company named after the tenant (created on first use)."""
        if not self.sandbox_url:
            raise AdenTokenError(f"tenant {tenant_id}: Aden has no authorisation flow; " + _reconnect(tenant_id))
        url = f"{self.sandbox_url}/_sandbox/aden/companies/-/jwt"  # the login in the body: it may hold a "/"
        try:
            resp = self.http.post(url, json={"company_login": tenant_id})
        except httpx.TransportError as exc:
            raise AdenTokenError(f"tenant {tenant_id}: the Aden sandbox is unreachable ({type(exc).__name__})") from exc
        if resp.status_code != 200:
            raise AdenTokenError(f"tenant {tenant_id}: the Aden sandbox refused to issue a JWT ({resp.status_code}: "
                                 f"{resp.text[:200]})")
        return str(resp.json()["token"])
