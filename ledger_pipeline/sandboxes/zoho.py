"""The Zoho Books sandbox: a local server that behaves like Zoho Books' v3 API and Zoho's OAuth2 accounts server.

Paths, bodies, status codes and error shapes follow ../shared/reference/accounting_apis.md section 2 and seed 001:
- OAuth2 at `/zoho/oauth/v2/auth` (auto-approves a `login_hint`, `access_type=offline` for a refresh token) and
  `/zoho/oauth/v2/token` (form or query params). The token reply carries `api_domain` (this sandbox's URL + prefix);
  refresh tokens never rotate (a refresh reply has no refresh_token) and at most 20 live per company (the 21st
  evicts the oldest); about 10 access tokens per 10 minutes per refresh token; errors come as HTTP 200
  `{"error": "invalid_code"}` the way Zoho's accounts server answers.
- API at `/zoho/books/v3`: `Authorization: Zoho-oauthtoken <token>`, the organization on every call but
  `/organizations`, as the `organization_id` query parameter (zoho.com/books/api/v3 introduction) or the
  `X-com-zoho-books-organizationid` header; replies `{code, message, ...}` with code 0 for success
  (zoho.com/books/api/v3/errors), journals with `line_items` (`amount` positive + `debit_or_credit`), no
  idempotency key (`reference_number` is free text of at most 100 characters, not unique), `page`/`per_page`
  paging with `page_context.has_more_page`, chart of accounts with `filter_by`.
- Journal search (GET /journals, seed 001 and zoho/books-java-wrappers JournalsApi): reference_number, date,
  date_start/date_end/date_before/date_after, reference_number_startswith, and `filter_by` JournalDate.All / Today /
  ThisWeek / ThisMonth / ThisQuarter / ThisYear. Without filter_by the list covers this year only (seed 001's sample
  answer: `applied_filter: JournalDate.ThisYear`; see DEFAULT_JOURNAL_FILTER), on the organization's clock.
- An update's `line_id` must name a line of that journal (else 400 code 4 "Invalid value passed for line_id", a
  reading Zoho does not document).
- Limits (when enabled, time-scaled): 100 requests/min per organization (429, code 45) and a daily cap per plan
  (Free 1,000 / Standard 2,000 / Professional 5,000 / Premium+ 10,000 per day, Zoho KB "per-day API limit"; kept in
  the state file; 429 "API usage limit exceeded", which is all Zoho documents, with the per-minute limit's code 45
  and a message that names the day). Transaction locking: 400 code 4083 for dates on or before the company's lock
  date; GET /transactionlocks lists the lock (www.zoho.com/books/api/v3/transaction-locking/, "List transaction
  locks").
- Controls (`POST /_sandbox/zoho/companies/<login>/<action>`): `lock_date`, `revoke`, `accounts`, `entries` (a
  person's edit: {"create": journal}, or {"custom_id"} with "delete", "scale_line", "clear_custom_id",
  "reference_number", "replace_lines"), `plan` {"plan", "daily_cap", "reset_usage"}, `clock` {"today":
  "YYYY-MM-DD" | null} (the organization's date, for the filter_by windows and the daily cap), `search`
  {"ignore_filters": bool} (a hostile mode: journal searches ignore their filters and list the journals that do not
  match them first), `scope` {"scope"} (what later token replies grant), `currency` {"home_currency": "IDR",
  "multicurrency": bool} (the organization's base currency,
  default IDR, and whether it has added other currencies, default on).
- Currencies (www.zoho.com/books/api/v3/organizations/ `currency_code`; /settings/currencies, www.zoho.com/books/api
  /v3/currency/#list-currencies; journals' `currency_id` + `exchange_rate`, www.zoho.com/books/api/v3/journals/
  #create-a-journal): GET /organizations answers the base currency; GET /settings/currencies lists the base
  currency (is_base_currency) and, with multicurrency on, every other ISO 4217 currency as added (this emulation adds
  them all; a real organization adds them one by one), each with a fixed currency_id and its price_precision (the
  ISO 4217 minor unit). A journal without currency_id is in the base currency; a currency_id not listed is 400 code 4
  "Invalid value passed for currency_id"; a foreign one needs exchange_rate > 0 (else 400 code 4, "Invalid value
  passed for exchange_rate"); amounts finer than the currency's precision are 400 code 4 (never rounded). Each
  journal keeps and returns currency_id, currency_code, exchange_rate, price_precision and bcy_total (total x rate,
  in the base currency's precision).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger_pipeline import clock
from ledger_pipeline.money import CURRENCIES, from_minor, minor_unit, quantum, to_minor
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
from ledger_pipeline.sandboxes.chart import DEFAULT_CHART
from ledger_pipeline.sandboxes.oauth import OAuthServer, approve, oauth_params, redirect_to

SYSTEM = "zoho"
FULL_SCOPE = "ZohoBooks.fullaccess.all"  # what a grant gives unless the `scope` control narrows it
PREFIX = "/zoho"
API = PREFIX + "/books/v3"
OAUTH = PREFIX + "/oauth/v2"
SANDBOX_CLIENT_ID = "1000.LEDGERPIPELINESANDBOX"
SANDBOX_CLIENT_SECRET = "zoho-sandbox-secret-not-for-production"  # noqa: S105 - a public sandbox value
PER_MINUTE = 100  # requests per minute per organization
PLANS = {"free": 1000, "standard": 2000, "professional": 5000, "premium": 10000, "elite": 10000, "ultimate": 10000}
DEFAULT_PLAN = "standard"
MAX_REFRESH_TOKENS = 20  # per user: the 21st silently invalidates the oldest
TOKENS_PER_REFRESH = 10  # access tokens per refresh token per 10 minutes
ID_BASE = 460000000000000  # Zoho's ids are long numbers, sent as strings

# Jurnal's default chart categories -> Zoho's account_type values
ACCOUNT_TYPES = {
    "Kas & Bank": "bank", "Akun Piutang": "accounts_receivable", "Persediaan": "stock",
    "Aktiva Lancar Lainnya": "other_current_asset", "Aktiva Tetap": "fixed_asset",
    "Depresiasi & Amortisasi": "fixed_asset", "Akun Hutang": "accounts_payable",
    "Kewajiban Lancar Lainnya": "other_current_liability", "Ekuitas": "equity", "Pendapatan": "income",
    "Harga Pokok Penjualan": "cost_of_goods_sold", "Beban": "expense", "Pendapatan Lainnya": "other_income",
    "Beban Lainnya": "other_expense",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS zoho_orgs (organization_id TEXT PRIMARY KEY, login TEXT UNIQUE NOT NULL, name TEXT,
    lock_date TEXT, plan TEXT NOT NULL DEFAULT 'standard', daily_cap INTEGER, created_at REAL);
CREATE TABLE IF NOT EXISTS zoho_seq (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS zoho_accounts (account_id TEXT PRIMARY KEY, organization_id TEXT NOT NULL,
    account_code TEXT, account_name TEXT NOT NULL, account_type TEXT NOT NULL, is_active INTEGER NOT NULL DEFAULT 1,
    parent_account_id TEXT, last_modified_time REAL);
CREATE INDEX IF NOT EXISTS zoho_accounts_org ON zoho_accounts (organization_id, account_code);
CREATE TABLE IF NOT EXISTS zoho_codes (code_hash TEXT PRIMARY KEY, organization_id TEXT NOT NULL,
    client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL, offline INTEGER NOT NULL, expires_at REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS zoho_refresh (token_hash TEXT PRIMARY KEY, organization_id TEXT NOT NULL,
    created_at REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS zoho_access (token_hash TEXT PRIMARY KEY, organization_id TEXT NOT NULL,
    refresh_hash TEXT, expires_at REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS zoho_journals (journal_id TEXT PRIMARY KEY, organization_id TEXT NOT NULL,
    entry_number INTEGER NOT NULL, reference_number TEXT, notes TEXT, journal_date TEXT NOT NULL,
    status TEXT NOT NULL, journal_type TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS zoho_journals_org ON zoho_journals (organization_id, journal_date);
CREATE INDEX IF NOT EXISTS zoho_journals_ref ON zoho_journals (organization_id, reference_number);
CREATE TABLE IF NOT EXISTS zoho_lines (line_id TEXT PRIMARY KEY, journal_id TEXT NOT NULL, seq INTEGER NOT NULL,
    account_id TEXT NOT NULL, debit_or_credit TEXT NOT NULL, amount_minor INTEGER NOT NULL, description TEXT);
CREATE INDEX IF NOT EXISTS zoho_lines_journal ON zoho_lines (journal_id, seq);
CREATE TABLE IF NOT EXISTS zoho_usage (organization_id TEXT NOT NULL, day TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (organization_id, day));
"""


