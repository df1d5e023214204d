"""The Aden sandbox: a local general ledger with Aden's approval workflow, served under `/aden`.

Written from Aden's published GL docs (docs.adenhq.com, read 2025; seed 003 is the journal-entries overview page):
- D1 https://docs.adenhq.com/quickstart (auth, create body with a client-chosen `entry_id` such as "JE-2024-001")
- D2 https://docs.adenhq.com/development (base URL, `Authorization: jwt <token>`, `X-Idempotency-Key` "recommended
  for mutations", error body, limit/offset paging, 2-dp amounts, rate limit 1000 requests/minute, error statuses)
- D3 https://docs.adenhq.com/api-reference/general-ledger/introduction (statuses, period checks, header table)
- D4 .../general-ledger/journal-entries/overview (entry properties, line fields `line_number/account_id/debit/credit/
  memo`, entry types, workflow) = seeds/003
- D5 .../journal-entries/list (filters status, entry_type, start_date, end_date, posting_period_id, limit <= 100,
  offset; rows without lines; `{"data": [...], "pagination": {total, limit, offset, has_more}}`)
- D6 .../journal-entries/workflow (bare answers, entries addressed by `journal_entry_id` "JE-2024-002";
  submit-for-approval -> {journal_entry_id, status, required_approval_level, submitted_at, submitted_by}; approve ->
  {..., status "Posted", posted, level, message}; reject needs a reason; X-Idempotency-Key on approvals)
- D7 .../journal-entries/update (PUT {memo, lines (the full array)}, Draft only; answers the whole entry)
- D8 .../journal-entries/delete (Draft only), D9 .../journal-entries/void (body `void_reason`, answer
  {journal_entry_id, status "Voided", void_reason, voided_at, voided_by}), D10 .../journal-entries/post
- D11 .../journal-entries/reverse (body {reversal_date, memo}; answers the reversing entry: journal_entry_id
  "JE-2024-001-REV", original_entry_id, entry_type "Reversing", status "Draft", lines)
- D12 .../accounting-periods/overview and /list (`period_id`, `period_name` "January 2024", `fiscal_year_id`,
  start_date, end_date, quarter, is_adjustment_period, `is_closed`; filters fiscal_year_id, is_closed, start_date,
  end_date)
- D13 https://docs.adenhq.com/mcp-server/configuration ("contact your Aden administrator to obtain ... a JWT token")

What the sandbox adds or assumes (not in the docs):
- The JWT: Aden's administrator issues it; there is no OAuth flow. The sandbox plays the administrator at
  `POST /_sandbox/aden/companies/<login>/jwt` (loopback only, like every /_sandbox route): it creates the company on
  first use (default chart, monthly periods 2023-01..2028-12) and answers {"token", "token_type": "jwt",
  "company_id", "company_login"}. A login a path segment cannot carry (a "/": the server decodes %2F before routing)
  is named in the body instead: {"company_login": "a/b"} (every Aden control accepts that override). The JWT is HS256
  with the sandbox's own key, no expiry; the `revoke` control invalidates it (401).
- Addressing: D1 creates with `entry_id`, D5/D6 address and list entries by `journal_entry_id` with values of the same
  form, so by default journal_entry_id == entry_id and answers carry no separate `entry_id` (as the documented answers
  do). The `quirks` control {"server_ids": true} makes the server assign its own ids ("je_<n>") and echo `entry_id`
  (the other reading): clients must work with both.
- Entry ids: undocumented rules; the sandbox assumes 1-50 characters of [A-Za-z0-9._-] (D1/D6 examples) and refuses
  others with VALIDATION_ERROR on `entry_id`.
- Filters: only D5's; any other query parameter (`entry_id`, `from_date`) is ignored, as a server does with what it
  does not know. The `quirks` control {"ignore_filters": true} ignores even those and lists every company's entries,
  other companies' first (a broken or hostile server): a client must check every hit's id itself.
- One-shot edits racing our writes: the `entries` control {"custom_id", "before_next_update": "submit"} makes the
  company's user submit that entry just before the next PUT to it arrives (the PUT is then refused 409).
- Extra fields: `status_changed_at`, `status_reason`, `submitted_at`, `change_requested`, `updated_at`, `created_at`
  on reads, and `reversed_by` on a reversed original (D11 only shows `original_entry_id` on the reversal).
- Workflow: each company has an approval threshold (control `approval_threshold`); submit-for-approval of an entry
  whose total is below it needs approval level 0 and is approved and auto-posted at once (D6: "required approval level
  is automatically determined based on amount thresholds"; approval auto-posts), otherwise it waits in Pending
  Approval (control `approvals`: approve / reject / hold / release / request_change / void / post / submit).
- Idempotency: `X-Idempotency-Key` on any write (D2); a 2xx answer is stored with the write, in its transaction, and
  replayed for the same key and request (header `Idempotent-Replayed: true`); the same key with a different request is
  refused (422 IDEMPOTENCY_KEY_REUSED). Errors are not stored, so a fixed cause can be retried.
- Rate limit: D2's 1000 requests/minute, per company token (429 RATE_LIMITED with Retry-After), time-scaled.
- Currencies: each company keeps its books in one currency (default IDR; the accounts' `currency`) and has a
  multicurrency switch (default on); control `currency` {"home_currency": code, "multicurrency": bool}. An entry's
  `currency` (default the company's) must be an ISO 4217 code; one foreign to the company needs multicurrency (else
  422 VALIDATION_ERROR on `currency`) and an `exchange_rate` > 0 with at most 6 decimals (1 entry currency = rate
  company currency; else VALIDATION_ERROR on `exchange_rate`): the journal-entries overview's currency and
  exchange_rate fields. Amounts: D2's at most 2 decimals, and no finer than the currency's ISO 4217 minor unit (a JPY
  amount with decimals is VALIDATION_ERROR, never rounded). Each entry returns its currency and exchange_rate.
  A Draft's update (D7) may send `currency` and `exchange_rate` too (the overview lists them as the entry's fields;
  D7 names memo and lines only, so this is our reading): absent, the entry keeps its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import sqlite3
import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

import jwt
from starlette.requests import Request
from starlette.routing import Route

from ledger_pipeline import clock
from ledger_pipeline.money import currency_problem, dumps_exact, loads_exact, minor_unit, to_minor
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

SYSTEM = "aden"
PREFIX = "/aden"
API = f"{PREFIX}/service/general-ledger"
JWT_SECRET = "aden-sandbox-jwt-signing-key-not-a-secret"  # noqa: S105 - the sandbox's own signing key, never a client's secret
PER_TOKEN_MINUTE = 1000  # D2 "Standard limit: 1000 requests per minute" (counted per company token here)
FIRST_PERIOD, LAST_PERIOD = (2023, 1), (2028, 12)
IDEMPOTENCY_TTL = 24 * 3600.0
DEFAULT_CURRENCY = "IDR"
ENTRY_TYPES = ("Standard", "Adjusting", "Closing", "Reversing")
SUBMITTED = ("Pending Approval", "On Hold", "Approved")
ENTRY_ID_RULE = re.compile(r"[A-Za-z0-9._-]{1,50}")  # assumed, see the module docstring
MAX_PAGE = 100  # D5 "Maximum number of records to return (max 100)"
SANDBOX_USER = "aden-sandbox-approver"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS aden_companies (company_id TEXT PRIMARY KEY, login TEXT UNIQUE NOT NULL, name TEXT,
  currency TEXT NOT NULL, approval_threshold_minor INTEGER, lock_date TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS aden_tokens (jti TEXT PRIMARY KEY, company_id TEXT NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0, issued_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS aden_accounts (company_id TEXT NOT NULL, account_id TEXT NOT NULL,
  account_number TEXT NOT NULL, account_name TEXT NOT NULL, account_type TEXT NOT NULL, normal_balance TEXT NOT NULL,
  is_inactive INTEGER NOT NULL DEFAULT 0, parent_account_id TEXT, seq INTEGER NOT NULL,
  PRIMARY KEY (company_id, account_id));
CREATE TABLE IF NOT EXISTS aden_accounting_periods (company_id TEXT NOT NULL, period_id TEXT NOT NULL,
  period_name TEXT NOT NULL, fiscal_year_id TEXT NOT NULL, start_date TEXT NOT NULL, end_date TEXT NOT NULL,
  quarter INTEGER NOT NULL, is_adjustment_period INTEGER NOT NULL DEFAULT 0, is_closed INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (company_id, period_id));
CREATE TABLE IF NOT EXISTS aden_journal_entries (pk INTEGER PRIMARY KEY, company_id TEXT NOT NULL,
  journal_entry_id TEXT NOT NULL, entry_id TEXT NOT NULL, tran_date TEXT NOT NULL, memo TEXT,
  entry_type TEXT NOT NULL, posting_period_id TEXT NOT NULL, currency TEXT NOT NULL, status TEXT NOT NULL,
  status_changed_at REAL NOT NULL, status_reason TEXT, submitted_at REAL, change_requested INTEGER NOT NULL DEFAULT 0,
  required_approval_level INTEGER, original_entry_id TEXT, reversed_by TEXT, void_reason TEXT,
  created_at REAL NOT NULL, updated_at REAL NOT NULL,
  UNIQUE (company_id, journal_entry_id), UNIQUE (company_id, entry_id));
CREATE INDEX IF NOT EXISTS aden_journal_entries_date ON aden_journal_entries (company_id, tran_date);
CREATE TABLE IF NOT EXISTS aden_journal_lines (entry_pk INTEGER NOT NULL, line_number INTEGER NOT NULL,
  account_id TEXT NOT NULL, debit_minor INTEGER NOT NULL, credit_minor INTEGER NOT NULL, memo TEXT,
  PRIMARY KEY (entry_pk, line_number));
CREATE TABLE IF NOT EXISTS aden_idempotency (company_id TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
  status INTEGER NOT NULL, body TEXT, created_at REAL NOT NULL, PRIMARY KEY (company_id, key));
"""

