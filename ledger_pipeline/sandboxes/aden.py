"""The Aden sandbox: a local general ledger with Aden's approval workflow, served under `/aden`.

Follows ../shared/reference/accounting_apis.md section 4 and the Aden GL docs (seeds/003):
- Auth: `Authorization: jwt <token>`, one token per company, issued by the Aden admin. Emulated as an auto-approving
  admin page (`GET /aden/admin/authorize?login_hint&redirect_uri&state`, which creates the company with the default
  chart and monthly posting periods and redirects with a one-time code) and `POST /aden/admin/token` (code -> JWT).
  The JWT (HS256) does not expire; the `revoke` control invalidates it (401). `POST /aden/admin/token/introspect`
  tells a client whether a token is still active (how the client tells a revoked token from a spurious 401).
- API under `/aden/service/general-ledger`: journal entries (Draft -> Pending Approval -> Approved -> Posted, Rejected,
  On Hold, Voided), workflow actions, accounts and posting periods with `limit`/`offset` paging, errors as
  `{"error": {"code", "message", "details": {"field", "value"}}}`.
- Workflow: each company has an approval threshold (control `approval_threshold`); on submit-for-approval an entry
  whose total is below it is approved and auto-posted, otherwise it waits in Pending Approval for a person (control
  `approvals`: approve / reject / hold / release / request_change). Posted entries are immutable (reverse or void).
- Idempotency: `X-Idempotency-Key` on any write; a successful (2xx) response is stored with the write, in the same
  transaction, and replayed for the same key and request (header `Idempotent-Replayed: true`); the same key with a
  different request is refused (422 IDEMPOTENCY_KEY_REUSED). Errors are not stored, so a fixed cause can be retried.
- Limits: Aden documents none; the sandbox assumes 300 requests/minute per company token (429 RATE_LIMITED with
  Retry-After), time-scaled, so clients' pacing and 429 handling are exercised.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ledger_pipeline.money import dumps_exact, from_minor, loads_exact
from ledger_pipeline.sandboxes.base import (
    WRITE_METHODS,
    Drop,
    DroppedResponse,
    InjectedError,
    SandboxContext,
)
from ledger_pipeline.systems.jurnal.chart import DEFAULT_CHART

SYSTEM = "aden"
PREFIX = "/aden"
API = f"{PREFIX}/service/general-ledger"
ADMIN = f"{PREFIX}/admin"
SANDBOX_CLIENT_ID = "aden-sandbox-client"
SANDBOX_CLIENT_SECRET = "aden-sandbox-secret-not-for-production"  # noqa: S105 - a public sandbox value
JWT_SECRET = b"aden-sandbox-jwt-signing-key"  # the sandbox's own signing key, never a client's secret
PER_TOKEN_MINUTE = 300  # assumed (Aden documents no limit)
FIRST_PERIOD, LAST_PERIOD = (2023, 1), (2028, 12)
CODE_TTL = 600.0
IDEMPOTENCY_TTL = 24 * 3600.0
DEFAULT_CURRENCY = "IDR"
ENTRY_TYPES = ("Standard", "Adjusting", "Closing", "Reversing")
SUBMITTED = ("Pending Approval", "On Hold", "Approved")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS aden_companies (company_id TEXT PRIMARY KEY, login TEXT UNIQUE NOT NULL, name TEXT,
  currency TEXT NOT NULL, approval_threshold_minor INTEGER, lock_date TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS aden_codes (code TEXT PRIMARY KEY, company_id TEXT NOT NULL, client_id TEXT NOT NULL,
  redirect_uri TEXT NOT NULL, expires_at REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS aden_tokens (jti TEXT PRIMARY KEY, company_id TEXT NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0, issued_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS aden_accounts (company_id TEXT NOT NULL, account_id TEXT NOT NULL,
  account_number TEXT NOT NULL, account_name TEXT NOT NULL, account_type TEXT NOT NULL, normal_balance TEXT NOT NULL,
  is_inactive INTEGER NOT NULL DEFAULT 0, parent_account_id TEXT, seq INTEGER NOT NULL,
  PRIMARY KEY (company_id, account_id));
CREATE TABLE IF NOT EXISTS aden_periods (company_id TEXT NOT NULL, posting_period_id TEXT NOT NULL,
  period_name TEXT NOT NULL, start_date TEXT NOT NULL, end_date TEXT NOT NULL, status TEXT NOT NULL,
  PRIMARY KEY (company_id, posting_period_id));
CREATE TABLE IF NOT EXISTS aden_entries (journal_entry_id TEXT PRIMARY KEY, company_id TEXT NOT NULL,
  entry_id TEXT NOT NULL, tran_date TEXT NOT NULL, memo TEXT, entry_type TEXT NOT NULL, posting_period_id TEXT NOT NULL,
  currency TEXT NOT NULL, status TEXT NOT NULL, status_changed_at REAL NOT NULL, status_reason TEXT,
  submitted_at REAL, change_requested INTEGER NOT NULL DEFAULT 0, reversal_of TEXT, reversed_by TEXT,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, seq INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS aden_entries_entry_id ON aden_entries (company_id, entry_id);
CREATE INDEX IF NOT EXISTS aden_entries_date ON aden_entries (company_id, tran_date);
CREATE TABLE IF NOT EXISTS aden_lines (journal_entry_id TEXT NOT NULL, line_number INTEGER NOT NULL,
  line_id TEXT NOT NULL, account_id TEXT NOT NULL, debit_minor INTEGER NOT NULL, credit_minor INTEGER NOT NULL,
  memo TEXT, PRIMARY KEY (journal_entry_id, line_number));
CREATE TABLE IF NOT EXISTS aden_idempotency (company_id TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
  status INTEGER NOT NULL, body TEXT, created_at REAL NOT NULL, PRIMARY KEY (company_id, key));
"""