class ApiError(Exception):
    """An answer in Zoho's shape: HTTP status + {code, message}."""

    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _wall_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


# filter_by on GET /journals (seed 001, zoho/books-java-wrappers JournalsApi.getJournals): the journal-date windows
JOURNAL_FILTERS = ("JournalDate.All", "JournalDate.Today", "JournalDate.ThisWeek", "JournalDate.ThisMonth",
                   "JournalDate.ThisQuarter", "JournalDate.ThisYear")
# Without filter_by the list is narrower than "all dates". Zoho does not document the default; seed 001's own sample
# answer to a bare GET /journals says `"applied_filter": "JournalDate.ThisYear"` with start_date/end_date spanning
# the calendar year (CData's driver docs say the current month instead). This emulation applies ThisYear (the
# vendor's own sample), on the organization's clock, to every list call that names no filter_by, date range or not;
# clients that must see every date send filter_by=JournalDate.All.
DEFAULT_JOURNAL_FILTER = "JournalDate.ThisYear"


def journal_window(filter_by: str, today: dt.date) -> tuple[dt.date, dt.date] | None:
    """[start, end] of a JournalDate filter on `today` (None: every date). Weeks start on Sunday and quarters and
    years are calendar ones (an organization's own fiscal year is not emulated)."""
    if filter_by == "JournalDate.All":
        return None
    if filter_by == "JournalDate.Today":
        return today, today
    if filter_by == "JournalDate.ThisWeek":
        start = today - dt.timedelta(days=(today.weekday() + 1) % 7)
        return start, start + dt.timedelta(days=6)
    if filter_by == "JournalDate.ThisMonth":
        return clock.month_of(today), clock.month_end(today)
    if filter_by == "JournalDate.ThisQuarter":
        first = dt.date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
        return first, clock.month_end(clock.add_months(first, 2))
    return dt.date(today.year, 1, 1), dt.date(today.year, 12, 31)


def currency_id(code: str) -> str:
    """The fixed currency_id this emulation gives an ISO 4217 code (Zoho's ids are long numbers, as strings)."""
    return str(ID_BASE + 1 + sorted(CURRENCIES).index(code))


_CURRENCY_BY_ID = {currency_id(c): c for c in CURRENCIES}


def _amount(value: Any, currency: str) -> int:
    """A line amount in minor units of `currency`: a positive number with at most its ISO 4217 minor unit of
    decimals (Zoho's price_precision per currency)."""
    if isinstance(value, bool) or value in (None, ""):
        raise ApiError(400, 4, "Invalid value passed for amount")
    try:
        dec = Decimal(str(value))
    except InvalidOperation as exc:
        raise ApiError(400, 4, "Invalid value passed for amount") from exc
    if not dec.is_finite() or dec < 0:
        raise ApiError(400, 4, "Invalid value passed for amount")
    if dec != dec.quantize(quantum(currency)):
        raise ApiError(400, 4, f"Invalid value passed for amount: at most {minor_unit(currency)} decimal places "
                               f"in {currency}")
    return to_minor(dec, currency)


def _date(value: Any, field: str = "journal_date") -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ApiError(400, 4, f"Invalid value passed for {field}") from exc


