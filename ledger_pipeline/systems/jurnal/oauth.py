"""OAuth2 authorization-code flow against Jurnal (Mekari), with a single-use CSRF state that expires in 10 minutes.

The state lives in R2a's `oauth_states` table (the seed kept it in Redis for 600 s): one store the pipeline
already has, shared by every process, deleted on first use.
"""

from __future__ import annotations

import datetime as dt
import http.server
import secrets
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
from sqlalchemy import Engine, delete, select

from ledger_pipeline.r2a.models import OAuthState
from ledger_pipeline.state.vault import NeedsReauth, TokenSet, TokenVault

STATE_TTL = dt.timedelta(minutes=10)


class OAuthError(Exception):
    pass


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


def complete(engine: Engine, vault: TokenVault, oauth: OAuthClient, state: str, code: str) -> str:
    """The callback: check the state, exchange the code, store the tokens encrypted. Returns the tenant."""
    tenant_id, redirect_uri = consume_state(engine, state)
    vault.store(tenant_id, oauth.exchange_code(tenant_id, code, redirect_uri))
    return tenant_id


class _CallbackServer(http.server.HTTPServer):
    result: dict


class _CallbackHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
        self.server.result.update(q)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ledger-pipeline: Jurnal authorisation received, you can close this tab.\n")

    def log_message(self, *args: object) -> None:
        pass


def connect_tenant(engine: Engine, vault: TokenVault, oauth: OAuthClient, tenant_id: str,
                   open_url: Callable[[str], None], timeout: float = 600) -> str:
    """Run the whole flow with a loopback callback server; `open_url` shows or follows the authorize URL."""
    server = _CallbackServer(("127.0.0.1", 0), _CallbackHandler)
    server.result = {}
    redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/callback"
    thread = threading.Thread(target=server.handle_request, daemon=True)
    server.timeout = timeout
    thread.start()
    try:
        state = new_state(engine, tenant_id, redirect_uri)
        open_url(oauth.authorize_url(redirect_uri, state, login_hint=tenant_id))
        thread.join(timeout)
    finally:
        server.server_close()
    if "code" not in server.result:
        raise OAuthError(f"tenant {tenant_id}: no authorisation came back ({server.result.get('error', 'timeout')})")
    return complete(engine, vault, oauth, server.result.get("state", ""), server.result["code"])


def follow_redirects(http: httpx.Client) -> Callable[[str], None]:
    """For the sandbox, which auto-approves: follow the authorize URL to the loopback callback."""
    def _open(url: str) -> None:
        resp = http.get(url, follow_redirects=False)
        if resp.status_code not in (301, 302, 303, 307):
            raise OAuthError(f"authorize answered {resp.status_code}: {resp.text[:200]}")
        http.get(resp.headers["location"])
    return _open


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
