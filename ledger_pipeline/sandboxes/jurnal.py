"""The Jurnal sandbox: a local server that behaves like Mekari Jurnal's API, limits and failures included.

Paths, bodies, status codes and error shapes follow Mekari's Swagger "Jurnal API Doc" 2.0.0 (shared/reference/
specs/jurnal_mekari_swagger.json, "the spec" below) and ../shared/reference/accounting_apis.md section 1:

- Two ways in, to the same companies and entries: the OAuth2 partner API under `/partner/core/api/v1` (Bearer;
  1-hour access tokens, single-use rotating refresh tokens; mekari-engineering/ruby-jurnal-client
  `connection.rb`), and Mekari's API gateway under `/public/jurnal/api/v1` (the spec's basePath paths, host
  api.mekari.com) with HMAC-signed requests (the spec's `info.description`; devcenter-kb
  `docs/authentication/hmac.md`): `Authorization: hmac username=.., algorithm="hmac-sha256", headers="date
  request-line", signature=..`, a `Date` within 300 s of the gateway's clock (`clock`, injectable), and a
  `Digest: SHA-256=..` of the body on POST/PUT/PATCH/DELETE. Refusals are 401 with the messages of Kong's
  hmac-auth plugin (Kong/kong `kong/plugins/hmac-auth/access.lua`), whose header format this is.
- Journal entries: `transaction_status {"id":2,"name":"Closed","name_bahasa":"Selesai"}`, a line's
  `account.category` `{id, name}`, `tags` `[{id, name}]` with `tags_string`, whole amounts as JSON integers (the
  spec's examples). PATCH requires `transaction_date` and `transaction_no` (422 field maps), takes tags as
  `tag_name`, changes lines that carry an `id` and adds those without; the undocumented `_destroy` is not a
  permitted attribute and is dropped (so the line stays), as Rails strong parameters drop unknown keys.
- `batch_create`: HTTP 200 with a result per entry `{"status", "body": <the request echoed>, "content": <the
  created entry, or the refusal's field map>}` (the spec's example), at most 100 entries.
- `/journal_entries/{id}` takes the Jurnal id or the custom_id ("Journal Entry ID or Custom ID"); the segment is
  matched raw and then percent-decoded (a custom_id with `/` or `?` is one segment, as in Rails routing).
- 422 field maps, 429 with `{"message":"API rate limit exceeded"}`.

Controls (POST /_sandbox/companies/<login>/<action>), besides lock_date, revoke, accounts and entries:
- `hmac_credentials` {}: issue the company's gateway client id and secret (Mekari's developer dashboard does this),
  creating the company if new: `{"client_id": .., "client_secret": ..}`.
- `lookup` {"mode": "normal" | "ignore_filters" | "others_first"}: a misbehaving look-up, to prove the client never
  adopts an entry that is not its own. `ignore_filters`: the list ignores start_date/end_date/transaction_no and
  `GET /journal_entries/{id}` answers the company's oldest entry whatever the id; `others_first`: the same, with the
  entries that do not match put first (the look-up answers another entry whenever there is one).
- `entries` {"custom_id", "relines": true}: a person re-enters the entry's lines in Jurnal (same amounts, new line
  ids), so line ids a client kept are stale.
- `currency` {"home_currency": code}: the company's currency (default IDR).

Company: `GET /companies/active` answers the token's company with its `last_closing_the_book_date` (the lock date).

Currencies: `GET /companies/get_currency` answers `{"company_currency": {"code", "symbol", "separator", "delimiter",
"precision", "currency_format_view"}}` (the Swagger's "Get Company Currency"; precision is the ISO 4217 minor unit,
at most 2 here). A journal entry carries no currency in the Swagger (POST /journal_entries has none), so every entry
is in the company's currency: shown as `currency_code` with `currency_rate` 1, its amounts no finer than that
currency's precision (a JPY company's 1.5 is 422 "must have at most 0 decimal places", never rounded); an entry
body naming another `currency_code` is 422 (multi-currency journals are not in the Swagger).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger_pipeline.money import minor_unit
from ledger_pipeline.sandboxes import consent
from ledger_pipeline.sandboxes.base import (  # noqa: F401 - SandboxLimits: tests and bench import it from here
    WRITE_METHODS,
    Call,
    Emulator,
    Problem,
    SandboxContext,
    SandboxLimits,
    Windows,
    client_host,
    transaction,
    write_company_currency,
)
from ledger_pipeline.sandboxes.jurnal_state import CATEGORY_IDS, SandboxState
from ledger_pipeline.sandboxes.oauth import OAuthServer, approve, oauth_params, redirect_to
from ledger_pipeline.settings import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

API = "/partner/core/api/v1"  # OAuth2 partner API (Bearer)
GATEWAY = "/public/jurnal/api/v1"  # Mekari API gateway (HMAC), the spec's basePath
MAX_BATCH = 100
CLOCK_SKEW = 300  # seconds between the Date header and the gateway's clock (devcenter-kb hmac.md)
# Kong hmac-auth's 401 messages (Kong/kong kong/plugins/hmac-auth/access.lua)
HMAC_DATE_REFUSED = ("HMAC signature cannot be verified, a valid date or x-date header is required for HMAC "
                     "Authentication")
HMAC_NOT_VERIFIED = "HMAC signature cannot be verified"
HMAC_NO_MATCH = "HMAC signature does not match"
_HMAC_PARAMS = re.compile(r'\s*hmac\s+username="([^"]+)",\s*algorithm="([^"]+)",\s*headers="([^"]+)",\s*'
                          r'signature="([^"]+)"\s*$', re.IGNORECASE)
CLOSED = {"id": 2, "name": "Closed", "name_bahasa": "Selesai"}  # the spec's transaction_status of a journal entry
LOOKUP_MODES = ("normal", "ignore_filters", "others_first")


class ApiError(Exception):
    def __init__(self, status: int, body: Any):
        self.status, self.body = status, body


class RateLimiter(Windows):
    """Fixed windows (Jurnal's counters reset each minute and each hour), per token (or HMAC consumer) and per client
    IP, with the `x-ratelimit-*` headers (accounting_apis.md section 1); the numbers are `SandboxLimits`'."""

    def check(self, consumer: str, ip: str) -> tuple[bool, dict[str, str]]:
        lim, now = self.limits, time.time()
        token_minute, token_hour = (("t", consumer), lim.per_token_minute, 60), (("t", consumer), lim.per_token_hour,
                                                                                 3600)
        wait = self.take([token_minute, token_hour, (("i", ip), lim.per_ip_minute, 60),
                          (("i", ip), lim.per_ip_hour, 3600)], now=now)
        headers = {
            "x-ratelimit-limit-minute": str(lim.per_token_minute),
            "x-ratelimit-remaining-minute": str(max(0, lim.per_token_minute - self.used(("t", consumer), 60, now))),
            "x-ratelimit-limit-hour": str(lim.per_token_hour),
            "x-ratelimit-remaining-hour": str(max(0, lim.per_token_hour - self.used(("t", consumer), 3600, now))),
        }
        return not wait, headers


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


AMOUNT_PLACES = 2  # the wire's amounts (the Swagger's examples: integers or 2 dp); stored as hundredths


def _dec(hundredths: int) -> Decimal:
    return (Decimal(hundredths) / 100).quantize(Decimal("0.01"))


def _amount(value: Any, fieldname: str, currency: str = "IDR") -> int:
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
    places = min(AMOUNT_PLACES, minor_unit(currency))
    if dec != dec.quantize(Decimal(1).scaleb(-places)):
        raise ApiError(422, {fieldname: [f"must have at most {places} decimal places"]})
    return int(dec * 100)


def _num(minor: int, wire: bool) -> int | Decimal:
    """An amount on the wire: a JSON integer when whole (the spec's examples: `"debit": 30000`), else 2 dp; the
    /_sandbox inspection keeps exact 2-dp decimals."""
    return minor // 100 if wire and minor % 100 == 0 else _dec(minor)


def _iso(ts: float) -> str:
    """Rails' timestamp form, as in the spec's examples: 2017-03-17T11:37:01.040Z."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _tag_id(name: str) -> int:
    """A stable tag id per name (Jurnal's tags are company records; the sandbox derives the id)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:7], 16)


def _rupiah(minor: int, currency: str = "IDR") -> str:
    """Jurnal's *_currency_format: "Rp. 1.250.000,00" for IDR (the Swagger's examples), "<code> 1.250,00" else."""
    whole = f"{_dec(minor):,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")
    return f"{'Rp.' if currency == 'IDR' else currency} {whole}"


class Sandbox(OAuthServer, Emulator):
    """The Jurnal emulation: companies, charts, OAuth grants and entries in its own tables (its own state file)."""

    system = "jurnal"
    api_prefix = API
    errors = (ApiError,)
    count_addresses = True
    companies = ("companies", "id")
    ids = {"journal_entries": "{id}"}  # stats: /partner/core/api/v1/journal_entries/{id}
    not_ids = ("batch_create",)
    token_route = "/auth/oauth2/token"

    def __init__(self, state: SandboxState, ctx: SandboxContext, refresh_ttl: float = 30 * 86400,
                 client_id: str = SANDBOX_CLIENT_ID, client_secret: str = SANDBOX_CLIENT_SECRET,
                 clock: Callable[[], float] = time.time):
        super().__init__(ctx)
        self.state, self.db = state, state.db
        self.rate = RateLimiter(ctx.limits)
        self.refresh_ttl = refresh_ttl
        self.client_id, self.client_secret = client_id, client_secret
        self.clock = clock  # the gateway's clock for the HMAC Date check (tests set it; never the wall clock there)
        self._logins: dict[int, str] = {}  # company id -> login, for per-address stats
        self.lookup_modes: dict[int, str] = {}  # company id -> a misbehaving look-up (see the `lookup` control)

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
            Route(GATEWAY + "/{path:path}", self.gateway, methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
        ]

    def close(self) -> None:
        self.state.close()

    # -- rendering ------------------------------------------------------------------------------------------
    def render(self, entries: list, wire: bool = True) -> list[dict]:
        """Entries in the spec's read shape (`wire`), or with exact 2-dp amounts for /_sandbox inspection."""
        lines = self.state.entry_lines([e["id"] for e in entries])
        out = []
        for e in entries:
            ls = lines[e["id"]]
            cur = self.state.company(e["company_id"])["currency"]
            debit, credit = sum(r["debit_minor"] for r in ls), sum(r["credit_minor"] for r in ls)
            locked = self._locked(e["company_id"], dt.date.fromisoformat(e["transaction_date"]))
            tags = json.loads(e["tags"] or "[]")
            out.append({
                "id": e["id"],
                "custom_id": e["custom_id"],
                "transaction_no": e["transaction_no"],
                "transaction_date": _fmt_date(e["transaction_date"]),
                "memo": e["memo"],
                "transaction_status": dict(CLOSED),
                "transaction_account_lines": [
                    {
                        "id": r["id"],
                        "description": r["description"],
                        "debit": _num(r["debit_minor"], wire),
                        "credit": _num(r["credit_minor"], wire),
                        "credit_currency_format": _rupiah(r["credit_minor"], cur),
                        "debit_currency_format": _rupiah(r["debit_minor"], cur),
                        "account": {"id": r["account_id"], "name": r["account_name"],
                                    "number": r["account_number"],
                                    "category": {"id": r["account_category_id"] or CATEGORY_IDS.get(
                                        r["account_category"]), "name": r["account_category"]}},
                    }
                    for r in ls
                ],
                "total_debit": _num(debit, wire),
                "total_credit": _num(credit, wire),
                "total_debit_currency_format": _rupiah(debit, cur),
                "total_credit_currency_format": _rupiah(credit, cur),
                "attachments": [],
                "tags": [{"id": _tag_id(t), "name": t} for t in tags],
                "tags_string": ", ".join(tags),
                "locked": locked,
                "reconciled": False,
                "created_at": _iso(e["created_at"]),
                "updated_at": _iso(e["updated_at"]),
                "currency_code": cur,
                "currency_rate": 1,
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

    # Rails strong parameters: a line's permitted attributes (the spec's create and PATCH schemas, plus account_id
    # and description, which the spec's descriptions and read shape use). Anything else (`_destroy`) is dropped.
    LINE_KEYS = ("id", "account_id", "account_name", "debit", "credit", "description")

    def _parse_lines(self, company_id: int, raw: Any, current: dict[int, dict] | None = None) -> list[dict]:
        """Lines of a create (`current` None) or a PATCH: a line with an `id` changes that line of `current` (fields
        it leaves out stay as they are), a line without one is new and needs an account."""
        if not isinstance(raw, list):
            raise ApiError(422, {"transaction_account_lines": ["can't be blank"]})
        out = []
        for given in raw:
            if not isinstance(given, dict):
                raise ApiError(422, {"transaction_account_lines": ["is invalid"]})
            line = {k: v for k, v in given.items() if k in self.LINE_KEYS}
            base: dict = {}
            if current is not None and line.get("id") not in (None, ""):
                try:
                    line_id = int(line["id"])
                except (TypeError, ValueError):
                    line_id = -1
                if line_id not in current:
                    raise ApiError(422, {"transaction_account_lines": [f"line {line['id']} not found"]})
                base = dict(current[line_id])
            has_account = line.get("account_id") not in (None, "") or line.get("account_name") not in (None, "")
            account = self._resolve_account(company_id, line) if has_account or not base else base["account_id"]
            cur = self.state.company(company_id)["currency"]
            debit = _amount(line.get("debit"), "debit", cur) if "debit" in line else base.get("debit_minor", 0)
            credit = _amount(line.get("credit"), "credit", cur) if "credit" in line else base.get("credit_minor", 0)
            if debit and credit:
                raise ApiError(422, {"transaction_account_lines": ["a line has either a debit or a credit"]})
            out.append({"id": base.get("id"), "account_id": account, "debit_minor": debit, "credit_minor": credit,
                        "description": line.get("description", base.get("description"))})
        return out

    @staticmethod
    def _check_balanced(lines: list[dict]) -> None:
        if len(lines) < 2:
            raise ApiError(422, {"transaction_account_lines": ["must have at least 2 lines"]})
        debit, credit = sum(ln["debit_minor"] for ln in lines), sum(ln["credit_minor"] for ln in lines)
        if debit != credit:
            raise ApiError(422, {"total_debit": [
                f"Total debit ({_dec(debit)}) and total credit ({_dec(credit)}) must be balance"]})

    def _check_custom_id(self, company_id: int, custom_id: Any, status: int, entry_id: int | None = None) -> None:
        if custom_id in (None, ""):
            return
        other = self.state.db.execute("SELECT id FROM entries WHERE company_id = ? AND custom_id = ?",
                                      (company_id, str(custom_id))).fetchone()
        if other is not None and other["id"] != entry_id:
            raise ApiError(status, {"custom_id": ["has already been taken"],
                                    "error_full_messages": ["(Custom id attribute had already been used.)"]})

    def create_entry(self, company_id: int, payload: Any, batch: bool = False) -> dict:
        if not isinstance(payload, dict) or not isinstance(payload.get("journal_entry"), dict):
            raise ApiError(400, {"error": "param is missing or the value is empty: journal_entry"})
        je = payload["journal_entry"]
        date = _parse_date(je.get("transaction_date"))
        home = self.state.company(company_id)["currency"]
        if je.get("currency_code") not in (None, "", home):
            raise ApiError(422, {"currency_code": [f"must be the company currency {home}"]})
        lines = self._parse_lines(company_id, je.get("transaction_account_lines_attributes"))
        self._check_balanced(lines)
        self._check_lock(company_id, date)
        custom_id, no = je.get("custom_id"), je.get("transaction_no")
        dup = 409 if batch else 422
        self._check_custom_id(company_id, custom_id, dup)
        if no and self.state.list_entries(company_id, transaction_no=str(no), limit=1)[1]:
            raise ApiError(dup, {"transaction_no": ["(Transaction number had already been used)"]})
        db, now = self.state.db, time.time()
        with transaction(db):
            no = no or self.state.next_transaction_no(company_id)
            cur = db.execute(
                "INSERT INTO entries (company_id, custom_id, transaction_no, transaction_date, memo, tags, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (company_id, custom_id, str(no), date.isoformat(), je.get("memo"), json.dumps(_tags(je, "tags")),
                 now, now),
            )
            entry_id = cur.lastrowid
            db.executemany(
                "INSERT INTO lines (entry_id, account_id, debit_minor, credit_minor, description) VALUES (?,?,?,?,?)",
                [(entry_id, ln["account_id"], ln["debit_minor"], ln["credit_minor"], ln["description"])
                 for ln in lines],
            )
        return self.render([db.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone()])[0]

    def update_entry(self, company_id: int, ref: str, payload: Any) -> dict:
        """PATCH (the spec's `update`): `transaction_date` and `transaction_no` required, the number unchanged;
        lines by id changed, lines without id added, lines not mentioned kept; tags from `tag_name` (or `tags`, as
        the spec's example body has it)."""
        entry = self.state.find_entry(company_id, ref)
        if entry is None:
            raise ApiError(404, {"error": "Journal entry not found"})
        if not isinstance(payload, dict) or not isinstance(payload.get("journal_entry"), dict):
            raise ApiError(400, {"error": "param is missing or the value is empty: journal_entry"})
        je = payload["journal_entry"]
        blank = {f: ["can't be blank"] for f in ("transaction_date", "transaction_no") if je.get(f) in (None, "")}
        if blank:
            raise ApiError(422, blank)
        if str(je["transaction_no"]) != entry["transaction_no"]:
            raise ApiError(422, {"transaction_no": ["cannot be changed"]})
        old_date = dt.date.fromisoformat(entry["transaction_date"])
        new_date = _parse_date(je["transaction_date"])
        self._check_lock(company_id, old_date)
        self._check_lock(company_id, new_date)
        current = {r["id"]: dict(r) for r in self.state.entry_lines([entry["id"]])[entry["id"]]}
        changes = self._parse_lines(company_id, je.get("transaction_account_lines_attributes", []), current)
        result = dict(current)
        added = []
        for ch in changes:
            if ch["id"] is not None:
                result[ch["id"]] = {**current[ch["id"]], **ch}
            else:
                added.append(ch)
        self._check_balanced(list(result.values()) + added)
        custom_id = je.get("custom_id", entry["custom_id"])
        self._check_custom_id(company_id, custom_id, 422, entry["id"])
        tags = _tags(je, "tag_name") if "tag_name" in je else _tags(je, "tags") if "tags" in je else None
        db = self.state.db
        with transaction(db):
            for line_id, ln in result.items():
                db.execute("UPDATE lines SET account_id=?, debit_minor=?, credit_minor=?, description=? WHERE id=?",
                           (ln["account_id"], ln["debit_minor"], ln["credit_minor"], ln["description"], line_id))
            db.executemany(
                "INSERT INTO lines (entry_id, account_id, debit_minor, credit_minor, description) VALUES (?,?,?,?,?)",
                [(entry["id"], ln["account_id"], ln["debit_minor"], ln["credit_minor"], ln["description"])
                 for ln in added],
            )
            db.execute(
                "UPDATE entries SET transaction_date=?, memo=?, custom_id=?, tags=?, updated_at=? WHERE id=?",
                (new_date.isoformat(), je.get("memo", entry["memo"]), custom_id,
                 entry["tags"] if tags is None else json.dumps(tags), time.time(), entry["id"]),
            )
        return self.render([db.execute("SELECT * FROM entries WHERE id = ?", (entry["id"],)).fetchone()])[0]

    def delete_entry(self, company_id: int, ref: str) -> None:
        entry = self.state.find_entry(company_id, ref)
        if entry is None:
            raise ApiError(404, {"error": "Journal entry not found"})
        self._check_lock(company_id, dt.date.fromisoformat(entry["transaction_date"]))
        with transaction(self.state.db) as db:
            db.execute("DELETE FROM lines WHERE entry_id = ?", (entry["id"],))
            db.execute("DELETE FROM entries WHERE id = ?", (entry["id"],))

    def _lookup(self, company_id: int, ref: str):  # noqa: ANN202
        """GET `/journal_entries/{id}`: the entry whose custom_id or Jurnal id is `ref` ("Journal Entry ID or Custom
        ID"); under a misbehaving `lookup` mode, the company's oldest entry (another one first, if any). Writes
        always address the entry by `ref`."""
        mode = self.lookup_modes.get(company_id, "normal")
        entry = self.state.find_entry(company_id, ref)
        if mode == "normal":
            return entry
        rows, _ = self.state.list_entries(company_id)
        others = [r for r in rows if entry is None or r["id"] != entry["id"]]
        if mode == "others_first" and others:
            return others[0]
        return rows[0] if rows else None

    # -- the request path's hooks (base.Emulator.serve runs them in order) --------------------------------------
    async def gateway(self, request: Request) -> Response:
        """Mekari's API gateway: HMAC-signed requests (`api`, the partner API, takes Bearer tokens)."""
        return await self.serve(request, GATEWAY)

    def segments(self, call: Call) -> list[str]:
        """Split on the raw path and percent-decoded one by one, as Rails routing does (`%2F` inside a custom_id
        stays inside its segment); a `.json` suffix (the Ruby client's) is dropped."""
        parts = super().segments(call)
        if parts and parts[-1].endswith(".json"):
            parts[-1] = parts[-1].removesuffix(".json")
        return parts

    def authenticate(self, call: Call) -> tuple[int, str]:
        """(company, consumer): a Bearer token on the partner API, an HMAC signature on the gateway."""
        company_id, consumer = (self._hmac if call.prefix == GATEWAY else self._bearer)(call.request, call.raw)
        call.login = self._login(company_id)
        return company_id, consumer

    def limits(self, call: Call) -> None:
        allowed, headers = self.rate.check(call.principal[1], client_host(call.request))
        call.headers.update(headers)
        if not allowed:
            raise ApiError(429, {"message": "API rate limit exceeded"})

    def error_payload(self, err: Exception) -> tuple[int, Any, dict[str, str]]:
        """The partner API's error bodies (accounting_apis.md section 1)."""
        if isinstance(err, Problem):
            err = {"unauthorized": ApiError(401, {"error": "Invalid authentication credentials"}),
                   "server_error": ApiError(err.status, {"error": "Internal Server Error"}),
                   "malformed_body": ApiError(400, {"error": "Malformed JSON", "detail": err.detail})}[err.kind]
        assert isinstance(err, ApiError)
        return err.status, err.body, {}

    def _bearer(self, request: Request, raw: bytes) -> tuple[int, str]:
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        company_id, why = self.state.company_for_access_token(token) if token else (None, "missing")
        if company_id is None:
            raise ApiError(401, {"error": "Invalid authentication credentials", "reason": why})
        return company_id, token

    def _hmac(self, request: Request, raw: bytes) -> tuple[int, str]:
        """Verify a gateway request as Kong's hmac-auth does (Kong/kong kong/plugins/hmac-auth/access.lua) with
        Mekari's parameters (devcenter-kb docs/authentication/hmac.md): the Date (or X-Date) within 300 s of
        `clock`, the signature over `date: <Date>\\n<METHOD> <path?query> HTTP/1.1`, and on POST/PUT/PATCH/DELETE
        the Digest of the body. Any refusal is a 401 `{"message": ...}`."""
        auth = request.headers.get("authorization")
        if not auth:
            raise ApiError(401, {"message": "Unauthorized"})
        date = request.headers.get("x-date") or request.headers.get("date")
        try:
            when = parsedate_to_datetime(date).timestamp() if date else None
        except (TypeError, ValueError):
            when = None
        if when is None or abs(self.clock() - when) > CLOCK_SKEW:
            raise ApiError(401, {"message": HMAC_DATE_REFUSED})
        m = _HMAC_PARAMS.match(auth)
        if not m or m.group(2).lower() != "hmac-sha256" or m.group(3).lower() != "date request-line":
            raise ApiError(401, {"message": HMAC_NOT_VERIFIED})
        username, signature = m.group(1), m.group(4)
        cred = self.state.hmac_credential(username)
        if cred is None:
            raise ApiError(401, {"message": HMAC_NOT_VERIFIED})
        target = request.scope.get("raw_path") or request.url.path.encode()
        if request.scope.get("query_string"):
            target += b"?" + request.scope["query_string"]
        line = f"{request.method} {target.decode('latin-1')} HTTP/{request.scope.get('http_version', '1.1')}"
        expected = base64.b64encode(hmac.new(cred["secret"].encode(), f"date: {date}\n{line}".encode(),
                                             hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, signature):
            raise ApiError(401, {"message": HMAC_NO_MATCH})
        if request.method in WRITE_METHODS:
            digest = "SHA-256=" + base64.b64encode(hashlib.sha256(raw).digest()).decode()
            if request.headers.get("digest") != digest:
                raise ApiError(401, {"message": HMAC_NO_MATCH})
        return cred["company_id"], f"hmac:{username}"

    def dispatch(self, call: Call) -> tuple[int, Any]:
        method, q, parts, prefix, body = call.method, call.query, call.parts, call.prefix, call.body
        company_id = call.principal[0]
        mode = self.lookup_modes.get(company_id, "normal")
        if parts == ["accounts"] and method == "GET":
            include = q.get("include_archive", "true").lower() != "false"
            rows = self.state.accounts(company_id, include)
            accounts = [
                {"id": r["id"], "name": r["name"], "number": r["number"], "category": r["category"],
                 "category_id": r["category_id"], "parent_id": r["parent_id"], "archive": bool(r["archived"]),
                 "is_parent": False, "indent": 0, "lock": False,
                 "currency_code": self.state.company(company_id)["currency"]}
                for r in rows
            ]
            return 200, {"accounts": accounts, "total_count": len(accounts)}
        if parts == ["companies", "active"] and method == "GET":
            return 200, self.active_company(company_id)
        if parts == ["companies", "get_currency"] and method == "GET":
            code = self.state.company(company_id)["currency"]
            return 200, {"company_currency": {
                "code": code, "symbol": "Rp." if code == "IDR" else code, "separator": ",", "delimiter": ".",
                "precision": min(AMOUNT_PLACES, minor_unit(code)), "currency_format_view": "1,2"}}
        if parts == ["journal_entries"] and method == "GET":
            page = max(1, int(q.get("page", 1)))
            size = min(100, max(1, int(q.get("page_size", 20))))
            start = _parse_date(q["start_date"]) if q.get("start_date") else None
            end = _parse_date(q["end_date"]) if q.get("end_date") else None
            if mode == "normal":
                rows, total = self.state.list_entries(company_id, start, end, q.get("transaction_no"), size,
                                                      (page - 1) * size)
            else:  # filters ignored; others_first: what the filters would have excluded comes first
                every, total = self.state.list_entries(company_id)
                matching, _ = self.state.list_entries(company_id, start, end, q.get("transaction_no"))
                if mode == "others_first":
                    keep = {r["id"] for r in matching}
                    every = [r for r in every if r["id"] not in keep] + [r for r in every if r["id"] in keep]
                rows = every[(page - 1) * size: page * size]
            pages = max(1, -(-total // size))
            nxt = f"{prefix}/journal_entries?{urlencode({**q, 'page': page + 1})}" if page < pages else None
            listing: dict[str, Any] = {"journal_entries": self.render(rows), "total_count": total,
                                       "current_page": page, "total_pages": pages}
            listing["links"] = {"next_link": nxt} if nxt else {}
            return 200, listing
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
                echo = item if isinstance(item, dict) else {}
                try:
                    created = self.create_entry(company_id, item, batch=True)
                    results.append({"journal_entry": {"status": 201, "body": echo,
                                                      "content": {"journal_entry": created}}})
                except ApiError as err:
                    results.append({"journal_entry": {"status": err.status, "body": echo, "content": err.body}})
            return 200, {"journal_entries": results}
        if len(parts) == 2 and parts[0] == "journal_entries":
            if method == "GET":
                entry = self._lookup(company_id, parts[1])
                if entry is None:
                    raise ApiError(404, {"error": "Journal entry not found"})
                return 200, {"journal_entry": self.render([entry])[0]}
            if method in ("PATCH", "PUT"):
                return 200, {"journal_entry": self.update_entry(company_id, parts[1], body)}
            if method == "DELETE":
                self.delete_entry(company_id, parts[1])
                return 204, None
        raise ApiError(404, {"error": "Not Found"})

    # -- OAuth (accounting_apis.md section 1; mekari-engineering/ruby-jurnal-client connection.rb) ------------
    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        self.ctx.count(self.system, "GET", "/auth", "hit")
        approved = approve(request, self.client_id)
        if isinstance(approved, Response):
            return approved
        login, redirect = approved
        page = await consent.gate(request, title="Mekari Jurnal", company=login, client=self.client_id,
                                  scopes=["jurnal"], redirect_uri=redirect, state=q.get("state", ""))
        if page is not None:  # the consent page (a browser), or the user's Deny
            return page
        code = self.state.new_code(self.state.company_for_login(login), self.client_id, redirect)
        return redirect_to(redirect, {"code": code, "state": q.get("state", "")})

    def client_ok(self, request: Request, params: dict) -> bool:
        return params.get("client_id") == self.client_id and params.get("client_secret") == self.client_secret

    def redeem_code(self, params: dict) -> int | None:
        return self.state.redeem_code(str(params.get("code")), self.client_id)

    def redeem_refresh(self, params: dict) -> int | None:
        """Refresh tokens are single use (a spent one is invalid_grant)."""
        return self.state.use_refresh_token(str(params.get("refresh_token")))

    def refresh_login(self, params: dict) -> str | None:
        row = self.state.db.execute(
            "SELECT c.login FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id "
            "JOIN companies c ON c.id = g.company_id WHERE r.token = ?", (str(params.get("refresh_token")),)).fetchone()
        return row["login"] if row else None

    def issue(self, request: Request, grant: int, params: dict) -> dict:
        access, refresh = self.state.issue_tokens(grant, self.access_ttl, self.refresh_ttl)
        company = self.state.db.execute(
            "SELECT c.id FROM grants g JOIN companies c ON c.id = g.company_id WHERE g.id = ?", (grant,)).fetchone()
        return {"access_token": access, "token_type": "bearer", "expires_in": int(self.access_ttl),
                "refresh_token": refresh, "company_id": str(company["id"])}

    async def revoke(self, request: Request) -> Response:
        """Revoking an access or refresh token revokes its whole grant."""
        try:
            data = await oauth_params(request)
        except ValueError:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        self.state.revoke_token(str(data.get("token")))
        return JSONResponse({}, status_code=200)

    # -- inspection and controls (served by the sandbox server under /_sandbox) ---------------------------------
    def inspect_entries(self, login: str | None) -> list[dict]:
        company = None
        if login:
            row = self.state.company_by_login(login)
            if row is None:
                return []
            company = row["id"]
        rows, _ = self.state.list_entries(company)
        logins = {r["id"]: r["login"] for r in self.state.db.execute("SELECT id, login FROM companies")}
        entries = self.render(rows, wire=False)
        for e, r in zip(entries, rows, strict=True):
            e["system"] = self.system
            e["company_login"] = logins[r["company_id"]]
            e["status"] = "posted"
            e["currency"] = e["currency_code"]
        return entries

    async def control(self, login: str, action: str, body: dict) -> dict | None:
        if action == "hmac_credentials":  # Mekari's developer dashboard: one pair per company and product
            client_id, secret = self.state.issue_hmac(self.state.company_for_login(login))
            return {"client_id": client_id, "client_secret": secret}
        return await super().control(login, action, body)

    def do_currency(self, company_id: int, body: dict) -> dict:
        """{"home_currency": code}: the company's currency (GET /companies/get_currency)."""
        write_company_currency(self.state.db, body, "companies", "id", company_id, "currency",
                               multicurrency_column=None)
        return {"ok": True, "company_id": company_id, "home_currency": self.state.company(company_id)["currency"],
                "multicurrency": False}

    def do_lookup(self, company_id: int, body: dict) -> dict:
        """{"mode": "normal" | "ignore_filters" | "others_first"}: see the module docstring."""
        mode = body.get("mode", "normal")
        if mode not in LOOKUP_MODES:
            raise ValueError(f"lookup mode must be one of {', '.join(LOOKUP_MODES)}")
        self.lookup_modes[company_id] = mode
        return {"ok": True, "mode": mode}

    def active_company(self, company_id: int) -> dict:
        """The Swagger's "Get Current Active Company" (GET /companies/active: `company` {id, name, ...,
        last_closing_the_book_date}); the closing date is the lock date (`lock_date` control, Kunci Periode / Tutup
        Buku, help-center.jurnal.id 29551046998553), dd/mm/yyyy as the Swagger's closing_the_book example
        ("31/01/2023"), "" when the books were never closed (the Swagger's example)."""
        row = self.state.company(company_id)
        return {"company": {"id": row["id"], "name": row["name"] or row["login"],
                            "last_closing_the_book_date": _fmt_date(row["lock_date"]) if row["lock_date"] else "",
                            "company_email": f"{row['login']}@example.test"}}

    def do_lock_date(self, company_id: int, body: dict) -> None:
        self.state.db.execute("UPDATE companies SET lock_date = ? WHERE id = ?", (body.get("lock_date"), company_id))

    def do_revoke(self, company_id: int, body: dict) -> None:
        self.state.revoke_company(company_id)

    def do_entries(self, company_id: int, body: dict) -> None:
        """A person edits Jurnal by hand (see _edit_entry)."""
        self._edit_entry(company_id, body)

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
        elif entry is not None and body.get("relines"):  # the lines typed in again: same amounts, new line ids
            rows = db.execute("SELECT * FROM lines WHERE entry_id = ? ORDER BY id", (entry["id"],)).fetchall()
            with transaction(db):
                db.execute("DELETE FROM lines WHERE entry_id = ?", (entry["id"],))
                db.executemany("INSERT INTO lines (entry_id, account_id, debit_minor, credit_minor, description) "
                               "VALUES (?,?,?,?,?)", [(entry["id"], r["account_id"], r["debit_minor"],
                                                       r["credit_minor"], r["description"]) for r in rows])

    def do_accounts(self, company_id: int, body: dict) -> None:
        """{"number", "name", "archived", "category"}: add or change an account."""
        db = self.state.db
        row = db.execute("SELECT id FROM accounts WHERE company_id = ? AND number = ?",
                         (company_id, body["number"])).fetchone()
        if row is None:
            category = body.get("category", "Beban")
            db.execute("INSERT INTO accounts (company_id, number, name, category, category_id, archived) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (company_id, body["number"], body.get("name", body["number"]), category,
                        CATEGORY_IDS.get(category, len(CATEGORY_IDS) + 1), int(bool(body.get("archived")))))
            return
        for col in ("name", "archived"):
            if col in body:
                db.execute(f"UPDATE accounts SET {col} = ? WHERE id = ?", (body[col], row["id"]))


def _tags(je: dict, key: str) -> list[str]:
    """Tag names from `tags` / `tag_name` (a list of names, or one name)."""
    value = je.get(key) or []
    return [str(t) for t in (value if isinstance(value, list) else [value])]
