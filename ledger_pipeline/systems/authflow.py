"""The authorisation flow every system's `connect` runs: a single-use CSRF state that expires in 10 minutes, kept in
the operational database's `oauth_states` (one store every process and host already shares), and a loopback
callback server on 127.0.0.1 for the duration of the flow. Each system then does its own exchange (an OAuth code for
tokens, a JWT, a linked company id) with the callback's parameters.
"""

from __future__ import annotations

import datetime as dt
import http.server
import secrets
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlparse

import httpx
from sqlalchemy import Engine, delete, select

from ledger_pipeline.state.models import OAuthState
from ledger_pipeline.state.vault import TokenSet, TokenVault

STATE_TTL = dt.timedelta(minutes=10)


class OAuthError(Exception):
    pass


def new_state(engine: Engine, tenant_id: str, redirect_uri: str) -> str:
    state = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(delete(OAuthState).where(OAuthState.expires_at < _now()))
        conn.execute(OAuthState.__table__.insert().values(
            state=state, tenant_id=tenant_id, redirect_uri=redirect_uri, expires_at=_now() + STATE_TTL))
    return state


def consume_state(engine: Engine, state: str) -> tuple[str, str]:
    """(tenant_id, redirect_uri) for a live state; the state is deleted, so a replay is refused."""
    with engine.begin() as conn:
        row = conn.execute(select(OAuthState).where(OAuthState.state == state)).first()
        if row is None:
            raise OAuthError("unknown or already used OAuth state (possible replay); start `connect` again")
        conn.execute(delete(OAuthState).where(OAuthState.state == state))
        if row.expires_at < _now():
            raise OAuthError("the OAuth state expired (10 minutes); start `connect` again")
        return row.tenant_id, row.redirect_uri


class _CallbackServer(http.server.HTTPServer):
    result: dict


class _CallbackHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
        self.server.result.update(q)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ledger-pipeline: authorisation received, you can close this tab.\n")

    def log_message(self, *args: object) -> None:
        pass


def authorize(engine: Engine, tenant_id: str, authorize_url: Callable[[str, str], str],
              open_url: Callable[[str], None], timeout: float = 600) -> tuple[dict, str]:
    """Run the browser leg: (callback query parameters, redirect_uri), the state checked and consumed.
    `authorize_url(redirect_uri, state)` builds the system's URL; `open_url` shows it (or follows it in a sandbox)."""
    server = _CallbackServer(("127.0.0.1", 0), _CallbackHandler)
    server.result = {}
    server.timeout = timeout
    redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/callback"
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        state = new_state(engine, tenant_id, redirect_uri)
        open_url(authorize_url(redirect_uri, state))
        thread.join(timeout)
    finally:
        server.server_close()
    query = server.result
    if "error" in query or not query:
        raise OAuthError(f"tenant {tenant_id}: no authorisation came back ({query.get('error', 'timeout')})")
    got, redirect = consume_state(engine, query.get("state", ""))
    if got != tenant_id:
        raise OAuthError(f"the authorisation came back for tenant {got}, not {tenant_id}")
    return query, redirect


def complete(engine: Engine, vault: TokenVault, oauth: object, state: str, code: str) -> str:
    """An OAuth callback by hand: check the state, exchange the code, store the tokens. Returns the tenant."""
    tenant_id, redirect_uri = consume_state(engine, state)
    vault.store(tenant_id, oauth.exchange_code(tenant_id, code, redirect_uri))  # type: ignore[attr-defined]
    return tenant_id


def connect_tenant(engine: Engine, vault: TokenVault, oauth: object, tenant_id: str,
                   open_url: Callable[[str], None], timeout: float = 600) -> str:
    """The authorization-code flow for a system whose `oauth` has authorize_url(redirect_uri, state, login_hint)
    and exchange_code(tenant_id, code, redirect_uri) -> TokenSet."""
    query, redirect_uri = authorize(
        engine, tenant_id, lambda uri, state: oauth.authorize_url(uri, state, login_hint=tenant_id),  # type: ignore[attr-defined]
        open_url, timeout)
    if "code" not in query:
        raise OAuthError(f"tenant {tenant_id}: the callback carried no code")
    tokens: TokenSet = oauth.exchange_code(tenant_id, query["code"], redirect_uri)  # type: ignore[attr-defined]
    vault.store(tenant_id, tokens)
    return tenant_id


def follow_redirects(http: httpx.Client) -> Callable[[str], None]:
    """For the sandboxes, which auto-approve: follow the authorize URL to the loopback callback."""
    def _open(url: str) -> None:
        resp = http.get(url, follow_redirects=False)
        if resp.status_code not in (301, 302, 303, 307):
            raise OAuthError(f"authorize answered {resp.status_code}: {resp.text[:200]}")
        http.get(resp.headers["location"])
    return _open


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