_TYPES = {"1": ("Asset", "Debit"), "2": ("Liability", "Credit"), "3": ("Equity", "Credit"),
          "4": ("Revenue", "Credit"), "5": ("Expense", "Debit"), "6": ("Expense", "Debit"),
          "7": ("Revenue", "Credit"), "8": ("Expense", "Debit")}


class ApiError(Exception):
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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _amount(value: Any, field: str) -> int:
    """Aden amounts: numbers with at most 2 decimals, never negative (one side per line)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _invalid(f"{field} must be a number", field, None if value is None else str(value))
    dec = Decimal(value)
    if dec < 0:
        raise _invalid(f"{field} must not be negative", field, str(value))
    if dec != dec.quantize(Decimal("0.01")):
        raise _invalid(f"{field} has more than 2 decimal places", field, str(value))
    return int(dec * 100)


def _month_end(year: int, month: int) -> dt.date:
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    return nxt - dt.timedelta(days=1)


class RateLimiter:
    """Fixed one-minute windows per company token (scaled clock)."""

    def __init__(self, ctx: SandboxContext, per_minute: int = PER_TOKEN_MINUTE):
        self.ctx, self.per_minute = ctx, per_minute
        self.counts: Counter = Counter()

    def check(self, company_id: str) -> float | None:
        """None when allowed, else the real seconds until the window resets."""
        lim = self.ctx.limits
        now = time.time() * lim.scale
        window = int(now // 60)
        if len(self.counts) > 10_000:
            self.counts = Counter({k: v for k, v in self.counts.items() if k[1] == window})
        if lim.enabled and self.counts[(company_id, window)] >= self.per_minute:
            return max(((window + 1) * 60 - now) / lim.scale, 0.001)
        self.counts[(company_id, window)] += 1
        return None


class AdenSandbox:
    """The Aden emulation (an `Emulator`), state in `aden_*` tables of the shared state file."""

    system = SYSTEM

    def __init__(self, ctx: SandboxContext, client_id: str = SANDBOX_CLIENT_ID,
                 client_secret: str = SANDBOX_CLIENT_SECRET):
        self.ctx = ctx
        self.db = ctx.connect()
        self.db.executescript(_SCHEMA)
        self.rate = RateLimiter(ctx)
        self.client_id, self.client_secret = client_id, client_secret

    def routes(self) -> list[Route]:
        return [
            Route(f"{ADMIN}/authorize", self.authorize, methods=["GET"]),
            Route(f"{ADMIN}/token", self.token, methods=["POST"]),
            Route(f"{ADMIN}/token/introspect", self.introspect, methods=["POST"]),
            Route(API + "/{path:path}", self.api, methods=["GET", "POST", "PUT", "DELETE"]),
        ]

    def close(self) -> None:
        pass  # the connection belongs to ctx (closed by ctx.close())

    # -- companies, charts, periods ------------------------------------------------------------------------
    def _company_by_login(self, login: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM aden_companies WHERE login = ?", (login,)).fetchone()

    def _company(self, company_id: str) -> sqlite3.Row:
        return self.db.execute("SELECT * FROM aden_companies WHERE company_id = ?", (company_id,)).fetchone()

    def _ensure_company(self, login: str) -> str:
        row = self._company_by_login(login)
        if row is not None:
            return row["company_id"]
        company_id = str(uuid.uuid4())
        db = self.db
        db.execute("BEGIN")
        try:
            db.execute("INSERT INTO aden_companies (company_id, login, name, currency, approval_threshold_minor, "
                       "lock_date, created_at) VALUES (?, ?, ?, ?, NULL, NULL, ?)",
                       (company_id, login, f"{login} (Aden sandbox)", DEFAULT_CURRENCY, time.time()))
            db.executemany(
                "INSERT INTO aden_accounts (company_id, account_id, account_number, account_name, account_type, "
                "normal_balance, is_inactive, parent_account_id, seq) VALUES (?, ?, ?, ?, ?, ?, 0, NULL, ?)",
                [(company_id, number, number, name, *_TYPES[number[0]], i)
                 for i, (number, name, _) in enumerate(DEFAULT_CHART)])
            rows = []
            year, month = FIRST_PERIOD
            while (year, month) <= LAST_PERIOD:
                start = dt.date(year, month, 1)
                rows.append((company_id, str(uuid.uuid4()), start.strftime("%b %Y"), start.isoformat(),
                             _month_end(year, month).isoformat(), "Open"))
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            db.executemany("INSERT INTO aden_periods (company_id, posting_period_id, period_name, start_date, "
                           "end_date, status) VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return company_id

    def _period(self, company_id: str, period_id: Any) -> sqlite3.Row:
        row = self.db.execute("SELECT * FROM aden_periods WHERE company_id = ? AND posting_period_id = ?",
                              (company_id, str(period_id))).fetchone()
        if row is None:
            raise _invalid(f"Posting period {period_id} does not exist", "posting_period_id", period_id)
        return row

    def _period_for_date(self, company_id: str, date: dt.date) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM aden_periods WHERE company_id = ? AND start_date <= ? AND end_date >= ?",
                               (company_id, date.isoformat(), date.isoformat())).fetchone()

    def _check_period(self, company_id: str, period: sqlite3.Row, date: dt.date) -> None:
        """Aden's period checks: the period is open and the date falls inside it."""
        if period["status"] != "Open":
            raise _invalid(f"Posting period {period['period_name']} is closed; entries cannot be posted to it",
                           "posting_period_id", period["posting_period_id"])
        if not period["start_date"] <= date.isoformat() <= period["end_date"]:
            raise _invalid(f"tran_date {date} is outside posting period {period['period_name']} "
                           f"({period['start_date']} to {period['end_date']})", "tran_date", date.isoformat())

    def _account(self, company_id: str, account_id: Any) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM aden_accounts WHERE company_id = ? AND account_id = ?",
                               (company_id, str(account_id))).fetchone()

    # -- rendering -------------------------------------------------------------------------------------------
    def _lines(self, jeid: str) -> list[sqlite3.Row]:
        return self.db.execute("SELECT l.*, a.account_name FROM aden_lines l JOIN aden_entries e "
                               "ON e.journal_entry_id = l.journal_entry_id LEFT JOIN aden_accounts a "
                               "ON a.company_id = e.company_id AND a.account_id = l.account_id "
                               "WHERE l.journal_entry_id = ? ORDER BY l.line_number", (jeid,)).fetchall()

    def render(self, e: sqlite3.Row) -> dict:
        lines = self._lines(e["journal_entry_id"])
        debit, credit = sum(r["debit_minor"] for r in lines), sum(r["credit_minor"] for r in lines)
        return {
            "journal_entry_id": e["journal_entry_id"], "entry_id": e["entry_id"], "tran_date": e["tran_date"],
            "posting_period_id": e["posting_period_id"], "memo": e["memo"], "entry_type": e["entry_type"],
            "currency": e["currency"], "status": e["status"], "status_changed_at": _iso(e["status_changed_at"]),
            "status_reason": e["status_reason"], "submitted_at": _iso(e["submitted_at"]),
            "change_requested": bool(e["change_requested"]), "reversal_of": e["reversal_of"],
            "reversed_by": e["reversed_by"], "total_debit": from_minor(debit), "total_credit": from_minor(credit),
            "lines": [{"line_id": r["line_id"], "line_number": r["line_number"], "account_id": r["account_id"],
                       "account_name": r["account_name"], "debit": from_minor(r["debit_minor"]),
                       "credit": from_minor(r["credit_minor"]), "memo": r["memo"]} for r in lines],
            "created_at": _iso(e["created_at"]), "updated_at": _iso(e["updated_at"], "microseconds"),
        }

    def _entry(self, company_id: str, jeid: str) -> sqlite3.Row:
        row = self.db.execute("SELECT * FROM aden_entries WHERE company_id = ? AND journal_entry_id = ?",
                              (company_id, jeid)).fetchone()
        if row is None:
            raise ApiError(404, "NOT_FOUND", f"Journal entry {jeid} not found", "journal_entry_id", jeid)
        return row

    # -- entry writes ----------------------------------------------------------------------------------------
    def _parse(self, company_id: str, body: Any, require_entry_id: bool = True) -> dict:
        if not isinstance(body, dict):
            raise _invalid("request body must be a JSON object", "body")
        entry_id = body.get("entry_id")
        if require_entry_id and (not isinstance(entry_id, str) or not entry_id.strip() or len(entry_id) > 100):
            raise _invalid("entry_id is required (a string of at most 100 characters)", "entry_id", entry_id)
        try:
            date = dt.date.fromisoformat(str(body.get("tran_date")))
        except ValueError:
            raise _invalid("tran_date must be a date (YYYY-MM-DD)", "tran_date", body.get("tran_date")) from None
        entry_type = body.get("entry_type", "Standard")
        if entry_type not in ENTRY_TYPES:
            raise _invalid(f"entry_type must be one of {', '.join(ENTRY_TYPES)}", "entry_type", entry_type)
        currency = body.get("currency", DEFAULT_CURRENCY)
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
            raise _invalid("currency must be an ISO 4217 code", "currency", currency)
        if "posting_period_id" not in body:
            raise _invalid("posting_period_id is required", "posting_period_id")
        period = self._period(company_id, body["posting_period_id"])
        self._check_period(company_id, period, date)
        raw = body.get("lines")
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
            debit, credit = _amount(ln.get("debit", 0), f"{where}.debit"), _amount(ln.get("credit", 0),
                                                                                      f"{where}.credit")
            if (debit == 0) == (credit == 0):
                raise _invalid(f"{where} must have either a debit or a credit (the other side 0)", where)
            memo = ln.get("memo")
            lines.append((number, acc["account_id"], debit, credit, None if memo is None else str(memo)))
        total_d, total_c = sum(x[2] for x in lines), sum(x[3] for x in lines)
        if total_d != total_c:
            raise _invalid(f"Entry does not balance: debits {from_minor(total_d)} != credits {from_minor(total_c)}",
                           "lines", None)
        return {"entry_id": entry_id, "date": date, "memo": body.get("memo"), "entry_type": entry_type,
                "currency": currency.upper(), "period_id": period["posting_period_id"], "lines": lines}

    def _insert(self, company_id: str, p: dict, status: str, reversal_of: str | None = None) -> str:
        dup = self.db.execute("SELECT 1 FROM aden_entries WHERE company_id = ? AND entry_id = ?",
                              (company_id, p["entry_id"])).fetchone()
        if dup:
            raise ApiError(409, "DUPLICATE_ENTRY", f"A journal entry with entry_id {p['entry_id']} already exists",
                           "entry_id", p["entry_id"])
        jeid, now = str(uuid.uuid4()), time.time()
        seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM aden_entries").fetchone()[0]
        self.db.execute(
            "INSERT INTO aden_entries (journal_entry_id, company_id, entry_id, tran_date, memo, entry_type, "
            "posting_period_id, currency, status, status_changed_at, reversal_of, created_at, updated_at, seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (jeid, company_id, p["entry_id"], p["date"].isoformat(), p["memo"], p["entry_type"], p["period_id"],
             p["currency"], status, now, reversal_of, now, now, seq))
        self._write_lines(jeid, p["lines"])
        return jeid

    def _write_lines(self, jeid: str, lines: list[tuple]) -> None:
        self.db.execute("DELETE FROM aden_lines WHERE journal_entry_id = ?", (jeid,))
        self.db.executemany(
            "INSERT INTO aden_lines (journal_entry_id, line_number, line_id, account_id, debit_minor, credit_minor, "
            "memo) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(jeid, n, f"{jeid[:8]}-{n}", acc, d, c, memo) for n, acc, d, c, memo in lines])

    def _set_status(self, jeid: str, status: str, reason: str | None = None, **cols: Any) -> None:
        now = time.time()
        sets = ", ".join(f"{k} = ?" for k in cols)
        self.db.execute(f"UPDATE aden_entries SET status = ?, status_changed_at = ?, status_reason = ?, "
                        f"updated_at = ?{', ' + sets if sets else ''} WHERE journal_entry_id = ?",
                        (status, now, reason, now, *cols.values(), jeid))

    def _require(self, e: sqlite3.Row, action: str, allowed: tuple[str, ...]) -> None:
        if e["status"] not in allowed or e["reversed_by"]:
            state = "Posted (reversed)" if e["reversed_by"] else e["status"]
            raise ApiError(409, "INVALID_STATUS", f"Cannot {action} a journal entry in status {state}",
                           "status", state)

    def _total(self, jeid: str) -> int:
        return self.db.execute("SELECT COALESCE(SUM(debit_minor), 0) FROM aden_lines WHERE journal_entry_id = ?",
                               (jeid,)).fetchone()[0]

    def _post(self, company_id: str, jeid: str) -> None:
        """Posting checks (open period, date in it, active accounts, balanced), then Posted."""
        e = self._entry(company_id, jeid)
        self._check_period(company_id, self._period(company_id, e["posting_period_id"]),
                           dt.date.fromisoformat(e["tran_date"]))
        for ln in self._lines(jeid):
            acc = self._account(company_id, ln["account_id"])
            if acc is None or acc["is_inactive"]:
                raise _invalid(f"Account {ln['account_id']} is inactive", "lines.account_id", ln["account_id"])
        self._set_status(jeid, "Posted")

    def _approve(self, company_id: str, jeid: str) -> None:
        """Final approval auto-posts; if posting fails (period closed meanwhile) the entry stays Approved."""
        self._set_status(jeid, "Approved")
        try:
            self._post(company_id, jeid)
        except ApiError as err:
            self._set_status(jeid, "Approved", f"auto-post failed: {err.message}")

    def workflow(self, company_id: str, jeid: str, action: str, body: dict) -> dict:
        e = self._entry(company_id, jeid)
        reason = body.get("reason") if isinstance(body, dict) else None
        if action == "submit-for-approval":
            self._require(e, "submit", ("Draft",))
            self._check_period(company_id, self._period(company_id, e["posting_period_id"]),
                               dt.date.fromisoformat(e["tran_date"]))
            self._set_status(jeid, "Pending Approval", None, submitted_at=time.time(), change_requested=0)
            threshold = self._company(company_id)["approval_threshold_minor"]
            if threshold is None or self._total(jeid) < threshold:
                self._approve(company_id, jeid)
        elif action == "approve":
            self._require(e, "approve", ("Pending Approval",))
            self._approve(company_id, jeid)
        elif action == "reject":
            if not isinstance(reason, str) or not reason.strip():
                raise _invalid("reason is required to reject", "reason", reason)
            self._require(e, "reject", ("Pending Approval", "On Hold"))
            self._set_status(jeid, "Rejected", reason)
        elif action == "hold":
            self._require(e, "hold", ("Pending Approval",))
            self._set_status(jeid, "On Hold", reason)
        elif action == "remove-from-hold":
            self._require(e, "remove from hold", ("On Hold",))
            self._set_status(jeid, "Pending Approval")
        elif action == "request-change":
            self._require(e, "request a change to", (*SUBMITTED, "Rejected"))
            self._set_status(jeid, "Draft", reason, change_requested=1)
        elif action == "post":
            self._require(e, "post", ("Approved",))
            self._post(company_id, jeid)
        elif action == "reverse":
            return self.render(self._entry(company_id, self._reverse(company_id, e, body)))
        elif action == "void":
            self._require(e, "void", ("Draft", *SUBMITTED, "Rejected", "Posted"))
            if e["status"] == "Posted":
                self._check_period(company_id, self._period(company_id, e["posting_period_id"]),
                                   dt.date.fromisoformat(e["tran_date"]))
            self._set_status(jeid, "Voided", reason)
        else:
            raise ApiError(404, "NOT_FOUND", f"Unknown action {action}")
        return self.render(self._entry(company_id, jeid))

    def _reverse(self, company_id: str, e: sqlite3.Row, body: dict) -> str:
        """A Posted entry's mirror image, posted at once (reversal_date, default the original's date)."""
        self._require(e, "reverse", ("Posted",))
        if e["reversal_of"]:
            raise ApiError(409, "INVALID_STATUS", "A reversing entry cannot itself be reversed", "reversal_of",
                           e["reversal_of"])
        body = body if isinstance(body, dict) else {}
        try:
            date = dt.date.fromisoformat(str(body.get("reversal_date", e["tran_date"])))
        except ValueError:
            raise _invalid("reversal_date must be a date", "reversal_date", body.get("reversal_date")) from None
        if "posting_period_id" in body:
            period = self._period(company_id, body["posting_period_id"])
        else:
            period = self._period_for_date(company_id, date)
            if period is None:
                raise _invalid(f"No posting period contains {date}", "reversal_date", date.isoformat())
        self._check_period(company_id, period, date)
        lines = [(r["line_number"], r["account_id"], r["credit_minor"], r["debit_minor"], r["memo"])
                 for r in self._lines(e["journal_entry_id"])]
        p = {"entry_id": body.get("entry_id") or f"{e['entry_id']}-REV", "date": date,
             "memo": body.get("memo") or f"Reversal of {e['entry_id']}", "entry_type": "Reversing",
             "currency": e["currency"], "period_id": period["posting_period_id"], "lines": lines}
        rev = self._insert(company_id, p, "Posted", reversal_of=e["journal_entry_id"])
        self.db.execute("UPDATE aden_entries SET reversed_by = ?, updated_at = ? WHERE journal_entry_id = ?",
                        (rev, time.time(), e["journal_entry_id"]))
        return rev

    # -- HTTP ------------------------------------------------------------------------------------------------
    def _company_for_token(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "jwt" or not token:
            return None
        return self._verify(token.strip())

    def _verify(self, token: str) -> str | None:
        try:
            header, payload, sig = token.split(".")
            expected = _b64(hmac.new(JWT_SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest())
            if not hmac.compare_digest(expected, sig):
                return None
            claims = json.loads(_unb64(payload))
        except ValueError:
            return None
        row = self.db.execute("SELECT company_id, revoked FROM aden_tokens WHERE jti = ?",
                              (claims.get("jti"),)).fetchone()
        if row is None or row["revoked"] or row["company_id"] != claims.get("company_id"):
            return None
        return row["company_id"]

    async def api(self, request: Request) -> Response:
        """Every GL request: auth, rate limit, faults, idempotency, then the handler in one transaction."""
        route = _endpoint(request.url.path)
        is_write = request.method in WRITE_METHODS
        headers: dict[str, str] = {}
        try:
            company_id = self._company_for_token(request)
            if company_id is None:
                raise ApiError(401, "UNAUTHORIZED", "Missing, invalid or revoked token (Authorization: jwt <token>)")
            wait = self.rate.check(company_id)
            if wait is not None:
                raise ApiError(429, "RATE_LIMITED", f"Rate limit of {PER_TOKEN_MINUTE} requests per minute "
                               "exceeded", headers={"Retry-After": f"{wait:.3f}"})
            try:
                await self.ctx.before(self.system, is_write)
            except InjectedError as fault:
                if fault.kind == "unauthorized":
                    raise ApiError(401, "UNAUTHORIZED", "Token could not be verified") from None
                raise ApiError(fault.status, "INTERNAL_ERROR", "Internal server error") from None
            raw = await request.body() if request.method in ("POST", "PUT") else b""
            try:
                body = loads_exact(raw) if raw else {}
            except ValueError:
                raise ApiError(400, "VALIDATION_ERROR", "Malformed JSON body", "body") from None
            key = request.headers.get("x-idempotency-key")
            status, payload, replayed = self._handle(request, company_id, body, raw, key)
            if replayed:
                headers["Idempotent-Replayed"] = "true"
            try:
                await self.ctx.after(self.system, is_write)
            except InjectedError as fault:
                raise ApiError(fault.status, "INTERNAL_ERROR", "Internal server error") from None
        except ApiError as err:
            status, payload = err.status, err.body
            headers.update(err.headers)
        except Drop:
            self.ctx.count(self.system, request.method, route, "dropped")
            return DroppedResponse()
        self.ctx.count(self.system, request.method, route, status)
        if status == 204:
            return Response(status_code=204, headers=headers)
        return Response(dumps_exact(payload), status_code=status, headers=headers, media_type="application/json")

    def _handle(self, request: Request, company_id: str, body: Any, raw: bytes,
                key: str | None) -> tuple[int, Any, bool]:
        db = self.db
        fingerprint = hashlib.sha256(f"{request.method} {request.url.path}\n".encode() + raw).hexdigest()
        if key and request.method in WRITE_METHODS:
            row = db.execute("SELECT * FROM aden_idempotency WHERE company_id = ? AND key = ? AND created_at > ?",
                             (company_id, key, time.time() - IDEMPOTENCY_TTL)).fetchone()
            if row is not None:
                if row["fingerprint"] != fingerprint:
                    raise ApiError(422, "IDEMPOTENCY_KEY_REUSED", "X-Idempotency-Key was already used for a "
                                   "different request", "X-Idempotency-Key", key)
                return row["status"], loads_exact(row["body"]) if row["body"] else None, True
        db.execute("BEGIN")
        try:
            status, payload = self.dispatch(request, company_id, body)
            if key and request.method in WRITE_METHODS:
                db.execute("INSERT OR REPLACE INTO aden_idempotency (company_id, key, fingerprint, status, body, "
                           "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                           (company_id, key, fingerprint, status, None if payload is None else dumps_exact(payload),
                            time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return status, payload, False

    def dispatch(self, request: Request, company_id: str, body: Any) -> tuple[int, Any]:
        parts = [p for p in request.url.path.removeprefix(API).split("/") if p]
        method, q = request.method, request.query_params
        try:
            limit = min(max(int(q.get("limit", 20)), 1), 100)
            offset = max(int(q.get("offset", 0)), 0)
        except ValueError:
            raise _invalid("limit and offset must be integers", "limit") from None
        if parts == ["accounts"] and method == "GET":
            rows = self.db.execute("SELECT * FROM aden_accounts WHERE company_id = ? ORDER BY seq LIMIT ? OFFSET ?",
                                   (company_id, limit, offset)).fetchall()
            total = self.db.execute("SELECT COUNT(*) FROM aden_accounts WHERE company_id = ?",
                                    (company_id,)).fetchone()[0]
            currency = self._company(company_id)["currency"]
            data = [{"account_id": r["account_id"], "account_number": r["account_number"],
                     "account_name": r["account_name"], "account_type": r["account_type"],
                     "normal_balance": r["normal_balance"], "currency": currency, "balance": self._balance(r),
                     "is_summary": False, "is_inactive": bool(r["is_inactive"]),
                     "parent_account_id": r["parent_account_id"]} for r in rows]
            return 200, {"data": data, "pagination": {"limit": limit, "offset": offset, "total": total}}
        if parts == ["posting-periods"] and method == "GET":
            where, args = "company_id = ?", [company_id]
            if q.get("status"):
                where, args = where + " AND status = ?", [*args, q["status"]]
            rows = self.db.execute(f"SELECT * FROM aden_periods WHERE {where} ORDER BY start_date LIMIT ? OFFSET ?",
                                   (*args, limit, offset)).fetchall()
            total = self.db.execute(f"SELECT COUNT(*) FROM aden_periods WHERE {where}", args).fetchone()[0]
            data = [{k: r[k] for k in ("posting_period_id", "period_name", "start_date", "end_date", "status")}
                    for r in rows]
            return 200, {"data": data, "pagination": {"limit": limit, "offset": offset, "total": total}}
        if parts == ["journal-entries"] and method == "GET":
            where, args = ["company_id = ?"], [company_id]
            for param, col, op in (("entry_id", "entry_id", "="), ("status", "status", "="),
                                   ("posting_period_id", "posting_period_id", "="),
                                   ("from_date", "tran_date", ">="), ("to_date", "tran_date", "<=")):
                if q.get(param):
                    where.append(f"{col} {op} ?")
                    args.append(q[param])
            sql = " AND ".join(where)
            rows = self.db.execute(f"SELECT * FROM aden_entries WHERE {sql} ORDER BY seq LIMIT ? OFFSET ?",
                                   (*args, limit, offset)).fetchall()
            total = self.db.execute(f"SELECT COUNT(*) FROM aden_entries WHERE {sql}", args).fetchone()[0]
            return 200, {"data": [self.render(r) for r in rows],
                         "pagination": {"limit": limit, "offset": offset, "total": total}}
        if parts == ["journal-entries"] and method == "POST":
            jeid = self._insert(company_id, self._parse(company_id, body), "Draft")
            return 201, {"data": self.render(self._entry(company_id, jeid))}
        if len(parts) == 2 and parts[0] == "journal-entries":
            e = self._entry(company_id, parts[1])
            if method == "GET":
                return 200, {"data": self.render(e)}
            if method == "PUT":
                self._require(e, "update", ("Draft",))
                p = self._parse(company_id, {"entry_id": e["entry_id"], **body} if isinstance(body, dict) else body)
                if p["entry_id"] != e["entry_id"] and self.db.execute(
                        "SELECT 1 FROM aden_entries WHERE company_id = ? AND entry_id = ?",
                        (company_id, p["entry_id"])).fetchone():
                    raise ApiError(409, "DUPLICATE_ENTRY", f"A journal entry with entry_id {p['entry_id']} already "
                                   "exists", "entry_id", p["entry_id"])
                self.db.execute("UPDATE aden_entries SET entry_id = ?, tran_date = ?, memo = ?, entry_type = ?, "
                                "posting_period_id = ?, currency = ?, updated_at = ? WHERE journal_entry_id = ?",
                                (p["entry_id"], p["date"].isoformat(), p["memo"], p["entry_type"], p["period_id"],
                                 p["currency"], time.time(), e["journal_entry_id"]))
                self._write_lines(e["journal_entry_id"], p["lines"])
                return 200, {"data": self.render(self._entry(company_id, e["journal_entry_id"]))}
            if method == "DELETE":
                self._require(e, "delete", ("Draft",))
                self.db.execute("DELETE FROM aden_lines WHERE journal_entry_id = ?", (e["journal_entry_id"],))
                self.db.execute("DELETE FROM aden_entries WHERE journal_entry_id = ?", (e["journal_entry_id"],))
                return 204, None
        if len(parts) == 3 and parts[0] == "journal-entries" and method == "POST":
            return 200, {"data": self.workflow(company_id, parts[1], parts[2], body)}
        raise ApiError(404, "NOT_FOUND", f"No route {method} {request.url.path}")

    def _balance(self, account: sqlite3.Row) -> Decimal:
        row = self.db.execute(
            "SELECT COALESCE(SUM(l.debit_minor - l.credit_minor), 0) FROM aden_lines l JOIN aden_entries e "
            "ON e.journal_entry_id = l.journal_entry_id WHERE e.company_id = ? AND l.account_id = ? "
            "AND e.status = 'Posted'", (account["company_id"], account["account_id"])).fetchone()
        signed = row[0] if account["normal_balance"] == "Debit" else -row[0]
        return from_minor(signed)

    # -- admin: the company's token --------------------------------------------------------------------------
    async def authorize(self, request: Request) -> Response:
        """The admin page, auto-approved: a login_hint names the company (created on first use)."""
        q = request.query_params
        self.ctx.count(self.system, "GET", f"{ADMIN}/authorize", "hit")
        if q.get("client_id") != self.client_id:
            return JSONResponse({"error": {"code": "INVALID_CLIENT", "message": "unknown client_id"}}, 400)
        login, redirect = q.get("login_hint"), q.get("redirect_uri")
        if not login or not redirect:
            return JSONResponse({"error": {"code": "VALIDATION_ERROR", "message": "login_hint and redirect_uri "
                                           "are required (the sandbox auto-approves)"}}, 400)
        company_id = self._ensure_company(login)
        code = secrets.token_urlsafe(24)
        self.db.execute("INSERT INTO aden_codes (code, company_id, client_id, redirect_uri, expires_at) "
                        "VALUES (?, ?, ?, ?, ?)", (code, company_id, self.client_id, redirect, time.time() + CODE_TTL))
        sep = "&" if "?" in redirect else "?"
        return RedirectResponse(f"{redirect}{sep}{urlencode({'code': code, 'state': q.get('state', '')})}", 302)

    async def _client_body(self, request: Request) -> dict | Response:
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": {"code": "VALIDATION_ERROR", "message": "Malformed JSON body"}}, 400)
        if (not isinstance(data, dict) or data.get("client_id") != self.client_id
                or not hmac.compare_digest(str(data.get("client_secret", "")), self.client_secret)):
            return JSONResponse({"error": {"code": "INVALID_CLIENT", "message": "client authentication failed"}},
                                401)
        return data

    async def token(self, request: Request) -> Response:
        """A one-time code -> the company's JWT (no expiry; revocable)."""
        data = await self._client_body(request)
        self.ctx.count(self.system, "POST", f"{ADMIN}/token", "code")
        if isinstance(data, Response):
            return data
        row = self.db.execute("SELECT * FROM aden_codes WHERE code = ?", (str(data.get("code")),)).fetchone()
        if (row is None or row["used"] or row["expires_at"] < time.time()
                or row["redirect_uri"] != data.get("redirect_uri")):
            return JSONResponse({"error": {"code": "INVALID_GRANT", "message": "unknown, expired or used code"}},
                                400)
        self.db.execute("UPDATE aden_codes SET used = 1 WHERE code = ?", (row["code"],))
        jti, now = str(uuid.uuid4()), time.time()
        self.db.execute("INSERT INTO aden_tokens (jti, company_id, issued_at) VALUES (?, ?, ?)",
                        (jti, row["company_id"], now))
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps({"iss": "aden-sandbox", "company_id": row["company_id"], "jti": jti,
                                   "iat": int(now)}).encode())
        sig = _b64(hmac.new(JWT_SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return JSONResponse({"token": f"{header}.{payload}.{sig}", "token_type": "jwt",
                             "company_id": row["company_id"], "expires_in": None})

    async def introspect(self, request: Request) -> Response:
        data = await self._client_body(request)
        self.ctx.count(self.system, "POST", f"{ADMIN}/token/introspect", "introspect")
        if isinstance(data, Response):
            return data
        company_id = self._verify(str(data.get("token", "")))
        return JSONResponse({"active": company_id is not None, "company_id": company_id})

    # -- inspection and controls (/_sandbox) -----------------------------------------------------------------
    def inspect_entries(self, login: str | None) -> list[dict]:
        sql = ("SELECT e.*, c.login FROM aden_entries e JOIN aden_companies c ON c.company_id = e.company_id"
               + (" WHERE c.login = ?" if login else "") + " ORDER BY e.seq")
        out = []
        for e in self.db.execute(sql, (login,) if login else ()).fetchall():
            r = self.render(e)
            out.append({
                "system": self.system, "company_login": e["login"], "custom_id": e["entry_id"],
                "id": e["journal_entry_id"], "status": e["status"], "entry_type": e["entry_type"],
                "reversal_of": e["reversal_of"], "reversed_by": e["reversed_by"],
                "live": e["status"] != "Voided" and not e["reversed_by"] and not e["reversal_of"],
                "status_reason": e["status_reason"], "transaction_date": e["tran_date"],
                "memo": e["memo"], "total_debit": r["total_debit"], "total_credit": r["total_credit"],
                "transaction_account_lines": [{"debit": ln["debit"], "credit": ln["credit"],
                                               "account": {"id": ln["account_id"]}} for ln in r["lines"]],
            })
        return out

    async def control(self, login: str, action: str, body: dict) -> dict | None:
        company = self._company_by_login(login)
        if company is None:
            raise KeyError(login)
        cid, db = company["company_id"], self.db
        if action == "lock_date":  # closes every period that starts on or before the date, opens the others
            lock = body.get("lock_date")
            db.execute("UPDATE aden_companies SET lock_date = ? WHERE company_id = ?", (lock, cid))
            db.execute("UPDATE aden_periods SET status = CASE WHEN ? IS NOT NULL AND start_date <= ? THEN 'Closed' "
                       "ELSE 'Open' END WHERE company_id = ?", (lock, lock, cid))
        elif action == "periods":  # {"month": "YYYY-MM", "status": "Open"|"Closed"}
            db.execute("UPDATE aden_periods SET status = ? WHERE company_id = ? AND start_date = ?",
                       (body.get("status", "Closed"), cid, f"{body['month']}-01"))
        elif action == "revoke":
            db.execute("UPDATE aden_tokens SET revoked = 1 WHERE company_id = ?", (cid,))
        elif action == "approval_threshold":  # {"approval_threshold": "1000000.00" | null}
            value = body.get("approval_threshold")
            db.execute("UPDATE aden_companies SET approval_threshold_minor = ? WHERE company_id = ?",
                       (None if value is None else _amount(Decimal(str(value)), "approval_threshold"), cid))
        elif action == "approvals":  # the approver acts on an entry (by entry_id or journal_entry_id)
            return self._approver(cid, body)
        elif action == "accounts":  # {"number", "name", "archived"}: add an account or (de)activate one
            self._upsert_account(cid, body)
        elif action == "entries":
            self._edit_entry(cid, body)
        else:
            return None
        return {"ok": True}

    def _approver(self, company_id: str, body: dict) -> dict:
        ref = str(body.get("entry_id"))
        row = self.db.execute("SELECT journal_entry_id FROM aden_entries WHERE company_id = ? AND "
                              "(entry_id = ? OR journal_entry_id = ?)", (company_id, ref, ref)).fetchone()
        if row is None:
            raise ValueError(f"no entry {ref}")
        action = {"approve": "approve", "reject": "reject", "hold": "hold", "release": "remove-from-hold",
                  "request_change": "request-change", "void": "void", "post": "post"}.get(str(body.get("action")))
        if action is None:
            raise ValueError(f"unknown approval action {body.get('action')!r}")
        self.db.execute("BEGIN")
        try:
            data = self.workflow(company_id, row["journal_entry_id"], action, {"reason": body.get("reason")})
            self.db.execute("COMMIT")
        except ApiError as err:
            self.db.execute("ROLLBACK")
            raise ValueError(err.message) from None
        return {"data": data}

    def _upsert_account(self, company_id: str, body: dict) -> None:
        number = str(body["number"])
        row = self._account(company_id, number)
        if row is None:
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM aden_accounts WHERE company_id = ?",
                                  (company_id,)).fetchone()[0]
            self.db.execute(
                "INSERT INTO aden_accounts (company_id, account_id, account_number, account_name, account_type, "
                "normal_balance, is_inactive, parent_account_id, seq) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (company_id, number, number, body.get("name", number), *_TYPES.get(number[:1], ("Expense", "Debit")),
                 int(bool(body.get("archived"))), seq))
            return
        if "name" in body:
            self.db.execute("UPDATE aden_accounts SET account_name = ? WHERE company_id = ? AND account_id = ?",
                            (body["name"], company_id, number))
        if "archived" in body:
            self.db.execute("UPDATE aden_accounts SET is_inactive = ? WHERE company_id = ? AND account_id = ?",
                            (int(bool(body["archived"])), company_id, number))

    def _edit_entry(self, company_id: str, body: dict) -> None:
        """A person's edit in Aden (for reconciliation tests): delete, scale a line, or add a posted entry."""
        db = self.db
        if body.get("create"):
            db.execute("BEGIN")
            try:
                self._insert(company_id, self._parse(company_id, body["create"]), "Posted")
                db.execute("COMMIT")
            except ApiError as err:
                db.execute("ROLLBACK")
                raise ValueError(err.message) from None
            return
        row = db.execute("SELECT journal_entry_id FROM aden_entries WHERE company_id = ? AND entry_id = ?",
                         (company_id, str(body.get("custom_id")))).fetchone()
        if row is None:
            raise ValueError(f"no entry {body.get('custom_id')}")
        jeid = row["journal_entry_id"]
        if body.get("delete"):
            db.execute("DELETE FROM aden_lines WHERE journal_entry_id = ?", (jeid,))
            db.execute("DELETE FROM aden_entries WHERE journal_entry_id = ?", (jeid,))
        elif body.get("scale_line"):
            factor = int(body["scale_line"])
            db.execute("UPDATE aden_lines SET debit_minor = debit_minor * ?, credit_minor = credit_minor * ? "
                       "WHERE journal_entry_id = ? AND line_number = (SELECT MIN(line_number) FROM aden_lines "
                       "WHERE journal_entry_id = ?)", (factor, factor, jeid, jeid))


def _endpoint(path: str) -> str:
    """/aden/service/general-ledger/journal-entries/<uuid>/approve -> .../journal-entries/{id}/approve."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        if parts[i - 1] == "journal-entries" and parts[i]:
            parts[i] = "{id}"
            break
    return "/".join(parts)


def make(ctx: SandboxContext) -> AdenSandbox:
    return AdenSandbox(ctx)
