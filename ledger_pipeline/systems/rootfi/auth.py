"""Linking a tenant to Rootfi: Rootfi Link (the tenant connects its accounting platform; Rootfi redirects back with
the new `company_id`), behind the same single-use, 10-minute CSRF state as the OAuth systems.

What lands in the vault: the `company_id` (not a secret) and empty tokens. The API key is one per Rootfi account,
not per tenant, so it stays in the environment (ROOTFI_API_KEY): copying it into 10,000 rows would multiply the
places a leaked or rotated key has to be found, and would buy nothing. `status="connected"` is what marks a tenant
linked; a 403 from Rootfi flips it to needs_reauth.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlencode, urlparse

from sqlalchemy import Engine

from ledger_pipeline.state.vault import TokenSet, TokenVault
from ledger_pipeline.systems.jurnal.oauth import OAuthError, consume_state, follow_redirects, new_state

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


class _Server(http.server.HTTPServer):
    result: dict


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.server.result.update({k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()})  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ledger-pipeline: Rootfi link received, you can close this tab.\n")

    def log_message(self, *args: object) -> None:
        pass


def complete(engine: Engine, vault: TokenVault, state: str, company_id: str) -> str:
    """The callback: check the state (single use), store the company. Returns the tenant."""
    tenant_id, _ = consume_state(engine, state)
    if not company_id:
        raise OAuthError(f"tenant {tenant_id}: Rootfi Link came back without a company_id")
    vault.store(tenant_id, TokenSet("", "", LINK_LIFETIME, str(company_id), {"linked_via": "rootfi_link"}))
    return tenant_id


def connect_tenant(engine: Engine, vault: TokenVault, link: RootfiLink, tenant_id: str,
                   open_url: Callable[[str], None], timeout: float = 600) -> str:
    """Run the link flow with a loopback callback; `open_url` shows or follows the link URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.result = {}
    server.timeout = timeout
    redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/callback"
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        state = new_state(engine, tenant_id, redirect_uri)
        open_url(link.authorize_url(redirect_uri, state, login_hint=tenant_id))
        thread.join(timeout)
    finally:
        server.server_close()
    if "company_id" not in server.result:
        raise OAuthError(f"tenant {tenant_id}: no link came back ({server.result.get('error', 'timeout')})")
    got = complete(engine, vault, server.result.get("state", ""), server.result["company_id"])
    if got != tenant_id:
        raise OAuthError(f"the link came back for tenant {got}, not {tenant_id}")
    return got


__all__ = ["RootfiLink", "complete", "connect_tenant", "follow_redirects"]
