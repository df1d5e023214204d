"""The Rootfi sandbox: a unified accounting API whose writes are asynchronous upload jobs (accounting_apis.md s.5).

- Auth: one `api_key` header for the whole account (401 `{"error": {...}}` otherwise) plus a `company_id` per
  tenant in the body (POST/PUT) or the query (GET/DELETE). A company comes from Rootfi Link: `GET /rootfi/link`
  auto-approves a `login_hint`, creates the company with the default chart on first link and redirects to the
  `redirect_uri` with `company_id` and `state`. A revoked (unlinked) company answers 403 COMPANY_NOT_LINKED.
- Writes: `POST /accounting/journal_entries` {company_id, data:[...]} answers at once with an upload job whose items
  are PENDING; each item completes `job_delay_seconds` later (per company, control action) as COMPLETED (with the
  entry in `response`) or FAILED (with `error`): unbalanced, unknown/inactive account, closed period, or on request
  (`fail_next`, `fail_document_numbers`). Items settle lazily on the next request touching the company (or the
  inspection endpoint), which a client cannot tell apart from a background worker. `GET /accounting/upload_jobs/{id}`
  polls; `POST /accounting/upload_jobs/all` lists a company's jobs (to find items still in flight).
- No idempotency key and no uniqueness on `document_number`: sending an entry twice makes two entries.
- Reads: `POST /accounting/journal_entries/all` and `GET|POST /accounting/accounts/all` with take (max 100)/skip,
  `orderBy` and a Prisma-like `filter` ({field: value | {equals, in, gte, gt, lte, lt}}), `total_count`.
- Updates in place (`PUT /accounting/journal_entries/{rootfi_id}`, synchronous, 422 on a closed period); deletes.
- Limits (Rootfi publishes none; chosen): 600 requests/min per API key (the account) and 60/min per company (what
  the slowest common platform behind a unified API allows a connected org, e.g. Xero's 60/min per tenant). Fixed
  minute windows, time-scaled by `ctx.limits.scale`; 429 RATE_LIMIT_EXCEEDED with Retry-After (scaled seconds).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
import uuid
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ledger_pipeline.money import dumps_exact, from_minor, loads_exact
from ledger_pipeline.sandboxes import consent
from ledger_pipeline.sandboxes.base import (
    WRITE_METHODS,
    Drop,
    DroppedResponse,
    InjectedError,
    SandboxContext,
)
from ledger_pipeline.systems.jurnal.chart import DEFAULT_CHART

SYSTEM = "rootfi"
PREFIX = "/rootfi"
API = PREFIX + "/accounting"
SANDBOX_API_KEY = "rootfi-sandbox-api-key-not-for-production"  # noqa: S105 - a public sandbox value
MAX_BATCH = 100  # items per upload
MAX_TAKE = 100
PER_KEY_MINUTE = 600
PER_COMPANY_MINUTE = 60
_CATEGORY = {"1": "ASSET", "2": "LIABILITY", "3": "EQUITY", "4": "INCOME", "5": "EXPENSE", "6": "EXPENSE",
             "7": "INCOME", "8": "EXPENSE"}
_IDS = {"account": 3770712000000000000, "entry": 3770712000100000000, "line": 3770712000200000000}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rootfi_companies (id INTEGER PRIMARY KEY AUTOINCREMENT, login TEXT UNIQUE NOT NULL,
  status TEXT NOT NULL DEFAULT 'LINKED', lock_date TEXT, job_delay REAL NOT NULL DEFAULT 0,
  fail_next INTEGER NOT NULL DEFAULT 0, fail_docs TEXT NOT NULL DEFAULT '[]', created_at REAL);
CREATE TABLE IF NOT EXISTS rootfi_accounts (rootfi_id INTEGER PRIMARY KEY AUTOINCREMENT, company_id INTEGER NOT NULL,
  platform_id TEXT, nominal_code TEXT, name TEXT, category TEXT, status TEXT NOT NULL DEFAULT 'ACTIVE',
  updated_at REAL);
CREATE INDEX IF NOT EXISTS rootfi_accounts_company ON rootfi_accounts (company_id);
CREATE TABLE IF NOT EXISTS rootfi_entries (rootfi_id INTEGER PRIMARY KEY AUTOINCREMENT, company_id INTEGER NOT NULL,
  platform_id TEXT, document_number TEXT, posted_date TEXT, description TEXT, currency_id TEXT, created_at REAL,
  updated_at REAL);
CREATE INDEX IF NOT EXISTS rootfi_entries_company ON rootfi_entries (company_id, document_number);
CREATE TABLE IF NOT EXISTS rootfi_lines (rootfi_id INTEGER PRIMARY KEY AUTOINCREMENT, entry_id INTEGER NOT NULL,
  platform_id TEXT, account_id TEXT, type TEXT, net_amount_minor INTEGER, description TEXT);
CREATE INDEX IF NOT EXISTS rootfi_lines_entry ON rootfi_lines (entry_id);
CREATE TABLE IF NOT EXISTS rootfi_upload_jobs (upload_job_id TEXT PRIMARY KEY, company_id INTEGER NOT NULL,
  created_at REAL);
CREATE INDEX IF NOT EXISTS rootfi_upload_jobs_company ON rootfi_upload_jobs (company_id);
CREATE TABLE IF NOT EXISTS rootfi_job_items (job_id TEXT PRIMARY KEY, upload_job_id TEXT NOT NULL,
  company_id INTEGER NOT NULL, position INTEGER, document_number TEXT, payload TEXT, status TEXT NOT NULL,
  ready_at REAL, forced_error TEXT, entry_id INTEGER, error TEXT, updated_at REAL);
CREATE INDEX IF NOT EXISTS rootfi_job_items_job ON rootfi_job_items (upload_job_id, position);
CREATE INDEX IF NOT EXISTS rootfi_job_items_pending ON rootfi_job_items (company_id, status);
"""