class ZohoSandbox(OAuthServer, Emulator):
    """The Zoho Books emulation: organizations, charts, grants, journals in `zoho_*` tables."""

    system = SYSTEM
    api_prefix = API
    errors = (ApiError,)
    ids = {"journals": "{journal_id}"}  # stats: /zoho/books/v3/journals/{journal_id}
    media_type = "application/json;charset=UTF-8"
    token_route = OAUTH + "/token"
    companies = ("zoho_orgs", "organization_id")
    schema = SCHEMA
    added_columns = ("ALTER TABLE zoho_orgs ADD COLUMN currency_code TEXT NOT NULL DEFAULT 'IDR'",
                     "ALTER TABLE zoho_orgs ADD COLUMN multicurrency INTEGER NOT NULL DEFAULT 1",
                     "ALTER TABLE zoho_journals ADD COLUMN currency_code TEXT",  # NULL: from before (IDR)
                     "ALTER TABLE zoho_journals ADD COLUMN exchange_rate TEXT")

    def __init__(self, ctx: SandboxContext, client_id: str = SANDBOX_CLIENT_ID,
                 client_secret: str = SANDBOX_CLIENT_SECRET):
        super().__init__(ctx)
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a crash of the process, no fsync each
        self.client_id, self.client_secret = client_id, client_secret
        self.minute = Windows(ctx.limits)  # per organization and minute
        # the organization's "today" (its clock), settable per organization for tests: POST
        # /_sandbox/zoho/companies/<login>/clock {"today": "YYYY-MM-DD"} ({"today": null} follows the wall clock)
        self.clock: dict[str, dt.date] = {}
        # the scope an organization's user grants (POST /_sandbox/zoho/companies/<login>/scope {"scope": ".."}),
        # default ZohoBooks.fullaccess.all: what later token replies name (preflight's scope check reads it)
        self.granted_scope: dict[str, str] = {}
        self.ignore_filters: set[str] = set()  # organizations whose journal searches ignore their filters
        self.mints: dict[str, list[float]] = {}  # refresh hash -> access token issue times

    def routes(self) -> list[Route]:
        return [
            Route(OAUTH + "/auth", self.authorize, methods=["GET", "POST"]),  # POST: the consent form
            Route(OAUTH + "/token", self.token, methods=["POST"]),
            Route(OAUTH + "/token/revoke", self.revoke, methods=["POST"]),
            Route(API + "/{path:path}", self.api, methods=["GET", "POST", "PUT", "DELETE"]),
        ]

    # -- state helpers ---------------------------------------------------------------------------------------
    def _next_id(self, name: str = "id") -> int:
        row = self.db.execute("INSERT INTO zoho_seq (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE "
                              "SET value = value + 1 RETURNING value", (name,)).fetchone()
        return row[0]

    def _new_id(self) -> str:
        return str(ID_BASE + self._next_id())

    def _org_for_login(self, login: str) -> str:
        row = self.company_by_login(login)
        if row is not None:
            return row["organization_id"]
        with transaction(self.db, "IMMEDIATE"):
            org_id = str(700000000 + self._next_id("org"))
            now = time.time()
            self.db.execute("INSERT INTO zoho_orgs (organization_id, login, name, plan, created_at) "
                            "VALUES (?, ?, ?, ?, ?)", (org_id, login, f"{login} (sandbox)", DEFAULT_PLAN, now))
            for number, name, category in DEFAULT_CHART:
                acc_type = "cash" if name == "Kas" else ACCOUNT_TYPES.get(category, "expense")
                self.db.execute("INSERT INTO zoho_accounts (account_id, organization_id, account_code, account_name, "
                                "account_type, is_active, last_modified_time) VALUES (?, ?, ?, ?, ?, 1, ?)",
                                (self._new_id(), org_id, number, name, acc_type, now))
        return org_id

    def daily_cap(self, org: Any) -> int:
        return int(org["daily_cap"]) if org["daily_cap"] is not None else PLANS.get(org["plan"], PLANS[DEFAULT_PLAN])

    def today(self, organization_id: str) -> dt.date:
        return self.clock.get(organization_id) or _wall_today()

    def usage(self, organization_id: str) -> int:
        row = self.db.execute("SELECT count FROM zoho_usage WHERE organization_id = ? AND day = ?",
                              (organization_id, self.today(organization_id).isoformat())).fetchone()
        return row[0] if row else 0

    def chart(self, login: str) -> list[dict]:
        """The company's whole chart, inactive accounts included (for tests)."""
        org = self.company_by_login(login)
        if org is None:
            raise KeyError(login)
        return [self._account(r) for r in self.db.execute(
            "SELECT * FROM zoho_accounts WHERE organization_id = ? ORDER BY account_code, account_id",
            (org["organization_id"],))]

    # -- OAuth (Zoho's accounts server: authorization code, non-rotating refresh tokens, errors as HTTP 200) -----
    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        self.ctx.count(SYSTEM, "GET", OAUTH + "/auth", "hit")
        approved = approve(request, self.client_id)
        if isinstance(approved, Response):
            return approved
        login, redirect = approved
        page = await consent.gate(request, title="Zoho Books", company=login, client=self.client_id,
                                  scopes=(q.get("scope") or "").split(","), redirect_uri=redirect,
                                  state=q.get("state", ""))
        if page is not None:  # the consent page (a browser), or the user's Deny
            return page
        org_id = self._org_for_login(login)
        code = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        self.db.execute("INSERT INTO zoho_codes (code_hash, organization_id, client_id, redirect_uri, offline, "
                        "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (_hash(code), org_id, self.client_id, redirect, int(q.get("access_type") == "offline"),
                         time.time() + 120))
        server = str(request.base_url).rstrip("/") + PREFIX
        return redirect_to(redirect, {"code": code, "location": "us", "accounts-server": server,
                                      "state": q.get("state", "")})

    async def token_params(self, request: Request) -> dict:
        """Zoho's accounts server takes its parameters in the query string or a form-encoded body."""
        return await oauth_params(request, query=True)

    def token_error(self, error: str, status: int | None = None) -> Response:
        """Zoho answers HTTP 200 {"error": ...}; a spent or unknown code or refresh token is "invalid_code"."""
        return JSONResponse({"error": "invalid_code" if error == "invalid_grant" else error})

    def client_ok(self, request: Request, params: dict) -> bool:
        return params.get("client_id") == self.client_id and params.get("client_secret") == self.client_secret

    def redeem_code(self, params: dict) -> dict | None:
        row = self.db.execute("SELECT * FROM zoho_codes WHERE code_hash = ?",
                              (_hash(str(params.get("code"))),)).fetchone()
        if row is None or row["used"] or row["expires_at"] < time.time() or row["redirect_uri"] != params.get(
                "redirect_uri"):
            return None
        self.db.execute("UPDATE zoho_codes SET used = 1 WHERE code_hash = ?", (row["code_hash"],))
        return {"org": row["organization_id"], "offline": bool(row["offline"]), "refresh_hash": None}

    def redeem_refresh(self, params: dict) -> dict | Response | None:
        """Refresh tokens never rotate; about 10 access tokens per 10 minutes per refresh token (time-scaled)."""
        refresh_hash = _hash(str(params.get("refresh_token")))
        row = self.db.execute("SELECT * FROM zoho_refresh WHERE token_hash = ? AND revoked = 0",
                              (refresh_hash,)).fetchone()
        if row is None:
            return None
        if self.ctx.limits.enabled:
            now, window = time.time(), 600 / self.ctx.limits.scale
            minted = [t for t in self.mints.get(refresh_hash, []) if t > now - window]
            if len(minted) >= TOKENS_PER_REFRESH:
                return JSONResponse({"error": "Access Denied", "error_description": "You have made too many "
                                     "requests continuously. Please try again after some time."}, status_code=400)
            self.mints[refresh_hash] = [*minted, now]
        return {"org": row["organization_id"], "offline": False, "refresh_hash": refresh_hash}

    def refresh_login(self, params: dict) -> str | None:
        row = self.db.execute("SELECT o.login FROM zoho_refresh r JOIN zoho_orgs o ON o.organization_id = "
                              "r.organization_id WHERE r.token_hash = ?",
                              (_hash(str(params.get("refresh_token"))),)).fetchone()
        return row[0] if row else None

    def issue(self, request: Request, grant: dict, params: dict) -> dict:
        """The reply carries `api_domain` (this sandbox + prefix); a refresh token only for an offline code."""
        now, reply, refresh_hash = time.time(), {}, grant["refresh_hash"]
        if grant["offline"]:
            refresh = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
            refresh_hash = _hash(refresh)
            self.db.execute("INSERT INTO zoho_refresh (token_hash, organization_id, created_at) VALUES (?, ?, ?)",
                            (refresh_hash, grant["org"], now))
            self._evict_refresh_tokens(grant["org"])
            reply["refresh_token"] = refresh
        access = f"1000.{secrets.token_hex(32)}"
        self.db.execute("INSERT INTO zoho_access (token_hash, organization_id, refresh_hash, expires_at) "
                        "VALUES (?, ?, ?, ?)", (_hash(access), grant["org"], refresh_hash, now + self.ctx.access_ttl))
        # Zoho's token reply names the granted scope (accounts.zoho.com OAuth docs; Books scopes
        # ZohoBooks.fullaccess.all or ZohoBooks.<module>.{CREATE,READ,UPDATE,DELETE}, zoho.com/books/api/v3/oauth);
        # the `scope` control narrows it
        return {"access_token": access, **reply, "scope": self.granted_scope.get(grant["org"], FULL_SCOPE),
                "api_domain": str(request.base_url).rstrip("/") + PREFIX, "token_type": "Bearer",
                "expires_in": int(self.ctx.access_ttl)}

    def _evict_refresh_tokens(self, org_id: str) -> None:
        live = self.db.execute("SELECT token_hash FROM zoho_refresh WHERE organization_id = ? AND revoked = 0 "
                               "ORDER BY created_at DESC, rowid DESC", (org_id,)).fetchall()
        for row in live[MAX_REFRESH_TOKENS:]:
            self._revoke_refresh(row["token_hash"])

    def _revoke_refresh(self, refresh_hash: str) -> None:
        self.db.execute("UPDATE zoho_refresh SET revoked = 1 WHERE token_hash = ?", (refresh_hash,))
        self.db.execute("UPDATE zoho_access SET revoked = 1 WHERE refresh_hash = ?", (refresh_hash,))

    async def revoke(self, request: Request) -> Response:
        try:
            data = await oauth_params(request, query=True)
        except ValueError:
            data = {}
        self.ctx.count(SYSTEM, "POST", OAUTH + "/token/revoke", "hit")
        if data.get("token"):
            self._revoke_refresh(_hash(str(data["token"])))
        return JSONResponse({"status": "success"})

    def _org_for_token(self, request: Request) -> str:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme != "Zoho-oauthtoken" or not token:
            raise ApiError(401, 57, "You are not authorized to perform this operation")
        row = self.db.execute("SELECT * FROM zoho_access WHERE token_hash = ?", (_hash(token.strip()),)).fetchone()
        if row is None or row["revoked"]:
            raise ApiError(401, 57, "You are not authorized to perform this operation")
        if row["expires_at"] < time.time():
            raise ApiError(401, 57, "Invalid Access Token: the token has expired")
        return row["organization_id"]

    # -- the request path's hooks (base.Emulator.api runs them in order) ----------------------------------------
    def authenticate(self, call: Call) -> tuple[str, Any]:
        """(the token's organization, the organization the call names: None for /organizations)."""
        request = call.request
        token_org = self._org_for_token(request)
        if call.parts == ["organizations"]:
            return token_org, None
        # the organization as the query parameter (zoho.com/books/api/v3 introduction) or the
        # X-com-zoho-books-organizationid header (the header form of the same parameter; fidelity review row 16);
        # both present and different is refused
        in_query = request.query_params.get("organization_id")
        in_header = request.headers.get("x-com-zoho-books-organizationid")
        if in_query and in_header and in_query != in_header:
            raise ApiError(400, 6041, f"organization_id {in_query} and the X-com-zoho-books-organizationid "
                                      f"header {in_header} disagree.")
        org_id = in_query or in_header
        if not org_id:
            raise ApiError(400, 6041, "organization_id is required: pass it as a query parameter or in "
                                      "the X-com-zoho-books-organizationid header.")
        org = self.company_by_id(org_id)
        if org is None or org_id != token_org:
            raise ApiError(400, 6041, f"This user is not associated with the CompanyID/CompanyName:{org_id}.")
        return token_org, org

    def limits(self, call: Call) -> None:
        """Daily cap first (a spent day refuses everything), then the per-minute window; only accepted requests
        count against either."""
        org = call.principal[1]
        if org is None or not self.ctx.limits.enabled:
            return
        org_id = org["organization_id"]
        cap = self.daily_cap(org)
        if self.usage(org_id) >= cap:
            plan = "custom" if org["daily_cap"] is not None else org["plan"].capitalize()
            # HTTP 429 "Rate Limit Exceeded (API usage limit exceeded)" is all Zoho documents for it
            # (zoho.com/books/api/v3/errors); the per-day numbers per plan are Zoho's KB "per-day API limit". No
            # code of its own is documented, so it shares the per-minute limit's code 45 and names the day.
            raise ApiError(429, 45, f"API usage limit exceeded: this organization has used its {cap:,} API calls "
                                    f"for the day ({plan} plan). Please try again tomorrow.")
        if self.minute.take([(org_id, PER_MINUTE, 60)]):
            raise ApiError(429, 45, "You have made too many requests continuously (more than 100 requests per "
                                    "minute). Please try again after some time.")
        self.db.execute("INSERT INTO zoho_usage (organization_id, day, count) VALUES (?, ?, 1) ON CONFLICT "
                        "(organization_id, day) DO UPDATE SET count = count + 1",
                        (org_id, self.today(org_id).isoformat()))

    def body_bytes(self, call: Call) -> bytes:
        """Zoho's older write shape: the JSON form-encoded as `JSONString=`."""
        if call.raw.startswith(b"JSONString="):
            return dict(parse_qsl(call.raw.decode())).get("JSONString", "").encode()
        return call.raw

    def error_payload(self, err: Exception) -> tuple[int, Any, dict[str, str]]:
        """{code, message} with the HTTP status (zoho.com/books/api/v3/errors)."""
        if isinstance(err, Problem):
            err = {"unauthorized": ApiError(401, 57, "You are not authorized to perform this operation"),
                   "server_error": ApiError(err.status, 5, "Internal Error"),
                   "malformed_body": ApiError(400, 4, "Invalid value passed for JSONString")}[err.kind]
        assert isinstance(err, ApiError)
        return err.status, {"code": err.code, "message": err.message}, {}

    def dispatch(self, call: Call) -> tuple[int, dict]:
        method, parts, q, body = call.method, call.parts, call.query, call.body
        token_org, org = call.principal
        if parts == ["organizations"] and method == "GET":
            row = self.company_by_id(token_org)
            return 200, {"code": 0, "message": "success", "organizations": [{
                "organization_id": row["organization_id"], "name": row["name"], "is_default_org": True,
                "plan_type": row["plan"], "currency_code": row["currency_code"],
                "currency_id": currency_id(row["currency_code"]), "time_zone": "Asia/Jakarta",
                "is_org_active": True}]}
        org_id = org["organization_id"]
        if parts == ["transactionlocks"] and method == "GET":
            return 200, self.transaction_locks(org)
        if parts == ["settings", "currencies"] and method == "GET":
            return 200, {"code": 0, "message": "success", "currencies": self.currencies(org)}
        if parts == ["chartofaccounts"] and method == "GET":
            return 200, self.list_accounts(org_id, q)
        if parts == ["journals"] and method == "GET":
            return 200, self.list_journals(org_id, q)
        if parts == ["journals"] and method == "POST":
            journal = self.write_journal(org_id, None, body)
            return 201, {"code": 0, "message": "The journal entry has been created.", "journal": journal}
        if len(parts) == 2 and parts[0] == "journals":
            if method == "GET":
                return 200, {"code": 0, "message": "success", "journal": self.render(self._journal(org_id, parts[1]))}
            if method == "PUT":
                journal = self.write_journal(org_id, parts[1], body)
                return 200, {"code": 0, "message": "The journal entry has been updated.", "journal": journal}
            if method == "DELETE":
                self.delete_journal(org_id, parts[1])
                return 200, {"code": 0, "message": "The selected journal entry has been deleted."}
        raise ApiError(404, 404, "Invalid URL Passed")

    # -- currencies -------------------------------------------------------------------------------------------
    def currencies(self, org: Any) -> list[dict]:
        """GET /settings/currencies: the base currency first, then (multicurrency on) every other one."""
        base = org["currency_code"]
        codes = [base] + ([c for c in sorted(CURRENCIES) if c != base] if org["multicurrency"] else [])
        return [{"currency_id": currency_id(c), "currency_code": c, "currency_name": c, "currency_symbol": c,
                 "price_precision": minor_unit(c), "currency_format": "1,234,567.89", "is_base_currency": c == base,
                 "exchange_rate": Decimal(1) if c == base else Decimal(0), "effective_date": ""} for c in codes]

    def _journal_currency(self, org_id: str, body: dict, old: Any) -> tuple[str, str | None]:
        """(currency code, exchange_rate as text or None for the base currency) of a journal write."""
        org = self.company_by_id(org_id)
        base = org["currency_code"]
        if "currency_id" in body and body["currency_id"] not in (None, ""):
            code = _CURRENCY_BY_ID.get(str(body["currency_id"]))
            if code is None or (code != base and not org["multicurrency"]):
                raise ApiError(400, 4, "Invalid value passed for currency_id")
        else:
            code = (old["currency_code"] if old is not None and old["currency_code"] else base)
        if code == base:
            return code, None
        raw = body.get("exchange_rate", old["exchange_rate"] if old is not None else None)
        try:
            rate = None if raw is None or isinstance(raw, bool | float) else Decimal(str(raw))
        except InvalidOperation:
            rate = None
        if rate is None or not rate.is_finite() or rate <= 0:
            raise ApiError(400, 4, f"Invalid value passed for exchange_rate: a {code} journal in a {base} "
                                   f"organization needs one")
        return code, str(rate)

    def do_currency(self, org_id: str, body: dict) -> dict:
        """{"home_currency": code, "multicurrency": bool}: the organization's base currency and added currencies."""
        write_company_currency(self.db, body, "zoho_orgs", "organization_id", org_id, "currency_code")
        org = self.company_by_id(org_id)
        return {"ok": True, "organization_id": org_id, "home_currency": org["currency_code"],
                "multicurrency": bool(org["multicurrency"])}

    # -- chart ------------------------------------------------------------------------------------------------
    def _account(self, r: Any) -> dict:
        return {"account_id": r["account_id"], "account_name": r["account_name"], "account_code": r["account_code"],
                "account_type": r["account_type"], "is_active": bool(r["is_active"]),
                "parent_account_id": r["parent_account_id"] or "", "depth": 1 if r["parent_account_id"] else 0,
                "is_user_created": True, "is_system_account": False,
                "currency_code": self.company_by_id(r["organization_id"])["currency_code"],
                "last_modified_time": dt.datetime.fromtimestamp(r["last_modified_time"] or 0, dt.UTC)
                .strftime("%Y-%m-%dT%H:%M:%S+0000")}

    def list_accounts(self, org_id: str, q: Any) -> dict:
        page, per_page = _paging(q)
        filter_by = q.get("filter_by", "AccountType.Active")  # Zoho lists active accounts unless asked
        sql, args = "SELECT * FROM zoho_accounts WHERE organization_id = ?", [org_id]
        if filter_by == "AccountType.Active":
            sql += " AND is_active = 1"
        elif filter_by == "AccountType.Inactive":
            sql += " AND is_active = 0"
        elif filter_by != "AccountType.All":
            raise ApiError(400, 4, "Invalid value passed for filter_by")
        rows = self.db.execute(sql + " ORDER BY account_code, account_id LIMIT ? OFFSET ?",
                               (*args, per_page + 1, (page - 1) * per_page)).fetchall()
        return {"code": 0, "message": "success", "chartofaccounts": [self._account(r) for r in rows[:per_page]],
                "page_context": {"page": page, "per_page": per_page, "has_more_page": len(rows) > per_page,
                                 "report_name": "Chart of Accounts", "applied_filter": filter_by,
                                 "sort_column": "account_name", "sort_order": "A"}}

    # -- journals ---------------------------------------------------------------------------------------------
    def _journal(self, org_id: str, journal_id: str) -> Any:
        row = self.db.execute("SELECT * FROM zoho_journals WHERE organization_id = ? AND journal_id = ?",
                              (org_id, journal_id)).fetchone()
        if row is None:
            raise ApiError(404, 1002, "Journal does not exist.")
        return row

    def render(self, j: Any) -> dict:
        lines = self.db.execute(
            "SELECT l.*, a.account_name FROM zoho_lines l LEFT JOIN zoho_accounts a ON a.account_id = l.account_id "
            "WHERE l.journal_id = ? ORDER BY l.seq", (j["journal_id"],)).fetchall()
        total = sum(ln["amount_minor"] for ln in lines if ln["debit_or_credit"] == "debit")
        base = self.company_by_id(j["organization_id"])["currency_code"]
        cur = j["currency_code"] or "IDR"  # a journal stored before currencies: the old default
        rate = Decimal(j["exchange_rate"]) if j["exchange_rate"] else Decimal(1)
        bcy = (from_minor(total, cur) * rate).quantize(quantum(base))
        return {
            "journal_id": j["journal_id"], "entry_number": str(j["entry_number"]),
            "reference_number": j["reference_number"] or "", "notes": j["notes"] or "",
            "journal_date": j["journal_date"], "journal_type": j["journal_type"] or "both", "status": j["status"],
            "currency_id": currency_id(cur), "currency_code": cur, "currency_symbol": cur, "exchange_rate": rate,
            "line_items": [{"line_id": ln["line_id"], "account_id": ln["account_id"],
                            "account_name": ln["account_name"] or "", "description": ln["description"] or "",
                            "debit_or_credit": ln["debit_or_credit"], "tax_id": "", "tax_name": "",
                            "amount": from_minor(ln["amount_minor"], cur)} for ln in lines],
            "line_item_total": from_minor(total, cur), "total": from_minor(total, cur), "bcy_total": bcy,
            "price_precision": minor_unit(cur), "taxes": [],
            "created_time": _stamp(j["created_at"]), "last_modified_time": _stamp(j["updated_at"]),
        }

    def _summary(self, j: Any) -> dict:
        total = self.db.execute("SELECT COALESCE(SUM(amount_minor), 0) FROM zoho_lines WHERE journal_id = ? AND "
                                "debit_or_credit = 'debit'", (j["journal_id"],)).fetchone()[0]
        cur = j["currency_code"] or "IDR"
        base = self.company_by_id(j["organization_id"])["currency_code"]
        rate = Decimal(j["exchange_rate"]) if j["exchange_rate"] else Decimal(1)
        return {"journal_id": j["journal_id"], "journal_date": j["journal_date"],
                "entry_number": str(j["entry_number"]), "reference_number": j["reference_number"] or "",
                "notes": j["notes"] or "", "status": j["status"], "currency_code": cur,
                "total": from_minor(total, cur), "bcy_total": (from_minor(total, cur) * rate).quantize(quantum(base))}

    def list_journals(self, org_id: str, q: Any) -> dict:
        """GET /journals: the documented search parameters (seed 001), newest first, `page`/`per_page` paging.
        filter_by names a journal-date window; without it DEFAULT_JOURNAL_FILTER applies (see there)."""
        page, per_page = _paging(q)
        filter_by = q.get("filter_by") or DEFAULT_JOURNAL_FILTER
        if filter_by not in JOURNAL_FILTERS:
            raise ApiError(400, 4, "Invalid value passed for filter_by")
        window = journal_window(filter_by, self.today(org_id))
        sql, args = "SELECT * FROM zoho_journals WHERE organization_id = ?", [org_id]
        if window:
            sql += " AND journal_date >= ? AND journal_date <= ?"
            args += [window[0].isoformat(), window[1].isoformat()]
        for key, clause in (("reference_number", "reference_number = ?"), ("date", "journal_date = ?"),
                            ("date_start", "journal_date >= ?"), ("date_end", "journal_date <= ?"),
                            ("date_after", "journal_date > ?"), ("date_before", "journal_date < ?")):
            if q.get(key):
                value = q[key] if key == "reference_number" else _date(q[key], key).isoformat()
                sql += f" AND {clause}"
                args.append(value)
        if q.get("reference_number_startswith"):
            sql += " AND reference_number LIKE ? ESCAPE '\\'"
            args.append(q["reference_number_startswith"].replace("\\", "\\\\").replace("%", "\\%")
                        .replace("_", "\\_") + "%")
        order = " ORDER BY journal_date DESC, entry_number DESC"
        if org_id in self.ignore_filters:
            # the hostile mode (/_sandbox/zoho/companies/<login>/search {"ignore_filters": true}): every journal
            # of the organization, those the filters would not have matched first
            matching = {r["journal_id"] for r in self.db.execute(sql, args)}
            every = self.db.execute("SELECT * FROM zoho_journals WHERE organization_id = ?" + order,
                                    (org_id,)).fetchall()
            ranked = [r for r in every if r["journal_id"] not in matching] + [r for r in every
                                                                            if r["journal_id"] in matching]
            rows = ranked[(page - 1) * per_page: page * per_page + 1]
        else:
            rows = self.db.execute(sql + order + " LIMIT ? OFFSET ?",
                                   (*args, per_page + 1, (page - 1) * per_page)).fetchall()
        context = {"page": page, "per_page": per_page, "has_more_page": len(rows) > per_page,
                   "report_name": "Manual Journals", "applied_filter": filter_by,
                   "sort_column": "journal_date", "sort_order": "D"}
        if window:
            context.update(start_date=window[0].isoformat(), end_date=window[1].isoformat())
        return {"code": 0, "message": "success", "journals": [self._summary(r) for r in rows[:per_page]],
                "page_context": context}

    def _check_lock(self, org_id: str, date: dt.date) -> None:
        lock = self.company_by_id(org_id)["lock_date"]
        if lock and date <= dt.date.fromisoformat(lock):
            shown = dt.date.fromisoformat(lock).strftime("%d %b %Y")
            raise ApiError(400, 4083, f"You cannot create, edit or delete transactions dated on or before {shown}: "
                                      "transactions before this date are locked (Settings > Transaction Locking).")

    def _parse_lines(self, org_id: str, raw: Any, currency: str) -> list[dict]:
        if not isinstance(raw, list) or len(raw) < 2:
            raise ApiError(400, 4, "A journal needs at least two line items (line_items).")
        out = []
        for line in raw:
            if not isinstance(line, dict):
                raise ApiError(400, 4, "Invalid value passed for line_items")
            side = line.get("debit_or_credit")
            if side not in ("debit", "credit"):
                raise ApiError(400, 4, "Invalid value passed for debit_or_credit")
            acc = self.db.execute("SELECT * FROM zoho_accounts WHERE organization_id = ? AND account_id = ?",
                                  (org_id, str(line.get("account_id") or ""))).fetchone()
            if acc is None:
                raise ApiError(400, 1002, "Account does not exist.")
            if not acc["is_active"]:
                raise ApiError(400, 3046, f"The account '{acc['account_name']}' is inactive. Mark it as active "
                                          "to use it in transactions.")
            out.append({"line_id": line.get("line_id"), "account_id": acc["account_id"], "side": side,
                        "amount": _amount(line.get("amount"), currency), "description": line.get("description") or ""})
        debit = sum(ln["amount"] for ln in out if ln["side"] == "debit")
        credit = sum(ln["amount"] for ln in out if ln["side"] == "credit")
        if debit != credit:
            raise ApiError(400, 13011, f"The total debit ({from_minor(debit, currency)}) and total credit "
                                       f"({from_minor(credit, currency)}) of a journal must be equal.")
        return out

    def write_journal(self, org_id: str, journal_id: str | None, body: Any) -> dict:
        """Create (journal_id None) or replace a journal; a PUT's line_items replace every line (line_id keeps
        a line's id)."""
        if not isinstance(body, dict):
            raise ApiError(400, 4, "Invalid value passed for JSONString")
        old = self._journal(org_id, journal_id) if journal_id else None
        if "journal_date" not in body:
            raise ApiError(400, 4, "Invalid value passed for journal_date")
        date = _date(body.get("journal_date"))
        ref = body.get("reference_number", old["reference_number"] if old else None)
        if ref is not None and len(str(ref)) > 100:
            raise ApiError(400, 4, "Invalid value passed for reference_number: at most 100 characters")
        currency, rate = self._journal_currency(org_id, body, old)
        lines = self._parse_lines(org_id, body.get("line_items"), currency)
        if old is not None:
            self._check_lock(org_id, dt.date.fromisoformat(old["journal_date"]))
            # a line_id names a line of this journal (seed 001's update sample sends each line's line_id); one that
            # is not there (a person re-entered the lines since it was read) is refused. Zoho does not document
            # this answer: clients must also cope with a Zoho that quietly makes such a line a new one.
            existing = {r[0] for r in self.db.execute("SELECT line_id FROM zoho_lines WHERE journal_id = ?",
                                                      (journal_id,))}
            if any(ln["line_id"] and str(ln["line_id"]) not in existing for ln in lines):
                raise ApiError(400, 4, "Invalid value passed for line_id")
        self._check_lock(org_id, date)
        status = body.get("status") or (old["status"] if old else "draft")
        if status not in ("draft", "published"):
            raise ApiError(400, 4, "Invalid value passed for status")
        now = time.time()
        with transaction(self.db, "IMMEDIATE") as db:
            if old is None:
                journal_id = self._new_id()
                number = self._next_id(f"entry:{org_id}")
                db.execute("INSERT INTO zoho_journals (journal_id, organization_id, entry_number, reference_number, "
                           "notes, journal_date, status, journal_type, created_at, updated_at, currency_code, "
                           "exchange_rate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (journal_id, org_id, number, ref, body.get("notes"), date.isoformat(), status,
                            body.get("journal_type") or "both", now, now, currency, rate))
                keep: set[str] = set()
            else:
                db.execute("UPDATE zoho_journals SET reference_number = ?, notes = ?, journal_date = ?, status = ?, "
                           "updated_at = ?, currency_code = ?, exchange_rate = ? WHERE journal_id = ?",
                           (ref, body.get("notes", old["notes"]), date.isoformat(), status, now, currency, rate,
                            journal_id))
                existing = {r[0] for r in db.execute("SELECT line_id FROM zoho_lines WHERE journal_id = ?",
                                                     (journal_id,))}
                keep = {str(ln["line_id"]) for ln in lines if ln["line_id"] and str(ln["line_id"]) in existing}
                db.execute("DELETE FROM zoho_lines WHERE journal_id = ?", (journal_id,))
            for seq, ln in enumerate(lines):
                line_id = str(ln["line_id"]) if ln["line_id"] and str(ln["line_id"]) in keep else self._new_id()
                db.execute("INSERT INTO zoho_lines (line_id, journal_id, seq, account_id, debit_or_credit, "
                           "amount_minor, description) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (line_id, journal_id, seq, ln["account_id"], ln["side"], ln["amount"], ln["description"]))
        return self.render(self._journal(org_id, journal_id))

    def delete_journal(self, org_id: str, journal_id: str) -> None:
        j = self._journal(org_id, journal_id)
        self._check_lock(org_id, dt.date.fromisoformat(j["journal_date"]))
        with transaction(self.db, "IMMEDIATE") as db:
            db.execute("DELETE FROM zoho_lines WHERE journal_id = ?", (journal_id,))
            db.execute("DELETE FROM zoho_journals WHERE journal_id = ?", (journal_id,))

    # -- inspection and control (served under /_sandbox) -----------------------------------------------------
    def inspect_entries(self, login: str | None) -> list[dict]:
        sql = ("SELECT j.*, o.login FROM zoho_journals j JOIN zoho_orgs o ON o.organization_id = j.organization_id")
        rows = (self.db.execute(sql + " WHERE o.login = ? ORDER BY j.journal_id", (login,)) if login
                else self.db.execute(sql + " ORDER BY j.journal_id")).fetchall()
        return [inspected(
            SYSTEM, r["login"], r["reference_number"], r["status"], r["journal_date"],
            [(ln["amount_minor"] if ln["debit_or_credit"] == "debit" else 0,
              ln["amount_minor"] if ln["debit_or_credit"] == "credit" else 0, ln["account_id"],
              {"id": ln["line_id"], "description": ln["description"]})
             for ln in self.db.execute("SELECT * FROM zoho_lines WHERE journal_id = ? ORDER BY seq",
                                       (r["journal_id"],)).fetchall()], r["currency_code"] or "IDR",
            exchange_rate=Decimal(r["exchange_rate"]) if r["exchange_rate"] else None,
            id=r["journal_id"], journal_id=r["journal_id"], entry_number=str(r["entry_number"]), memo=r["notes"],
        ) for r in rows]

    def do_lock_date(self, org_id: str, body: dict) -> None:
        """Zoho's transaction locking: {"lock_date": "YYYY-MM-DD"} (None unlocks)."""
        self.db.execute("UPDATE zoho_orgs SET lock_date = ? WHERE organization_id = ?", (body.get("lock_date"), org_id))

    def transaction_locks(self, org: Any) -> dict:
        """"List transaction locks" (www.zoho.com/books/api/v3/transaction-locking/: transaction_lock_id,
        transaction_lock_status disabled|enabled|enabled_with_logging, transaction_lock_date yyyy-MM-dd, lock_status,
        lock_scope 0 = "All"); this emulation keeps one organization-wide lock (the `lock_date` control), which refuses
        journals dated on or before it (code 4083 above)."""
        locks = []
        if org["lock_date"]:
            locks.append({"transaction_lock_id": f"{org['organization_id']}001", "transaction_lock_status": "enabled",
                          "transaction_lock_date": org["lock_date"], "lock_status": "locked", "lock_scope": 0,
                          "lock_scope_formatted": "All", "lock_status_formatted": "Locked", "status": "active",
                          "is_adjustment_period": False, "reason": "Period closed"})
        return {"code": 0, "message": "success", "transaction_locks": locks}

    def do_scope(self, org_id: str, body: dict) -> None:
        """{"scope": "ZohoBooks.accountants.READ"}: the scope the organization's user grants from now on (null: all)."""
        if body.get("scope"):
            self.granted_scope[org_id] = str(body["scope"])
        else:
            self.granted_scope.pop(org_id, None)

    def do_revoke(self, org_id: str, body: dict) -> None:
        """The user removed the connected app: every refresh and access token dies."""
        for row in self.db.execute("SELECT token_hash FROM zoho_refresh WHERE organization_id = ?",
                                   (org_id,)).fetchall():
            self._revoke_refresh(row[0])
        self.db.execute("UPDATE zoho_access SET revoked = 1 WHERE organization_id = ?", (org_id,))

    def do_clock(self, org_id: str, body: dict) -> dict:
        """{"today": "YYYY-MM-DD"} or {"today": null} (the wall clock)."""
        if body.get("today"):
            self.clock[org_id] = dt.date.fromisoformat(str(body["today"]))
        else:
            self.clock.pop(org_id, None)
        return {"ok": True, "today": self.today(org_id).isoformat()}

    def do_search(self, org_id: str, body: dict) -> dict:
        """{"ignore_filters": true}: journal searches ignore their filters, the others first."""
        if body.get("ignore_filters"):
            self.ignore_filters.add(org_id)
        else:
            self.ignore_filters.discard(org_id)
        return {"ok": True, "ignore_filters": org_id in self.ignore_filters}

    def do_plan(self, org_id: str, body: dict) -> dict:
        """{"plan": "free"} and/or {"daily_cap": 5}; {"reset_usage": true}."""
        if "plan" in body:
            plan = str(body["plan"]).lower()
            if plan not in PLANS:
                raise ValueError(f"unknown plan {plan!r}; known: {', '.join(PLANS)}")
            self.db.execute("UPDATE zoho_orgs SET plan = ?, daily_cap = NULL WHERE organization_id = ?",
                            (plan, org_id))
        if "daily_cap" in body:
            self.db.execute("UPDATE zoho_orgs SET daily_cap = ? WHERE organization_id = ?",
                            (None if body["daily_cap"] is None else int(body["daily_cap"]), org_id))
        if body.get("reset_usage"):
            self.db.execute("DELETE FROM zoho_usage WHERE organization_id = ?", (org_id,))
        org = self.company_by_id(org_id)
        return {"ok": True, "plan": org["plan"], "daily_cap": self.daily_cap(org), "used_today": self.usage(org_id)}

    def do_accounts(self, org_id: str, body: dict) -> None:
        """{"number", "name", "archived", "type", "parent_number"}: add or change an account."""
        row = self.db.execute("SELECT account_id FROM zoho_accounts WHERE organization_id = ? AND account_code = ?",
                              (org_id, body["number"])).fetchone()
        parent = None
        if body.get("parent_number"):
            p = self.db.execute("SELECT account_id FROM zoho_accounts WHERE organization_id = ? AND account_code = ?",
                                (org_id, body["parent_number"])).fetchone()
            parent = p[0] if p else None
        now = time.time()
        if row is None:
            self.db.execute("INSERT INTO zoho_accounts (account_id, organization_id, account_code, account_name, "
                            "account_type, is_active, parent_account_id, last_modified_time) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (self._new_id(), org_id, body["number"], body.get("name", body["number"]),
                             body.get("type", "expense"), int(not body.get("archived")), parent, now))
            return
        updates = {"account_name": body.get("name"), "is_active": None if "archived" not in body
                   else int(not body["archived"]), "parent_account_id": parent}
        for col, value in updates.items():
            if value is not None:
                self.db.execute(f"UPDATE zoho_accounts SET {col} = ?, last_modified_time = ? WHERE account_id = ?",
                                (value, now, row[0]))

    def do_entries(self, org_id: str, body: dict) -> None:
        """A person's edit in Zoho's UI (module docstring)."""
        if body.get("create"):
            self.write_journal(org_id, None, body["create"])
            return
        row = self.db.execute("SELECT * FROM zoho_journals WHERE organization_id = ? AND reference_number = ? "
                              "ORDER BY journal_id LIMIT 1", (org_id, str(body.get("custom_id")))).fetchone()
        if row is None:  # nothing to edit (as in Jurnal's sandbox: a no-op, the company exists)
            return
        if body.get("delete"):
            self.db.execute("DELETE FROM zoho_lines WHERE journal_id = ?", (row["journal_id"],))
            self.db.execute("DELETE FROM zoho_journals WHERE journal_id = ?", (row["journal_id"],))
        elif body.get("scale_line"):  # multiply the first line's amount (unbalances, as a bad hand edit would)
            line = self.db.execute("SELECT line_id FROM zoho_lines WHERE journal_id = ? ORDER BY seq LIMIT 1",
                                   (row["journal_id"],)).fetchone()
            self.db.execute("UPDATE zoho_lines SET amount_minor = amount_minor * ? WHERE line_id = ?",
                            (int(body["scale_line"]), line[0]))
        elif body.get("clear_custom_id"):
            self.db.execute("UPDATE zoho_journals SET reference_number = NULL WHERE journal_id = ?",
                            (row["journal_id"],))
        elif "reference_number" in body:  # a person re-keys the journal
            self.db.execute("UPDATE zoho_journals SET reference_number = ?, updated_at = ? WHERE journal_id = ?",
                            (body["reference_number"], time.time(), row["journal_id"]))
        elif body.get("replace_lines"):  # a person re-enters the lines as they were: every line gets a new id
            for line in self.db.execute("SELECT line_id FROM zoho_lines WHERE journal_id = ?",
                                        (row["journal_id"],)).fetchall():
                self.db.execute("UPDATE zoho_lines SET line_id = ? WHERE line_id = ?", (self._new_id(), line[0]))


def _paging(q: Any) -> tuple[int, int]:
    try:
        page, per_page = int(q.get("page", 1)), int(q.get("per_page", 200))
    except ValueError as exc:
        raise ApiError(400, 4, "Invalid value passed for page") from exc
    if page < 1 or not 1 <= per_page <= 200:
        raise ApiError(400, 4, "Invalid value passed for per_page (1 to 200)")
    return page, per_page


def _stamp(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def make(ctx: SandboxContext) -> ZohoSandbox:
    return ZohoSandbox(ctx)
