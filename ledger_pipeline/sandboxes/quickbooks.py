"""The QuickBooks Online sandbox: Intuit's accounting API as ../shared/reference/accounting_apis.md section 3
describes it, under the `/quickbooks` prefix. Driven in the tests by clients nobody here wrote (python-quickbooks,
intuit-oauth: ledger_pipeline_tests/test_quickbooks_contract.py).

- Auth: OAuth2 authorization code. `GET /connect/oauth2` auto-approves the `login_hint` company (created on first
  authorisation with the default chart) and redirects with `code`, `state` and `realmId`; `POST
  /oauth2/v1/tokens/bearer` (form-encoded, HTTP Basic client auth) issues `ctx.access_ttl` access tokens and
  **rotating** refresh tokens (a used refresh token is refused with `invalid_grant`); `/oauth2/v1/tokens/revoke`
  and `/v2/oauth2/tokens/revoke` (the discovery document's). `/.well-known/openid_sandbox_configuration` (and
  `openid_configuration`) serve Intuit's discovery document with this sandbox's endpoints, which intuit-oauth reads.
- API: `/v3/company/{realmId}/journalentry` (create; update with Id + current SyncToken, stale -> 5010;
  `?operation=delete`), `/journalentry/{Id}`, `/batch` (at most 30 BatchItemRequests, a BatchItemResponse each),
  `/query` by `GET ?query=` or by `POST` with the query as an `application/text` body (python-quickbooks' way), a
  small SQL subset: where with =, <, <=, >, >=, in; STARTPOSITION/MAXRESULTS, capped at 1000; an Account query
  without a `where Active` condition returns active accounts only; an empty result is `{}`.
- Idempotency: `requestid` (at most 50 characters) per realm. The response of a committed write is stored in the
  same transaction as the write and replayed for the same requestid; nothing changes. A batch stores the whole
  response under its requestid and each successful item under `<requestid>:<bId>`. Refused writes are not stored
  (a later attempt with the same requestid is processed again), a documented choice of this emulation.
- Errors: data services answer `{"Fault": {"Error": [{"Message", "Detail", "code", "element"}], "type"}, "time"}`
  (developer.intuit.com "Handling common errors"): 6000 unbalanced, 2500 unknown account, 610 inactive account or
  unknown entry, 6210 "Account Period Closed" (dates on or before the company's closing date) and 6210 "Duplicate
  Document Number Error" (a repeated DocNumber, only when the company's duplicate warning is on), both as Intuit's
  "Top QuickBooks Online API errors" (2017-06-08) lists them, 5010 stale SyncToken, 2050 DocNumber longer than 21,
  4000 query parse errors, 429 ThrottleExceeded (003001), 5xx SystemFault. The gateway's 401 (3200,
  AUTHENTICATION) and 403 (3100, wrong realm) come in its lower-case shape, `{"fault": {"error": [{"message",
  "detail", "code", "element"}], "type"}, ...}` (routablehq/python-quickbooks#250, intuit/oauth-jsclient#2).
- Currencies: `GET /v3/company/{realmId}/preferences` answers Preferences.CurrencyPrefs.HomeCurrency and
  .MultiCurrencyEnabled (developer.intuit.com accounting API, Preferences entity). A JournalEntry's CurrencyRef
  (default: the home currency) other than the home currency needs multicurrency on (Intuit's "Manage multiple
  currencies" guide and the Preferences entity; the code, 6000 business validation, is this emulation's choice) and
  an ExchangeRate ("1 unit of the foreign currency = ExchangeRate units of the home currency",
  JournalEntry.ExchangeRate; missing -> 2020); amounts finer than the currency's ISO 4217 minor unit are refused
  (2010 on Amount, this emulation's choice: never rounded silently). Each entry keeps and returns its
  CurrencyRef and ExchangeRate.
- Limits (when `ctx.limits.enabled`, time-scaled by `ctx.limits.scale`): 500 requests/min per realm with each
  batch item metered as a request, 40 batch calls/min per realm, at most 10 requests in flight per realm.
- Controls (`POST /_sandbox/quickbooks/companies/<login>/<action>`): `lock_date` {"lock_date"} (close the books),
  `revoke`, `accounts` {"number", "name", "archived"}, `entries` (a person's edit: {"create": JournalEntry},
  or {"custom_id"} with "delete", "scale_line", "touch", "description", "doc_number", "private_note"),
  `preferences` {"warn_duplicate_doc_number": bool, "home_currency": "USD", "multicurrency": bool} (the company's
  home currency, default IDR, and its multicurrency switch, default off; also as `currency`), `search`
  {"ignore_filters": bool} (a hostile mode: JournalEntry queries ignore their where clause and list the entries
  that do not match it first), `requests` (the idempotency store's counts).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import secrets
import time
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger_pipeline.money import currency_problem, dumps_exact, from_minor, loads_exact, minor_unit, to_minor
from ledger_pipeline.sandboxes import consent
from ledger_pipeline.sandboxes.base import (
    Call,
    Emulator,
    Problem,
    SandboxContext,
    Windows,
    inspected,
    transaction,
    write_company_currency,
)
from ledger_pipeline.sandboxes.chart import DEFAULT_CHART, classification
from ledger_pipeline.sandboxes.oauth import OAuthServer, approve, oauth_params, redirect_to

SYSTEM = "quickbooks"
PREFIX = "/quickbooks"
CLIENT_ID = "qbo-sandbox-client"
CLIENT_SECRET = "qbo-sandbox-secret-not-for-production"  # noqa: S105 - a public sandbox value
SCOPE = "com.intuit.quickbooks.accounting"
REFRESH_TTL = 100 * 86400  # rolling 100 days
CODE_TTL = 300
MAX_BATCH = 30
MAX_RESULTS = 1000
MAX_REQUEST_ID = 50
PER_REALM_MINUTE = 500
BATCH_PER_REALM_MINUTE = 40
MAX_CONCURRENT = 10
DEFAULT_CURRENCY = "IDR"  # a new company's home currency (the control `preferences` sets another)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quickbooks_companies (realm_id TEXT PRIMARY KEY, login TEXT UNIQUE NOT NULL,
    closed_date TEXT, next_account_id INTEGER NOT NULL DEFAULT 1, next_entry_id INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS quickbooks_accounts (realm_id TEXT NOT NULL, id TEXT NOT NULL, acct_num TEXT,
    name TEXT NOT NULL, account_type TEXT, classification TEXT, active INTEGER NOT NULL DEFAULT 1,
    sync_token INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (realm_id, id));
CREATE TABLE IF NOT EXISTS quickbooks_entries (realm_id TEXT NOT NULL, id TEXT NOT NULL,
    sync_token INTEGER NOT NULL, doc_number TEXT, private_note TEXT, txn_date TEXT NOT NULL,
    adjustment INTEGER NOT NULL DEFAULT 0, lines TEXT NOT NULL, created REAL, updated REAL,
    PRIMARY KEY (realm_id, id));
CREATE INDEX IF NOT EXISTS quickbooks_entries_date ON quickbooks_entries (realm_id, txn_date);
CREATE TABLE IF NOT EXISTS quickbooks_codes (code TEXT PRIMARY KEY, realm_id TEXT NOT NULL, redirect_uri TEXT,
    expires REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS quickbooks_grants (id INTEGER PRIMARY KEY AUTOINCREMENT, realm_id TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS quickbooks_tokens (token_hash TEXT PRIMARY KEY, kind TEXT NOT NULL,
    grant_id INTEGER NOT NULL, expires REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS quickbooks_requests (realm_id TEXT NOT NULL, request_id TEXT NOT NULL,
    status INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (realm_id, request_id));
"""

