"""The Rootfi sandbox: a unified accounting API whose writes are upload jobs (accounting_apis.md s.5).

Vendor reference (docs.integrationlabs.co, formerly docs.rootfi.dev; every behaviour below cites its page):
  [JE-ALL]  v2 /api-reference/v2/accounting/journal-entries/get-all-journal-entries
  [JE-NEW]  v2 /api-reference/v2/accounting/journal-entries/create-journal-entries
  [AC-ALL]  v2 /api-reference/v2/accounting/accounts/get-all-accounts
  [AC-NEW]  v2 /api-reference/v2/accounting/accounts/create-accounts
  [JOB2]    v2 /api-reference/v2/core/jobs/get-job
  [JOB3]    v3 /api-reference/v3/core/sync/get-job
  [V3-ALL]  v3 /api-reference/v3/accounting/accounts/get-all-accounts (the `field[operator]` filter syntax)

- Auth: one `api_key` header for the whole account [every page] (401 `{"error": {...}}` otherwise) plus a
  `company_id` per tenant in the body (POST/PUT) [JE-NEW] or the query (GET/DELETE: not documented, our reading). A
  company comes from Rootfi Link: `GET /rootfi/link` auto-approves a `login_hint`, creates the company with the
  default chart on first link and redirects to `redirect_uri` with `company_id` and `state`. A revoked (unlinked)
  company answers 403 COMPANY_NOT_LINKED.
- Every v2 answer carries `request_timestamp`, `response_timestamp` and `request_id` [JE-ALL, JOB2: "required"].
- Lists: `POST /accounting/journal_entries/all` and `POST /accounting/accounts/all` take `{take, skip, orderBy,
  filter}` and answer the nested envelope `{"data": {"data": [...], "total_count": N}, ...}` [JE-ALL, AC-ALL]. The
  filter is `{field: {op: value}}` with `eq` [JE-ALL, AC-ALL examples] and the comparison operators of v3's
  `field[operator]` syntax (`gte`, `gt`, `lte`, `lt`, `neq`, `in`) [V3-ALL]; an unknown operator (e.g. Prisma's
  `equals`) is a 400. take is at most 100 (our choice; Rootfi publishes no maximum).
- Writes: `POST /api/write/<model>` (the path of [AC-NEW]'s example, on integrate.rootfi.dev) and the same body at
  `POST /accounting/<model>` (the path [JE-NEW] and [AC-NEW] show in their headers): the docs disagree, so both are
  served. `{company_id, data: [...]}` answers an upload job `{"data": {status, upload_job_id, data: [{job_id,
  status, response, error}]}}` [JE-NEW]. With no job delay (the default) the platform answers at once and the
  reply is final: job status SUCCESS, each item "success" with the created entry in `response` (its lines a plain
  array, as [JE-NEW] shows them) or "failed" with `error` [JE-NEW]. With a delay (`job_delay_seconds`, a control)
  items stay "created"/"running" and settle later (lazily, on the next request touching the company, which a
  client cannot tell apart from a background worker). Item failures: unbalanced, unknown/inactive account, closed
  period, or on request (`fail_next`, `fail_document_numbers`).
- Jobs: `GET /jobs/{job_id}` [JOB2] and `GET /v3/core/syncs/jobs/{job_id}` [JOB3] answer one job (an item's
  `job_id`, or the `upload_job_id` for the whole upload) with status CREATED | RUNNING | SUCCESS | FAILED, job_type
  PUSH, config_mode WRITE, data_model JOURNAL_ENTRIES, `error` when FAILED. Like the documented job object it does
  not carry the created record: a client lists by document_number to read it. Unknown ids are 404.
- `POST /accounting/upload_jobs/all` lists a company's upload jobs with their items (document_number, status): NOT
  in Rootfi's published reference, a sandbox stand-in so a client can see items still queued after an upload whose
  answer was lost (a client must treat a 404 there as "cannot tell").
- No idempotency key and no uniqueness on `document_number` (none documented [JE-NEW]): sending an entry twice
  makes two entries. Rootfi documents no length or character rule for it either (seed 004: "Reference number for
  the journal entry", a string).
- Updates in place (`PUT /api/write/journal_entries/{rootfi_id}`, also under `/accounting/...`) and deletes: not in
  the published reference (our reading of "writes under /api/write/<model>"); synchronous, 422 on a closed period.
  A PUT whose `data.updated_at` (the version the client read) is older than the entry's is refused 409 CONFLICT:
  the platform's stale-object check (QuickBooks' SyncToken, Xero's UpdatedDateUTC) as Rootfi would relay it. The
  `entries` control's edits (what a person does on the platform) move `updated_at`.
- Path segments are percent-decoded one by one from the raw path, so an id with `/`, `?`, `#` or `%` in it is one
  segment when the client encodes it.
- Limits (Rootfi publishes none; chosen): 600 requests/min per API key (the account) and 60/min per company (what
  the slowest common platform behind a unified API allows a connected org, e.g. Xero's 60/min per tenant). Fixed
  minute windows, time-scaled by `ctx.limits.scale`; 429 RATE_LIMIT_EXCEEDED with Retry-After (scaled seconds).

Controls (`POST /_sandbox/rootfi/companies/<login>/<action>`): `lock_date` {lock_date}; `revoke`; `accounts`
{number, name, archived}; `entries` {create: <entry>} | {custom_id, delete: true} | {custom_id, scale_line: k};
`jobs` (also `job_delay_seconds`, `fail_next`, `fail_document_numbers`) {job_delay_seconds, fail_next,
fail_document_numbers}; `settle`; `paths` {"api_write": false, "v2_jobs": false}: a Rootfi that answers only
one of the documented write paths (`/accounting/<model>`) or job paths (v3) for this company (404 on the other;
kept in memory, not in the state file); `filters` {"ignore_filters": true|false}: a server that ignores list filters and
orderBy and answers every entry of the company, the ones that do NOT match the filter first (a client must check
every record's document_number itself and never adopt or write over another entry); `currency`
{"home_currency": code, "multicurrency": bool}: the company's base currency (default IDR), reported as every
account's `currency_id` ([AC-ALL] currency_id), and whether the platform takes entries in another currency (default
off: [JE-NEW] has `currency_id` but no exchange rate, so an entry whose currency_id is not the base currency is
VALIDATION_ERROR; an entry without currency_id is in the base currency). Amounts: at most 2 decimals, and none
finer than the currency's ISO 4217 minor unit (JPY: whole yen), else VALIDATION_ERROR (never rounded).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger_pipeline.money import currency_problem, dumps_exact, loads_exact, minor_unit, to_minor
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
from ledger_pipeline.sandboxes.oauth import redirect_to

SYSTEM = "rootfi"
PREFIX = "/rootfi"
SANDBOX_API_KEY = "rootfi-sandbox-api-key-not-for-production"  # noqa: S105 - a public sandbox value
MAX_BATCH = 100  # items per upload
MAX_TAKE = 100
PER_KEY_MINUTE = 600
PER_COMPANY_MINUTE = 60
_CATEGORY = {"asset": "ASSET", "liability": "LIABILITY", "equity": "EQUITY", "revenue": "INCOME",
             "expense": "EXPENSE"}  # the category enum of [AC-ALL], by the chart's class
_IDS = {"account": 3770712000000000000, "entry": 3770712000100000000, "line": 3770712000200000000}
WRITE_ROOTS = (("api", "write"), ("accounting",))  # [AC-NEW] example path / [JE-NEW] header path
# filter operators: `eq` [JE-ALL], the rest from v3's field[operator] syntax [V3-ALL]
_OPS = {"eq": lambda v, a: v == a or (v is not None and str(v) == str(a)),
        "neq": lambda v, a: not (v == a or (v is not None and str(v) == str(a))),
        "in": lambda v, a: isinstance(a, list) and (v in a or str(v) in map(str, a)),
        "gte": lambda v, a: v is not None and v >= a, "gt": lambda v, a: v is not None and v > a,
        "lte": lambda v, a: v is not None and v <= a, "lt": lambda v, a: v is not None and v < a}

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
# columns added after 0.1.0 (a state file from before keeps working)
_COLUMNS = ("ALTER TABLE rootfi_companies ADD COLUMN ignore_filters INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE rootfi_companies ADD COLUMN currency TEXT NOT NULL DEFAULT 'IDR'",
            "ALTER TABLE rootfi_companies ADD COLUMN multicurrency INTEGER NOT NULL DEFAULT 0")
AMOUNT_PLACES = 2  # net_amount is stored in hundredths whatever the currency (this emulation's platform)


def _dec(hundredths: int) -> Decimal:
    """A stored amount (hundredths) as the exact decimal Rootfi answers."""
    return (Decimal(hundredths) / 100).quantize(Decimal("0.01"))


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


def _amount(value: Any, currency: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ItemError("VALIDATION_ERROR", f"net_amount must be a number, got {value!r}")
    try:
        dec = Decimal(str(value))
    except InvalidOperation as exc:
        raise ItemError("VALIDATION_ERROR", f"net_amount must be a number, got {value!r}") from exc
    if not dec.is_finite() or dec <= 0:
        raise ItemError("VALIDATION_ERROR", f"net_amount must be positive, got {value}")
    places = min(AMOUNT_PLACES, minor_unit(currency))
    if dec != dec.quantize(Decimal(1).scaleb(-places)):
        raise ItemError("VALIDATION_ERROR", f"net_amount has more than {places} decimal places for {currency}: "
                                            f"{value}")
    return int(dec * 100)


def _job_status(internal: str, ready_at: float, since: float, now: float) -> str:
    """Our stored item status -> Rootfi's job status [JOB2]: CREATED (queued), RUNNING (past half its delay),
    SUCCESS, FAILED."""
    if internal == "COMPLETED":
        return "SUCCESS"
    if internal == "FAILED":
        return "FAILED"
    return "RUNNING" if now >= since + (ready_at - since) / 2 else "CREATED"


def _aggregate(statuses: list[str]) -> str:
    """An upload job's status from its items' (documented values only [JOB2]: a partly failed upload is FAILED;
    each item says which)."""
    if any(s in ("CREATED", "RUNNING") for s in statuses):
        return "RUNNING" if "RUNNING" in statuses or "SUCCESS" in statuses or "FAILED" in statuses else "CREATED"
    return "SUCCESS" if statuses and all(s == "SUCCESS" for s in statuses) else "FAILED"


class RootfiSandbox(Emulator):
    """The Rootfi emulation."""

    system = SYSTEM
    api_prefix = PREFIX
    errors = (ApiError,)
    ids = {"journal_entries": "{id}", "jobs": "{id}"}  # stats: /rootfi/accounting/journal_entries/{id}
    not_ids = ("all",)
    companies = ("rootfi_companies", "id")
    control_echo = "company_id"
    schema = _SCHEMA
    added_columns = _COLUMNS
    control_aliases = {"job_delay_seconds": "jobs", "fail_next": "jobs", "fail_document_numbers": "jobs"}

    def __init__(self, ctx: SandboxContext, api_key: str = SANDBOX_API_KEY):
        super().__init__(ctx)
        self.api_key = api_key
        self.windows = Windows(ctx.limits, keep=20_000)
        self.hidden: dict[int, set[str]] = {}  # company -> documented paths it answers 404 on (`paths` control)

    def routes(self) -> list[Route]:
        return [Route(PREFIX + "/link", self.link, methods=["GET", "POST"]),  # POST: the consent form
                Route(PREFIX + "/{path:path}", self.api, methods=["GET", "POST", "PUT", "DELETE"])]

    # -- companies ------------------------------------------------------------------------------------------
    def _link_company(self, login: str) -> int:
        """Rootfi Link for a login: the existing company re-linked, or a new one with the default chart."""
        row = self.company_by_login(login)
        if row is not None:
            self.db.execute("UPDATE rootfi_companies SET status = 'LINKED' WHERE id = ?", (row["id"],))
            return row["id"]
        now = time.time()
        with transaction(self.db):
            cid = self.db.execute("INSERT INTO rootfi_companies (login, created_at) VALUES (?, ?)",
                                  (login, now)).lastrowid
            for number, name, _category in DEFAULT_CHART:
                self._insert_account(cid, number, name, "ACTIVE", now)
        return cid

    def _insert_account(self, company_id: int, number: str, name: str, status: str, now: float) -> int:
        rid = self.db.execute(
            "INSERT INTO rootfi_accounts (company_id, nominal_code, name, category, status, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)", (company_id, number, name, _CATEGORY[classification(number)], status,
                                          now)).lastrowid
        self.db.execute("UPDATE rootfi_accounts SET platform_id = ? WHERE rootfi_id = ?",
                        (str(_IDS["account"] + rid), rid))
        return rid

    # -- rendering ------------------------------------------------------------------------------------------
    def _render_entries(self, rows: list, nested_lines: bool = True) -> list[dict]:
        """Entries in the read model of [JE-ALL] (lines nested as {"data": [...]}), or with the plain line array of
        the create reply [JE-NEW] (`nested_lines=False`)."""
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
            rendered = [
                {"rootfi_id": ln["rootfi_id"], "platform_id": ln["platform_id"], "journal_entry_id": r["platform_id"],
                 "account_id": ln["account_id"], "contact_id": None, "tax_id": None, "tracking_category_ids": [],
                 "type": ln["type"], "description": ln["description"],
                 "net_amount": _dec(ln["net_amount_minor"]), "tax_amount": None,
                 "updated_at": _iso(r["updated_at"])} for ln in ls]
            out.append({
                "rootfi_id": r["rootfi_id"], "rootfi_company_id": r["company_id"], "rootfi_organisation_id": 1,
                "rootfi_integration_type": "ROOTFI_SANDBOX", "rootfi_created_at": _iso(r["created_at"]),
                "rootfi_updated_at": _iso(r["updated_at"]), "platform_id": r["platform_id"],
                "account_id": ls[0]["account_id"] if ls else None,  # required in seed 004; a line's, our choice
                "currency_id": r["currency_id"], "currency": {"data": {  # [JE-ALL]: nulls where unknown
                    "platform_id": r["currency_id"], "name": None, "code": r["currency_id"], "symbol": None,
                    "is_base_currency": None, "exchange_rate": None, "updated_at": None}},
                "document_number": r["document_number"],
                "description": r["description"], "posted_date": f"{r['posted_date']}T00:00:00.000Z",
                "amount": _dec(sum(ln["net_amount_minor"] for ln in ls if ln["type"] == "DEBIT")),
                "currency_rate": 1, "journal_entry_type": "both", "updated_at": _iso(r["updated_at"]),
                "journal_lines": {"data": rendered} if nested_lines else rendered,
            })
        return out

    def _items(self, upload_job_id: str) -> list:
        return self.db.execute("SELECT rowid AS seq, * FROM rootfi_job_items WHERE upload_job_id = ? "
                               "ORDER BY position", (upload_job_id,)).fetchall()

    def _render_upload(self, upload_job_id: str, listing: bool = False) -> dict:
        """The write reply [JE-NEW]: {status, upload_job_id, data: [{job_id, status, response, error}]}. Item
        statuses are lower case as in [JE-NEW]'s example ("success"); the listing (a sandbox stand-in) adds each
        item's document_number."""
        items, now = self._items(upload_job_id), time.time()
        entries = {e["rootfi_id"]: e for e in self._render_entries(self.db.execute(
            f"SELECT * FROM rootfi_entries WHERE rootfi_id IN ({','.join('?' * len(items))})",
            [i["entry_id"] for i in items]).fetchall(), nested_lines=False)} if items else {}
        statuses = [_job_status(i["status"], i["ready_at"], i["updated_at"], now) for i in items]
        data = []
        for i, status in zip(items, statuses, strict=True):
            response = None
            if status == "SUCCESS":  # the entry as it is now (None once deleted)
                response = entries.get(i["entry_id"])
            item = {"job_id": i["job_id"], "status": status.lower(), "response": response,
                    "error": json.loads(i["error"]) if i["error"] else None}
            if listing:
                item["document_number"] = i["document_number"]
            data.append(item)
        return {"status": _aggregate(statuses), "upload_job_id": upload_job_id, "data": data}

    def _render_job(self, job_id: str) -> tuple[int, dict]:
        """(company, one job as [JOB2] shows it) for an item's job_id or an upload_job_id; 404 when unknown."""
        now = time.time()
        item = self.db.execute("SELECT rowid AS seq, * FROM rootfi_job_items WHERE job_id = ?", (job_id,)).fetchone()
        if item is not None:
            status = _job_status(item["status"], item["ready_at"], item["updated_at"], now)
            items, parent, seq = [item], item["upload_job_id"], item["seq"]
            created = self.db.execute("SELECT created_at FROM rootfi_upload_jobs WHERE upload_job_id = ?",
                                      (parent,)).fetchone()["created_at"]
        else:
            job = self.db.execute("SELECT rowid AS seq, * FROM rootfi_upload_jobs WHERE upload_job_id = ?",
                                  (job_id,)).fetchone()
            if job is None:
                raise ApiError(404, "NOT_FOUND", f"job {job_id} not found")
            items, parent, seq, created = self._items(job_id), None, job["seq"], job["created_at"]
            status = _aggregate([_job_status(i["status"], i["ready_at"], i["updated_at"], now) for i in items])
        errors = [json.loads(i["error"]) for i in items if i["error"]]
        final = status in ("SUCCESS", "FAILED")
        end = max((i["updated_at"] for i in items), default=created)
        return items[0]["company_id"] if items else 0, {
            "rootfi_id": seq, "rootfi_company_id": items[0]["company_id"] if items else None,
            "rootfi_organisation_id": 1, "rootfi_integration_type": "ROOTFI_SANDBOX",
            "rootfi_created_at": _iso(created), "rootfi_updated_at": _iso(end if final else created),
            "start_time": _iso(created), "end_time": _iso(end) if final else None,
            "error_code": errors[0]["code"] if errors and status == "FAILED" else None,
            "integration_type": "ROOTFI_SANDBOX", "status": status,
            "error": (errors[0] if len(errors) == 1 else {"code": "PARTIAL_FAILURE", "message": "; ".join(
                f"{e['code']}: {e['message']}" for e in errors)}) if errors and status == "FAILED" else None,
            "priority": None, "rate_limit_sleep_time": None, "variables": {}, "data_model": "JOURNAL_ENTRIES",
            "config_id": "ROOTFI_SANDBOX_JOURNAL_ENTRIES_WRITE_0", "response_length": len(items),
            "response_size": len(items), "job_type": "PUSH", "config_mode": "WRITE",
            "sync_id": parent or job_id, "parent_job_id": parent,
        }

    # -- entries --------------------------------------------------------------------------------------------
    def _validate(self, company_id: int, item: Any) -> tuple[dict, list[dict]]:
        """An entry body [JE-NEW] -> (fields, lines), or ItemError in Rootfi's words."""
        if not isinstance(item, dict):
            raise ItemError("VALIDATION_ERROR", "each data item must be an object")
        date = _parse_date(item.get("posted_date"))
        company = self.company_by_id(company_id)
        currency = str(item.get("currency_id") or company["currency"]).upper()
        if currency_problem(currency) is not None:
            raise ItemError("VALIDATION_ERROR", f"currency_id {item.get('currency_id')!r} is not a currency")
        if currency != company["currency"] and not company["multicurrency"]:
            raise ItemError("VALIDATION_ERROR", f"currency_id {currency} is not the base currency "
                                                f"{company['currency']} and multi-currency is not enabled")
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
            amount = _amount(ln.get("net_amount"), currency)
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
            raise ItemError("UNBALANCED_ENTRY", f"Journal entry is not balanced: total debit {_dec(debit)}, "
                                                f"total credit {_dec(credit)}")
        self._check_period(company_id, date)
        doc = item.get("document_number")
        fields = {"document_number": None if doc is None else str(doc), "posted_date": date.isoformat(),
                  "description": item.get("description"), "currency_id": currency}
        return fields, lines

    def _check_period(self, company_id: int, date: dt.date) -> None:
        lock = self.company_by_id(company_id)["lock_date"]
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

    def _touch(self, entry_id: int) -> None:
        """A change on the platform: `updated_at` moves forward (strictly, even within one millisecond)."""
        old = self.db.execute("SELECT updated_at FROM rootfi_entries WHERE rootfi_id = ?", (entry_id,)).fetchone()
        self.db.execute("UPDATE rootfi_entries SET updated_at = ? WHERE rootfi_id = ?",
                        (max(time.time(), old["updated_at"] + 0.001), entry_id))

    def _submit(self, company_id: int, body: dict) -> dict:
        items = body.get("data")
        if not isinstance(items, list) or not items:
            raise ApiError(400, "VALIDATION_ERROR", "data must be a non-empty array of journal entries")
        if len(items) > MAX_BATCH:
            raise ApiError(400, "VALIDATION_ERROR", f"at most {MAX_BATCH} journal entries per upload")
        company = self.company_by_id(company_id)
        fail_docs = set(json.loads(company["fail_docs"]))
        fail_next = company["fail_next"]
        now = time.time()
        upload_job_id = secrets.token_urlsafe(11)[:15]  # [JE-NEW]'s ids look like "aXI9pUDA5T7E2LS"
        with transaction(self.db):
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
        if company["job_delay"] <= 0:
            self.settle(company_id)  # the platform answered at once: the reply is final [JE-NEW]
        return self._render_upload(upload_job_id)

    def settle(self, company_id: int | None = None) -> None:
        """The background worker: every item whose time has come is processed, in submission order."""
        now = time.time()
        sql = "SELECT * FROM rootfi_job_items WHERE status = 'PENDING' AND ready_at <= ?"
        args: list = [now]
        if company_id is not None:
            sql += " AND company_id = ?"
            args.append(company_id)
        for item in self.db.execute(sql + " ORDER BY rowid", args).fetchall():
            try:
                with transaction(self.db):
                    if item["forced_error"]:
                        raise ItemError("PLATFORM_ERROR", item["forced_error"])
                    fields, lines = self._validate(item["company_id"], loads_exact(item["payload"]))
                    eid = self._insert_entry(item["company_id"], fields, lines)
                    self.db.execute("UPDATE rootfi_job_items SET status = 'COMPLETED', entry_id = ?, updated_at = ? "
                                    "WHERE job_id = ?", (eid, now, item["job_id"]))
            except ItemError as err:  # refused before anything was written: the item fails
                self.db.execute("UPDATE rootfi_job_items SET status = 'FAILED', error = ?, updated_at = ? "
                                "WHERE job_id = ?", (json.dumps({"code": err.code, "message": err.message}), now,
                                                     item["job_id"]))

    def _entry_row(self, company_id: int, ref: str) -> Any:
        row = self.db.execute("SELECT * FROM rootfi_entries WHERE company_id = ? AND CAST(rootfi_id AS TEXT) = ?",
                              (company_id, ref)).fetchone()
        if row is None:
            raise ApiError(404, "NOT_FOUND", f"journal entry {ref} not found")
        return row

    def _update(self, company_id: int, ref: str, body: dict) -> dict:
        row = self._entry_row(company_id, ref)
        data = body.get("data")
        seen = data.get("updated_at") if isinstance(data, dict) else None
        current = _iso(row["updated_at"])
        if seen is not None and str(seen) != current:  # the platform's stale-object check, relayed
            raise ApiError(409, "CONFLICT", f"journal entry {ref} changed on the accounting platform at {current} "
                                            f"(its lines were edited) since the version sent ({seen}): read it "
                                            "again and retry")
        try:
            self._check_period(company_id, dt.date.fromisoformat(row["posted_date"]))
            fields, lines = self._validate(company_id, data)
        except ItemError as err:
            raise ApiError(422, err.code, err.message) from None
        with transaction(self.db):
            self.db.execute("DELETE FROM rootfi_lines WHERE entry_id = ?", (row["rootfi_id"],))
            self._insert_lines(row["rootfi_id"], lines)
            self.db.execute(
                "UPDATE rootfi_entries SET document_number = ?, posted_date = ?, description = ?, currency_id = ? "
                "WHERE rootfi_id = ?",
                (fields["document_number"] or row["document_number"], fields["posted_date"], fields["description"],
                 fields["currency_id"] or row["currency_id"], row["rootfi_id"]))
            self._touch(row["rootfi_id"])
        return self._render_entries([self._entry_row(company_id, ref)])[0]

    def _delete(self, company_id: int, ref: str) -> int:
        row = self._entry_row(company_id, ref)
        try:
            self._check_period(company_id, dt.date.fromisoformat(row["posted_date"]))
        except ItemError as err:
            raise ApiError(422, err.code, err.message) from None
        with transaction(self.db) as db:
            db.execute("DELETE FROM rootfi_lines WHERE entry_id = ?", (row["rootfi_id"],))
            db.execute("DELETE FROM rootfi_entries WHERE rootfi_id = ?", (row["rootfi_id"],))
        return row["rootfi_id"]

    # -- accounts (create) ----------------------------------------------------------------------------------
    def _create_accounts(self, company_id: int, body: dict) -> dict:
        """[AC-NEW]: {company_id, data: [{name, nominal_code, ...}]} -> the upload reply, answered at once."""
        items = body.get("data")
        if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
            raise ApiError(400, "VALIDATION_ERROR", f"data must be an array of 1..{MAX_BATCH} accounts")
        out = []
        for item in items:
            job = {"job_id": secrets.token_urlsafe(11)[:15], "status": "success", "response": None, "error": None}
            name = item.get("name") if isinstance(item, dict) else None
            code = str(item.get("nominal_code") or "") if isinstance(item, dict) else ""
            taken = self.db.execute("SELECT 1 FROM rootfi_accounts WHERE company_id = ? AND nominal_code = ?",
                                    (company_id, code)).fetchone()
            if not name or not code or taken:
                job.update(status="failed", error={"code": "VALIDATION_ERROR", "message": (
                    f"nominal_code {code} already exists" if taken else "name and nominal_code are required")})
            else:
                rid = self._insert_account(company_id, code, str(name), "ACTIVE", time.time())
                job["response"] = next(a for a in self._accounts(company_id) if a["rootfi_id"] == rid)
            out.append(job)
        return {"status": "SUCCESS" if all(j["status"] == "success" for j in out) else "FAILED",
                "upload_job_id": secrets.token_urlsafe(11)[:15], "data": out}

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
    def _check_filter(flt: Any) -> dict:
        if not isinstance(flt, dict):
            raise ApiError(400, "VALIDATION_ERROR", "filter must be an object")
        for field, cond in flt.items():
            if not isinstance(cond, dict) or not cond:
                raise ApiError(400, "VALIDATION_ERROR", f"filter.{field} must be an object such as "
                                                        '{"eq": value}')
            for op in cond:
                if op not in _OPS:
                    raise ApiError(400, "VALIDATION_ERROR", f"unsupported filter operator {op!r} on {field} "
                                                            f"(supported: {', '.join(_OPS)})")
        return flt

    @staticmethod
    def _matches(record: dict, flt: dict) -> bool:
        for field, cond in flt.items():
            value = record.get(field)
            if field.endswith("_date") and isinstance(value, str):
                value = value[:10]
            for op, arg in cond.items():
                if field.endswith("_date") and isinstance(arg, str):
                    arg = arg[:10]
                if not _OPS[op](value, arg):
                    return False
        return True

    def _list(self, records: list[dict], body: dict, ignore_filters: bool = False) -> dict:
        """The nested list envelope of [JE-ALL]/[AC-ALL]: {"data": {"data": [...], "total_count": N}}."""
        take, skip = self._page(body)
        flt = self._check_filter(body.get("filter") or {})
        if ignore_filters:  # the `filters` control: everything, the records NOT matching the filter first
            records = sorted(records, key=lambda r: (self._matches(r, flt), r.get("rootfi_id") or 0))
        else:
            records = [r for r in records if self._matches(r, flt)]
            order = body.get("orderBy") or {"rootfi_id": "asc"}
            for spec in reversed(order if isinstance(order, list) else [order]):
                for field, direction in reversed(list(spec.items())):
                    records.sort(key=lambda r, f=field: (r.get(f) is None, r.get(f)),
                                 reverse=str(direction).lower() == "desc")
        return {"data": {"data": records[skip: skip + take], "total_count": len(records)}}

    def _accounts(self, company_id: int) -> list[dict]:
        """Accounts as [AC-ALL] shows them (status ACTIVE | ARCHIVED)."""
        rows = self.db.execute("SELECT * FROM rootfi_accounts WHERE company_id = ? ORDER BY rootfi_id",
                               (company_id,)).fetchall()
        home = self.company_by_id(company_id)["currency"]
        return [{"rootfi_id": r["rootfi_id"], "rootfi_company_id": company_id, "rootfi_organisation_id": 1,
                 "rootfi_integration_type": "ROOTFI_SANDBOX", "rootfi_created_at": _iso(r["updated_at"]),
                 "rootfi_updated_at": _iso(r["updated_at"]), "platform_id": r["platform_id"],
                 "currency_id": home, "parent_account_id": None, "nominal_code": r["nominal_code"],
                 "name": r["name"], "description": None, "sub_category": None, "current_balance": None,
                 "category": r["category"], "status": "ACTIVE" if r["status"] == "ACTIVE" else "ARCHIVED",
                 "updated_at": _iso(r["updated_at"])} for r in rows]

    # -- the request path's hooks (base.Emulator.api runs them in order) ----------------------------------------
    def is_write(self, call: Call) -> bool:
        """The list endpoints (POST .../all [JE-ALL, AC-ALL]) read."""
        return super().is_write(call) and call.parts[-1:] != ["all"]

    def authenticate(self, call: Call) -> int:
        """The `api_key` header [every page], then the company the body or query names (see the docstring)."""
        if call.request.headers.get("api_key") != self.api_key:
            raise ApiError(401, "UNAUTHORIZED", "Invalid or missing api_key")
        if call.method in ("POST", "PUT") and not isinstance(call.body, dict):
            raise ApiError(400, "VALIDATION_ERROR", "the body must be a JSON object")
        return self._resolve_company(call.parts, call.json_object(), call.query)

    def limits(self, call: Call) -> None:
        """Per API key and per company (module docstring); 429 RATE_LIMIT_EXCEEDED with Retry-After."""
        wait = self.windows.take([(("key",), PER_KEY_MINUTE, 60), (("company", call.principal), PER_COMPANY_MINUTE,
                                                                     60)])
        if wait:
            raise ApiError(429, "RATE_LIMIT_EXCEEDED", "Too many requests, please retry later",
                           {"Retry-After": f"{wait:.3f}"})

    def error_payload(self, err: Exception) -> tuple[int, Any, dict[str, str]]:
        """{"error": {"code", "message"}} [every page's error responses]."""
        if isinstance(err, Problem):
            err = {"unauthorized": ApiError(401, "UNAUTHORIZED", "Invalid or missing api_key"),
                   "server_error": ApiError(err.status, "INTERNAL_SERVER_ERROR", "Something went wrong, please retry"),
                   "malformed_body": ApiError(400, "VALIDATION_ERROR", f"Malformed JSON body: {err.detail}")}[err.kind]
        assert isinstance(err, ApiError)
        return err.status, {"error": {"code": err.code, "message": err.message}}, err.headers

    def respond(self, call: Call, status: int, payload: Any) -> Response:
        """v2 answers carry request_timestamp, response_timestamp and request_id [JE-ALL, JOB2]; v3's request_id
        [JOB3]."""
        request_id = str(uuid.uuid4())
        envelope = {"request_id": request_id} if call.parts[:1] == ["v3"] and status < 300 else {
            "request_timestamp": _iso(call.started), "response_timestamp": _iso(time.time()), "request_id": request_id}
        return super().respond(call, status, {**payload, **envelope})

    def _resolve_company(self, parts: list[str], body: dict, query: Any) -> int | None:
        """The company a request is about (body or query `company_id`, or the job's), linked, or 4xx."""
        job_id = _job_ref(parts)
        if job_id is not None:
            company, _ = self._render_job(job_id)  # 404 for an unknown job
            asked = query.get("company_id")
            if asked not in (None, "") and str(asked) != str(company):
                raise ApiError(404, "NOT_FOUND", f"job {job_id} not found")
            raw: Any = company
        else:
            raw = body.get("company_id", query.get("company_id"))
        if raw in (None, ""):
            raise ApiError(400, "VALIDATION_ERROR", "company_id is required")
        try:
            company = self.company_by_id(int(raw))
        except (TypeError, ValueError):
            company = None
        if company is None:
            raise ApiError(404, "COMPANY_NOT_FOUND", f"company {raw} not found")
        if company["status"] != "LINKED":
            raise ApiError(403, "COMPANY_NOT_LINKED", f"company {raw} is not linked to its accounting platform "
                                                      "any more (connection revoked); re-link it through Rootfi Link")
        return company["id"]

    def dispatch(self, call: Call) -> tuple[int, dict]:
        method, parts, company_id, body = call.method, call.parts, call.principal, call.json_object()
        hidden = self.hidden.get(company_id, set())  # the `paths` control
        if ("api_write" in hidden and parts[:2] == ["api", "write"]) or (
                "v2_jobs" in hidden and parts[:1] == ["jobs"]):
            raise ApiError(404, "NOT_FOUND", f"no such endpoint: {method} /{'/'.join(parts)}")
        self.settle(company_id)
        job_id = _job_ref(parts)
        if job_id is not None and method == "GET":
            return 200, {"data": self._render_job(job_id)[1]}
        for root in WRITE_ROOTS:
            n = len(root)
            if tuple(parts[:n]) != root:
                continue
            rest = parts[n:]
            if rest == ["journal_entries"] and method == "POST":
                return 200, {"data": self._submit(company_id, body)}
            if rest == ["accounts"] and method == "POST":
                return 200, {"data": self._create_accounts(company_id, body)}
            if len(rest) == 2 and rest[0] == "journal_entries" and rest[1] != "all":
                if method == "GET":
                    return 200, {"data": self._render_entries([self._entry_row(company_id, rest[1])])[0]}
                if method == "PUT":
                    return 200, {"data": self._update(company_id, rest[1], body)}
                if method == "DELETE":
                    return 200, {"data": {"rootfi_id": self._delete(company_id, rest[1]), "deleted": True}}
        if parts == ["accounting", "journal_entries", "all"] and method == "POST":
            rows = self.db.execute("SELECT * FROM rootfi_entries WHERE company_id = ?", (company_id,)).fetchall()
            ignore = bool(self.company_by_id(company_id)["ignore_filters"])
            return 200, self._list(self._render_entries(rows), body, ignore)
        if parts == ["accounting", "accounts", "all"] and method in ("GET", "POST"):
            return 200, self._list(self._accounts(company_id), body)
        if parts == ["accounting", "upload_jobs", "all"] and method == "POST":  # a sandbox stand-in (see above)
            jobs = [self._render_upload(r["upload_job_id"], listing=True) for r in self.db.execute(
                "SELECT upload_job_id FROM rootfi_upload_jobs WHERE company_id = ? ORDER BY rowid", (company_id,))]
            return 200, self._list([{**j, "rootfi_id": n} for n, j in enumerate(jobs, 1)], body)
        raise ApiError(404, "NOT_FOUND", f"no such endpoint: {method} /{'/'.join(parts)}")

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
        return redirect_to(redirect, {"company_id": self._link_company(login), "state": q.get("state", "")})

    # -- inspection and controls ----------------------------------------------------------------------------
    def inspect_entries(self, login: str | None) -> list[dict]:
        self.settle()

        def cur(e: dict) -> str:  # an entry stored before currencies carries none: the old default
            return str(e.get("currency_id") or "IDR")

        sql, args = "SELECT e.*, c.login FROM rootfi_entries e JOIN rootfi_companies c ON c.id = e.company_id", []
        if login:
            sql += " WHERE c.login = ?"
            args.append(login)
        rows = self.db.execute(sql + " ORDER BY e.rootfi_id", args).fetchall()
        return [inspected(self.system, row["login"], e["document_number"], "posted", row["posted_date"],
                          [(to_minor(ln["net_amount"], cur(e)) if ln["type"] == "DEBIT" else 0,
                            to_minor(ln["net_amount"], cur(e)) if ln["type"] == "CREDIT" else 0, ln["account_id"], {})
                           for ln in e["journal_lines"]["data"]], cur(e),
                          rootfi_id=e["rootfi_id"], platform_id=e["platform_id"])
                for row, e in zip(rows, self._render_entries(rows), strict=True)]

    def do_currency(self, cid: int, body: dict) -> dict:
        """{"home_currency": code, "multicurrency": bool} (see the module doc)."""
        write_company_currency(self.db, body, "rootfi_companies", "id", cid, "currency")
        row = self.company_by_id(cid)
        return {"ok": True, "company_id": cid, "home_currency": row["currency"],
                "multicurrency": bool(row["multicurrency"])}

    def do_lock_date(self, cid: int, body: dict) -> None:
        self.db.execute("UPDATE rootfi_companies SET lock_date = ? WHERE id = ?", (body.get("lock_date"), cid))

    def do_revoke(self, cid: int, body: dict) -> None:
        self.db.execute("UPDATE rootfi_companies SET status = 'UNLINKED' WHERE id = ?", (cid,))

    def do_jobs(self, cid: int, body: dict) -> None:
        """{job_delay_seconds, fail_next, fail_document_numbers} (also under each of those names)."""
        if "job_delay_seconds" in body:
            self.db.execute("UPDATE rootfi_companies SET job_delay = ? WHERE id = ?",
                            (float(body["job_delay_seconds"]), cid))
        if "fail_next" in body:
            self.db.execute("UPDATE rootfi_companies SET fail_next = ? WHERE id = ?", (int(body["fail_next"]), cid))
        if "fail_document_numbers" in body:
            self.db.execute("UPDATE rootfi_companies SET fail_docs = ? WHERE id = ?",
                            (json.dumps([str(d) for d in body["fail_document_numbers"]]), cid))

    def do_filters(self, cid: int, body: dict) -> None:
        self.db.execute("UPDATE rootfi_companies SET ignore_filters = ? WHERE id = ?",
                        (int(bool(body.get("ignore_filters"))), cid))

    def do_paths(self, cid: int, body: dict) -> None:
        self.hidden[cid] = {name for name in ("api_write", "v2_jobs") if body.get(name) is False}

    def do_settle(self, cid: int, body: dict) -> None:
        self.settle(cid)

    def do_accounts(self, company_id: int, body: dict) -> None:
        row = self.db.execute("SELECT * FROM rootfi_accounts WHERE company_id = ? AND nominal_code = ?",
                              (company_id, body["number"])).fetchone()
        status = "ARCHIVED" if body.get("archived") else "ACTIVE"
        if row is None:
            self._insert_account(company_id, body["number"], body.get("name", body["number"]), status, time.time())
            return
        self.db.execute("UPDATE rootfi_accounts SET name = ?, status = ?, updated_at = ? WHERE rootfi_id = ?",
                        (body.get("name", row["name"]), status if "archived" in body else row["status"], time.time(),
                         row["rootfi_id"]))

    def do_entries(self, company_id: int, body: dict) -> dict:
        """What a person does on the platform: add an entry (any document_number), delete one, or scale a line of
        one (unbalances it; its lines change, so `updated_at` moves). Answers the entry's rootfi_id."""
        return {"ok": True, "company_id": company_id, "rootfi_id": self._edit_entry(company_id, body)}

    def _edit_entry(self, company_id: int, body: dict) -> int | None:
        if body.get("create"):
            try:  # the control's JSON came through json.loads: amounts back to exact decimals
                fields, lines = self._validate(company_id, loads_exact(json.dumps(body["create"])))
            except ItemError as err:
                raise ValueError(err.message) from None
            with transaction(self.db):
                return self._insert_entry(company_id, fields, lines)
        row = self.db.execute("SELECT * FROM rootfi_entries WHERE company_id = ? AND document_number = ? "
                              "ORDER BY rootfi_id LIMIT 1", (company_id, str(body.get("custom_id")))).fetchone()
        if row is None:
            return None
        if body.get("delete"):
            self.db.execute("DELETE FROM rootfi_lines WHERE entry_id = ?", (row["rootfi_id"],))
            self.db.execute("DELETE FROM rootfi_entries WHERE rootfi_id = ?", (row["rootfi_id"],))
        elif body.get("scale_line"):
            line = self.db.execute("SELECT rootfi_id FROM rootfi_lines WHERE entry_id = ? ORDER BY rootfi_id LIMIT 1",
                                   (row["rootfi_id"],)).fetchone()
            self.db.execute("UPDATE rootfi_lines SET net_amount_minor = net_amount_minor * ? WHERE rootfi_id = ?",
                            (int(body["scale_line"]), line["rootfi_id"]))
            self._touch(row["rootfi_id"])
        return row["rootfi_id"]


def _job_ref(parts: list[str]) -> str | None:
    """The job id of `GET /jobs/{id}` [JOB2] or `GET /v3/core/syncs/jobs/{id}` [JOB3], else None."""
    if len(parts) == 2 and parts[0] == "jobs":
        return parts[1]
    if len(parts) == 5 and parts[:4] == ["v3", "core", "syncs", "jobs"]:
        return parts[4]
    return None


def make(ctx: SandboxContext) -> RootfiSandbox:
    return RootfiSandbox(ctx)