# account_type and normal_balance (D4's account fields) by the chart's class
_TYPES = {"asset": ("Asset", "Debit"), "liability": ("Liability", "Credit"), "equity": ("Equity", "Credit"),
          "revenue": ("Revenue", "Credit"), "expense": ("Expense", "Debit")}
_PERIOD_ID_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class ApiError(Exception):
    """An answer in D2's error shape: {"error": {"code", "message", "details": {"field", "value"}}}."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, value: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        self.details = {"field": field, "value": value} if field is not None else {}

    @property
    def body(self) -> dict:
        err: dict = {"code": self.code, "message": self.message}
        if self.details:
            err["details"] = self.details
        return {"error": err}


def _invalid(message: str, field: str, value: Any = None) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", message, field, value)


def _iso(ts: float | None, timespec: str = "seconds") -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec=timespec)


AMOUNT_PLACES = 2  # D2: amounts carry at most 2 decimals; stored as hundredths whatever the currency


def _dec(hundredths: int) -> Decimal:
    """A stored amount (hundredths, AMOUNT_PLACES) as the exact decimal Aden answers."""
    return (Decimal(hundredths) / 100).quantize(Decimal("0.01"))


def _amount(value: Any, field: str, currency: str = DEFAULT_CURRENCY) -> int:
    """D2: amounts are numbers with at most 2 decimals, and none finer than `currency`'s ISO 4217 minor unit (JPY:
    whole yen); never negative (one side per line, D4). Hundredths."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _invalid(f"{field} must be a number", field, None if value is None else str(value))
    dec = Decimal(value)
    if dec < 0:
        raise _invalid(f"{field} must not be negative", field, str(value))
    places = min(AMOUNT_PLACES, minor_unit(currency))
    if dec != dec.quantize(Decimal(1).scaleb(-places)):
        raise _invalid(f"{field} has more than {places} decimal places for {currency}", field, str(value))
    return int(dec * 100)


def _month_end(year: int, month: int) -> dt.date:
    return clock.month_end(dt.date(year, month, 1))