# The default chart's numbers and names, with QuickBooks' AccountType by number range and its Classification (Asset,
# Liability, Equity, Revenue, Expense) by the chart's class.
_TYPES = {"1": "Other Current Asset", "2": "Other Current Liability", "3": "Equity", "4": "Income",
          "5": "Cost of Goods Sold", "6": "Expense", "7": "Other Income", "8": "Other Expense"}
_BANK = {"1-10001", "1-10002"}


def _account_type(number: str) -> tuple[str, str]:
    kind = "Bank" if number in _BANK else _TYPES.get(number[:1], "Expense")
    return kind, classification(number).capitalize()


class Fault(Exception):
    """An answer in QuickBooks' Fault shape."""

    def __init__(self, status: int, code: str, message: str, detail: str = "", element: str = "",
                 fault_type: str = "ValidationFault"):
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.element, self.fault_type = element, fault_type

    def error(self) -> dict:
        return {"Message": self.message, "Detail": self.detail, "code": self.code, "element": self.element}

    def body(self) -> dict:
        return {"Fault": {"Error": [self.error()], "type": self.fault_type}, "time": _time()}


class GatewayFault(Fault):
    """A 401/403 from Intuit's gateway, which answers before the data services in its own all-lower-case shape
    (bodies quoted in routablehq/python-quickbooks#250 for 401 and intuit/oauth-jsclient#2 for 403):
    `{"warnings": null, "intuitObject": null, "fault": {"error": [{"message", "detail", "code", "element"}],
    "type"}, "report": null, "queryResponse": null, "batchItemResponse": [], ..., "time": <epoch ms>, ...}`."""

    def body(self) -> dict:
        return {"warnings": None, "intuitObject": None,
                "fault": {"error": [{"message": self.message, "detail": self.detail or None, "code": self.code,
                                     "element": None}], "type": self.fault_type},
                "report": None, "queryResponse": None, "batchItemResponse": [], "attachableResponse": [],
                "syncErrorResponse": None, "requestId": None, "time": int(time.time() * 1000), "status": None,
                "cdcresponse": []}


def _unauthenticated(detail: str) -> GatewayFault:
    return GatewayFault(401, "3200", "message=AuthenticationFailed; errorCode=003200; statusCode=401", detail,
                        fault_type="AUTHENTICATION")


def _time() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _validation(code: str, message: str, detail: str, element: str = "") -> Fault:
    return Fault(400, code, message, detail, element)


_THROTTLE = ("message=ThrottleExceeded; errorCode=003001; statusCode=429", "003001")

# -- the query language subset ---------------------------------------------------------------------------------
_QUERY = re.compile(
    r"^\s*select\s+(?P<cols>\*|count\(\*\))\s+from\s+(?P<entity>\w+)"
    r"(?:\s+where\s+(?P<where>.*?))?(?:\s+orderby\s+(?P<order>\w+(?:\s+(?:asc|desc))?))?"
    r"(?:\s+startposition\s+(?P<start>\d+))?(?:\s+maxresults\s+(?P<max>\d+))?\s*$", re.I | re.S)
_COND = re.compile(r"\s*(\w+)\s*(>=|<=|=|>|<|\bin\b)\s*('(?:[^'\\]|\\.)*'|\([^)]*\)|[\w.-]+)\s*", re.I)
_FIELDS = {"journalentry": {"id": "id", "docnumber": "doc_number", "txndate": "txn_date"},
           "account": {"id": "id", "name": "name", "active": "active", "accounttype": "account_type",
                       "classification": "classification"}}


def _value(raw: str) -> Any:
    if raw.startswith("'"):
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    if raw.lower() in ("true", "false"):
        return int(raw.lower() == "true")
    return raw


def _parse_where(entity: str, where: str | None) -> list[tuple[str, str, Any]]:
    if not where:
        return []
    conds, pos = [], 0
    fields = _FIELDS[entity]
    while pos < len(where):
        m = _COND.match(where, pos)
        if not m:
            raise _parse_error(f"near {where[pos:pos + 30]!r}")
        name, op, raw = m.group(1).lower(), m.group(2).lower(), m.group(3)
        if name not in fields:
            raise _parse_error(f"property {m.group(1)} is not queryable")
        if op == "in":
            if not raw.startswith("("):
                raise _parse_error("IN needs a list")
            value: Any = [_value(v.strip()) for v in raw[1:-1].split(",") if v.strip()]
        else:
            value = _value(raw)
        conds.append((fields[name], op, value))
        pos = m.end()
        rest = re.match(r"and\s+", where[pos:], re.I)
        if rest:
            pos += rest.end()
        elif pos < len(where):
            raise _parse_error(f"near {where[pos:pos + 30]!r}")
    return conds


def _parse_error(what: str) -> Fault:
    return _validation("4000", "Error parsing query", f"QueryParserError: Encountered an error {what}")