class ApiError(Exception):
    """An answer in Rootfi's error shape: {"error": {"code", "message"}, "request_id"}."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class ItemError(Exception):
    """Why an upload-job item (or a synchronous update) was refused."""

    def __init__(self, code: str, message: str):
        self.code, self.message = code, message


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_date(value: Any) -> dt.date:
    """ISO date or datetime ('2025-01-31', '2025-01-31T00:00:00.000Z') -> the date."""
    if not isinstance(value, str) or len(value) < 10:
        raise ItemError("VALIDATION_ERROR", f"posted_date must be an ISO date-time, got {value!r}")
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError as exc:
        raise ItemError("VALIDATION_ERROR", f"posted_date must be an ISO date-time, got {value!r}") from exc


def _amount(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ItemError("VALIDATION_ERROR", f"net_amount must be a number, got {value!r}")
    try:
        dec = Decimal(str(value))
    except InvalidOperation as exc:
        raise ItemError("VALIDATION_ERROR", f"net_amount must be a number, got {value!r}") from exc
    if not dec.is_finite() or dec <= 0:
        raise ItemError("VALIDATION_ERROR", f"net_amount must be positive, got {value}")
    if dec != dec.quantize(Decimal("0.01")):
        raise ItemError("VALIDATION_ERROR", f"net_amount has more than 2 decimal places: {value}")
    return int(dec * 100)


class RateLimiter:
    """Fixed minute windows per API key and per company, on the scaled clock."""

    def __init__(self, ctx: SandboxContext):
        self.ctx = ctx
        self.counts: Counter = Counter()

    def check(self, company_id: int | None) -> float:
        """0 when allowed (and counted), else the seconds until the window resets (real, scaled)."""
        lim = self.ctx.limits
        if not lim.enabled:
            return 0.0
        now = time.time() * lim.scale
        minute = int(now // 60)
        keys = [(("key", minute), PER_KEY_MINUTE)]
        if company_id is not None:
            keys.append((("company", company_id, minute), PER_COMPANY_MINUTE))
        if any(self.counts[k] >= n for k, n in keys):
            return ((minute + 1) * 60 - now) / lim.scale
        for k, _ in keys:
            self.counts[k] += 1
        if len(self.counts) > 20_000:
            self.counts = Counter({k: v for k, v in self.counts.items() if k[-1] == minute})
        return 0.0


class RootfiSandbox:
    """The Rootfi emulation (an `Emulator`)."""

    system = SYSTEM

    def __init__(self, ctx: SandboxContext, api_key: str = SANDBOX_API_KEY):
        self.ctx, self.api_key = ctx, api_key
        self.db = ctx.connect()
        self.db.executescript(_SCHEMA)
        self.rate = RateLimiter(ctx)

    def routes(self) -> list[Route]:
        return [Route(PREFIX + "/link", self.link, methods=["GET", "POST"]),  # POST: the consent form
                Route(API + "/{path:path}", self.api, methods=["GET", "POST", "PUT", "DELETE"])]

    def close(self) -> None:
        pass  # the context closes its connections

    # -- companies ------------------------------------------------------------------------------------------
    def _company_by_login(self, login: str) -> Any:
        return self.db.execute("SELECT * FROM rootfi_companies WHERE login = ?", (login,)).fetchone()

    def _company(self, company_id: int) -> Any:
        return self.db.execute("SELECT * FROM rootfi_companies WHERE id = ?", (company_id,)).fetchone()

    def _link_company(self, login: str) -> int:
        """Rootfi Link for a login: the existing company re-linked, or a new one with the default chart."""
        row = self._company_by_login(login)
        if row is not None:
            self.db.execute("UPDATE rootfi_companies SET status = 'LINKED' WHERE id = ?", (row["id"],))
            return row["id"]
        now = time.time()
        self.db.execute("BEGIN")
        try:
            cid = self.db.execute("INSERT INTO rootfi_companies (login, created_at) VALUES (?, ?)",
                                  (login, now)).lastrowid
            for number, name, _category in DEFAULT_CHART:
                self._insert_account(cid, number, name, "ACTIVE", now)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return cid

    def _insert_account(self, company_id: int, number: str, name: str, status: str, now: float) -> None:
        rid = self.db.execute(
            "INSERT INTO rootfi_accounts (company_id, nominal_code, name, category, status, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)", (company_id, number, name, _CATEGORY.get(number[:1], "EXPENSE"), status,
                                          now)).lastrowid
        self.db.execute("UPDATE rootfi_accounts SET platform_id = ? WHERE rootfi_id = ?",
                        (str(_IDS["account"] + rid), rid))

    # -- rendering ------------------------------------------------------------------------------------------
    def _render_entries(self, rows: list) -> list[dict]:
        if not rows:
            return []
        ids = [r["rootfi_id"] for r in rows]
        lines: dict[int, list] = {i: [] for i in ids}
        marks = ",".join("?" * len(ids))
        for ln in self.db.execute(f"SELECT * FROM rootfi_lines WHERE entry_id IN ({marks}) ORDER BY rootfi_id",
                                  ids):
            lines[ln["entry_id"]].append(ln)
        out = []
        for r in rows:
            ls = lines[r["rootfi_id"]]
            out.append({
                "rootfi_id": r["rootfi_id"], "platform_id": r["platform_id"], "rootfi_company_id": r["company_id"],
                "document_number": r["document_number"],
                "posted_date": f"{r['posted_date']}T00:00:00.000Z",
                "description": r["description"], "currency_id": r["currency_id"], "currency_rate": 1,
                "amount": from_minor(sum(ln["net_amount_minor"] for ln in ls if ln["type"] == "DEBIT")),
                "journal_entry_type": "both", "account_id": None,
                "journal_lines": {"data": [
                    {"rootfi_id": ln["rootfi_id"], "platform_id": ln["platform_id"],
                     "journal_entry_id": r["platform_id"], "account_id": ln["account_id"], "contact_id": None,
                     "tax_id": None, "tracking_category_ids": [], "type": ln["type"],
                     "description": ln["description"], "net_amount": from_minor(ln["net_amount_minor"]),
                     "tax_amount": None, "updated_at": _iso(r["updated_at"])}
                    for ln in ls]},
                "created_at": _iso(r["created_at"]), "updated_at": _iso(r["updated_at"]),
            })
        return out

    def _render_job(self, upload_job_id: str) -> dict:
        items = self.db.execute("SELECT * FROM rootfi_job_items WHERE upload_job_id = ? ORDER BY position",
                                (upload_job_id,)).fetchall()
        entries = {e["rootfi_id"]: e for e in self._render_entries(self.db.execute(
            f"SELECT * FROM rootfi_entries WHERE rootfi_id IN ({','.join('?' * len(items))})",
            [i["entry_id"] for i in items]).fetchall())} if items else {}
        statuses = {i["status"] for i in items}
        if "PENDING" in statuses:
            status = "PENDING"
        elif statuses == {"COMPLETED"}:
            status = "COMPLETED"
        elif statuses == {"FAILED"}:
            status = "FAILED"
        else:
            status = "PARTIALLY_COMPLETED"
        data = []
        for i in items:
            response = None
            if i["status"] == "COMPLETED":  # the entry as it was created (it may have been deleted since)
                response = entries.get(i["entry_id"]) or {"rootfi_id": i["entry_id"], "deleted": True}
            data.append({"job_id": i["job_id"], "document_number": i["document_number"], "status": i["status"],
                         "response": response, "error": json.loads(i["error"]) if i["error"] else None,
                         "updated_at": _iso(i["updated_at"])})
        return {"status": status, "upload_job_id": upload_job_id, "data": data}

    # -- entries --------------------------------------------------------------------------------------------
    def _validate(self, company_id: int, item: Any) -> tuple[dict, list[dict]]:
        """An entry body -> (fields, lines), or ItemError in Rootfi's words."""
        if not isinstance(item, dict):
            raise ItemError("VALIDATION_ERROR", "each data item must be an object")
        date = _parse_date(item.get("posted_date"))
        raw = item.get("journal_lines")
        if not isinstance(raw, list) or len(raw) < 2:
            raise ItemError("VALIDATION_ERROR", "journal_lines must hold at least 2 lines")
        lines = []
        for n, ln in enumerate(raw):
            if not isinstance(ln, dict):
                raise ItemError("VALIDATION_ERROR", f"journal_lines[{n}] must be an object")
            kind = ln.get("type")
            if kind not in ("DEBIT", "CREDIT"):
                raise ItemError("VALIDATION_ERROR", f"journal_lines[{n}].type must be DEBIT or CREDIT")
            amount = _amount(ln.get("net_amount"))
            acc = self.db.execute("SELECT * FROM rootfi_accounts WHERE company_id = ? AND platform_id = ?",
                                  (company_id, str(ln.get("account_id")))).fetchone()
            if acc is None:
                raise ItemError("INVALID_ACCOUNT", f"journal_lines[{n}].account_id {ln.get('account_id')} does not "
                                                   "exist on the accounting platform")
            if acc["status"] != "ACTIVE":
                raise ItemError("INVALID_ACCOUNT", f"journal_lines[{n}].account_id {acc['platform_id']} "
                                                   f"({acc['name']}) is inactive on the accounting platform")
            lines.append({"account_id": acc["platform_id"], "type": kind, "minor": amount,
                          "description": ln.get("description")})
        debit = sum(ln["minor"] for ln in lines if ln["type"] == "DEBIT")
        credit = sum(ln["minor"] for ln in lines if ln["type"] == "CREDIT")
        if debit != credit:
            raise ItemError("UNBALANCED_ENTRY", f"Journal entry is not balanced: total debit {from_minor(debit)}, "
                                                f"total credit {from_minor(credit)}")
        self._check_period(company_id, date)
        fields = {"document_number": item.get("document_number"), "posted_date": date.isoformat(),
                  "description": item.get("description"), "currency_id": item.get("currency_id")}
        return fields, lines

    def _check_period(self, company_id: int, date: dt.date) -> None:
        lock = self._company(company_id)["lock_date"]
        if lock and date <= dt.date.fromisoformat(lock):
            raise ItemError("PERIOD_CLOSED", f"The accounting period is closed on the platform: posted_date "
                                             f"{date.isoformat()} is on or before the lock date {lock}")

    def _insert_entry(self, company_id: int, fields: dict, lines: list[dict]) -> int:
        """Inside the caller's transaction."""
        now = time.time()
        eid = self.db.execute(
            "INSERT INTO rootfi_entries (company_id, document_number, posted_date, description, currency_id, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (company_id, fields["document_number"], fields["posted_date"], fields["description"],
             fields["currency_id"], now, now)).lastrowid
        self.db.execute("UPDATE rootfi_entries SET platform_id = ? WHERE rootfi_id = ?", (str(_IDS["entry"] + eid),
                                                                                          eid))
        self._insert_lines(eid, lines)
        return eid

    def _insert_lines(self, entry_id: int, lines: list[dict]) -> None:
        for ln in lines:
            lid = self.db.execute(
                "INSERT INTO rootfi_lines (entry_id, account_id, type, net_amount_minor, description) "
                "VALUES (?, ?, ?, ?, ?)", (entry_id, ln["account_id"], ln["type"], ln["minor"],
                                           ln["description"])).lastrowid
            self.db.execute("UPDATE rootfi_lines SET platform_id = ? WHERE rootfi_id = ?", (str(_IDS["line"] + lid),
                                                                                            lid))

    def _submit(self, company_id: int, body: dict) -> dict:
        items = body.get("data")
        if not isinstance(items, list) or not items:
            raise ApiError(400, "VALIDATION_ERROR", "data must be a non-empty array of journal entries")
        if len(items) > MAX_BATCH:
            raise ApiError(400, "VALIDATION_ERROR", f"at most {MAX_BATCH} journal entries per upload")
        company = self._company(company_id)
        fail_docs = set(json.loads(company["fail_docs"]))
        fail_next = company["fail_next"]
        now = time.time()
        upload_job_id = str(uuid.uuid4())
        self.db.execute("BEGIN")
        try:
            self.db.execute("INSERT INTO rootfi_upload_jobs (upload_job_id, company_id, created_at) VALUES (?, ?, ?)",
                            (upload_job_id, company_id, now))
            for pos, item in enumerate(items):
                doc = item.get("document_number") if isinstance(item, dict) else None
                forced = None
                if doc is not None and str(doc) in fail_docs:
                    forced = "the platform refused this document (sandbox fail_document_numbers)"
                elif fail_next > 0:
                    fail_next -= 1
                    forced = "the platform refused this document (sandbox fail_next)"
                self.db.execute(
                    "INSERT INTO rootfi_job_items (job_id, upload_job_id, company_id, position, document_number, "
                    "payload, status, ready_at, forced_error, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (str(uuid.uuid4()), upload_job_id, company_id, pos, None if doc is None else str(doc),
                     dumps_exact(item), "PENDING", now + company["job_delay"], forced, now))
            self.db.execute("UPDATE rootfi_companies SET fail_next = ? WHERE id = ?", (fail_next, company_id))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self._render_job(upload_job_id)

    def settle(self, company_id: int | None = None) -> None:
        """The background worker: every item whose time has come is processed, in submission order."""
        now = time.time()
        sql = "SELECT * FROM rootfi_job_items WHERE status = 'PENDING' AND ready_at <= ?"
        args: list = [now]
        if company_id is not None:
            sql += " AND company_id = ?"
            args.append(company_id)
        for item in self.db.execute(sql + " ORDER BY rowid", args).fetchall():
            self.db.execute("BEGIN")
            try:
                if item["forced_error"]:
                    raise ItemError("PLATFORM_ERROR", item["forced_error"])
                fields, lines = self._validate(item["company_id"], loads_exact(item["payload"]))
                eid = self._insert_entry(item["company_id"], fields, lines)
                self.db.execute("UPDATE rootfi_job_items SET status = 'COMPLETED', entry_id = ?, updated_at = ? "
                                "WHERE job_id = ?", (eid, now, item["job_id"]))
                self.db.execute("COMMIT")
            except ItemError as err:
                self.db.execute("UPDATE rootfi_job_items SET status = 'FAILED', error = ?, updated_at = ? "
                                "WHERE job_id = ?", (json.dumps({"code": err.code, "message": err.message}), now,
                                                     item["job_id"]))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def _entry_row(self, company_id: int, ref: str) -> Any:
        row = self.db.execute("SELECT * FROM rootfi_entries WHERE company_id = ? AND rootfi_id = ?",
                              (company_id, ref)).fetchone()
        if row is None:
            raise ApiError(404, "NOT_FOUND", f"journal entry {ref} not found")
        return row

    def _update(self, company_id: int, ref: str, body: dict) -> dict:
        row = self._entry_row(company_id, ref)
        try:
            self._check_period(company_id, dt.date.fromisoformat(row["posted_date"]))
            fields, lines = self._validate(company_id, body.get("data"))
        except ItemError as err:
            raise ApiError(422, err.code, err.message) from None
        self.db.execute("BEGIN")
        try:
            self.db.execute("DELETE FROM rootfi_lines WHERE entry_id = ?", (row["rootfi_id"],))
            self._insert_lines(row["rootfi_id"], lines)
            self.db.execute(
                "UPDATE rootfi_entries SET document_number = ?, posted_date = ?, description = ?, currency_id = ?, "
                "updated_at = ? WHERE rootfi_id = ?",
                (fields["document_number"] or row["document_number"], fields["posted_date"], fields["description"],
                 fields["currency_id"] or row["currency_id"], time.time(), row["rootfi_id"]))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self._render_entries([self._entry_row(company_id, ref)])[0]

    def _delete(self, company_id: int, ref: str) -> None:
        row = self._entry_row(company_id, ref)
        try:
            self._check_period(company_id, dt.date.fromisoformat(row["posted_date"]))
        except ItemError as err:
            raise ApiError(422, err.code, err.message) from None
        self.db.execute("BEGIN")
        self.db.execute("DELETE FROM rootfi_lines WHERE entry_id = ?", (row["rootfi_id"],))
        self.db.execute("DELETE FROM rootfi_entries WHERE rootfi_id = ?", (row["rootfi_id"],))
        self.db.execute("COMMIT")

    # -- listing --------------------------------------------------------------------------------------------
    @staticmethod
    def _page(body: dict) -> tuple[int, int]:
        try:
            take = int(body.get("take", 50))
            skip = int(body.get("skip", 0))
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "VALIDATION_ERROR", "take and skip must be integers") from exc
        if not 1 <= take <= MAX_TAKE or skip < 0:
            raise ApiError(400, "VALIDATION_ERROR", f"take must be within 1..{MAX_TAKE} and skip >= 0")
        return take, skip

    @staticmethod
    def _matches(record: dict, flt: dict) -> bool:
        for field, cond in flt.items():
            value = record.get(field)
            if field == "posted_date" and value:
                value = value[:10]
            ops = cond if isinstance(cond, dict) else {"equals": cond}
            for op, arg in ops.items():
                if field == "posted_date" and isinstance(arg, str):
                    arg = arg[:10]
                ok = {"equals": lambda v, a: v == a or str(v) == str(a),
                      "in": lambda v, a: v in a or str(v) in map(str, a),
                      "not": lambda v, a: v != a, "gte": lambda v, a: v is not None and v >= a,
                      "gt": lambda v, a: v is not None and v > a, "lte": lambda v, a: v is not None and v <= a,
                      "lt": lambda v, a: v is not None and v < a}.get(op)
                if ok is None:
                    raise ApiError(400, "VALIDATION_ERROR", f"unsupported filter operator {op!r} on {field}")
                if not ok(value, arg):
                    return False
        return True

    def _list(self, records: list[dict], body: dict) -> dict:
        take, skip = self._page(body)
        flt = body.get("filter") or {}
        if not isinstance(flt, dict):
            raise ApiError(400, "VALIDATION_ERROR", "filter must be an object")
        records = [r for r in records if self._matches(r, flt)]
        order = body.get("orderBy") or {"rootfi_id": "asc"}
        for spec in reversed(order if isinstance(order, list) else [order]):
            for field, direction in reversed(list(spec.items())):
                records.sort(key=lambda r, f=field: (r.get(f) is None, r.get(f)), reverse=direction == "desc")
        return {"data": records[skip: skip + take], "total_count": len(records), "take": take, "skip": skip}

    def _accounts(self, company_id: int) -> list[dict]:
        rows = self.db.execute("SELECT * FROM rootfi_accounts WHERE company_id = ? ORDER BY rootfi_id",
                               (company_id,)).fetchall()
        return [{"rootfi_id": r["rootfi_id"], "platform_id": r["platform_id"], "rootfi_company_id": company_id,
                 "name": r["name"], "nominal_code": r["nominal_code"], "category": r["category"],
                 "sub_category": None, "status": r["status"], "currency_id": None, "current_balance": None,
                 "parent_account_id": None, "updated_at": _iso(r["updated_at"])} for r in rows]

    # -- HTTP -----------------------------------------------------------------------------------------------
    async def api(self, request: Request) -> Response:
        route = _endpoint(request.url.path)
        method = request.method
        is_write = method in WRITE_METHODS and not route.endswith("/all")
        request_id = secrets.token_hex(8)
        headers: dict[str, str] = {}
        try:
            if request.headers.get("api_key") != self.api_key:
                raise ApiError(401, "UNAUTHORIZED", "Invalid or missing api_key")
            body: Any = {}
            if method in ("POST", "PUT"):
                raw = await request.body()
                try:
                    body = loads_exact(raw) if raw else {}
                except ValueError as exc:
                    raise ApiError(400, "VALIDATION_ERROR", f"Malformed JSON body: {exc}") from exc
                if not isinstance(body, dict):
                    raise ApiError(400, "VALIDATION_ERROR", "the body must be a JSON object")
            parts = [p for p in request.url.path.removeprefix(API).split("/") if p]
            company_id = self._resolve_company(parts, body, request.query_params)
            wait = self.rate.check(company_id)
            if wait:
                raise ApiError(429, "RATE_LIMIT_EXCEEDED", "Too many requests, please retry later",
                               {"Retry-After": f"{max(wait, 0.001):.3f}"})
            try:
                await self.ctx.before(self.system, is_write)
            except InjectedError as fault:
                raise (ApiError(fault.status, "INTERNAL_SERVER_ERROR", "Something went wrong, please retry")
                       if fault.kind == "error" else ApiError(401, "UNAUTHORIZED", "Invalid or missing api_key")
                       ) from None
            if company_id is not None:
                self.settle(company_id)
            status, payload = self.dispatch(method, parts, company_id, body)
            try:
                await self.ctx.after(self.system, is_write)
            except InjectedError as fault:
                raise ApiError(fault.status, "INTERNAL_SERVER_ERROR", "Something went wrong, please retry") from None
        except ApiError as err:
            status, payload, headers = err.status, {"error": {"code": err.code, "message": err.message}}, err.headers
        except Drop:
            self.ctx.count(self.system, method, route, "dropped")
            return DroppedResponse()
        self.ctx.count(self.system, method, route, status)
        return Response(dumps_exact({**payload, "request_id": request_id}), status_code=status, headers=headers,
                        media_type="application/json")

    def _resolve_company(self, parts: list[str], body: dict, query: Any) -> int | None:
        """The company a request is about (body or query `company_id`, or the upload job's), linked, or 4xx."""
        if len(parts) == 2 and parts[0] == "upload_jobs" and parts[1] != "all":
            row = self.db.execute("SELECT company_id FROM rootfi_upload_jobs WHERE upload_job_id = ?",
                                  (parts[1],)).fetchone()
            if row is None:
                raise ApiError(404, "NOT_FOUND", f"upload job {parts[1]} not found")
            raw = row["company_id"]
        else:
            raw = body.get("company_id", query.get("company_id"))
        if raw in (None, ""):
            raise ApiError(400, "VALIDATION_ERROR", "company_id is required")
        try:
            company = self._company(int(raw))
        except (TypeError, ValueError):
            company = None
        if company is None:
            raise ApiError(404, "COMPANY_NOT_FOUND", f"company {raw} not found")
        if company["status"] != "LINKED":
            raise ApiError(403, "COMPANY_NOT_LINKED", f"company {raw} is not linked to its accounting platform "
                                                      "any more (connection revoked); re-link it through Rootfi Link")
        return company["id"]

    def dispatch(self, method: str, parts: list[str], company_id: int, body: dict) -> tuple[int, dict]:
        if parts == ["journal_entries"] and method == "POST":
            return 200, {"data": self._submit(company_id, body)}
        if parts == ["journal_entries", "all"] and method == "POST":
            rows = self.db.execute("SELECT * FROM rootfi_entries WHERE company_id = ?", (company_id,)).fetchall()
            return 200, self._list(self._render_entries(rows), body)
        if len(parts) == 2 and parts[0] == "journal_entries":
            if method == "GET":
                return 200, {"data": self._render_entries([self._entry_row(company_id, parts[1])])[0]}
            if method == "PUT":
                return 200, {"data": self._update(company_id, parts[1], body)}
            if method == "DELETE":
                self._delete(company_id, parts[1])
                return 200, {"data": {"rootfi_id": int(parts[1]), "deleted": True}}
        if parts == ["accounts", "all"] and method in ("GET", "POST"):
            return 200, self._list(self._accounts(company_id), body)
        if parts == ["upload_jobs", "all"] and method == "POST":
            jobs = [self._render_job(r["upload_job_id"]) for r in self.db.execute(
                "SELECT upload_job_id FROM rootfi_upload_jobs WHERE company_id = ? ORDER BY created_at",
                (company_id,))]
            return 200, self._list([{**j, "rootfi_id": n} for n, j in enumerate(jobs)], body)
        if len(parts) == 2 and parts[0] == "upload_jobs" and method == "GET":
            return 200, {"data": self._render_job(parts[1])}
        raise ApiError(404, "NOT_FOUND", "no such endpoint")

    # -- Rootfi Link (auto-approving) -----------------------------------------------------------------------
    async def link(self, request: Request) -> Response:
        q = request.query_params
        self.ctx.count(self.system, "GET", PREFIX + "/link/auth", "hit")
        login, redirect = q.get("login_hint"), q.get("redirect_uri")
        if not login or not redirect:
            return JSONResponse({"error": {"code": "VALIDATION_ERROR", "message": "the sandbox link page "
                                           "auto-approves a login_hint; redirect_uri is required"}}, status_code=400)
        page = await consent.gate(request, title="Rootfi Link", company=login, client="ledger-pipeline",
                                  scopes=["read and write your accounting data"], redirect_uri=redirect,
                                  state=q.get("state", ""))
        if page is not None:  # the consent page (a browser), or the user's Deny
            return page
        company_id = self._link_company(login)
        sep = "&" if "?" in redirect else "?"
        return RedirectResponse(f"{redirect}{sep}{urlencode({'company_id': company_id, 'state': q.get('state', '')})}",
                                302)

    # -- inspection and controls ----------------------------------------------------------------------------
    def inspect_entries(self, login: str | None) -> list[dict]:
        self.settle()
        sql, args = "SELECT e.*, c.login FROM rootfi_entries e JOIN rootfi_companies c ON c.id = e.company_id", []
        if login:
            sql += " WHERE c.login = ?"
            args.append(login)
        rows = self.db.execute(sql + " ORDER BY e.rootfi_id", args).fetchall()
        out = []
        for row, e in zip(rows, self._render_entries(rows), strict=True):
            ls = e["journal_lines"]["data"]
            debit = sum((ln["net_amount"] for ln in ls if ln["type"] == "DEBIT"), Decimal("0.00"))
            credit = sum((ln["net_amount"] for ln in ls if ln["type"] == "CREDIT"), Decimal("0.00"))
            out.append({
                "system": self.system, "company_login": row["login"], "custom_id": e["document_number"],
                "status": "posted", "transaction_date": row["posted_date"], "total_debit": debit,
                "total_credit": credit, "rootfi_id": e["rootfi_id"], "platform_id": e["platform_id"],
                "transaction_account_lines": [
                    {"debit": ln["net_amount"] if ln["type"] == "DEBIT" else Decimal("0.00"),
                     "credit": ln["net_amount"] if ln["type"] == "CREDIT" else Decimal("0.00"),
                     "account": {"id": ln["account_id"]}} for ln in ls],
            })
        return out

    async def control(self, login: str, action: str, body: dict) -> dict | None:
        company = self._company_by_login(login)
        if company is None:
            raise KeyError(login)
        cid = company["id"]
        if action == "lock_date":
            self.db.execute("UPDATE rootfi_companies SET lock_date = ? WHERE id = ?", (body.get("lock_date"), cid))
        elif action == "revoke":
            self.db.execute("UPDATE rootfi_companies SET status = 'UNLINKED' WHERE id = ?", (cid,))
        elif action == "accounts":
            self._upsert_account(cid, body)
        elif action == "entries":
            self._edit_entry(cid, body)
        elif action in ("jobs", "job_delay_seconds", "fail_next", "fail_document_numbers"):
            if "job_delay_seconds" in body:
                self.db.execute("UPDATE rootfi_companies SET job_delay = ? WHERE id = ?",
                                (float(body["job_delay_seconds"]), cid))
            if "fail_next" in body:
                self.db.execute("UPDATE rootfi_companies SET fail_next = ? WHERE id = ?", (int(body["fail_next"]), cid))
            if "fail_document_numbers" in body:
                self.db.execute("UPDATE rootfi_companies SET fail_docs = ? WHERE id = ?",
                                (json.dumps([str(d) for d in body["fail_document_numbers"]]), cid))
        elif action == "settle":
            self.settle(cid)
        else:
            return None
        return {"ok": True, "company_id": cid}

    def _upsert_account(self, company_id: int, body: dict) -> None:
        row = self.db.execute("SELECT * FROM rootfi_accounts WHERE company_id = ? AND nominal_code = ?",
                              (company_id, body["number"])).fetchone()
        status = "INACTIVE" if body.get("archived") else "ACTIVE"
        if row is None:
            self._insert_account(company_id, body["number"], body.get("name", body["number"]), status, time.time())
            return
        self.db.execute("UPDATE rootfi_accounts SET name = ?, status = ?, updated_at = ? WHERE rootfi_id = ?",
                        (body.get("name", row["name"]), status if "archived" in body else row["status"], time.time(),
                         row["rootfi_id"]))

    def _edit_entry(self, company_id: int, body: dict) -> None:
        """What a person does on the platform: delete an entry, scale a line (unbalances), or add one."""
        if body.get("create"):
            try:
                fields, lines = self._validate(company_id, body["create"])
            except ItemError as err:
                raise ValueError(err.message) from None
            self.db.execute("BEGIN")
            self._insert_entry(company_id, fields, lines)
            self.db.execute("COMMIT")
            return
        row = self.db.execute("SELECT * FROM rootfi_entries WHERE company_id = ? AND document_number = ? "
                              "ORDER BY rootfi_id LIMIT 1", (company_id, str(body.get("custom_id")))).fetchone()
        if row is None:
            return
        if body.get("delete"):
            self.db.execute("DELETE FROM rootfi_lines WHERE entry_id = ?", (row["rootfi_id"],))
            self.db.execute("DELETE FROM rootfi_entries WHERE rootfi_id = ?", (row["rootfi_id"],))
        elif body.get("scale_line"):
            line = self.db.execute("SELECT rootfi_id FROM rootfi_lines WHERE entry_id = ? ORDER BY rootfi_id LIMIT 1",
                                   (row["rootfi_id"],)).fetchone()
            self.db.execute("UPDATE rootfi_lines SET net_amount_minor = net_amount_minor * ? WHERE rootfi_id = ?",
                            (int(body["scale_line"]), line["rootfi_id"]))


def _endpoint(path: str) -> str:
    """/rootfi/accounting/journal_entries/42 -> .../journal_entries/{id} (for stats)."""
    parts = path.split("/")
    if len(parts) >= 2 and parts[-2] in ("journal_entries", "upload_jobs") and parts[-1] != "all":
        parts[-1] = "{id}"
    return "/".join(parts)


def make(ctx: SandboxContext) -> RootfiSandbox:
    return RootfiSandbox(ctx)
