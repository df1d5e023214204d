"""The connection service (`ledger-pipeline serve`): tenants connect their accounting systems themselves.

Routes (every URL the outside sees is built from LEDGER_PUBLIC_URL, never from the request's Host header):
- `GET /connect/<system>?tenant&exp&nonce[&flags]&sig`: checks the signed link (service/links.py) and shows a page
  with one button (Aden: a token form).
- `POST /connect/<system>`: redirect flows get a single-use state (`oauth_states`, 10 minutes) bound to this browser
  by an HttpOnly cookie, then a 303 to the provider with redirect_uri `<LEDGER_PUBLIC_URL>/callback/<system>`;
  Aden: the pasted JWT is checked, then stored.
- `GET /callback/<system>`: checks binding, state and link; exchanges the code (or takes Rootfi's company_id);
  stores the credentials encrypted (state/vault.py); a page naming the company and the tenant, or what went wrong,
  that nothing changed, and what to do.
- `GET /operator` (+ `/operator/login`, `/operator/logout`, `/operator/link`, `/operator/check`,
  `/operator/disconnect`): every tenant's connection, behind LEDGER_OPERATOR_TOKEN (bearer header, or the login
  form's cookie); disconnect marks the connection `revoked` and forgets its tokens (posting state is kept).
- `GET /healthz`: liveness for the proxy.

Guards: a request body over LEDGER_SERVICE_MAX_BODY is refused (413); each client address gets
LEDGER_SERVICE_RATE_LIMIT requests (429 beyond); the client address is the proxy's X-Forwarded-For only when the
proxy is in LEDGER_TRUSTED_PROXIES (uvicorn's proxy headers middleware, server.py). Pages carry a strict CSP, no
referrer, no caching. Access logs name method, path (never the query: codes and link signatures travel there),
status and client.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ledger_pipeline.service import flows, links, pages
from ledger_pipeline.service.config import ServiceConfig
from ledger_pipeline.service.health import NEEDS_LINK, STATUSES, connection_rows
from ledger_pipeline.service.store import Flow, ServiceStore, ops_engine
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.vault import Integration, NeedsReauth, TokenEndpointError, TokenSet
from ledger_pipeline.systems import SYSTEMS
from ledger_pipeline.systems.authflow import STATE_TTL, OAuthError, consume_state, new_state

log = logging.getLogger("ledger_pipeline.service")

OPERATOR_COOKIE = "lp_operator"
OPERATOR_SESSION = 12 * 3600  # seconds an operator sign-in lasts
PAGE_SIZE = 200
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,60}$")


class Service:
    """What the routes share: settings, the store, one open Connection per system (opened on first use)."""

    def __init__(self, settings: Settings, config: ServiceConfig, clock: Callable[[], float] = time.time):
        self.settings, self.config, self.clock = settings, config, clock
        self.engine = ops_engine(settings.ops_database_url)
        self.store = ServiceStore(self.engine)
        self._connections: dict[str, object] = {}
        self._lock = threading.Lock()

    def connection(self, system: str) -> object:
        from ledger_pipeline.systems import OpenOptions, open_connection

        with self._lock:
            if system not in self._connections:
                self._connections[system] = open_connection(system, self.settings, OpenOptions(
                    self.settings.ops_database_url, self.settings.rate_limit_scale))
            return self._connections[system]

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).replace(tzinfo=None)

    def close(self) -> None:
        with self._lock:
            for c in self._connections.values():
                with contextlib.suppress(Exception):
                    c.close()  # type: ignore[attr-defined]
            self._connections.clear()

    def mint(self, tenant_id: str, system: str, flags: str = "") -> str:
        return links.mint(self.config.public_url, self.config.link_secret, tenant_id, system, now=self.clock(),
                          flags=flags)


# -- pages for the link's problems ------------------------------------------------------------------------------
ASK_NEW_LINK = "ask for a new connect link (from the app where you got this one, or your administrator)"


def _link_failure(exc: links.LinkError) -> Response:
    if exc.kind == "expired":
        return pages.failure(410, "This link has expired", "The connect link is past its expiry date.", ASK_NEW_LINK)
    if exc.kind == "used":
        return pages.failure(410, "This link was already used",
                             "This connect link already connected the tenant once, and a link works only once.",
                             "if the tenant needs to connect again, " + ASK_NEW_LINK)
    return pages.failure(403, "This link is not valid", f"The connect link cannot be used: {exc}.",
                         "open the link exactly as you received it; if it still fails, " + ASK_NEW_LINK)


def _unknown_system(system: str) -> Response:
    return pages.failure(404, "Unknown accounting system", f"There is no accounting system called {system!r} here.",
                         "open the link exactly as you received it")


def _fields(link: links.Link, sig: str) -> list[tuple[str, str]]:
    out = [("tenant", link.tenant_id), ("exp", str(link.expires)), ("nonce", link.nonce)]
    if link.flags:
        out.append(("flags", link.flags))
    return [*out, ("sig", sig)]


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (bounded by the guard), first value of each field."""
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        return {}
    out: dict[str, str] = {}
    for k, v in parse_qsl((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True):
        out.setdefault(k, v)
    return out


def _binding_cookie(state: str) -> str:
    return "lp_flow_" + hashlib.sha256(state.encode()).hexdigest()[:16]


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# -- the connect and callback routes ----------------------------------------------------------------------------
def build_app(service: Service) -> Starlette:  # noqa: C901 - one closure per route, kept together
    cfg, store = service.config, service.store

    def verify(system: str, params: dict[str, str]) -> links.Link:
        link = links.verify(cfg.link_secret, system, params, now=service.clock())
        if store.link_used(link.nonce):
            raise links.LinkError("used", "the link was already used")
        return link

    async def connect_page(request: Request) -> Response:
        system = request.path_params["system"]
        if system not in SYSTEMS:
            return _unknown_system(system)
        params = dict(request.query_params)
        try:
            link = await run_in_threadpool(verify, system, params)
        except links.LinkError as exc:
            return _link_failure(exc)
        info = flows.INFO[system]
        expires = dt.datetime.fromtimestamp(link.expires, dt.UTC).strftime("%Y-%m-%d %H:%M")
        return pages.render("landing", title=f"Connect {link.tenant_id}", tenant=link.tenant_id,
                            provider=info.provider, instructions=info.instructions, kind=info.kind,
                            action=f"/connect/{system}", fields=_fields(link, params["sig"]), expires=expires,
                            new_company=link.new_company)

    async def connect_start(request: Request) -> Response:
        system = request.path_params["system"]
        if system not in SYSTEMS:
            return _unknown_system(system)
        form = await _form(request)
        try:
            link = await run_in_threadpool(verify, system, form)
        except links.LinkError as exc:
            return _link_failure(exc)
        if flows.INFO[system].kind == "token":
            return await run_in_threadpool(_connect_with_token, link, form.get("token", ""))
        return await run_in_threadpool(_start_redirect, link)

    def _start_redirect(link: links.Link) -> Response:
        system, tenant = link.system, link.tenant_id
        redirect_uri = cfg.callback_url(system)
        state = new_state(service.engine, tenant, redirect_uri)
        binding = secrets.token_urlsafe(32)
        now = service.now()
        store.add_flow(Flow(state, system, tenant, link.nonce, link.flags, _sha256(binding),
                            dt.datetime.fromtimestamp(link.expires, dt.UTC).replace(tzinfo=None), now + STATE_TTL),
                       now)
        try:
            url = flows.authorize_url(system, service.connection(system), redirect_uri, state, tenant)
        except Exception:
            store.drop_flow(state)
            raise
        response = RedirectResponse(url, status_code=303)
        response.set_cookie(_binding_cookie(state), binding, max_age=int(STATE_TTL.total_seconds()) + 300,
                            path=f"/callback/{system}", secure=cfg.secure_cookies, httponly=True, samesite="lax")
        log.info("connect started: tenant=%s system=%s", tenant, system)
        return response

    def _connect_with_token(link: links.Link, token: str) -> Response:
        system, tenant = link.system, link.tenant_id
        connection = service.connection(system)
        try:
            tokens = flows.check_token(connection, tenant, token)
        except NeedsReauth:
            return pages.failure(400, "Aden did not accept this token",
                                 "Aden refused the token (it was revoked, replaced, or issued for another system).",
                                 "ask your Aden administrator for a new token for your company and paste it again "
                                 "(this link still works until it expires)")
        except TokenEndpointError:
            return pages.failure(502, "Aden could not be reached", "Aden did not answer while we checked the token.",
                                 "try again in a few minutes with the same link")
        except OAuthError as exc:
            return pages.failure(400, "This is not a usable Aden token", _without_secret(str(exc), token),
                                 "paste the token exactly as your Aden administrator issued it (this link still "
                                 "works until it expires)")
        return _finish(link, tokens, lambda: flows.store_token(connection, tenant, token, tokens))

    def _finish(link: links.Link, tokens: TokenSet, store_credentials: Callable[[], None]) -> Response:
        """Company checks, single use of the link, storage, the success page."""
        system, tenant = link.system, link.tenant_id
        conflict = _company_conflict(system, tenant, tokens.company_id, link.new_company)
        if conflict:
            return pages.failure(409, "A different company", *conflict)
        if not store.claim_link(link.nonce, tenant, system,
                                dt.datetime.fromtimestamp(link.expires, dt.UTC).replace(tzinfo=None), service.now()):
            return _link_failure(links.LinkError("used", "the link was already used"))
        try:
            store_credentials()
        except (OAuthError, NeedsReauth, TokenEndpointError) as exc:  # refused right after a successful check
            log.warning("storing failed: tenant=%s system=%s: %s", tenant, system, type(exc).__name__)
            return pages.failure(502, f"{flows.INFO[system].provider} refused the new credentials",
                                 f"The credentials were refused when first used: {_safe(str(exc))}",
                                 "ask for a new connect link and connect again; if it keeps failing, contact support",
                                 "This link is used up; the tenant's connection needs re-authorisation.")
        facts = _describe(system, tenant)
        store.record_connected(tenant, system, service.now(), "serve", facts.company_name, facts.home_currency)
        log.info("connected: tenant=%s system=%s company=%s", tenant, system, tokens.company_id)
        return pages.render("result", ok=True, title="Connected", tenant=tenant, provider=flows.INFO[system].provider,
                            company=facts.company_name or tokens.company_id or "(unnamed)",
                            company_id=tokens.company_id, currency=facts.home_currency)

    def _describe(system: str, tenant: str):  # noqa: ANN202
        from ledger_pipeline.service.preflight import Facts, describe

        try:
            return describe(system, service.connection(system), tenant)
        except Exception:  # noqa: BLE001 - names are a nicety; the connection is made
            return Facts()

    def _company_conflict(system: str, tenant: str, company: str | None, allow_new: bool) -> tuple[str, str] | None:
        if not company:
            return None
        with service.engine.connect() as conn:
            rows = conn.execute(select(Integration.tenant_id, Integration.company_id, Integration.status).where(
                Integration.source_system == system)).all()
        mine = next((r for r in rows if r.tenant_id == tenant), None)
        if mine is not None and mine.company_id and str(mine.company_id) != str(company) and not allow_new:
            return (f"Tenant {tenant}'s books are kept in {SYSTEMS[system].title} company {mine.company_id}, but the "
                    f"approval was for company {company}.",
                    f"sign in with the account of company {mine.company_id} and open the link again; if the tenant "
                    "really moved to another company, ask your administrator for a link that allows a new company")
        if any(r.tenant_id != tenant and r.company_id and str(r.company_id) == str(company)
               and r.status != "revoked" for r in rows):
            return (f"{SYSTEMS[system].title} company {company} is already connected to another tenant.",
                    "sign in with the account of this tenant's own company and open the link again, or ask your "
                    "administrator")
        return None

    async def callback(request: Request) -> Response:
        system = request.path_params["system"]
        if system not in SYSTEMS or flows.INFO[system].kind != "redirect":
            return _unknown_system(system)
        query = {k: v for k, v in request.query_params.items()}
        state = query.get("state") or ""
        flow = await run_in_threadpool(store.flow, state) if state else None
        if flow is None:
            return pages.failure(400, "Unknown or already used authorisation",
                                 "This answer from the provider does not belong to a connection in progress: it was "
                                 "already used, has expired, or was not started here.",
                                 "open your connect link again to start over")
        if flow.system != system:
            return pages.failure(400, "Answer for another system",
                                 f"This answer came back for {system}, but the connection was started for "
                                 f"{flow.system}.", "open your connect link again to start over")
        if flow.expires_at <= service.now():  # said first: the browser may have dropped its cookie by now
            await run_in_threadpool(_expire, flow)
            return _too_late()
        binding = request.cookies.get(_binding_cookie(state)) or ""
        if not hmac.compare_digest(_sha256(binding), flow.binding_sha256):
            return pages.failure(403, "This authorisation was started elsewhere",
                                 "This answer belongs to a connection started in another browser, or for another "
                                 "tenant: it is not accepted here.",
                                 "open your own connect link in this browser and approve there")
        response = await run_in_threadpool(_complete, flow, query)
        response.delete_cookie(_binding_cookie(state), path=f"/callback/{system}")
        return response

    def _expire(flow: Flow) -> None:
        store.drop_flow(flow.state)
        with contextlib.suppress(OAuthError):
            consume_state(service.engine, flow.state)

    def _too_late() -> Response:
        return pages.failure(400, "The authorisation took too long",
                             "The connection was not finished within 10 minutes.",
                             "open your connect link again and approve within 10 minutes")

    def _complete(flow: Flow, query: dict[str, str]) -> Response:
        system, provider = flow.system, flows.INFO[flow.system].provider
        try:
            tenant, redirect_uri = consume_state(service.engine, flow.state)
        except OAuthError as exc:
            store.drop_flow(flow.state)
            if "expired" in str(exc):
                return _too_late()
            return pages.failure(400, "Authorisation already used",
                                 "This answer was already used once (a page reloaded, or a replay).",
                                 "open your connect link again if the tenant is not connected yet")
        finally:
            store.drop_flow(flow.state)
        if tenant != flow.tenant_id or redirect_uri != cfg.callback_url(system):
            return pages.failure(400, "Mismatched authorisation", "The answer does not match the connection that was "
                                 "started.", "open your connect link again")
        if query.get("error"):
            code = query["error"] if _ERROR_CODE.match(query["error"]) else "unknown_error"
            declined = code == "access_denied"
            return pages.failure(400, "Access was declined" if declined else f"{provider} reported a problem",
                                 f"{provider} answered: {code}" + (" (the request was declined)." if declined else "."),
                                 "open your connect link again and approve access" if declined else
                                 "open your connect link again; if it keeps failing, contact support with the time "
                                 "and the answer above")
        link_exp = int(flow.link_expires_at.replace(tzinfo=dt.UTC).timestamp())
        link = links.Link(system, tenant, link_exp, flow.nonce, flow.flags)
        if store.link_used(link.nonce):
            return _link_failure(links.LinkError("used", "the link was already used"))
        connection = service.connection(system)
        try:
            tokens = flows.exchange(system, connection, tenant, query, redirect_uri)
        except (OAuthError, NeedsReauth, TokenEndpointError) as exc:
            log.warning("connect failed: tenant=%s system=%s: %s", tenant, system, type(exc).__name__)
            return pages.failure(502, f"{provider} did not complete the connection",
                                 f"Exchanging the authorisation with {provider} failed: {_safe(str(exc))}",
                                 "open your connect link again; if it keeps failing, contact support")
        except Exception as exc:  # an answer our client could not read: say so, keep the details out of the page
            log.exception("connect failed: tenant=%s system=%s: %s", tenant, system, type(exc).__name__)
            return pages.failure(502, f"{provider} did not complete the connection",
                                 f"{provider} answered something we could not use ({type(exc).__name__}).",
                                 "open your connect link again; if it keeps failing, contact support with the time")
        return _finish(link, tokens, lambda: connection.vault.store(tenant, tokens))  # type: ignore[attr-defined]

    # -- the operator pages -------------------------------------------------------------------------------------
    def _session_value(expires: int) -> str:
        mac = hmac.new((cfg.operator_token or "").encode(), f"operator-session-v1\n{expires}".encode(),
                       hashlib.sha256).hexdigest()
        return f"{expires}.{mac}"

    def _operator(request: Request) -> bool:
        token = cfg.operator_token
        if not token:
            return False
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
            return True
        cookie = request.cookies.get(OPERATOR_COOKIE, "")
        expires, _, _ = cookie.partition(".")
        return (expires.isdigit() and int(expires) > service.clock()
                and hmac.compare_digest(cookie.encode(), _session_value(int(expires)).encode()))

    def _operator_gate(request: Request) -> Response | None:
        if not cfg.operator_token:
            return pages.failure(404, "No operator page", "The operator page is off on this service.",
                                 "set LEDGER_OPERATOR_TOKEN and restart `ledger-pipeline serve`")
        if not _operator(request):
            return RedirectResponse("/operator/login", status_code=303)
        return None

    async def operator_login(request: Request) -> Response:
        if not cfg.operator_token:
            return _operator_gate(request)  # type: ignore[return-value]
        if request.method == "GET":
            return pages.render("login", title="Operator sign-in")
        form = await _form(request)
        if not hmac.compare_digest(form.get("token", "").encode(), cfg.operator_token.encode()):
            log.warning("operator sign-in refused from %s", request.client.host if request.client else "?")
            return pages.render("login", 401, title="Operator sign-in", failed=True)
        response = RedirectResponse("/operator", status_code=303)
        expires = int(service.clock()) + OPERATOR_SESSION
        response.set_cookie(OPERATOR_COOKIE, _session_value(expires), max_age=OPERATOR_SESSION, path="/operator",
                            secure=cfg.secure_cookies, httponly=True, samesite="strict")
        return response

    async def operator_logout(request: Request) -> Response:
        response = RedirectResponse("/operator/login", status_code=303)
        response.delete_cookie(OPERATOR_COOKIE, path="/operator")
        return response

    async def operator_page(request: Request) -> Response:
        gate = _operator_gate(request)
        if gate is not None:
            return gate
        status, q = request.query_params.get("status", ""), request.query_params.get("q", "")
        try:
            offset = max(0, int(request.query_params.get("offset", "0")))
        except ValueError:
            offset = 0
        rows = await run_in_threadpool(connection_rows, service.settings, service.engine, store.health())
        counts = ", ".join(f"{sum(r.status == s for r in rows)} {s}" for s in STATUSES)
        rows = [r for r in rows if (not status or r.status == status) and (not q or q in r.tenant_id)]
        shown = rows[offset:offset + PAGE_SIZE]
        for r in shown:
            if r.system and r.status in NEEDS_LINK:
                r.link = service.mint(r.tenant_id, r.system)
        more = (f"/operator?{urlencode({'status': status, 'q': q, 'offset': offset + PAGE_SIZE})}"
                if offset + PAGE_SIZE < len(rows) else None)
        return pages.render("operator", title="Tenant connections", rows=shown, counts=counts, status=status, q=q,
                            statuses=("", *STATUSES), systems=list(SYSTEMS), more=more)

    async def operator_link(request: Request) -> Response:
        gate = _operator_gate(request)
        if gate is not None:
            return gate
        tenant, system = request.query_params.get("tenant", ""), request.query_params.get("system", "")
        try:
            link = service.mint(tenant, system, "new-company" if request.query_params.get("new_company") else "")
        except ValueError as exc:
            return pages.failure(400, "No link", str(exc), "pick a known tenant and system")
        expires = (service.now() + dt.timedelta(seconds=links.DEFAULT_TTL)).strftime("%Y-%m-%d %H:%M")
        return pages.render("link", title="Connect link", tenant=tenant, system=system, link=link, expires=expires)

    async def operator_check(request: Request) -> Response:
        gate = _operator_gate(request)
        if gate is not None:
            return gate
        tenant = (await _form(request)).get("tenant", "")
        report = await run_in_threadpool(_preflight, tenant)
        return pages.render("check", title="Preflight", report=report)

    async def operator_disconnect(request: Request) -> Response:
        gate = _operator_gate(request)
        if gate is not None:
            return gate
        tenant = (await _form(request)).get("tenant", "")
        system = await run_in_threadpool(store.disconnect, tenant, service.now())
        if system is None:
            return pages.failure(404, "Not connected", f"tenant {tenant} has no connection to disconnect",
                                 "nothing to do")
        log.info("operator disconnected tenant %s (%s)", tenant, system)
        return RedirectResponse(f"/operator?{urlencode({'q': tenant})}", status_code=303)

    def _preflight(tenant: str):  # noqa: ANN202
        from ledger_pipeline.service.preflight import next_close_month, preflight, record

        month = next_close_month(service.engine, tenant)  # the month its next close posts: its lock is checked
        report = preflight(service.settings, tenant, month, connection_for=service.connection)
        record(report, store, service.now())
        return report

    async def home(request: Request) -> Response:
        return pages.render("home", title="Connections")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/", home), Route("/healthz", healthz),
        Route("/connect/{system}", connect_page, methods=["GET"]),
        Route("/connect/{system}", connect_start, methods=["POST"]),
        Route("/callback/{system}", callback, methods=["GET"]),
        Route("/operator", operator_page, methods=["GET"]),
        Route("/operator/login", operator_login, methods=["GET", "POST"]),
        Route("/operator/logout", operator_logout, methods=["POST"]),
        Route("/operator/link", operator_link, methods=["GET"]),
        Route("/operator/check", operator_check, methods=["POST"]),
        Route("/operator/disconnect", operator_disconnect, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        yield
        service.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return Guard(app, cfg)  # type: ignore[return-value]


def _safe(text: str) -> str:
    """A provider error for a page: first line, bounded (our clients never put tokens in their messages)."""
    return text.splitlines()[0][:300] if text else "no detail"


def _without_secret(text: str, secret: str) -> str:
    return _safe(text.replace(secret.strip(), "[token]") if secret.strip() else text)


# -- the guard: body size, rate per client, security headers, access log ------------------------------------------
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                                 b"frame-ancestors 'none'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class Guard:
    """Pure ASGI middleware in front of the app (see the module docstring)."""

    def __init__(self, app: Starlette, config: ServiceConfig):
        self.app, self.max_body = app, config.max_body
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.rates = parse_many(config.rate_limit)
        self.state = app.state

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("?", 0))[0]
        status = [0]

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        try:
            if scope["path"] != "/healthz" and not all(self.limiter.hit(r, client) for r in self.rates):
                await self._refuse(send_with_headers, 429, "Too many requests from your address; wait a minute.")
                return
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                await self._refuse(send_with_headers, 413, "The request is larger than this service accepts.")
                return
            body, more = b"", True
            while more:  # bodies are small: read (bounded) before the app sees any of it
                message = await receive()
                if message["type"] != "http.request":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body:
                    await self._refuse(send_with_headers, 413, "The request is larger than this service accepts.")
                    return
            replayed = [False]

            async def buffered_receive() -> dict:
                if not replayed[0]:
                    replayed[0] = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, buffered_receive, send_with_headers)
        finally:
            log.info("%s %s %s %s", scope.get("method"), scope.get("path"), status[0] or "-", client)

    @staticmethod
    async def _refuse(send, status: int, text: str) -> None:  # noqa: ANN001
        body = text.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        if status == 429:
            headers.append((b"retry-after", b"60"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings, config: ServiceConfig, clock: Callable[[], float] = time.time) -> Guard:
    """The ASGI app of `serve` (the Starlette app wrapped in its Guard)."""
    return build_app(Service(settings, config, clock))  # type: ignore[return-value]