class QuickBooksEmulator(OAuthServer, Emulator):
    """Companies (realms), charts, grants, entries and stored requestids in `quickbooks_*` tables."""

    system = SYSTEM
    api_prefix = PREFIX + "/v3/company"
    errors = (Fault,)
    token_route = f"{PREFIX}/oauth2/v1/tokens/bearer"
    companies = ("quickbooks_companies", "realm_id")
    control_echo = "realm_id"
    control_aliases = {"currency": "preferences"}  # every emulator's currency control {home_currency, multicurrency}
    schema = _SCHEMA
    added_columns = ("ALTER TABLE quickbooks_companies ADD COLUMN warn_duplicate_doc INTEGER NOT NULL DEFAULT 0",
                     "ALTER TABLE quickbooks_companies ADD COLUMN home_currency TEXT NOT NULL DEFAULT 'IDR'",
                     "ALTER TABLE quickbooks_companies ADD COLUMN multicurrency INTEGER NOT NULL DEFAULT 0",
                     "ALTER TABLE quickbooks_entries ADD COLUMN currency TEXT",  # NULL: an entry from before (IDR)
                     "ALTER TABLE quickbooks_entries ADD COLUMN exchange_rate TEXT")

    def __init__(self, ctx: SandboxContext):
        super().__init__(ctx)
        self.ignore_filters: set[str] = set()  # realms whose queries ignore their where clause (a test mode)
        self.windows = Windows(ctx.limits)  # per-realm minute windows
        self.inflight: Counter = Counter()  # realm -> requests being processed
        self.replays: Counter = Counter()  # realm -> requestid replays served

    def routes(self) -> list[Route]:
        return [
            Route(f"{PREFIX}/connect/oauth2", self.authorize, methods=["GET", "POST"]),  # POST: consent form
            Route(f"{PREFIX}/oauth2/v1/tokens/bearer", self.token, methods=["POST"]),
            Route(f"{PREFIX}/oauth2/v1/tokens/revoke", self.revoke, methods=["POST"]),
            Route(f"{PREFIX}/v2/oauth2/tokens/revoke", self.revoke, methods=["POST"]),  # the discovery doc's
            Route(f"{PREFIX}/.well-known/openid_sandbox_configuration", self.discovery, methods=["GET"]),
            Route(f"{PREFIX}/.well-known/openid_configuration", self.discovery, methods=["GET"]),
            Route(PREFIX + "/v3/company/{realm}/{path:path}", self.api, methods=["GET", "POST"]),
        ]

    # -- companies --------------------------------------------------------------------------------------------
    def _company_for_login(self, login: str) -> str:
        company = self.company_by_login(login)
        if company:
            return company["realm_id"]
        realm = "9341" + "".join(secrets.choice("0123456789") for _ in range(12))
        with transaction(self.db):
            self.db.execute("INSERT INTO quickbooks_companies (realm_id, login, next_account_id) VALUES (?, ?, ?)",
                            (realm, login, len(DEFAULT_CHART) + 1))
            self.db.executemany("INSERT INTO quickbooks_accounts (realm_id, id, acct_num, name, account_type, "
                                "classification) VALUES (?, ?, ?, ?, ?, ?)",
                                [(realm, str(i), number, name, *_account_type(number))
                                 for i, (number, name, _) in enumerate(DEFAULT_CHART, start=1)])
        return realm

    def _next_id(self, realm: str, kind: str) -> str:
        col = f"next_{kind}_id"
        row = self.db.execute(f"SELECT {col} FROM quickbooks_companies WHERE realm_id = ?", (realm,)).fetchone()
        self.db.execute(f"UPDATE quickbooks_companies SET {col} = {col} + 1 WHERE realm_id = ?", (realm,))
        return str(row[0])

    def _closed_date(self, realm: str) -> dt.date | None:
        row = self.db.execute("SELECT closed_date FROM quickbooks_companies WHERE realm_id = ?", (realm,)).fetchone()
        return dt.date.fromisoformat(row[0]) if row and row[0] else None

    # -- OAuth (developer.intuit.com "OAuth 2.0": authorization code, rotating refresh tokens, revoke) -----------
    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        self.ctx.count(SYSTEM, "GET", f"{PREFIX}/connect/oauth2", "hit")
        approved = approve(request, CLIENT_ID)
        if isinstance(approved, Response):
            return approved
        login, redirect = approved
        if SCOPE not in (q.get("scope") or "").split():
            return redirect_to(redirect, {"error": "invalid_scope", "state": q.get("state", "")})
        page = await consent.gate(request, title="Intuit QuickBooks", company=login, client=CLIENT_ID,
                                  scopes=[SCOPE], redirect_uri=redirect, state=q.get("state", ""))
        if page is not None:  # the consent page (a browser), or the user's Deny
            return page
        realm = self._company_for_login(login)
        code = secrets.token_urlsafe(24)
        self.db.execute("INSERT INTO quickbooks_codes (code, realm_id, redirect_uri, expires) VALUES (?, ?, ?, ?)",
                        (code, realm, redirect, time.time() + CODE_TTL))
        return redirect_to(redirect, {"code": code, "state": q.get("state", ""), "realmId": realm})

    async def discovery(self, request: Request) -> Response:
        """Intuit's OpenID discovery document (developer.api.intuit.com/.well-known/openid_sandbox_configuration),
        with this sandbox's endpoints. intuit-oauth's AuthClient reads its endpoints from it: `environment` may be
        the document's URL instead of 'sandbox'/'production' (intuitlib.utils.get_discovery_doc)."""
        self.ctx.count(SYSTEM, "GET", f"{PREFIX}/.well-known/openid_configuration", "hit")
        base = str(request.base_url).rstrip("/") + PREFIX
        return JSONResponse({
            "issuer": f"{base}/op/v1", "authorization_endpoint": f"{base}/connect/oauth2",
            "token_endpoint": f"{base}/oauth2/v1/tokens/bearer",
            "userinfo_endpoint": f"{base}/v1/openid_connect/userinfo",
            "revocation_endpoint": f"{base}/v2/oauth2/tokens/revoke", "jwks_uri": f"{base}/op/v1/jwks",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile", "address", "phone"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"]})

    def client_ok(self, request: Request, params: dict | None = None) -> bool:
        """HTTP Basic client authentication (client_id:client_secret), as intuit-oauth sends it."""
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("basic "):
            return False
        try:
            cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return False
        return secrets.compare_digest(cid, CLIENT_ID) and secrets.compare_digest(secret, CLIENT_SECRET)

    def redeem_code(self, params: dict) -> int | None:
        row = self.db.execute("SELECT * FROM quickbooks_codes WHERE code = ?", (str(params.get("code")),)).fetchone()
        if not row or row["used"] or row["expires"] <= time.time() or row["redirect_uri"] != params.get(
                "redirect_uri"):
            return None
        self.db.execute("UPDATE quickbooks_codes SET used = 1 WHERE code = ?", (row["code"],))
        return self.db.execute("INSERT INTO quickbooks_grants (realm_id) VALUES (?)", (row["realm_id"],)).lastrowid

    def redeem_refresh(self, params: dict) -> int | None:
        """Refresh tokens rotate: a used one is refused (invalid_grant)."""
        row = self.db.execute(
            "SELECT t.*, g.revoked FROM quickbooks_tokens t JOIN quickbooks_grants g ON g.id = t.grant_id "
            "WHERE t.token_hash = ? AND t.kind = 'refresh'", (_hash(str(params.get("refresh_token"))),)).fetchone()
        if not row or row["used"] or row["revoked"] or row["expires"] <= time.time():
            return None
        self.db.execute("UPDATE quickbooks_tokens SET used = 1 WHERE token_hash = ?", (row["token_hash"],))
        return row["grant_id"]

    def refresh_login(self, params: dict) -> str | None:
        row = self.db.execute(
            "SELECT c.login FROM quickbooks_tokens t JOIN quickbooks_grants g ON g.id = t.grant_id JOIN "
            "quickbooks_companies c ON c.realm_id = g.realm_id WHERE t.token_hash = ?",
            (_hash(str(params.get("refresh_token"))),)).fetchone()
        return row[0] if row else None

    def issue(self, request: Request, grant: int, params: dict) -> dict:
        access, refresh, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time()
        insert = "INSERT INTO quickbooks_tokens (token_hash, kind, grant_id, expires) VALUES (?, ?, ?, ?)"
        self.db.execute(insert, (_hash(access), "access", grant, now + self.ctx.access_ttl))
        self.db.execute(insert, (_hash(refresh), "refresh", grant, now + REFRESH_TTL))
        return {"token_type": "bearer", "access_token": access, "expires_in": int(self.ctx.access_ttl),
                "refresh_token": refresh, "x_refresh_token_expires_in": REFRESH_TTL}

    async def revoke(self, request: Request) -> Response:
        """Intuit's revoke endpoint: {"token": <access or refresh token>} revokes the grant."""
        self.ctx.count(SYSTEM, "POST", f"{PREFIX}/oauth2/v1/tokens/revoke", "revoke")
        if not self.client_ok(request):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        try:
            token = (await oauth_params(request)).get("token", "")
        except ValueError:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        self.db.execute("UPDATE quickbooks_grants SET revoked = 1 WHERE id IN "
                        "(SELECT grant_id FROM quickbooks_tokens WHERE token_hash = ?)", (_hash(str(token)),))
        return Response(status_code=200)

    def _realm_for_token(self, token: str) -> str | None:
        row = self.db.execute(
            "SELECT g.realm_id FROM quickbooks_tokens t JOIN quickbooks_grants g ON g.id = t.grant_id "
            "WHERE t.token_hash = ? AND t.kind = 'access' AND t.expires > ? AND g.revoked = 0",
            (_hash(token), time.time())).fetchone()
        return row[0] if row else None

    # -- the request path's hooks (base.Emulator.api runs them in order) ----------------------------------------
    def segments(self, call: Call) -> list[str]:
        """The path after /v3/company/{realmId}/ as Starlette decodes it (an encoded "/" splits an id)."""
        return [p for p in call.request.path_params["path"].split("/") if p]

    def is_write(self, call: Call) -> bool:
        """POST /query carries the query as the body with Content-Type application/text, as python-quickbooks
        sends it (QuickBooks.query) and Intuit's query reference documents; it is a read, not a write."""
        return call.method == "POST" and call.parts != ["query"]

    def endpoint(self, call: Call) -> str:
        route = f"{PREFIX}/v3/company/{{realmId}}/" + "/".join(call.parts[:1] + (["{id}"] if len(call.parts) > 1
                                                                                 else []))
        if call.is_write and call.query.get("operation"):
            route += f"?operation={call.query['operation']}"
        return route

    def authenticate(self, call: Call) -> str:
        """The bearer token's realm; the gateway answers 401 (3200) for a bad token and 403 (3100) for a token of
        another realm (module docstring)."""
        auth = call.request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        token_realm = self._realm_for_token(token) if token else None
        if token_realm is None:
            raise _unauthenticated("Token expired, revoked or invalid")
        if token_realm != call.request.path_params["realm"]:
            raise GatewayFault(403, "3100", "message=AuthorizationFailed; errorCode=003100; statusCode=403", "",
                               fault_type="SERVICE")
        return token_realm

    def limits(self, call: Call) -> None:
        """At most MAX_CONCURRENT requests in flight per realm, PER_REALM_MINUTE requests a minute with each batch
        item metered as one, BATCH_PER_REALM_MINUTE batch calls a minute (429 ThrottleExceeded, 003001)."""
        realm = call.principal
        if self.ctx.limits.enabled and self.inflight[realm] >= MAX_CONCURRENT:
            raise Fault(429, _THROTTLE[1], _THROTTLE[0], "Too many concurrent requests for this realm",
                        fault_type="ThrottleExceeded")
        self.inflight[realm] += 1

        def release() -> None:
            self.inflight[realm] -= 1
        call.cleanups.append(release)
        batch = call.parts == ["batch"] and call.is_write
        body = call.body
        items = len(body.get("BatchItemRequest") or []) if batch and isinstance(body, dict) else 1
        quotas = [(("r", realm), PER_REALM_MINUTE, 60, max(1, items))]
        if batch:
            quotas.append((("b", realm), BATCH_PER_REALM_MINUTE, 60))
        if self.windows.take(quotas):
            raise Fault(429, _THROTTLE[1], _THROTTLE[0], "The request limit was reached.",
                        fault_type="ThrottleExceeded")

    def parse_body(self, call: Call) -> Any:
        """A query's body is its text (application/text); a write's is exact JSON."""
        if call.parts == ["query"] and call.method == "POST":
            return call.raw.decode("utf-8", errors="replace")
        return super().parse_body(call) if call.is_write else None

    def error_payload(self, err: Exception) -> tuple[int, Any, dict[str, str]]:
        """Intuit's Fault shapes (module docstring); an injected 401 comes from the gateway, a 5xx as SystemFault."""
        if isinstance(err, Problem):
            err = {"unauthorized": lambda: _unauthenticated("Token invalid"),
                   "server_error": lambda: Fault(err.status, "10000", "An application error has occurred while "
                                                 "processing your request", "System Failure Error: injected",
                                                 fault_type="SystemFault"),
                   "malformed_body": lambda: _validation("2020", "Request has invalid or unsupported property",
                                                         f"malformed JSON: {err.detail}")}[err.kind]()
        assert isinstance(err, Fault)
        return err.status, err.body(), {}

    def respond(self, call: Call, status: int, payload: Any) -> Response:
        call.headers["intuit_tid"] = secrets.token_hex(8)  # every answer carries Intuit's transaction id
        return super().respond(call, status, payload)

    def dispatch(self, call: Call) -> tuple[int, Any]:
        realm, method, parts, q, body = call.principal, call.method, call.parts, call.query, call.body
        if parts == ["query"]:
            text = q.get("query") if method == "GET" else body
            return 200, {"QueryResponse": self.query(realm, text or ""), "time": _time()}
        if method == "GET" and parts == ["preferences"]:
            return 200, {"Preferences": self.preferences(realm), "time": _time()}
        if method == "GET" and len(parts) == 2 and parts[0] == "journalentry":
            entry = self._entry(realm, parts[1])
            if entry is None:
                raise self._not_found(parts[1])
            return 200, {"JournalEntry": self.render(entry), "time": _time()}
        if method == "GET" and len(parts) == 2 and parts[0] == "account":
            row = self.db.execute("SELECT * FROM quickbooks_accounts WHERE realm_id = ? AND id = ?",
                                  (realm, parts[1])).fetchone()
            if row is None:
                raise self._not_found(parts[1])
            return 200, {"Account": self.render_account(row), "time": _time()}
        if method == "POST" and parts in (["journalentry"], ["batch"]):
            if not isinstance(body, dict):
                raise _validation("2020", "Required param missing, need to supply the required value for the API",
                                  "Required parameter body is missing in the request")
            request_id = q.get("requestid")
            if request_id is not None and not 0 < len(request_id) <= MAX_REQUEST_ID:
                raise _validation("2010", "Request has invalid or unsupported property",
                                  f"requestid must be 1 to {MAX_REQUEST_ID} characters")
            stored = self._stored(realm, request_id)
            if stored is not None:
                self.replays[realm] += 1
                return stored
            if parts == ["batch"]:
                return self.batch(realm, body, request_id)
            return self._write(realm, request_id, lambda: self.write_entry(realm, q.get("operation"), body))
        if method == "GET":  # no such resource (an id with a slash in it reaches here decoded into more segments)
            raise Fault(404, "404", "Resource not found", f"GET {'/'.join(parts)}: no such resource",
                        fault_type="ValidationFault")
        raise Fault(400, "2010", "Unsupported Operation", f"{method} {'/'.join(parts)} is not supported")

    # -- idempotency ------------------------------------------------------------------------------------------
    def _stored(self, realm: str, request_id: str | None) -> tuple[int, Any] | None:
        if not request_id:
            return None
        row = self.db.execute("SELECT status, body FROM quickbooks_requests WHERE realm_id = ? AND request_id = ?",
                              (realm, request_id)).fetchone()
        return (row["status"], loads_exact(row["body"])) if row else None

    def _write(self, realm: str, request_id: str | None, fn: Any) -> tuple[int, Any]:
        """One write and its stored response in one transaction."""
        with transaction(self.db, "IMMEDIATE") as db:
            status, payload = fn()
            if request_id:
                db.execute("INSERT INTO quickbooks_requests (realm_id, request_id, status, body) VALUES (?, ?, ?, ?)",
                           (realm, request_id, status, dumps_exact(payload)))
        return status, payload

    def batch(self, realm: str, body: dict, request_id: str | None) -> tuple[int, Any]:
        items = body.get("BatchItemRequest")
        if not isinstance(items, list) or not items:
            raise _validation("2020", "Required param missing, need to supply the required value for the API",
                              "Required parameter BatchItemRequest is missing in the request")
        if len(items) > MAX_BATCH:
            raise _validation("1000", "Batch size exceeded",
                              f"BatchItemRequest has {len(items)} items; the maximum is {MAX_BATCH}")
        with transaction(self.db, "IMMEDIATE") as db:
            out = []
            for item in items:
                bid = str(item.get("bId", ""))
                key = f"{request_id}:{bid}" if request_id else None
                stored = self._stored(realm, key)
                if stored is not None:
                    self.replays[realm] += 1
                    out.append(stored[1])
                    continue
                db.execute("SAVEPOINT item")
                try:
                    if "JournalEntry" not in item:
                        raise _validation("2010", "Unsupported Operation", "only JournalEntry items are emulated")
                    op = item.get("operation", "create")
                    _, payload = self.write_entry(realm, op if op != "create" else None, item["JournalEntry"])
                    result = {"bId": bid, **{k: v for k, v in payload.items() if k != "time"}}
                    if key:
                        db.execute("INSERT INTO quickbooks_requests (realm_id, request_id, status, body) "
                                   "VALUES (?, ?, 200, ?)", (realm, key, dumps_exact(result)))
                    db.execute("RELEASE item")
                except Fault as fault:
                    db.execute("ROLLBACK TO item")
                    db.execute("RELEASE item")
                    result = {"bId": bid, "Fault": {"Error": [fault.error()], "type": fault.fault_type}}
                out.append(result)
            payload = {"BatchItemResponse": out, "time": _time()}
            if request_id:
                db.execute("INSERT INTO quickbooks_requests (realm_id, request_id, status, body) VALUES (?, ?, 200, ?)",
                           (realm, request_id, dumps_exact(payload)))
        return 200, payload

    # -- journal entries --------------------------------------------------------------------------------------
    def _home(self, realm: str) -> tuple[str, bool]:
        row = self.company_by_id(realm)
        return row["home_currency"] or DEFAULT_CURRENCY, bool(row["multicurrency"])

    def preferences(self, realm: str) -> dict:
        """The Preferences entity's currency part (developer.intuit.com accounting API, Preferences:
        CurrencyPrefs.HomeCurrency {value}, CurrencyPrefs.MultiCurrencyEnabled)."""
        home, multi = self._home(realm)
        closed = self._closed_date(realm)  # AccountingInfoPrefs.BookCloseDate: the "Closing date" (yyyy-mm-dd)
        return {"CurrencyPrefs": {"HomeCurrency": {"value": home}, "MultiCurrencyEnabled": multi},
                "AccountingInfoPrefs": {"BookCloseDate": closed.isoformat()} if closed else {},
                "domain": "QBO", "sparse": False, "Id": "1", "SyncToken": "0"}

    def _currency(self, realm: str, je: dict) -> tuple[str, str | None]:
        """(currency, ExchangeRate as text or None) of a JournalEntry body: CurrencyRef.value (default the home
        currency). A foreign currency needs multicurrency and an ExchangeRate > 0 (JournalEntry.CurrencyRef,
        .ExchangeRate: "the number of home currency units it takes to equal one unit of currency specified by
        CurrencyRef"; a home-currency entry's rate is 1)."""
        home, multi = self._home(realm)
        ref = je.get("CurrencyRef")
        code = str((ref.get("value") if isinstance(ref, dict) else ref) or home).upper()
        if currency_problem(code) is not None:
            raise _validation("2500", "Invalid Reference Id",
                              f"Invalid Reference Id : Currency element id {code} not found", "CurrencyRef")
        rate = je.get("ExchangeRate")
        if code == home:
            return code, None
        if not multi:
            raise _validation("6000", "A business validation error has occurred while processing your request",
                              f"Business Validation Error: the transaction currency {code} is not the home "
                              f"currency {home} and multicurrency is not enabled for this company.", "CurrencyRef")
        try:
            dec = Decimal(str(rate)) if rate is not None and not isinstance(rate, bool | float) else None
        except InvalidOperation:
            dec = None
        if dec is None or not dec.is_finite() or dec <= 0:
            raise _validation("2020", "Required param missing, need to supply the required value for the API",
                              f"Required parameter ExchangeRate is missing or invalid for a {code} transaction in a "
                              f"{home} company (got {rate!r})", "ExchangeRate")
        return code, str(dec)

    def _entry(self, realm: str, entry_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM quickbooks_entries WHERE realm_id = ? AND id = ?",
                              (realm, str(entry_id))).fetchone()
        return dict(row) if row else None

    @staticmethod
    def _not_found(what: str) -> Fault:
        return _validation("610", "Object Not Found",
                           f"Object Not Found : Something you're trying to use has been made inactive. Check the "
                           f"fields with accounts, customers, items, vendors or employees. (Id {what})")

    def _check_closed(self, realm: str, date: dt.date) -> None:
        closed = self._closed_date(realm)
        if closed and date <= closed:
            # 6210 "Account Period Closed" with Intuit's detail text (Intuit blog "Top QuickBooks Online API
            # errors", 2017-06-08; the same words reach users of Synder, AutoEntry, LeanLaw)
            raise _validation("6210", "Account Period Closed",
                              "The account period has closed and the account books cannot be updated through "
                              "the QBO Services API. Please use the QBO website to make these changes. (Books "
                              f"closed through {closed.isoformat()}.)")

    def _check_duplicate(self, realm: str, doc: str | None, entry_id: str | None) -> None:
        """QuickBooks accepts a repeated DocNumber unless the company turned on the duplicate-number warning; then
        it answers 6210 "Duplicate Document Number Error" (Intuit blog "Top QuickBooks Online API errors",
        2017-06-08, row 2; Intuit's "Handling common errors" page lists the same refusal as 6140 "Duplicate Doc
        Num": clients match the message)."""
        if not doc:
            return
        row = self.db.execute("SELECT warn_duplicate_doc FROM quickbooks_companies WHERE realm_id = ?",
                              (realm,)).fetchone()
        if not row or not row[0]:
            return
        other = self.db.execute("SELECT id FROM quickbooks_entries WHERE realm_id = ? AND doc_number = ? AND id != ? "
                                "LIMIT 1", (realm, doc, entry_id or "")).fetchone()
        if other is not None:
            raise _validation("6210", "Duplicate Document Number Error",
                              "Duplicate Document Number Error : You must specify a different number. This number "
                              f"has already been used. DocNumber={doc} is assigned to TxnType=Journal Entry with "
                              f"TxnId={other[0]}", "DocNumber")

    def _parse_entry(self, realm: str, je: Any) -> dict:
        if not isinstance(je, dict):
            raise _validation("2020", "Required param missing, need to supply the required value for the API",
                              "Required parameter JournalEntry is missing in the request")
        try:
            date = dt.date.fromisoformat(str(je.get("TxnDate") or dt.date.today().isoformat()))
        except ValueError as exc:
            raise _validation("2010", "Request has invalid or unsupported property",
                              f"TxnDate {je.get('TxnDate')!r} is not a date", "TxnDate") from exc
        doc = je.get("DocNumber")
        if doc is not None and len(str(doc)) > 21:
            raise _validation("2050", "String length specified does not match the supported length",
                              f"Min:0 Max:21 supported. Supplied length:{len(str(doc))}", "DocNumber")
        currency, rate = self._currency(realm, je)
        places = minor_unit(currency)
        raw = je.get("Line")
        if not isinstance(raw, list) or not raw:
            raise _validation("2020", "Required param missing, need to supply the required value for the API",
                              "Required parameter Line is missing in the request", "Line")
        lines = []
        for i, ln in enumerate(raw):
            detail = ln.get("JournalEntryLineDetail") if isinstance(ln, dict) else None
            if not isinstance(detail, dict) or ln.get("DetailType") != "JournalEntryLineDetail":
                raise _validation("2020", "Required param missing, need to supply the required value for the API",
                                  "Required parameter Line.JournalEntryLineDetail is missing in the request")
            posting = detail.get("PostingType")
            if posting not in ("Debit", "Credit"):
                raise _validation("2010", "Request has invalid or unsupported property",
                                  f"PostingType {posting!r} is not Debit or Credit", "PostingType")
            amount = ln.get("Amount")
            try:
                dec = Decimal(str(amount))
            except InvalidOperation as exc:
                raise _validation("2010", "Request has invalid or unsupported property",
                                  f"Amount {amount!r} is not a number", "Amount") from exc
            if (isinstance(amount, bool | float) or not dec.is_finite()
                    or dec != dec.quantize(Decimal(1).scaleb(-places))):
                raise _validation("2010", "Request has invalid or unsupported property",
                                  f"Amount {amount!r} must have at most {places} decimal places in {currency}",
                                  "Amount")
            if dec < 0:
                raise _validation("6000", "A business validation error has occurred while processing your request",
                                  "Business Validation Error: line amounts must be positive; the direction comes "
                                  "from PostingType")
            ref = (detail.get("AccountRef") or {}).get("value")
            acc = self.db.execute("SELECT * FROM quickbooks_accounts WHERE realm_id = ? AND id = ?",
                                  (realm, str(ref))).fetchone()
            if acc is None:
                raise _validation("2500", "Invalid Reference Id",
                                  f"Invalid Reference Id : Accounts element id {ref} not found", "AccountRef")
            if not acc["active"]:
                raise _validation("610", "Object Not Found",
                                  f"Object Not Found : Something you're trying to use has been made inactive. "
                                  f"Check the fields with accounts (Account {ref}: {acc['name']}).", "AccountRef")
            lines.append({"Id": str(i), "Description": ln.get("Description"), "amount_minor": to_minor(dec, currency),
                          "PostingType": posting, "account_id": str(ref)})
        debit = sum(ln["amount_minor"] for ln in lines if ln["PostingType"] == "Debit")
        credit = sum(ln["amount_minor"] for ln in lines if ln["PostingType"] == "Credit")
        if debit != credit:
            raise _validation("6000", "A business validation error has occurred while processing your request",
                              f"Business Validation Error: Transactions must be in balance. Debits "
                              f"({from_minor(debit, currency)}) and credits ({from_minor(credit, currency)}) must "
                              f"be equal.")
        return {"txn_date": date, "currency": currency, "exchange_rate": rate,
                "doc_number": None if doc is None else str(doc),
                "private_note": je.get("PrivateNote"), "adjustment": int(bool(je.get("Adjustment"))),
                "lines": lines}

    def write_entry(self, realm: str, operation: str | None, je: Any) -> tuple[int, dict]:
        """Create, full (or sparse) update, or delete one JournalEntry; the caller holds the transaction."""
        now = time.time()
        if operation == "delete" or (isinstance(je, dict) and je.get("Id") is not None) or operation == "update":
            if not isinstance(je, dict) or je.get("Id") is None or je.get("SyncToken") is None:
                raise _validation("2020", "Required param missing, need to supply the required value for the API",
                                  "Required parameter Id and SyncToken are missing in the request", "SyncToken")
            current = self._entry(realm, str(je["Id"]))
            if current is None:
                raise self._not_found(str(je["Id"]))
            if str(je["SyncToken"]) != str(current["sync_token"]):
                raise _validation("5010", "Stale Object Error",
                                  f"Stale Object Error : You and somebody else were working on JournalEntry "
                                  f"{je['Id']} at the same time; they finished first (SyncToken "
                                  f"{current['sync_token']}, you sent {je['SyncToken']}), so your work was not saved.")
            self._check_closed(realm, dt.date.fromisoformat(current["txn_date"]))
            if operation == "delete":
                self.db.execute("DELETE FROM quickbooks_entries WHERE realm_id = ? AND id = ?", (realm, current["id"]))
                return 200, {"JournalEntry": {"Id": current["id"], "status": "Deleted", "domain": "QBO"},
                             "time": _time()}
            if je.get("sparse"):
                merged = {"TxnDate": current["txn_date"], "DocNumber": current["doc_number"],
                          "PrivateNote": current["private_note"], "Adjustment": bool(current["adjustment"]),
                          **{k: v for k, v in self.render(current).items() if k in ("Line", "CurrencyRef",
                                                                                     "ExchangeRate")}, **je}
                je = merged
            parsed = self._parse_entry(realm, je)
            self._check_closed(realm, parsed["txn_date"])
            self._check_duplicate(realm, parsed["doc_number"], current["id"])
            self.db.execute(
                "UPDATE quickbooks_entries SET sync_token = sync_token + 1, doc_number = ?, private_note = ?, "
                "txn_date = ?, adjustment = ?, lines = ?, updated = ?, currency = ?, exchange_rate = ? "
                "WHERE realm_id = ? AND id = ?",
                (parsed["doc_number"], parsed["private_note"], parsed["txn_date"].isoformat(), parsed["adjustment"],
                 json.dumps(parsed["lines"]), now, parsed["currency"], parsed["exchange_rate"], realm, current["id"]))
            return 200, {"JournalEntry": self.render(self._entry(realm, current["id"])), "time": _time()}
        parsed = self._parse_entry(realm, je)
        self._check_closed(realm, parsed["txn_date"])
        self._check_duplicate(realm, parsed["doc_number"], None)
        entry_id = self._next_id(realm, "entry")
        self.db.execute(
            "INSERT INTO quickbooks_entries (realm_id, id, sync_token, doc_number, private_note, txn_date, "
            "adjustment, lines, created, updated, currency, exchange_rate) VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (realm, entry_id, parsed["doc_number"], parsed["private_note"], parsed["txn_date"].isoformat(),
             parsed["adjustment"], json.dumps(parsed["lines"]), now, now, parsed["currency"],
             parsed["exchange_rate"]))
        return 200, {"JournalEntry": self.render(self._entry(realm, entry_id)), "time": _time()}

    def render(self, e: dict) -> dict:
        lines = json.loads(e["lines"])
        cur = e.get("currency") or DEFAULT_CURRENCY  # an entry stored before currencies: the old default, 2 decimals
        names = {r["id"]: r["name"] for r in self.db.execute(
            "SELECT id, name FROM quickbooks_accounts WHERE realm_id = ?", (e["realm_id"],))}
        stamp = lambda t: dt.datetime.fromtimestamp(t or 0, dt.UTC).isoformat()  # noqa: E731
        out: dict[str, Any] = {
            "Adjustment": bool(e["adjustment"]), "domain": "QBO", "sparse": False, "Id": e["id"],
            "SyncToken": str(e["sync_token"]),
            "MetaData": {"CreateTime": stamp(e["created"]), "LastUpdatedTime": stamp(e["updated"])},
            "TxnDate": e["txn_date"], "CurrencyRef": {"value": cur},
            "Line": [{"Id": ln["Id"], "Description": ln.get("Description"), "Amount":
                      from_minor(ln["amount_minor"], cur),
                      "DetailType": "JournalEntryLineDetail",
                      "JournalEntryLineDetail": {"PostingType": ln["PostingType"],
                                                 "AccountRef": {"value": ln["account_id"],
                                                                "name": names.get(ln["account_id"], "")}}}
                     for ln in lines],
            "TxnTaxDetail": {},
            "TotalAmt": from_minor(sum(ln["amount_minor"] for ln in lines if ln["PostingType"] == "Debit"), cur),
        }
        if e.get("exchange_rate") is not None:
            out["ExchangeRate"] = Decimal(e["exchange_rate"])
        if e["doc_number"] is not None:
            out["DocNumber"] = e["doc_number"]
        if e["private_note"] is not None:
            out["PrivateNote"] = e["private_note"]
        return out

    def render_account(self, r: Any) -> dict:
        return {"Id": r["id"], "Name": r["name"], "AcctNum": r["acct_num"], "FullyQualifiedName": r["name"],
                "SubAccount": False, "AccountType": r["account_type"], "Classification": r["classification"],
                "Active": bool(r["active"]), "CurrentBalance": Decimal("0"), "SyncToken": str(r["sync_token"]),
                "CurrencyRef": {"value": self._home(r["realm_id"])[0]}, "domain": "QBO", "sparse": False}

    # -- query ------------------------------------------------------------------------------------------------
    def query(self, realm: str, text: str) -> dict:
        m = _QUERY.match(text)
        if not m:
            raise _parse_error(f"in {text[:60]!r}")
        entity = m.group("entity").lower()
        if entity not in _FIELDS:
            raise _parse_error(f"entity {m.group('entity')} is not emulated")
        conds = _parse_where(entity, m.group("where"))
        table = "quickbooks_entries" if entity == "journalentry" else "quickbooks_accounts"
        sql, args = [f"SELECT * FROM {table} WHERE realm_id = ?"], [realm]
        if entity == "account" and not any(c[0] == "active" for c in conds):
            sql.append("AND active = 1")  # name lists return active objects only unless asked
        for col, op, value in conds:
            if op == "in":
                sql.append(f"AND {col} IN ({','.join('?' * len(value))})")
                args += value
            else:
                sql.append(f"AND {col} {op} ?")
                args.append(value)
        sql.append("ORDER BY CAST(id AS INTEGER)")
        rows = self.db.execute(" ".join(sql), args).fetchall()
        if entity == "journalentry" and realm in self.ignore_filters and conds:
            # the hostile mode (/_sandbox/quickbooks/companies/<login>/search {"ignore_filters": true}): the where
            # clause is ignored and the entries that do not match it come first, so a client that trusts a
            # search's first row adopts someone else's entry
            matching = {r["id"] for r in rows}
            every = self.db.execute(f"SELECT * FROM {table} WHERE realm_id = ? ORDER BY CAST(id AS INTEGER)",
                                    (realm,)).fetchall()
            rows = [r for r in every if r["id"] not in matching] + [r for r in every if r["id"] in matching]
        name = "JournalEntry" if entity == "journalentry" else "Account"
        if m.group("cols").lower().startswith("count"):
            return {"totalCount": len(rows)}
        start = max(1, int(m.group("start") or 1))
        size = min(MAX_RESULTS, max(1, int(m.group("max") or 100)))
        page = rows[start - 1 : start - 1 + size]
        if not page:
            return {}
        render = self.render if entity == "journalentry" else self.render_account
        return {name: [render(dict(r)) if entity == "journalentry" else render(r) for r in page],
                "startPosition": start, "maxResults": len(page)}

    # -- inspection and controls (/_sandbox) ------------------------------------------------------------------
    def inspect_entries(self, login: str | None) -> list[dict]:
        logins = {r["realm_id"]: r["login"]
                  for r in self.db.execute("SELECT realm_id, login FROM quickbooks_companies")}
        sql, args = "SELECT * FROM quickbooks_entries", []
        if login:
            company = self.company_by_login(login)
            if company is None:
                return []
            sql, args = sql + " WHERE realm_id = ?", [company["realm_id"]]
        out = []
        for e in self.db.execute(sql + " ORDER BY realm_id, CAST(id AS INTEGER)", args).fetchall():
            note = e["private_note"] or ""
            out.append(inspected(
                # our id as QuickBooks stores it: the PrivateNote's first part (DocNumber is at most 21 characters)
                SYSTEM, logins.get(e["realm_id"]), note.split(" | ")[0] if note else e["doc_number"], "posted",
                e["txn_date"],
                [(ln["amount_minor"] if ln["PostingType"] == "Debit" else 0,
                  ln["amount_minor"] if ln["PostingType"] == "Credit" else 0, ln["account_id"], {"id": ln["Id"]})
                 for ln in json.loads(e["lines"])], e["currency"] or DEFAULT_CURRENCY,
                exchange_rate=None if e["exchange_rate"] is None else Decimal(e["exchange_rate"]),
                realm_id=e["realm_id"], id=e["id"], sync_token=str(e["sync_token"]), doc_number=e["doc_number"],
                private_note=e["private_note"]))
        return out

    def do_lock_date(self, realm: str, body: dict) -> None:
        """QuickBooks' "close the books" date."""
        self.db.execute("UPDATE quickbooks_companies SET closed_date = ? WHERE realm_id = ?",
                        (body.get("lock_date"), realm))

    def do_revoke(self, realm: str, body: dict) -> None:
        self.db.execute("UPDATE quickbooks_grants SET revoked = 1 WHERE realm_id = ?", (realm,))

    def do_preferences(self, realm: str, body: dict) -> None:
        """{"warn_duplicate_doc_number": true}: 6210 on a repeated DocNumber; {"home_currency": "USD"} (an ISO 4217
        code), {"multicurrency": true}: what GET /preferences answers and what JournalEntry writes are held to."""
        write_company_currency(self.db, body, "quickbooks_companies", "realm_id", realm, "home_currency")
        if "warn_duplicate_doc_number" in body:
            self.db.execute("UPDATE quickbooks_companies SET warn_duplicate_doc = ? WHERE realm_id = ?",
                            (int(bool(body["warn_duplicate_doc_number"])), realm))

    def do_search(self, realm: str, body: dict) -> dict:
        """{"ignore_filters": true}: queries ignore their where clause, the others first."""
        if body.get("ignore_filters"):
            self.ignore_filters.add(realm)
        else:
            self.ignore_filters.discard(realm)
        return {"ok": True, "realm_id": realm, "ignore_filters": realm in self.ignore_filters}

    def do_requests(self, realm: str, body: dict) -> dict:
        """The idempotency store's counts, for tests."""
        stored = self.db.execute("SELECT COUNT(*) FROM quickbooks_requests WHERE realm_id = ?", (realm,)).fetchone()
        return {"stored": stored[0], "replayed": self.replays[realm], "realm_id": realm}

    def do_accounts(self, realm: str, body: dict) -> dict:
        row = self.db.execute("SELECT id FROM quickbooks_accounts WHERE realm_id = ? AND acct_num = ?",
                              (realm, body["number"])).fetchone()
        if row is None:
            with transaction(self.db):
                account_id = self._next_id(realm, "account")
                self.db.execute("INSERT INTO quickbooks_accounts (realm_id, id, acct_num, name, account_type, "
                                "classification, active) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (realm, account_id, body["number"], body.get("name", body["number"]),
                                 *_account_type(str(body["number"])), int(not body.get("archived"))))
            return {"ok": True, "id": account_id}
        if "name" in body:
            self.db.execute("UPDATE quickbooks_accounts SET name = ?, sync_token = sync_token + 1 WHERE realm_id = ? "
                            "AND id = ?", (body["name"], realm, row["id"]))
        if "archived" in body:
            self.db.execute("UPDATE quickbooks_accounts SET active = ?, sync_token = sync_token + 1 "
                            "WHERE realm_id = ? AND id = ?", (int(not body["archived"]), realm, row["id"]))
        return {"ok": True, "id": row["id"]}

    def do_entries(self, realm: str, body: dict) -> dict:
        """A person in QuickBooks' UI: create, delete, scale a line (unbalances), or touch (SyncToken advances)."""
        db = self.db
        if body.get("create"):
            status, payload = self._write(realm, None, lambda: self.write_entry(realm, None, body["create"]))
            return {"ok": True, "id": payload["JournalEntry"]["Id"]}
        cid = str(body.get("custom_id"))
        rows = [dict(r) for r in db.execute("SELECT * FROM quickbooks_entries WHERE realm_id = ? "
                                            "ORDER BY CAST(id AS INTEGER)", (realm,))
                if (r["private_note"] or "").split(" | ")[0] == cid]
        if not rows:
            raise ValueError(f"no entry for {cid}")
        e = rows[0]
        if body.get("delete"):
            db.execute("DELETE FROM quickbooks_entries WHERE realm_id = ? AND id = ?", (realm, e["id"]))
            return {"ok": True, "id": e["id"]}
        if "doc_number" in body or "private_note" in body:  # a person rewrites the key fields
            db.execute("UPDATE quickbooks_entries SET doc_number = ?, private_note = ?, sync_token = sync_token + 1, "
                       "updated = ? WHERE realm_id = ? AND id = ?",
                       (body.get("doc_number", e["doc_number"]), body.get("private_note", e["private_note"]),
                        time.time(), realm, e["id"]))
            return {"ok": True, "id": e["id"], "sync_token": str(e["sync_token"] + 1)}
        lines = json.loads(e["lines"])
        if body.get("scale_line"):
            lines[0]["amount_minor"] *= int(body["scale_line"])
        if body.get("touch") or body.get("description"):
            lines[0]["Description"] = body.get("description") or f"{lines[0].get('Description') or ''} (checked)"
        db.execute("UPDATE quickbooks_entries SET lines = ?, sync_token = sync_token + 1, updated = ? "
                   "WHERE realm_id = ? AND id = ?", (json.dumps(lines), time.time(), realm, e["id"]))
        return {"ok": True, "id": e["id"], "sync_token": str(e["sync_token"] + 1)}


def make(ctx: SandboxContext) -> QuickBooksEmulator:
    return QuickBooksEmulator(ctx)
