"""The Jurnal sandbox: a local server that behaves like Mekari Jurnal's partner API, limits and failures included.

Paths, bodies, status codes and error shapes follow ../shared/reference/accounting_apis.md section 1: OAuth2 with
1-hour access tokens and single-use rotating refresh tokens, `/partner/core/api/v1` journal entries and accounts,
`batch_create` with a status per item, 422 field maps, 429 with `{"message":"API rate limit exceeded"}`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
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
    Limits,
    SandboxContext,
    client_host,
    token_fault,
)
from ledger_pipeline.sandboxes.jurnal_state import SandboxState
from ledger_pipeline.settings import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

API = "/partner/core/api/v1"
MAX_BATCH = 100


class ApiError(Exception):
    def __init__(self, status: int, body: Any):
        self.status, self.body = status, body


class RateLimiter:
    """Fixed windows (Jurnal's counters reset each minute and each hour), per token and per client IP."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.counts: Counter = Counter()

    def check(self, token: str, ip: str) -> tuple[bool, dict[str, str]]:
        lim = self.limits
        now = time.time() * lim.scale
        minute, hour = int(now // 60), int(now // 3600)
        keys = [
            (("t", token, "m", minute), lim.per_token_minute),
            (("t", token, "h", hour), lim.per_token_hour),
            (("i", ip, "m", minute), lim.per_ip_minute),
            (("i", ip, "h", hour), lim.per_ip_hour),
        ]
        allowed = not lim.enabled or all(self.counts[k] < n for k, n in keys)
        if allowed:
            for k, _ in keys:
                self.counts[k] += 1
        if len(self.counts) > 10_000:  # forget old windows
            self.counts = Counter({k: v for k, v in self.counts.items() if k[3] in (minute, hour)})
        headers = {
            "x-ratelimit-limit-minute": str(lim.per_token_minute),
            "x-ratelimit-remaining-minute": str(max(0, lim.per_token_minute - self.counts[keys[0][0]])),
            "x-ratelimit-limit-hour": str(lim.per_token_hour),
            "x-ratelimit-remaining-hour": str(max(0, lim.per_token_hour - self.counts[keys[1][0]])),
        }
        return allowed, headers


def _fmt_date(iso: str) -> str:
    return dt.date.fromisoformat(iso).strftime("%d/%m/%Y")


def _parse_date(value: Any) -> dt.date:
    if not isinstance(value, str):
        raise ApiError(422, {"transaction_date": ["can't be blank"]})
    for fmt in ("%d-%m-%Y", "%Y-%m-%d", "%d/%m/%Y"):
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ApiError(422, {"transaction_date": [f"is not a valid date: {value}"]})


def _amount(value: Any, fieldname: str) -> int:
    if value in (None, ""):
        return 0
    if isinstance(value, bool):
        raise ApiError(422, {fieldname: ["is not a number"]})
    try:
        dec = Decimal(str(value))
    except InvalidOperation as exc:
        raise ApiError(422, {fieldname: ["is not a number"]}) from exc
    if dec < 0:
        raise ApiError(422, {fieldname: ["must be greater than or equal to 0"]})
    if dec != dec.quantize(Decimal("0.01")):
        raise ApiError(422, {fieldname: ["must have at most 2 decimal places"]})
    return int(dec * 100)


def _rupiah(minor: int) -> str:
    whole = f"{from_minor(minor):,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")
    return f"Rp. {whole}"


class Sandbox:
    """The Jurnal emulation (an `Emulator`): companies, charts, OAuth grants and entries in its own tables."""

    system = "jurnal"

    def __init__(self, state: SandboxState, ctx: SandboxContext, refresh_ttl: float = 30 * 86400,
                 client_id: str = SANDBOX_CLIENT_ID, client_secret: str = SANDBOX_CLIENT_SECRET):
        self.state, self.ctx = state, ctx
        self.limits = ctx.limits
        self.rate = RateLimiter(self.limits)
        self.refresh_ttl = refresh_ttl
        self.client_id, self.client_secret = client_id, client_secret
        self._logins: dict[int, str] = {}  # company id -> login, for per-address stats

    @property
    def access_ttl(self) -> float:
        return self.ctx.access_ttl

    def _login(self, company_id: int) -> str:
        """A company's login (the tenant id), cached: for per-address stats."""
        if company_id not in self._logins:
            row = self.state.db.execute("SELECT login FROM companies WHERE id = ?", (company_id,)).fetchone()
            self._logins[company_id] = row["login"] if row else str(company_id)
        return self._logins[company_id]

    def routes(self) -> list[Route]:
        return [
            Route("/auth", self.authorize, methods=["GET", "POST"]),  # POST: the consent form
            Route("/auth/oauth2/token", self.token, methods=["POST"]),
            Route("/auth/oauth2/revoke", self.revoke, methods=["POST"]),
            Route(API + "/{path:path}", self.api, methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
        ]

    def close(self) -> None:
        self.state.close()

    # -- rendering ------------------------------------------------------------------------------------------
    def render(self, entries: list) -> list[dict]:
        lines = self.state.entry_lines([e["id"] for e in entries])
        out = []
        for e in entries:
            ls = lines[e["id"]]
            debit, credit = sum(r["debit_minor"] for r in ls), sum(r["credit_minor"] for r in ls)
            locked = self._locked(e["company_id"], dt.date.fromisoformat(e["transaction_date"]))
            out.append({
                "id": e["id"],
                "custom_id": e["custom_id"],
                "transaction_no": e["transaction_no"],
                "transaction_date": _fmt_date(e["transaction_date"]),
                "memo": e["memo"],
                "tags": json.loads(e["tags"] or "[]"),
                "transaction_status": {"id": 1, "name": "Approved"},
                "transaction_account_lines": [
                    {
                        "id": r["id"],
                        "debit": from_minor(r["debit_minor"]),
                        "credit": from_minor(r["credit_minor"]),
                        "debit_currency_format": _rupiah(r["debit_minor"]),
                        "credit_currency_format": _rupiah(r["credit_minor"]),
                        "description": r["description"],
                        "account": {"id": r["account_id"], "name": r["account_name"],
                                    "number": r["account_number"], "category": r["account_category"]},
                    }
                    for r in ls
                ],
                "total_debit": from_minor(debit),
                "total_credit": from_minor(credit),
                "total_debit_currency_format": _rupiah(debit),
                "total_credit_currency_format": _rupiah(credit),
                "locked": locked,
                "reconciled": False,
                "currency_code": "IDR",
                "currency_rate": Decimal("1.0"),
                "created_at": dt.datetime.fromtimestamp(e["created_at"], dt.UTC).isoformat(),
                "updated_at": dt.datetime.fromtimestamp(e["updated_at"], dt.UTC).isoformat(),
            })
        return out

    def _locked(self, company_id: int, date: dt.date) -> bool:
        lock = self.state.company(company_id)["lock_date"]
        return bool(lock) and date <= dt.date.fromisoformat(lock)

    def _check_lock(self, company_id: int, date: dt.date) -> None:
        if self._locked(company_id, date):
            lock = self.state.company(company_id)["lock_date"]
            raise ApiError(422, {
                "transaction_date": [
                    f"Tanggal transaksi berada dalam periode yang dikunci (Kunci Periode s/d {_fmt_date(lock)}). "
                    f"Transaction date is within a locked period (locked until {_fmt_date(lock)})."
                ]
            })

    # -- journal entry writes -------------------------------------------------------------------------------
    def _resolve_account(self, company_id: int, line: dict) -> int:
        acc = None
        if line.get("account_id") not in (None, ""):
            acc = self.state.db.execute("SELECT * FROM accounts WHERE company_id = ? AND id = ?",
                                        (company_id, line["account_id"])).fetchone()
            label, fieldname = str(line["account_id"]), "account_id"
        else:
            name = line.get("account_name")
            label, fieldname = str(name), "account_name"
            if name:
                acc = self.state.db.execute("SELECT * FROM accounts WHERE company_id = ? AND name = ?",
                                            (company_id, name)).fetchone()
        if acc is None or acc["archived"]:
            raise ApiError(422, {fieldname: [f"{label} not exist"]})
        return acc["id"]

    def _parse_lines(self, company_id: int, raw: Any) -> list[dict]:
        if not isinstance(raw, list):
            raise ApiError(422, {"transaction_account_lines": ["can't be blank"]})
        out = []
        for line in raw:
            if not isinstance(line, dict):
                raise ApiError(422, {"transaction_account_lines": ["is invalid"]})
            if line.get("_destroy") in (True, "true", 1, "1"):
                out.append({"id": line.get("id"), "_destroy": True})
                continue
            debit, credit = _amount(line.get("debit"), "debit"), _amount(line.get("credit"), "credit")
            if debit and credit:
                raise ApiError(422, {"transaction_account_lines": ["a line has either a debit or a credit"]})
            out.append({"id": line.get("id"), "account_id": self._resolve_account(company_id, line),
                        "debit_minor": debit, "credit_minor": credit, "description": line.get("description")})
        return out

    @staticmethod
    def _check_balanced(lines: list[dict]) -> None:
        live = [ln for ln in lines if not ln.get("_destroy")]
        if len(live) < 2:
            raise ApiError(422, {"transaction_account_lines": ["must have at least 2 lines"]})
        debit, credit = sum(ln["debit_minor"] for ln in live), sum(ln["credit_minor"] for ln in live)
        if debit != credit:
            raise ApiError(422, {"total_debit": [
                f"Total debit ({from_minor(debit)}) and total credit ({from_minor(credit)}) must be balance"]})

    def create_entry(self, company_id: int, payload: Any, batch: bool = False) -> dict:
        if not isinstance(payload, dict) or not isinstance(payload.get("journal_entry"), dict):
            raise ApiError(400, {"error": "param is missing or the value is empty: journal_entry"})
        je = payload["journal_entry"]
        date = _parse_date(je.get("transaction_date"))
        lines = self._parse_lines(company_id, je.get("transaction_account_lines_attributes"))
        self._check_balanced(lines)
        self._check_lock(company_id, date)
        custom_id, no = je.get("custom_id"), je.get("transaction_no")
        dup = 409 if batch else 422
        if custom_id and self.state.find_entry(company_id, str(custom_id)) is not None:
            raise ApiError(dup, {"custom_id": ["has already been taken"],
                                 "error_full_messages": ["(Custom id attribute had already been used.)"]})
        if no and self.state.list_entries(company_id, transaction_no=str(no), limit=1)[1]:
            raise ApiError(dup, {"transaction_no": ["(Transaction number had already been used)"]})
        db, now = self.state.db, time.time()
        db.execute("BEGIN")
        try:
            no = no or self.state.next_transaction_no(company_id)
            cur = db.execute(
                "INSERT INTO entries (company_id, custom_id, transaction_no, transaction_date, memo, tags, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (company_id, custom_id, str(no), date.isoformat(), je.get("memo"), json.dumps(je.get("tags") or []),
                 now, now),
            )
            entry_id = cur.lastrowid
            db.executemany(
                "INSERT INTO lines (entry_id, account_id, debit_minor, credit_minor, description) VALUES (?,?,?,?,?)",
                [(entry_id, ln["account_id"], ln["debit_minor"], ln["credit_minor"], ln["description"])
                 for ln in lines],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return self.render([db.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone()])[0]

    def update_entry(self, company_id: int, ref: str, payload: Any) -> dict:
        entry = self.state.find_entry(company_id, ref)
        if entry is None:
            raise ApiError(404, {"error": "Journal entry not found"})
        if not isinstance(payload, dict) or not isinstance(payload.get("journal_entry"), dict):
            raise ApiError(400, {"error": "param is missing or the value is empty: journal_entry"})
        je = payload["journal_entry"]
        if je.get("transaction_no") not in (None, entry["transaction_no"]):
            raise ApiError(422, {"transaction_no": ["cannot be changed"]})
        old_date = dt.date.fromisoformat(entry["transaction_date"])
        new_date = _parse_date(je["transaction_date"]) if "transaction_date" in je else old_date
        self._check_lock(company_id, old_date)
        self._check_lock(company_id, new_date)
        current = {r["id"]: dict(r) for r in self.state.entry_lines([entry["id"]])[entry["id"]]}
        changes = self._parse_lines(company_id, je.get("transaction_account_lines_attributes", []))
        result = dict(current)
        added = []
        for ch in changes:
            if ch.get("id") is not None:
                if ch["id"] not in current:
                    raise ApiError(422, {"transaction_account_lines": [f"line {ch['id']} not found"]})
                if ch.get("_destroy"):
                    result.pop(ch["id"], None)
                else:
                    result[ch["id"]] = {**current[ch["id"]], **ch}
            elif not ch.get("_destroy"):
                added.append(ch)  # Rails nested attributes: no id adds a line
        self._check_balanced(list(result.values()) + added)
        db = self.state.db
        db.execute("BEGIN")
        try:
            for line_id in set(current) - set(result):
                db.execute("DELETE FROM lines WHERE id = ?", (line_id,))
            for line_id, ln in result.items():
                db.execute("UPDATE lines SET account_id=?, debit_minor=?, credit_minor=?, description=? WHERE id=?",
                           (ln["account_id"], ln["debit_minor"], ln["credit_minor"], ln["description"], line_id))
            db.executemany(
                "INSERT INTO lines (entry_id, account_id, debit_minor, credit_minor, description) VALUES (?,?,?,?,?)",
                [(entry["id"], ln["account_id"], ln["debit_minor"], ln["credit_minor"], ln["description"])
                 for ln in added],
            )
            db.execute(
                "UPDATE entries SET transaction_date=?, memo=?, custom_id=?, updated_at=? WHERE id=?",
                (new_date.isoformat(), je.get("memo", entry["memo"]), je.get("custom_id", entry["custom_id"]),
                 time.time(), entry["id"]),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return self.render([db.execute("SELECT * FROM entries WHERE id = ?", (entry["id"],)).fetchone()])[0]

    def delete_entry(self, company_id: int, ref: str) -> None:
        entry = self.state.find_entry(company_id, ref)
        if entry is None:
            raise ApiError(404, {"error": "Journal entry not found"})
        self._check_lock(company_id, dt.date.fromisoformat(entry["transaction_date"]))
        db = self.state.db
        db.execute("BEGIN")
        db.execute("DELETE FROM lines WHERE entry_id = ?", (entry["id"],))
        db.execute("DELETE FROM entries WHERE id = ?", (entry["id"],))
        db.execute("COMMIT")

    # -- HTTP -----------------------------------------------------------------------------------------------
    async def api(self, request: Request) -> Response:
        """Every partner-API request: auth, rate limit, faults, then the handler."""
        route = _endpoint(request.url.path)
        is_write = request.method in WRITE_METHODS
        status = 500
        login: str | None = None
        headers: dict[str, str] = {}
        try:
            auth = request.headers.get("authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else ""
            company_id, why = self.state.company_for_access_token(token) if token else (None, "missing")
            if company_id is None:
                raise ApiError(401, {"error": "Invalid authentication credentials", "reason": why})
            login = self._login(company_id)
            allowed, headers = self.rate.check(token, client_host(request))
            if not allowed:
                raise ApiError(429, {"message": "API rate limit exceeded"})
            try:
                await self.ctx.before(self.system, is_write)
            except InjectedError as fault:
                raise ApiError(fault.status, {"error": "Internal Server Error"} if fault.kind == "error"
                               else {"error": "Invalid authentication credentials"}) from None
            body = None
            if request.method in ("POST", "PATCH", "PUT"):
                raw = await request.body()
                try:
                    body = loads_exact(raw) if raw else {}
                except ValueError as exc:
                    raise ApiError(400, {"error": "Malformed JSON", "detail": str(exc)}) from exc
            status, payload = self.dispatch(request, company_id, body)
            try:
                await self.ctx.after(self.system, is_write)
            except InjectedError as fault:
                raise ApiError(fault.status, {"error": "Internal Server Error"}) from None
        except ApiError as err:
            status, payload = err.status, err.body
        except Drop:
            self.ctx.count(self.system, request.method, route, "dropped")
            self.ctx.count_address(self.system, client_host(request), login, "dropped")
            return DroppedResponse()
        self.ctx.count(self.system, request.method, route, status)
        self.ctx.count_address(self.system, client_host(request), login, status)
        if status == 204:
            return Response(status_code=204, headers=headers)
        return Response(dumps_exact(payload), status_code=status, headers=headers, media_type="application/json")

    def dispatch(self, request: Request, company_id: int, body: Any) -> tuple[int, Any]:
        path, method = request.url.path.removeprefix(API), request.method
        q = request.query_params
        parts = [p for p in path.split("/") if p]
        if parts and parts[-1].endswith(".json"):
            parts[-1] = parts[-1].removesuffix(".json")
        if parts == ["accounts"] and method == "GET":
            include = q.get("include_archive", "true").lower() != "false"
            rows = self.state.accounts(company_id, include)
            accounts = [
                {"id": r["id"], "name": r["name"], "number": r["number"], "category": r["category"],
                 "category_id": r["category_id"], "parent_id": r["parent_id"], "archive": bool(r["archived"]),
                 "is_parent": False, "indent": 0, "lock": False, "currency_code": "IDR"}
                for r in rows
            ]
            return 200, {"accounts": accounts, "total_count": len(accounts)}
        if parts == ["journal_entries"] and method == "GET":
            page = max(1, int(q.get("page", 1)))
            size = min(100, max(1, int(q.get("page_size", 20))))
            start = _parse_date(q["start_date"]) if q.get("start_date") else None
            end = _parse_date(q["end_date"]) if q.get("end_date") else None
            rows, total = self.state.list_entries(company_id, start, end, q.get("transaction_no"), size,
                                                  (page - 1) * size)
            pages = max(1, -(-total // size))
            nxt = f"{API}/journal_entries?{urlencode({**q, 'page': page + 1})}" if page < pages else None
            return 200, {"journal_entries": self.render(rows), "total_count": total, "current_page": page,
                         "total_pages": pages, "links": {"next_link": nxt}}
        if parts == ["journal_entries"] and method == "POST":
            return 201, {"journal_entry": self.create_entry(company_id, body)}
        if parts == ["journal_entries", "batch_create"] and method == "POST":
            items = body.get("journal_entries") if isinstance(body, dict) else None
            if not isinstance(items, list) or not items:
                raise ApiError(400, {"error": "param is missing or the value is empty: journal_entries"})
            if len(items) > MAX_BATCH:
                raise ApiError(422, {"journal_entries": [f"maximum {MAX_BATCH} entries per request"]})
            results = []
            for item in items:
                try:
                    results.append({"journal_entry": {"status": 201, "body": self.create_entry(company_id, item,
                                                                                                batch=True)}})
                except ApiError as err:
                    results.append({"journal_entry": {"status": err.status, "content": err.body}})
            return 200, {"journal_entries": results}
        if len(parts) == 2 and parts[0] == "journal_entries":
            if method == "GET":
                entry = self.state.find_entry(company_id, parts[1])
                if entry is None:
                    raise ApiError(404, {"error": "Journal entry not found"})
                return 200, {"journal_entry": self.render([entry])[0]}
            if method in ("PATCH", "PUT"):
                return 200, {"journal_entry": self.update_entry(company_id, parts[1], body)}
            if method == "DELETE":
                self.delete_entry(company_id, parts[1])
                return 204, None
        raise ApiError(404, {"error": "Not Found"})

    # -- OAuth ------------------------------------------------------------------------------------------------
    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        self.ctx.count(self.system, "GET", "/auth", "hit")
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return JSONResponse({"error": "invalid_client"}, status_code=400)
        login, redirect = q.get("login_hint"), q.get("redirect_uri")
        if not login or not redirect:
            return JSONResponse({"error": "invalid_request",
                                 "error_description": "the sandbox auto-approves a login_hint; redirect_uri needed"},
                                status_code=400)
        page = await consent.gate(request, title="Mekari Jurnal", company=login, client=self.client_id,
                                  scopes=["jurnal"], redirect_uri=redirect, state=q.get("state", ""))
        if page is not None:  # the consent page (a browser), or the user's Deny
            return page
        company_id = self.state.company_for_login(login)
        code = self.state.new_code(company_id, self.client_id, redirect)
        sep = "&" if "?" in redirect else "?"
        return RedirectResponse(f"{redirect}{sep}{urlencode({'code': code, 'state': q.get('state', '')})}", 302)

    async def token(self, request: Request) -> Response:
        raw = await request.body()
        ctype = request.headers.get("content-type", "")
        try:
            data = json.loads(raw) if "json" in ctype else dict(await request.form())
        except ValueError:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        grant = data.get("grant_type")
        self.ctx.count(self.system, "POST", "/auth/oauth2/token", grant)
        if data.get("client_id") != self.client_id or data.get("client_secret") != self.client_secret:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if grant == "authorization_code":
            grant_id = self.state.redeem_code(str(data.get("code")), self.client_id)
        elif grant == "refresh_token":
            fault = token_fault(self.ctx, self._login_for_refresh(str(data.get("refresh_token"))))
            if fault is not None:
                return fault
            grant_id = self.state.use_refresh_token(str(data.get("refresh_token")))
        else:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if grant_id is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access, refresh = self.state.issue_tokens(grant_id, self.access_ttl, self.refresh_ttl)
        company = self.state.db.execute(
            "SELECT c.id, c.login FROM grants g JOIN companies c ON c.id = g.company_id WHERE g.id = ?", (grant_id,)
        ).fetchone()
        return JSONResponse({"access_token": access, "token_type": "bearer", "expires_in": int(self.access_ttl),
                             "refresh_token": refresh, "company_id": str(company["id"])})

    def _login_for_refresh(self, token: str) -> str | None:
        row = self.state.db.execute(
            "SELECT c.login FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id "
            "JOIN companies c ON c.id = g.company_id WHERE r.token = ?", (token,)).fetchone()
        return row["login"] if row else None

    async def revoke(self, request: Request) -> Response:
        raw = await request.body()
        try:
            data = json.loads(raw) if "json" in request.headers.get("content-type", "") else dict(
                await request.form())
        except ValueError:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        self.state.revoke_token(str(data.get("token")))
        return JSONResponse({}, status_code=200)

    # -- inspection (served by the sandbox server under /_sandbox) -------------------------------------------
    def inspect_entries(self, login: str | None) -> list[dict]:
        company = None
        if login:
            row = self.state.company_by_login(login)
            if row is None:
                return []
            company = row["id"]
        rows, _ = self.state.list_entries(company)
        logins = {r["id"]: r["login"] for r in self.state.db.execute("SELECT id, login FROM companies")}
        entries = self.render(rows)
        for e, r in zip(entries, rows, strict=True):
            e["system"] = self.system
            e["company_login"] = logins[r["company_id"]]
            e["status"] = "posted"
        return entries

    async def control(self, login: str, action: str, body: dict) -> dict | None:
        company = self.state.company_by_login(login)
        if company is None:
            raise KeyError(login)
        if action == "lock_date":
            self.state.db.execute("UPDATE companies SET lock_date = ? WHERE id = ?",
                                  (body.get("lock_date"), company["id"]))
        elif action == "revoke":
            self.state.revoke_company(company["id"])
        elif action == "accounts":  # {"number": .., "name": .., "archived": ..} add or change an account
            self._upsert_account(company["id"], body)
        elif action == "entries":  # a person edits Jurnal by hand (see _edit_entry)
            self._edit_entry(company["id"], body)
        else:
            return None
        return {"ok": True}

    def _edit_entry(self, company_id: int, body: dict) -> None:
        """What a person does in Jurnal's UI: delete an entry, change a line's amounts, or add an entry."""
        db = self.state.db
        entry = self.state.find_entry(company_id, str(body["custom_id"])) if body.get("custom_id") else None
        if body.get("create"):
            self.create_entry(company_id, {"journal_entry": body["create"]})
        elif entry is not None and body.get("delete"):
            db.execute("DELETE FROM lines WHERE entry_id = ?", (entry["id"],))
            db.execute("DELETE FROM entries WHERE id = ?", (entry["id"],))
        elif entry is not None and body.get("scale_line"):  # multiply the first line pair's amounts (unbalances)
            line = db.execute("SELECT * FROM lines WHERE entry_id = ? ORDER BY id LIMIT 1", (entry["id"],)).fetchone()
            db.execute("UPDATE lines SET debit_minor = debit_minor * ?, credit_minor = credit_minor * ? WHERE id = ?",
                       (int(body["scale_line"]), int(body["scale_line"]), line["id"]))
        elif entry is not None and body.get("clear_custom_id"):  # re-keyed by hand: same entry, no custom_id
            db.execute("UPDATE entries SET custom_id = NULL WHERE id = ?", (entry["id"],))

    def _upsert_account(self, company_id: int, body: dict) -> None:
        db = self.state.db
        row = db.execute("SELECT id FROM accounts WHERE company_id = ? AND number = ?",
                         (company_id, body["number"])).fetchone()
        if row is None:
            db.execute("INSERT INTO accounts (company_id, number, name, category, archived) VALUES (?, ?, ?, ?, ?)",
                       (company_id, body["number"], body.get("name", body["number"]), body.get("category", "Beban"),
                        int(bool(body.get("archived")))))
            return
        for col in ("name", "archived"):
            if col in body:
                db.execute(f"UPDATE accounts SET {col} = ? WHERE id = ?", (body[col], row["id"]))


def _endpoint(path: str) -> str:
    """/partner/core/api/v1/journal_entries/42 -> /partner/core/api/v1/journal_entries/{id} (for stats)."""
    parts = path.split("/")
    if len(parts) >= 2 and parts[-2] == "journal_entries" and parts[-1] != "batch_create":
        parts[-1] = "{id}"
    return "/".join(parts)


