"""Linking a tenant to Rootfi: Rootfi Link (the tenant connects its accounting platform; Rootfi redirects back with
the new `company_id`), behind the same single-use, 10-minute CSRF state as the OAuth systems.

What lands in the vault: the `company_id` (not a secret) and empty tokens. The API key is one per Rootfi account,
not per tenant, so it stays in the environment (ROOTFI_API_KEY): copying it into 10,000 rows would multiply the
places a leaked or rotated key has to be found, and would buy nothing. `status="connected"` is what marks a tenant
linked; a 403 from Rootfi flips it to needs_reauth.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from sqlalchemy import Engine

from ledger_pipeline.state.vault import TokenSet, TokenVault
from ledger_pipeline.systems.authflow import OAuthError, authorize, follow_redirects

LINK_LIFETIME = 10 * 365 * 86400  # the link has no expiry; the vault wants one


class RootfiLink:
    """Builds the Rootfi Link URL for a tenant."""

    def __init__(self, link_url: str):
        self.link_url = link_url.rstrip("/")

    def authorize_url(self, redirect_uri: str, state: str, login_hint: str | None = None) -> str:
        params = {"redirect_uri": redirect_uri, "state": state}
        if login_hint:
            params["login_hint"] = login_hint
        return f"{self.link_url}?{urlencode(params)}"


def connect_tenant(engine: Engine, vault: TokenVault, link: RootfiLink, tenant_id: str,
                   open_url: Callable[[str], None], timeout: float = 600) -> str:
    """Run the link flow with a loopback callback; `open_url` shows or follows the link URL."""
    query, _ = authorize(engine, tenant_id, lambda uri, state: link.authorize_url(uri, state, login_hint=tenant_id),
                         open_url, timeout)
    if not query.get("company_id"):
        raise OAuthError(f"tenant {tenant_id}: Rootfi Link came back without a company_id")
    vault.store(tenant_id, TokenSet("", "", LINK_LIFETIME, str(query["company_id"]), {"linked_via": "rootfi_link"}))
    return tenant_id


__all__ = ["RootfiLink", "connect_tenant", "follow_redirects"]
