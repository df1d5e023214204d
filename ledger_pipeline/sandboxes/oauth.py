"""OAuth 2.0 as the sandbox's OAuth vendors serve it (Jurnal, QuickBooks, Zoho): the authorization-code grant (RFC 6749
s.4.1) with an authorize page that approves at once, the token endpoint's template, and injected token-endpoint
failures (`Faults.token_failure`)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ledger_pipeline.sandboxes.base import SandboxContext, token_fault, transaction


class OAuthServer:
    """The token endpoint's template (RFC 6749 s.4.1.3 code exchange, s.6 refresh): parse the parameters, count,
    check the client, redeem the code or the refresh token, issue. A vendor mixes it into its Emulator and supplies
    the hooks; its authorize page uses `approve` and `redirect_to`."""

    ctx: SandboxContext
    system: str
    token_route = ""  # the token endpoint's path, for stats
    token_error_status = 400  # the status of a refused grant (RFC 6749 s.5.2: 400)

    async def token(self, request: Request) -> Response:
        try:
            params = await self.token_params(request)
        except ValueError:
            return self.token_error("invalid_request")
        grant_type = params.get("grant_type")
        self.ctx.count(self.system, "POST", self.token_route, grant_type)
        if not self.client_ok(request, params):
            return self.token_error("invalid_client", 401)
        if grant_type == "refresh_token":
            fault = token_fault(self.ctx, self.refresh_login(params), self.system)
            if fault is not None:
                return fault
        elif grant_type != "authorization_code":
            return self.token_error("unsupported_grant_type")
        with transaction(self.token_db(), "IMMEDIATE"):  # the code or refresh token is spent with the issue
            grant = self.redeem_code(params) if grant_type == "authorization_code" else self.redeem_refresh(params)
            if grant is None or isinstance(grant, Response):
                return grant or self.token_error("invalid_grant")
            return JSONResponse(self.issue(request, grant, params))

    async def token_params(self, request: Request) -> dict:
        """RFC 6749 s.4.1.3: form-encoded; a JSON body is read too (Jurnal's docs send JSON)."""
        return await oauth_params(request)

    def token_error(self, error: str, status: int | None = None) -> Response:
        """RFC 6749 s.5.2 {"error": ...}."""
        return JSONResponse({"error": error}, status_code=status or self.token_error_status)

    def token_db(self) -> sqlite3.Connection:
        """The connection holding codes, grants and tokens."""
        return self.db  # type: ignore[attr-defined]

    def client_ok(self, request: Request, params: dict) -> bool:
        raise NotImplementedError

    def redeem_code(self, params: dict) -> Any:
        """The grant an unused, unexpired code opens (the code is spent), or None."""
        raise NotImplementedError

    def redeem_refresh(self, params: dict) -> Any:
        """The grant a live refresh token belongs to, None, or a Response (a vendor's own refusal)."""
        raise NotImplementedError

    def refresh_login(self, params: dict) -> str | None:
        """The company a refresh token belongs to, for `Faults.token_failure_logins` (None: unknown)."""
        return None

    def issue(self, request: Request, grant: Any, params: dict) -> dict:
        """The token response (RFC 6749 s.5.1) for the grant."""
        raise NotImplementedError


async def oauth_params(request: Request, query: bool = False) -> dict:
    """An OAuth endpoint's parameters: a JSON body (content type *json*) or a form-encoded one (RFC 6749 s.4.1.3),
    over the query string's when `query`. Raises ValueError for a JSON body that is not an object."""
    data: dict = dict(request.query_params) if query else {}
    raw = await request.body()
    if "json" in request.headers.get("content-type", ""):
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        data.update(body)
    elif raw:
        data.update(parse_qsl(raw.decode("utf-8", errors="replace")))
    return data


def approve(request: Request, client_id: str | None) -> tuple[str, str] | Response:
    """The sandbox's authorize page approves at once: (login_hint, redirect_uri), or the refusal (400
    invalid_client for another client or a response_type other than "code", RFC 6749 s.4.1.1; 400 invalid_request
    without a login_hint or a redirect_uri). `client_id` None: no client check (Rootfi Link)."""
    q = request.query_params
    if client_id is not None and (q.get("client_id") != client_id or q.get("response_type") != "code"):
        return JSONResponse({"error": "invalid_client"}, status_code=400)
    login, redirect = q.get("login_hint"), q.get("redirect_uri")
    if not login or not redirect:
        return JSONResponse({"error": "invalid_request",
                             "error_description": "the sandbox auto-approves a login_hint; redirect_uri needed"},
                            status_code=400)
    return login, redirect


def redirect_to(redirect: str, params: dict) -> RedirectResponse:
    """302 to `redirect` with `params` added to its query (RFC 6749 s.4.1.2)."""
    sep = "&" if "?" in redirect else "?"
    return RedirectResponse(f"{redirect}{sep}{urlencode(params)}", 302)