def _flag(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    return value.strip().lower() in ("true", "1", "yes")


class RateLimiter(Windows):
    """D2 "Standard limit: 1000 requests per minute", counted per company token (`per_minute` may be lowered)."""

    per_minute = PER_TOKEN_MINUTE

    def check(self, company_id: str) -> float:
        """0.0 when allowed (and counted), else the real seconds until the company's minute resets."""
        return self.take([(company_id, self.per_minute, 60)])


class AdenSandbox(Emulator):
    """The Aden emulation, state in `aden_*` tables of the shared state file."""

    system = SYSTEM
    api_prefix = API
    errors = (ApiError,)
    companies = ("aden_companies", "company_id")
    schema = _SCHEMA
    added_columns = ("ALTER TABLE aden_companies ADD COLUMN multicurrency INTEGER NOT NULL DEFAULT 1",
                     "ALTER TABLE aden_journal_entries ADD COLUMN exchange_rate TEXT")
    ids = {"journal-entries": "{id}", "accounting-periods": "{id}"}  # stats: .../journal-entries/{id}/approve

    def __init__(self, ctx: SandboxContext):
        super().__init__(ctx)
        self.rate = RateLimiter(ctx.limits)
        self.quirks: dict[str, dict] = {}  # company_id -> {"server_ids": bool, "ignore_filters": bool}
        self.before_update: dict[tuple[str, str], str] = {}  # (company_id, entry_id) -> a user's action

    def routes(self) -> list[Route]:
        return [Route(API + "/{path:path}", self.api, methods=["GET", "POST", "PUT", "DELETE"])]

    # -- companies, charts, periods ------------------------------------------------------------------------
    def _ensure_company(self, login: str) -> str:
        """The company named `login` (created on first use with the default chart), with its monthly periods."""
        row = self.company_by_login(login)
        db = self.db
        with transaction(db):
            if row is None:
                company_id = str(uuid.uuid4())
                db.execute("INSERT INTO aden_companies (company_id, login, name, currency, approval_threshold_minor, "
                           "lock_date, created_at) VALUES (?, ?, ?, ?, NULL, NULL, ?)",
                           (company_id, login, f"{login} (Aden sandbox)", DEFAULT_CURRENCY, time.time()))
                db.executemany(
                    "INSERT INTO aden_accounts (company_id, account_id, account_number, account_name, account_type, "
                    "normal_balance, is_inactive, parent_account_id, seq) VALUES (?, ?, ?, ?, ?, ?, 0, NULL, ?)",
                    [(company_id, number, number, name, *_TYPES[classification(number)], i)
                     for i, (number, name, _) in enumerate(DEFAULT_CHART)])
            else:
                company_id = row["company_id"]
            if not db.execute("SELECT 1 FROM aden_accounting_periods WHERE company_id = ? LIMIT 1",
                              (company_id,)).fetchone():
                rows = []
                year, month = FIRST_PERIOD
                while (year, month) <= LAST_PERIOD:
                    start = dt.date(year, month, 1)
                    period_id = "".join(secrets.choice(_PERIOD_ID_ALPHABET) for _ in range(18))  # D12 "a3UM4R8n..."
                    rows.append((company_id, period_id, start.strftime("%B %Y"), f"FY{year}", start.isoformat(),
                                 _month_end(year, month).isoformat(), (month - 1) // 3 + 1))
                    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
                db.executemany("INSERT INTO aden_accounting_periods (company_id, period_id, period_name, "
                               "fiscal_year_id, start_date, end_date, quarter, is_adjustment_period, is_closed) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0)", rows)
        return company_id

    def _period(self, company_id: str, period_id: Any) -> sqlite3.Row:
        row = self.db.execute("SELECT * FROM aden_accounting_periods WHERE company_id = ? AND period_id = ?",
                              (company_id, str(period_id))).fetchone()
        if row is None:
            raise _invalid(f"Accounting period {period_id} does not exist", "posting_period_id", period_id)
        return row

    def _period_for_date(self, company_id: str, date: dt.date) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM aden_accounting_periods WHERE company_id = ? AND start_date <= ? AND "
                               "end_date >= ? AND is_adjustment_period = 0",
                               (company_id, date.isoformat(), date.isoformat())).fetchone()

    def _check_period(self, period: sqlite3.Row, date: dt.date) -> None:
        """D3's period checks: the period is open and the date falls inside it."""
        if period["is_closed"]:
            raise _invalid(f"Accounting period {period['period_name']} is closed; entries cannot be posted to it",
                           "posting_period_id", period["period_id"])
        if not period["start_date"] <= date.isoformat() <= period["end_date"]:
            raise _invalid(f"tran_date {date} is outside accounting period {period['period_name']} "
                           f"({period['start_date']} to {period['end_date']})", "tran_date", date.isoformat())

    def _account(self, company_id: str, account_id: Any) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM aden_accounts WHERE company_id = ? AND account_id = ?",
                               (company_id, str(account_id))).fetchone()

    def _server_ids(self, company_id: str) -> bool:
        return bool(self.quirks.get(company_id, {}).get("server_ids"))

    # -- rendering -------------------------------------------------------------------------------------------
    def _lines(self, pk: int) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM aden_journal_lines WHERE entry_pk = ? ORDER BY line_number",
                               (pk,)).fetchall()

    def _summary(self, e: sqlite3.Row, lines: list[sqlite3.Row] | None = None) -> dict:
        """A list row (D5: no lines), plus the sandbox's extra fields."""
        lines = self._lines(e["pk"]) if lines is None else lines
        out = {"journal_entry_id": e["journal_entry_id"]}
        if self._server_ids(e["company_id"]):
            out["entry_id"] = e["entry_id"]
        out.update({
            "tran_date": e["tran_date"], "posting_period_id": e["posting_period_id"], "memo": e["memo"],
            "entry_type": e["entry_type"], "currency": e["currency"],
            "exchange_rate": None if e["exchange_rate"] is None else Decimal(e["exchange_rate"]), "status": e["status"],
            "total_debit": _dec(sum(r["debit_minor"] for r in lines)),
            "total_credit": _dec(sum(r["credit_minor"] for r in lines)),
            "created_at": _iso(e["created_at"]), "updated_at": _iso(e["updated_at"], "microseconds"),
            "status_changed_at": _iso(e["status_changed_at"]), "reversed_by": e["reversed_by"],
        })
        if e["original_entry_id"]:
            out["original_entry_id"] = e["original_entry_id"]
        return out

    def render(self, e: sqlite3.Row) -> dict:
        """A whole entry (D7/D11 answers): the summary, the lines, and the workflow fields."""
        lines = self._lines(e["pk"])
        out = self._summary(e, lines)
        out.update({
            "lines": [{"line_number": r["line_number"], "account_id": r["account_id"],
                       "debit": _dec(r["debit_minor"]), "credit": _dec(r["credit_minor"]),
                       "memo": r["memo"]} for r in lines],
            "status_reason": e["status_reason"], "submitted_at": _iso(e["submitted_at"]),
            "change_requested": bool(e["change_requested"]),
        })
        if e["void_reason"]:
            out["void_reason"] = e["void_reason"]
        return out

    def _entry(self, company_id: str, jeid: str) -> sqlite3.Row:
        row = self.db.execute("SELECT * FROM aden_journal_entries WHERE company_id = ? AND journal_entry_id = ?",
                              (company_id, jeid)).fetchone()
        if row is None:
            raise ApiError(404, "NOT_FOUND", f"Journal entry {jeid} not found", "journal_entry_id", jeid)
        return row

    def _by_pk(self, pk: int) -> sqlite3.Row:
        return self.db.execute("SELECT * FROM aden_journal_entries WHERE pk = ?", (pk,)).fetchone()

    # -- entry writes ----------------------------------------------------------------------------------------
    def _parse_lines(self, company_id: str, raw: Any, currency: str = DEFAULT_CURRENCY) -> list[tuple]:
        if not isinstance(raw, list) or len(raw) < 2:
            raise _invalid("an entry needs at least 2 lines", "lines", None)
        lines, numbers = [], set()
        for i, ln in enumerate(raw):
            where = f"lines[{i}]"
            if not isinstance(ln, dict):
                raise _invalid(f"{where} must be an object", where)
            number = ln.get("line_number", i + 1)
            if not isinstance(number, int) or isinstance(number, bool) or number in numbers:
                raise _invalid(f"{where}.line_number must be a unique integer", f"{where}.line_number", number)
            numbers.add(number)
            acc = self._account(company_id, ln.get("account_id"))
            if acc is None:
                raise _invalid(f"Account {ln.get('account_id')} does not exist", f"{where}.account_id",
                               ln.get("account_id"))
            if acc["is_inactive"]:
                raise _invalid(f"Account {acc['account_id']} is inactive", f"{where}.account_id", acc["account_id"])
            debit = _amount(ln.get("debit", 0), f"{where}.debit", currency)
            credit = _amount(ln.get("credit", 0), f"{where}.credit", currency)
            if (debit == 0) == (credit == 0):
                raise _invalid(f"{where} must have either a debit or a credit (the other side 0)", where)
            memo = ln.get("memo")
            lines.append((number, acc["account_id"], debit, credit, None if memo is None else str(memo)))
        total_d, total_c = sum(x[2] for x in lines), sum(x[3] for x in lines)
        if total_d != total_c:  # D4 "Balancing Rules"
            raise _invalid(f"Entry does not balance: debits {_dec(total_d)} != credits {_dec(total_c)}",
                           "lines", None)
        return lines

    def _parse(self, company_id: str, body: Any, current: sqlite3.Row | None = None) -> dict:
        """A create body (D1/D4), or an update body (D7: memo and the full lines; other fields kept)."""
        if not isinstance(body, dict):
            raise _invalid("request body must be a JSON object", "body")
        if current is None:
            entry_id = body.get("entry_id")
            if not isinstance(entry_id, str) or not ENTRY_ID_RULE.fullmatch(entry_id):
                raise _invalid("entry_id is required: 1 to 50 characters of A-Z a-z 0-9 . _ -", "entry_id", entry_id)
        else:
            entry_id = current["entry_id"]
        raw_date = body.get("tran_date", current["tran_date"] if current is not None else None)
        try:
            date = dt.date.fromisoformat(str(raw_date))
        except ValueError:
            raise _invalid("tran_date must be a date (YYYY-MM-DD)", "tran_date", raw_date) from None
        entry_type = body.get("entry_type", current["entry_type"] if current is not None else "Standard")
        if entry_type not in ENTRY_TYPES:
            raise _invalid(f"entry_type must be one of {', '.join(ENTRY_TYPES)}", "entry_type", entry_type)
        currency = body.get("currency", current["currency"] if current is not None else DEFAULT_CURRENCY)
        if not isinstance(currency, str) or currency_problem(currency.upper()) is not None:
            raise _invalid("currency must be an ISO 4217 code", "currency", currency)
        currency = currency.upper()
        company = self.company_by_id(company_id)
        rate = body.get("exchange_rate", current["exchange_rate"] if current is not None else None)
        if currency == company["currency"]:
            rate = None
        elif not company["multicurrency"]:
            raise _invalid(f"currency {currency} is not the company currency {company['currency']} and "
                           "multi-currency is not enabled for this company", "currency", currency)
        else:
            try:
                dec = None if rate is None or isinstance(rate, bool | float) else Decimal(str(rate))
            except InvalidOperation:
                dec = None
            if dec is None or not dec.is_finite() or dec <= 0 or dec != dec.quantize(Decimal("0.000001")):
                raise _invalid(f"exchange_rate (> 0, at most 6 decimals) is required for a {currency} entry in a "
                               f"{company['currency']} company", "exchange_rate", None if rate is None else str(rate))
            rate = str(dec)
        if body.get("posting_period_id") is not None:
            period = self._period(company_id, body["posting_period_id"])
        elif current is not None and "tran_date" not in body:
            period = self._period(company_id, current["posting_period_id"])
        else:  # D1's create example names no period: the one containing tran_date
            period = self._period_for_date(company_id, date)
            if period is None:
                raise _invalid(f"No accounting period contains {date}", "posting_period_id", None)
        self._check_period(period, date)
        lines = (self._parse_lines(company_id, body.get("lines"), currency) if "lines" in body or current is None
                 else None)
        memo = body.get("memo", current["memo"] if current is not None else None)
        return {"entry_id": entry_id, "date": date, "memo": memo, "entry_type": entry_type,
                "currency": currency, "exchange_rate": rate, "period_id": period["period_id"], "lines": lines}

    def _insert(self, company_id: str, p: dict, status: str, original: str | None = None,
                jeid: str | None = None) -> int:
        if self.db.execute("SELECT 1 FROM aden_journal_entries WHERE company_id = ? AND (entry_id = ? OR "
                           "journal_entry_id = ?)", (company_id, p["entry_id"], p["entry_id"])).fetchone():
            raise ApiError(409, "DUPLICATE_ENTRY", f"A journal entry with entry_id {p['entry_id']} already exists",
                           "entry_id", p["entry_id"])  # D2: 409 "Resource already exists"
        now = time.time()
        if jeid is None:
            if self._server_ids(company_id):
                n = self.db.execute("SELECT COALESCE(MAX(pk), 0) + 1 FROM aden_journal_entries").fetchone()[0]
                jeid = f"je_{n}"
            else:
                jeid = p["entry_id"]
        cur = self.db.execute(
            "INSERT INTO aden_journal_entries (company_id, journal_entry_id, entry_id, tran_date, memo, entry_type, "
            "posting_period_id, currency, status, status_changed_at, original_entry_id, created_at, updated_at, "
            "exchange_rate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (company_id, jeid, p["entry_id"], p["date"].isoformat(), p["memo"], p["entry_type"], p["period_id"],
             p["currency"], status, now, original, now, now, p.get("exchange_rate")))
        self._write_lines(cur.lastrowid, p["lines"])
        return cur.lastrowid

    def _write_lines(self, pk: int, lines: list[tuple]) -> None:
        self.db.execute("DELETE FROM aden_journal_lines WHERE entry_pk = ?", (pk,))
        self.db.executemany("INSERT INTO aden_journal_lines (entry_pk, line_number, account_id, debit_minor, "
                            "credit_minor, memo) VALUES (?, ?, ?, ?, ?, ?)",
                            [(pk, n, acc, d, c, memo) for n, acc, d, c, memo in lines])

    def _set_status(self, pk: int, status: str, reason: str | None = None, **cols: Any) -> None:
        now = time.time()
        sets = ", ".join(f"{k} = ?" for k in cols)
        self.db.execute(f"UPDATE aden_journal_entries SET status = ?, status_changed_at = ?, status_reason = ?, "
                        f"updated_at = ?{', ' + sets if sets else ''} WHERE pk = ?",
                        (status, now, reason, now, *cols.values(), pk))

    def _require(self, e: sqlite3.Row, action: str, allowed: tuple[str, ...]) -> None:
        if e["status"] not in allowed or e["reversed_by"]:
            state = "Posted (reversed)" if e["reversed_by"] else e["status"]
            raise ApiError(409, "INVALID_STATUS", f"Cannot {action} a journal entry in status {state}",
                           "status", state)  # D2: 409 "state conflict"

    def _total(self, pk: int) -> int:
        return self.db.execute("SELECT COALESCE(SUM(debit_minor), 0) FROM aden_journal_lines WHERE entry_pk = ?",
                               (pk,)).fetchone()[0]

    def _post(self, company_id: str, e: sqlite3.Row) -> None:
        """D10's posting requirements (open period, balanced, active accounts), then Posted."""
        self._check_period(self._period(company_id, e["posting_period_id"]), dt.date.fromisoformat(e["tran_date"]))
        for ln in self._lines(e["pk"]):
            acc = self._account(company_id, ln["account_id"])
            if acc is None or acc["is_inactive"]:
                raise _invalid(f"Account {ln['account_id']} is inactive", "lines.account_id", ln["account_id"])
        self._set_status(e["pk"], "Posted")

    def _approve(self, company_id: str, e: sqlite3.Row) -> None:
        """Final approval auto-posts (D6); if posting fails (period closed meanwhile) the entry stays Approved."""
        self._set_status(e["pk"], "Approved")
        try:
            self._post(company_id, e)
        except ApiError as err:
            self._set_status(e["pk"], "Approved", f"auto-post failed: {err.message}")

    def workflow(self, company_id: str, jeid: str, action: str, body: Any) -> dict:
        """One D6/D9/D10/D11 action; the documented answer (a bare object)."""
        e = self._entry(company_id, jeid)
        body = body if isinstance(body, dict) else {}
        reason = body.get("reason")
        pk, now = e["pk"], _iso(time.time())
        if action == "submit-for-approval":
            self._require(e, "submit", ("Draft",))
            self._check_period(self._period(company_id, e["posting_period_id"]), dt.date.fromisoformat(e["tran_date"]))
            threshold = self.company_by_id(company_id)["approval_threshold_minor"]
            level = 0 if threshold is None or self._total(pk) < threshold else 1
            self._set_status(pk, "Pending Approval", None, submitted_at=time.time(), change_requested=0,
                             required_approval_level=level)
            if level == 0:
                self._approve(company_id, self._by_pk(pk))
            e = self._by_pk(pk)
            out = {"journal_entry_id": jeid, "status": e["status"], "required_approval_level": level,
                   "submitted_at": _iso(e["submitted_at"]), "submitted_by": "api-user"}
            if e["status"] == "Posted":
                out["posted"] = True
            return out
        if action == "approve":
            self._require(e, "approve", ("Pending Approval",))
            self._approve(company_id, e)
            e = self._by_pk(pk)
            posted = e["status"] == "Posted"
            return {"journal_entry_id": jeid, "status": e["status"], "posted": posted, "level": 1,
                    "message": "Entry approved and posted to GL" if posted else "Entry approved",
                    "approved_at": now, "approved_by": SANDBOX_USER}
        if action == "reject":
            if not isinstance(reason, str) or not reason.strip():
                raise _invalid("reason is required to reject", "reason", reason)  # D6 "A reason is required"
            self._require(e, "reject", ("Pending Approval", "On Hold"))
            self._set_status(pk, "Rejected", reason)
            return {"journal_entry_id": jeid, "status": "Rejected", "reason": reason, "rejected_at": now}
        if action == "hold":
            self._require(e, "hold", ("Pending Approval",))
            self._set_status(pk, "On Hold", reason)
            return {"journal_entry_id": jeid, "status": "On Hold", "reason": reason, "held_at": now}
        if action == "remove-from-hold":
            self._require(e, "remove from hold", ("On Hold",))
            self._set_status(pk, "Pending Approval")
            return {"journal_entry_id": jeid, "status": "Pending Approval"}
        if action == "request-change":
            self._require(e, "request a change to", (*SUBMITTED, "Rejected"))
            self._set_status(pk, "Draft", reason, change_requested=1)
            return {"journal_entry_id": jeid, "status": "Draft", "reason": reason}
        if action == "post":
            self._require(e, "post", ("Approved",))
            self._post(company_id, e)
            period = self._period(company_id, e["posting_period_id"])
            return {"journal_entry_id": jeid, "status": "Posted", "posted_at": now, "posted_by": "api-user",
                    "posting_period_id": period["period_id"], "posting_period_name": period["period_name"]}
        if action == "reverse":
            return self.render(self._by_pk(self._reverse(company_id, e, body)))
        if action == "void":
            why = body.get("void_reason") or reason
            if not isinstance(why, str) or not why.strip():
                raise _invalid("void_reason is required", "void_reason", why)  # D9
            self._require(e, "void", ("Draft", *SUBMITTED, "Rejected", "Posted"))
            if e["status"] == "Posted":
                self._check_period(self._period(company_id, e["posting_period_id"]),
                                   dt.date.fromisoformat(e["tran_date"]))
            self._set_status(pk, "Voided", why, void_reason=why)
            return {"journal_entry_id": jeid, "status": "Voided", "void_reason": why, "voided_at": now,
                    "voided_by": "api-user"}
        raise ApiError(404, "NOT_FOUND", f"Unknown action {action}")

    def _reverse(self, company_id: str, e: sqlite3.Row, body: dict) -> int:
        """D11: a Posted entry's mirror image as a Draft `<journal_entry_id>-REV`, dated reversal_date (default the
        original's date) in the period containing it; the original is marked `reversed_by` at once."""
        self._require(e, "reverse", ("Posted",))
        if e["original_entry_id"]:
            raise ApiError(409, "INVALID_STATUS", "A reversing entry cannot itself be reversed", "original_entry_id",
                           e["original_entry_id"])
        try:
            date = dt.date.fromisoformat(str(body.get("reversal_date", e["tran_date"])))
        except ValueError:
            raise _invalid("reversal_date must be a date", "reversal_date", body.get("reversal_date")) from None
        if body.get("posting_period_id") is not None:
            period = self._period(company_id, body["posting_period_id"])
        else:
            period = self._period_for_date(company_id, date)
            if period is None:
                raise _invalid(f"No accounting period contains {date}", "reversal_date", date.isoformat())
        self._check_period(period, date)
        lines = [(r["line_number"], r["account_id"], r["credit_minor"], r["debit_minor"], r["memo"])
                 for r in self._lines(e["pk"])]
        rev_id = f"{e['journal_entry_id']}-REV"
        p = {"entry_id": f"{e['entry_id']}-REV", "date": date,
             "memo": body.get("memo") or f"Reversal of {e['journal_entry_id']}", "entry_type": "Reversing",
             "currency": e["currency"], "exchange_rate": e["exchange_rate"], "period_id": period["period_id"],
             "lines": lines}
        pk = self._insert(company_id, p, "Draft", original=e["journal_entry_id"], jeid=rev_id)
        self.db.execute("UPDATE aden_journal_entries SET reversed_by = ?, updated_at = ? WHERE pk = ?",
                        (rev_id, time.time(), e["pk"]))
        return pk

    # -- HTTP ------------------------------------------------------------------------------------------------
    def issue_token(self, company_id: str) -> str:
        """What the company's Aden administrator hands out (D1/D13): a JWT naming the company; revocable."""
        jti, now = str(uuid.uuid4()), time.time()
        self.db.execute("INSERT INTO aden_tokens (jti, company_id, issued_at) VALUES (?, ?, ?)", (jti, company_id, now))
        return jwt.encode({"iss": "aden-sandbox", "sub": company_id, "company_id": company_id, "jti": jti,
                           "iat": int(now)}, JWT_SECRET, algorithm="HS256")

    def _company_for_token(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "jwt" or not token:  # D2 "Authorization: jwt YOUR_TOKEN"
            return None
        return self._verify(token.strip())

    def _verify(self, token: str) -> str | None:
        try:
            claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
        except jwt.PyJWTError:
            return None
        row = self.db.execute("SELECT company_id, revoked FROM aden_tokens WHERE jti = ?",
                              (claims.get("jti"),)).fetchone()
        if row is None or row["revoked"] or row["company_id"] != claims.get("company_id"):
            return None
        return row["company_id"]

    # the request path's hooks (base.Emulator.api runs them in order)
    def authenticate(self, call: Call) -> str:
        company_id = self._company_for_token(call.request)
        if company_id is None:  # D2: 401 for a missing or invalid token
            raise ApiError(401, "UNAUTHORIZED", "Missing, invalid or revoked token (Authorization: jwt <token>)")
        return company_id

    def limits(self, call: Call) -> None:
        """D2's rate limit (RateLimiter); 429 with Retry-After."""
        wait = self.rate.check(call.principal)
        if wait:
            raise ApiError(429, "RATE_LIMITED", f"Rate limit of {self.rate.per_minute} requests per minute exceeded",
                           headers={"Retry-After": f"{wait:.3f}"})

    def error_payload(self, err: Exception) -> tuple[int, Any, dict[str, str]]:
        """D2's error body {"error": {"code", "message", "details"}}."""
        if isinstance(err, Problem):
            err = {"unauthorized": ApiError(401, "UNAUTHORIZED", "Token could not be verified"),
                   "server_error": ApiError(err.status, "INTERNAL_ERROR", "Internal server error"),
                   "malformed_body": ApiError(400, "VALIDATION_ERROR", "Malformed JSON body", "body")}[err.kind]
        assert isinstance(err, ApiError)
        return err.status, err.body, err.headers

    def dispatch(self, call: Call) -> tuple[int, Any]:
        """Idempotency (D2 X-Idempotency-Key), then the handler in one transaction."""
        status, payload, replayed = self._handle(call)
        if replayed:
            call.headers["Idempotent-Replayed"] = "true"
        return status, payload

    def _handle(self, call: Call) -> tuple[int, Any, bool]:
        db, request, parts, company_id = self.db, call.request, call.parts, call.principal
        key = request.headers.get("x-idempotency-key")
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        fingerprint = hashlib.sha256(f"{request.method} ".encode() + raw_path + b"\n" + call.raw).hexdigest()
        if key and call.is_write:
            row = db.execute("SELECT * FROM aden_idempotency WHERE company_id = ? AND key = ? AND created_at > ?",
                             (company_id, key, time.time() - IDEMPOTENCY_TTL)).fetchone()
            if row is not None:
                if row["fingerprint"] != fingerprint:
                    raise ApiError(422, "IDEMPOTENCY_KEY_REUSED", "X-Idempotency-Key was already used for a "
                                   "different request", "X-Idempotency-Key", key)
                return row["status"], loads_exact(row["body"]) if row["body"] else None, True
        if request.method == "PUT" and len(parts) == 2 and parts[0] == "journal-entries":
            self._user_acts_first(company_id, parts[1])
        with transaction(db):
            status, payload = self._route(call)
            if key and call.is_write:
                db.execute("INSERT OR REPLACE INTO aden_idempotency (company_id, key, fingerprint, status, body, "
                           "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                           (company_id, key, fingerprint, status, None if payload is None else dumps_exact(payload),
                            time.time()))
        return status, payload, False

    def _user_acts_first(self, company_id: str, jeid: str) -> None:
        """A `before_next_update` edit: the company's user acts on the entry (own transaction) before our PUT."""
        row = self.db.execute("SELECT entry_id FROM aden_journal_entries WHERE company_id = ? AND "
                              "journal_entry_id = ?", (company_id, jeid)).fetchone()
        action = self.before_update.pop((company_id, row["entry_id"]), None) if row else None
        if action is None:
            return
        with transaction(self.db):
            self.workflow(company_id, jeid, action, {"reason": "edited in Aden by the company's user"})

    @staticmethod
    def _paging(q: Any) -> tuple[int, int]:
        try:
            return min(max(int(q.get("limit", 20)), 1), MAX_PAGE), max(int(q.get("offset", 0)), 0)  # D2 defaults
        except ValueError:
            raise _invalid("limit and offset must be integers", "limit") from None

    @staticmethod
    def _page(data: list, total: int, limit: int, offset: int) -> dict:
        return {"data": data, "pagination": {"total": total, "limit": limit, "offset": offset,
                                             "has_more": offset + len(data) < total}}

    def _route(self, call: Call) -> tuple[int, Any]:
        method, q, parts, company_id, body = call.method, call.query, call.parts, call.principal, call.body
        if parts == ["accounts"] and method == "GET":
            limit, offset = self._paging(q)
            rows = self.db.execute("SELECT * FROM aden_accounts WHERE company_id = ? ORDER BY seq LIMIT ? OFFSET ?",
                                   (company_id, limit, offset)).fetchall()
            total = self.db.execute("SELECT COUNT(*) FROM aden_accounts WHERE company_id = ?",
                                    (company_id,)).fetchone()[0]
            currency = self.company_by_id(company_id)["currency"]
            data = [{"account_id": r["account_id"], "account_number": r["account_number"],
                     "account_name": r["account_name"], "account_type": r["account_type"],
                     "normal_balance": r["normal_balance"], "currency": currency, "balance": self._balance(r),
                     "is_summary": False, "is_inactive": bool(r["is_inactive"]),
                     "parent_account_id": r["parent_account_id"]} for r in rows]
            return 200, self._page(data, total, limit, offset)
        if parts and parts[0] == "accounting-periods" and method == "GET":
            return 200, self._periods(company_id, parts[1:], q)
        if parts == ["journal-entries"] and method == "GET":
            return 200, self._list_entries(company_id, q)
        if parts == ["journal-entries"] and method == "POST":
            pk = self._insert(company_id, self._parse(company_id, body), "Draft")
            return 201, self.render(self._by_pk(pk))
        if len(parts) == 2 and parts[0] == "journal-entries":
            e = self._entry(company_id, parts[1])
            if method == "GET":
                return 200, self.render(e)
            if method == "PUT":
                self._require(e, "update", ("Draft",))  # D7: Draft only
                p = self._parse(company_id, body, current=e)
                self.db.execute("UPDATE aden_journal_entries SET tran_date = ?, memo = ?, entry_type = ?, "
                                "posting_period_id = ?, currency = ?, exchange_rate = ?, updated_at = ? WHERE pk = ?",
                                (p["date"].isoformat(), p["memo"], p["entry_type"], p["period_id"], p["currency"],
                                 p["exchange_rate"], time.time(), e["pk"]))
                if p["lines"] is not None:
                    self._write_lines(e["pk"], p["lines"])
                return 200, self.render(self._by_pk(e["pk"]))
            if method == "DELETE":
                self._require(e, "delete", ("Draft",))  # D8
                self.db.execute("DELETE FROM aden_journal_lines WHERE entry_pk = ?", (e["pk"],))
                self.db.execute("DELETE FROM aden_journal_entries WHERE pk = ?", (e["pk"],))
                return 204, None
        if len(parts) == 3 and parts[0] == "journal-entries" and method == "POST":
            return 200, self.workflow(company_id, parts[1], parts[2], body)
        raise ApiError(404, "NOT_FOUND", f"No route {method} {call.request.url.path}")

    def _periods(self, company_id: str, rest: list[str], q: Any) -> dict:
        """D12: the list (filters fiscal_year_id, is_closed, start_date, end_date) or one period."""
        def shape(r: sqlite3.Row) -> dict:
            return {"period_id": r["period_id"], "period_name": r["period_name"], "fiscal_year_id": r["fiscal_year_id"],
                    "start_date": r["start_date"], "end_date": r["end_date"], "quarter": r["quarter"],
                    "is_adjustment_period": bool(r["is_adjustment_period"]), "is_closed": bool(r["is_closed"])}
        if len(rest) == 1:
            return shape(self._period(company_id, rest[0]))
        if rest:
            raise ApiError(404, "NOT_FOUND", "No such accounting-periods route")
        where, args = ["company_id = ?"], [company_id]
        if q.get("fiscal_year_id"):
            where.append("fiscal_year_id = ?")
            args.append(q["fiscal_year_id"])
        if _flag(q.get("is_closed")) is not None:
            where.append("is_closed = ?")
            args.append(int(bool(_flag(q.get("is_closed")))))
        if q.get("start_date"):
            where.append("start_date >= ?")
            args.append(q["start_date"])
        if q.get("end_date"):
            where.append("end_date <= ?")
            args.append(q["end_date"])
        limit, offset = self._paging(q)
        sql = " AND ".join(where)
        rows = self.db.execute(f"SELECT * FROM aden_accounting_periods WHERE {sql} ORDER BY start_date LIMIT ? "
                               "OFFSET ?", (*args, limit, offset)).fetchall()
        total = self.db.execute(f"SELECT COUNT(*) FROM aden_accounting_periods WHERE {sql}", args).fetchone()[0]
        return self._page([shape(r) for r in rows], total, limit, offset)

    def _list_entries(self, company_id: str, q: Any) -> dict:
        """D5: only the documented filters; anything else is ignored (so is everything under `ignore_filters`)."""
        limit, offset = self._paging(q)
        if self.quirks.get(company_id, {}).get("ignore_filters"):
            order = "CASE WHEN company_id = ? THEN 1 ELSE 0 END, pk"  # other companies' entries first
            rows = self.db.execute(f"SELECT * FROM aden_journal_entries ORDER BY {order} LIMIT ? OFFSET ?",
                                   (company_id, limit, offset)).fetchall()
            total = self.db.execute("SELECT COUNT(*) FROM aden_journal_entries").fetchone()[0]
            return self._page([self._summary(r) for r in rows], total, limit, offset)
        where, args = ["company_id = ?"], [company_id]
        for param, col, op in (("status", "status", "="), ("entry_type", "entry_type", "="),
                               ("posting_period_id", "posting_period_id", "="),
                               ("start_date", "tran_date", ">="), ("end_date", "tran_date", "<=")):
            if q.get(param):
                where.append(f"{col} {op} ?")
                args.append(q[param])
        sql = " AND ".join(where)
        rows = self.db.execute(f"SELECT * FROM aden_journal_entries WHERE {sql} ORDER BY pk LIMIT ? OFFSET ?",
                               (*args, limit, offset)).fetchall()
        total = self.db.execute(f"SELECT COUNT(*) FROM aden_journal_entries WHERE {sql}", args).fetchone()[0]
        return self._page([self._summary(r) for r in rows], total, limit, offset)

    def _balance(self, account: sqlite3.Row) -> Decimal:
        row = self.db.execute(
            "SELECT COALESCE(SUM(l.debit_minor - l.credit_minor), 0) FROM aden_journal_lines l JOIN "
            "aden_journal_entries e ON e.pk = l.entry_pk WHERE e.company_id = ? AND l.account_id = ? "
            "AND e.status = 'Posted'", (account["company_id"], account["account_id"])).fetchone()
        signed = row[0] if account["normal_balance"] == "Debit" else -row[0]
        return _dec(signed)

    # -- inspection and controls (/_sandbox) -----------------------------------------------------------------
    def inspect_entries(self, login: str | None) -> list[dict]:
        sql = ("SELECT e.*, c.login FROM aden_journal_entries e JOIN aden_companies c ON c.company_id = e.company_id"
               + (" WHERE c.login = ?" if login else "") + " ORDER BY e.pk")
        return [inspected(
            self.system, e["login"], e["entry_id"], e["status"], e["tran_date"],
            [(to_minor(_dec(ln["debit_minor"]), e["currency"]), to_minor(_dec(ln["credit_minor"]), e["currency"]),
              ln["account_id"], {}) for ln in self._lines(e["pk"])], e["currency"],
            exchange_rate=None if e["exchange_rate"] is None else Decimal(e["exchange_rate"]),
            id=e["journal_entry_id"], entry_type=e["entry_type"], reversal_of=e["original_entry_id"],
            reversed_by=e["reversed_by"],
            live=e["status"] != "Voided" and not e["reversed_by"] and not e["original_entry_id"],
            status_reason=e["status_reason"], memo=e["memo"],
        ) for e in self.db.execute(sql, (login,) if login else ()).fetchall()]

    async def control(self, login: str, action: str, body: dict) -> dict | None:
        """POST /_sandbox/aden/companies/<login>/<action>; `body["company_login"]` overrides the path's login."""
        login = str(body.get("company_login") or login)
        if action == "jwt":  # the administrator issues the company's JWT (the company is created on first use)
            company_id = self._ensure_company(login)
            return {"token": self.issue_token(company_id), "token_type": "jwt", "company_id": company_id,
                    "company_login": login}
        return await super().control(login, action, body)

    def do_currency(self, cid: str, body: dict) -> dict:
        """{"home_currency": code, "multicurrency": bool}: the company's currency (its accounts' `currency`) and
        whether it takes entries in other currencies."""
        write_company_currency(self.db, body, "aden_companies", "company_id", cid, "currency")
        row = self.company_by_id(cid)
        return {"ok": True, "company_id": cid, "home_currency": row["currency"],
                "multicurrency": bool(row["multicurrency"])}

    def do_lock_date(self, cid: str, body: dict) -> None:
        """Closes every period that starts on or before the date, opens the others."""
        lock = body.get("lock_date")
        self.db.execute("UPDATE aden_companies SET lock_date = ? WHERE company_id = ?", (lock, cid))
        self.db.execute("UPDATE aden_accounting_periods SET is_closed = CASE WHEN ? IS NOT NULL AND start_date <= ? "
                        "THEN 1 ELSE 0 END WHERE company_id = ?", (lock, lock, cid))

    def do_periods(self, cid: str, body: dict) -> None:
        """{"month": "YYYY-MM", "is_closed": true|false} (or "status": "Open"|"Closed")."""
        closed = body["is_closed"] if "is_closed" in body else body.get("status", "Closed") != "Open"
        self.db.execute("UPDATE aden_accounting_periods SET is_closed = ? WHERE company_id = ? AND start_date = ?",
                        (int(bool(closed)), cid, f"{body['month']}-01"))

    def do_revoke(self, cid: str, body: dict) -> None:
        self.db.execute("UPDATE aden_tokens SET revoked = 1 WHERE company_id = ?", (cid,))

    def do_approval_threshold(self, cid: str, body: dict) -> None:
        """{"approval_threshold": "1000000.00" | null}."""
        value = body.get("approval_threshold")
        self.db.execute("UPDATE aden_companies SET approval_threshold_minor = ? WHERE company_id = ?",
                        (None if value is None else _amount(Decimal(str(value)), "approval_threshold"), cid))

    def do_quirks(self, cid: str, body: dict) -> dict:
        """{"server_ids": bool, "ignore_filters": bool}: see the module docstring."""
        self.quirks[cid] = {k: bool(body.get(k, self.quirks.get(cid, {}).get(k)))
                            for k in ("server_ids", "ignore_filters")}
        return {"ok": True, **self.quirks[cid]}

    def do_approvals(self, company_id: str, body: dict) -> dict:
        """The approver acts on an entry (by entry_id or journal_entry_id)."""
        return self._approver(company_id, body)

    def _approver(self, company_id: str, body: dict) -> dict:
        ref = str(body.get("entry_id"))
        row = self.db.execute("SELECT journal_entry_id FROM aden_journal_entries WHERE company_id = ? AND "
                              "(entry_id = ? OR journal_entry_id = ?)", (company_id, ref, ref)).fetchone()
        if row is None:
            raise ValueError(f"no entry {ref}")
        action = {"approve": "approve", "reject": "reject", "hold": "hold", "release": "remove-from-hold",
                  "request_change": "request-change", "void": "void", "post": "post",
                  "submit": "submit-for-approval"}.get(str(body.get("action")))
        if action is None:
            raise ValueError(f"unknown approval action {body.get('action')!r}")
        try:
            with transaction(self.db):
                data = self.workflow(company_id, row["journal_entry_id"], action, {"reason": body.get("reason")})
        except ApiError as err:
            raise ValueError(err.message) from None
        return {"data": data}

    def do_accounts(self, company_id: str, body: dict) -> None:
        """{"number", "name", "archived"}: add an account or (de)activate one."""
        number = str(body["number"])
        row = self._account(company_id, number)
        if row is None:
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM aden_accounts WHERE company_id = ?",
                                  (company_id,)).fetchone()[0]
            self.db.execute(
                "INSERT INTO aden_accounts (company_id, account_id, account_number, account_name, account_type, "
                "normal_balance, is_inactive, parent_account_id, seq) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (company_id, number, number, body.get("name", number), *_TYPES[classification(number)],
                 int(bool(body.get("archived"))), seq))
            return
        if "name" in body:
            self.db.execute("UPDATE aden_accounts SET account_name = ? WHERE company_id = ? AND account_id = ?",
                            (body["name"], company_id, number))
        if "archived" in body:
            self.db.execute("UPDATE aden_accounts SET is_inactive = ? WHERE company_id = ? AND account_id = ?",
                            (int(bool(body["archived"])), company_id, number))

    def do_entries(self, company_id: str, body: dict) -> None:
        """A person's edit in Aden (for reconciliation tests): delete, scale a line, add a posted entry, or act on
        an entry just before our next update of it (`before_next_update`: a workflow action such as "submit")."""
        db = self.db
        if body.get("create"):
            try:
                with transaction(db):
                    self._insert(company_id, self._parse(company_id, body["create"]), "Posted")
            except ApiError as err:
                raise ValueError(err.message) from None
            return
        row = db.execute("SELECT * FROM aden_journal_entries WHERE company_id = ? AND entry_id = ?",
                         (company_id, str(body.get("custom_id")))).fetchone()
        if row is None:
            raise ValueError(f"no entry {body.get('custom_id')}")
        if body.get("before_next_update"):
            action = {"submit": "submit-for-approval"}.get(body["before_next_update"], body["before_next_update"])
            self.before_update[(company_id, row["entry_id"])] = action
        elif body.get("delete"):
            db.execute("DELETE FROM aden_journal_lines WHERE entry_pk = ?", (row["pk"],))
            db.execute("DELETE FROM aden_journal_entries WHERE pk = ?", (row["pk"],))
        elif body.get("scale_line"):
            factor = int(body["scale_line"])
            db.execute("UPDATE aden_journal_lines SET debit_minor = debit_minor * ?, credit_minor = credit_minor * ? "
                       "WHERE entry_pk = ? AND line_number = (SELECT MIN(line_number) FROM aden_journal_lines "
                       "WHERE entry_pk = ?)", (factor, factor, row["pk"], row["pk"]))


def make(ctx: SandboxContext) -> AdenSandbox:
    return AdenSandbox(ctx)

