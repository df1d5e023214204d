"""What every emulated system shares: fault injection, rate-limit windows, request stats, the state file, and one
request path (`Emulator.api`) with per-vendor hooks.

One `ledger-pipeline sandbox` process serves every emulation (an `Emulator`), each under its own path prefix; the
`/_sandbox` inspection endpoints (server.py) read all of them alike. An emulator module keeps only its vendor's
resources and shapes: how a request authenticates, which limits it meets, what it does (`dispatch`) and how an error
looks (`error_payload`); the order of those steps, fault injection, body parsing (exact JSON: amounts are Decimals,
never floats), the stats and the control dispatch are written here once.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ledger_pipeline.money import currency_problem, dumps_exact, from_minor, loads_exact

WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")
BODY_METHODS = ("POST", "PATCH", "PUT")


@dataclass
class Faults:
    """Fault injection, drawn from one seeded RNG in request order (deterministic for a sequential client)."""

    seed: int = 0
    error_rate: float = 0.0  # 5xx before processing
    error_after_commit_rate: float = 0.0  # 5xx after a write committed
    error_statuses: list[int] = field(default_factory=lambda: [500, 502, 503])
    drop_before_rate: float = 0.0  # connection dropped, nothing processed
    drop_after_commit_rate: float = 0.0  # write committed, connection dropped before the response
    unauthorized_rate: float = 0.0  # 401 for a live token
    slow_rate: float = 0.0  # response delayed by slow_seconds (after processing)
    slow_seconds: float = 0.0
    latency_ms: float = 0.0  # added to every API request
    writes_only: bool = False  # faults only on requests the emulator calls writes (Emulator.is_write)
    systems: list[str] | None = None  # only these systems (None: every system)
    # The token endpoint failing a refresh: "5xx", "garbage" (200 with a body that is not JSON) or "drop"; for
    # the companies in token_failure_logins (None: every company).
    token_failure: str | None = None
    token_failure_logins: list[str] | None = None


@dataclass
class SandboxLimits:
    """Rate limits: on/off and the time scale are shared; the numbers are Jurnal's (other emulations keep their
    own system's numbers and use `enabled` and `scale`)."""

    enabled: bool = True
    scale: float = 1.0  # 100 = the clock runs 100x faster (3,000/min per token)
    per_token_minute: int = 30
    per_token_hour: int = 1800
    per_ip_minute: int = 40
    per_ip_hour: int = 2500


Limits = SandboxLimits  # the name before 0.3.0 (tests, bench and scripts construct it): kept until 0.4.0


class InjectedError(Exception):
    """A fault to answer in the system's own error shape: kind 'error' (5xx) or 'unauthorized' (401)."""

    def __init__(self, kind: str, status: int):
        super().__init__(kind)
        self.kind, self.status = kind, status


class Drop(Exception):
    """Close the connection without a complete response."""


class DroppedResponse:
    """Announces a body it never sends: the server closes the connection and the client sees it dropped."""

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")]})
        await send({"type": "http.response.body", "body": b"{", "more_body": False})


class SandboxContext:
    """Shared by every emulator of one sandbox process. All access happens on the server's event-loop thread."""

    def __init__(self, state_path: Path | str | None, limits: SandboxLimits | None = None, faults: Faults | None = None,
                 access_ttl: float = 3600):
        self.state_path = str(state_path) if state_path else None
        if state_path:
            Path(state_path).parent.mkdir(parents=True, exist_ok=True)
        self.limits = limits or SandboxLimits()
        self.access_ttl = access_ttl
        self.stats: Counter = Counter()  # (system, method, endpoint, status) -> count
        self.write_routes: set[tuple[str, str, str]] = set()  # (system, method, endpoint) its emulator calls writes
        self.by_address: Counter = Counter()  # (system, client address, company login, status) -> API requests
        self.set_faults(faults or Faults())
        self._dbs: list[sqlite3.Connection] = []

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)

    def connect(self, path: str | None = None) -> sqlite3.Connection:
        """A connection to the state file (autocommit; use BEGIN/COMMIT), or to `path` (an emulator's own file)."""
        db = sqlite3.connect(path or self.state_path or ":memory:", check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        self._dbs.append(db)
        return db

    def close(self) -> None:
        for db in self._dbs:
            db.close()

    def count(self, system: str, method: str, endpoint: str, status: Any, write: bool | None = None) -> None:
        """One request for /_sandbox/stats; `write`: whether the emulator calls this route a write (api_writes;
        None: every POST, PATCH, PUT and DELETE)."""
        self.stats[(system, method, endpoint, status)] += 1
        if write or (write is None and method in WRITE_METHODS):
            self.write_routes.add((system, method, endpoint))

    def count_address(self, system: str, address: str, login: str | None, status: Any) -> None:
        """Which address called for which company: proves a tenant's traffic leaves from one place."""
        self.by_address[(system, address, login or "?", status)] += 1

    def reset_stats(self) -> None:
        self.stats.clear()
        self.write_routes.clear()
        self.by_address.clear()

    def _inject(self, system: str, is_write: bool) -> bool:
        f = self.faults
        return (not f.writes_only or is_write) and (f.systems is None or system in f.systems)

    async def before(self, system: str, is_write: bool) -> None:
        """Call after auth and rate limits, before processing: latency, drops, 5xx, spurious 401."""
        f, rng = self.faults, self.rng
        if f.latency_ms:
            await asyncio.sleep(f.latency_ms / 1000)
        if not self._inject(system, is_write):
            return
        if rng.random() < f.drop_before_rate:
            raise Drop()
        if rng.random() < f.error_rate:
            raise InjectedError("error", rng.choice(f.error_statuses))
        if rng.random() < f.unauthorized_rate:
            raise InjectedError("unauthorized", 401)

    async def after(self, system: str, is_write: bool) -> None:
        """Call after a request was processed (and a write committed): drops, 5xx after commit, slow answers."""
        f, rng = self.faults, self.rng
        if not self._inject(system, is_write):
            return
        if is_write and rng.random() < f.drop_after_commit_rate:
            raise Drop()
        if is_write and rng.random() < f.error_after_commit_rate:
            raise InjectedError("error", rng.choice(f.error_statuses))
        if rng.random() < f.slow_rate:
            await asyncio.sleep(f.slow_seconds)


@contextmanager
def transaction(db: sqlite3.Connection, mode: str = "") -> Iterator[sqlite3.Connection]:
    """BEGIN [DEFERRED|IMMEDIATE] ... COMMIT on an autocommit connection (`SandboxContext.connect`), ROLLBACK on any
    exception: one write and what is stored with it land together or not at all."""
    db.execute(f"BEGIN {mode}".strip())
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class Windows:
    """Fixed-window request counters on the sandbox's scaled clock (`SandboxLimits.scale`), the way the emulated vendors
    describe their limits ("N requests per minute"): a quota is (key, limit, window seconds), and a request counts
    against all of its quotas or none. With limits off requests are still counted (for headers that show them) but
    never refused."""

    def __init__(self, limits: SandboxLimits, keep: int = 10_000):
        self.limits, self.keep = limits, keep
        self.counts: Counter = Counter()

    def take(self, quotas: Iterable[tuple], now: float | None = None) -> float:
        """0.0 when every quota (key, limit, window seconds[, units: 1]) has room for its units (and they are
        counted); else the real seconds until the fullest window resets (at least 1 ms; nothing is counted)."""
        lim = self.limits
        scaled = (time.time() if now is None else now) * lim.scale
        slots = [((q[0], q[2], int(scaled // q[2])), q[1], q[2], q[3] if len(q) > 3 else 1) for q in quotas]
        full = [(slot, period) for slot, limit, period, units in slots if self.counts[slot] + units > limit]
        if lim.enabled and full:
            return max(max(((slot[2] + 1) * period - scaled) / lim.scale for slot, period in full), 0.001)
        for slot, _, _, units in slots:
            self.counts[slot] += units
        if len(self.counts) > self.keep:  # forget past windows
            self.counts = Counter({k: v for k, v in self.counts.items() if k[2] == int(scaled // k[1])})
        return 0.0

    def used(self, key: Hashable, period: float, now: float | None = None) -> int:
        """Requests counted against `key` in its current window."""
        scaled = (time.time() if now is None else now) * self.limits.scale
        return self.counts[(key, period, int(scaled // period))]


class Problem(Exception):
    """Something the shared request path finds, answered in the vendor's own shape by `Emulator.error_payload`:
    kind "unauthorized" (an injected 401 for a live credential), "server_error" (an injected 5xx, before processing
    or after a commit) or "malformed_body" (the body is not the JSON the endpoint takes; `detail` says why)."""

    def __init__(self, kind: str, status: int, detail: str = ""):
        super().__init__(detail or kind)
        self.kind, self.status, self.detail = kind, status, detail


_UNREAD = object()


class Call:
    """One API request on its way through `Emulator.api`: what the hooks read and leave for each other."""

    def __init__(self, emulator: Emulator, request: Request, raw: bytes, prefix: str):
        self.emulator, self.request, self.raw, self.prefix = emulator, request, raw, prefix
        self.method = request.method
        self.query = request.query_params
        self.started = time.time()
        self.parts: list[str] = []  # the path under the emulator's API prefix, as segments
        self.endpoint = ""  # the route for stats, ids replaced by placeholders
        self.is_write = False
        self.principal: Any = None  # what `authenticate` answered: the company (or realm, organization) called for
        self.login: str | None = None  # the company's login, for per-address stats
        self.headers: dict[str, str] = {}  # sent with the answer, success or error
        self.cleanups: list[Callable[[], None]] = []  # run once the request is answered (e.g. a slot released)
        self._body: Any = _UNREAD

    @property
    def body(self) -> Any:
        """The parsed body (`Emulator.parse_body`, once); raises Problem("malformed_body")."""
        if self._body is _UNREAD:
            self._body = self.emulator.parse_body(self)
        return self._body

    def json_object(self) -> dict:
        """The body when it must be a JSON object: {} when there is none."""
        body = self.body
        return body if isinstance(body, dict) else {}


def write_company_currency(db: sqlite3.Connection, body: dict, table: str, key_column: str, key: object,
                           currency_column: str, multicurrency_column: str | None = "multicurrency") -> None:
    """The `currency` control's writes (sandboxes/currency.py), the same for every emulator: {"home_currency": an
    ISO 4217 code} into `table.currency_column` (ValueError naming the problem for a code books cannot use) and
    {"multicurrency": bool} into `multicurrency_column` (None: the system has no such setting, the key is ignored)
    for the company row whose `key_column` is `key`."""
    if "home_currency" in body:
        code = str(body["home_currency"]).upper()
        problem = currency_problem(code)
        if problem is not None:
            raise ValueError(f"home_currency: {problem}")
        db.execute(f"UPDATE {table} SET {currency_column} = ? WHERE {key_column} = ?", (code, key))
    if multicurrency_column and "multicurrency" in body:
        db.execute(f"UPDATE {table} SET {multicurrency_column} = ? WHERE {key_column} = ?",
                   (int(bool(body["multicurrency"])), key))


class Emulator:
    """One emulated accounting system inside the sandbox (the base of every sandboxes/<name>.py).

    `api` is the template every API request follows: read the body, `authenticate`, `limits`, injected faults
    (before), parse the body, `dispatch`, injected faults (after a commit), count, `respond`. Errors are the vendor's
    own exception types (listed in `errors`) or a `Problem`; `error_payload` shapes either. A vendor overrides the
    hooks and keeps its resources; each hook's override cites the vendor source it follows."""

    system: str = ""
    api_prefix: str = ""  # the path the API's segments start under (`segments`)
    errors: tuple[type[Exception], ...] = ()  # the vendor's error types, answered through `error_payload`
    media_type = "application/json"
    count_addresses = False  # per-address stats (/_sandbox/stats by_address)
    control_aliases: dict[str, str] = {}  # another name of a control action -> its handler's name
    control_echo: str | None = None  # the key a control's default answer names the company under
    companies: tuple[str, str] = ("", "")  # (table, key column) of the emulator's companies; each has a `login`
    db: sqlite3.Connection  # the emulator's tables in the state file (SandboxContext.connect)
    schema = ""  # its tables' DDL (CREATE ... IF NOT EXISTS)
    added_columns: tuple[str, ...] = ()  # ALTER TABLE ... ADD COLUMN added since, for state files from before
    ids: dict[str, str] = {}  # for stats: a collection whose next segment is an id -> the id's placeholder
    not_ids: tuple[str, ...] = ()  # segments after such a collection that are not ids (e.g. "all")

    def __init__(self, ctx: SandboxContext):
        self.ctx = ctx
        if self.schema:
            self.db = ctx.connect()
            self.db.executescript(self.schema)
            for ddl in self.added_columns:
                try:
                    self.db.execute(ddl)
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise

    def routes(self) -> list[BaseRoute]:
        """Its API and auth routes, full paths (under its prefix)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the emulator holds beyond the context (the context closes its own connections)."""

    # -- the request template -------------------------------------------------------------------------------
    async def api(self, request: Request) -> Response:
        """Every API request, one path for every vendor (the hooks below are the vendor's)."""
        return await self.serve(request, self.api_prefix)

    async def serve(self, request: Request, prefix: str) -> Response:
        """`api` for an API under `prefix` (a vendor with two ways in serves each under its own)."""
        call = Call(self, request, await request.body(), prefix)
        call.parts = self.segments(call)
        call.is_write = self.is_write(call)
        call.endpoint = self.endpoint(call)
        try:
            try:
                call.principal = self.authenticate(call)
                self.limits(call)
                await self._faults(self.ctx.before, call)
                call.body  # noqa: B018 - parsed here unless a hook needed it earlier
                status, payload = self.dispatch(call)
                await self._faults(self.ctx.after, call)
            except (Problem, *self.errors) as err:
                status, payload, headers = self.error_payload(err)
                call.headers.update(headers)
            except Drop:
                self._count(call, "dropped")
                return DroppedResponse()
        finally:
            for cleanup in call.cleanups:
                cleanup()
        self._count(call, status)
        return self.respond(call, status, payload)

    async def _faults(self, hook: Callable, call: Call) -> None:
        try:
            await hook(self.system, call.is_write)
        except InjectedError as fault:
            kind = "unauthorized" if fault.kind == "unauthorized" else "server_error"
            raise Problem(kind, fault.status) from None

    def _count(self, call: Call, status: Any) -> None:
        self.ctx.count(self.system, call.method, call.endpoint, status, write=call.is_write)
        if self.count_addresses:
            self.ctx.count_address(self.system, client_host(call.request), call.login, status)

    # -- hooks ------------------------------------------------------------------------------------------------
    def segments(self, call: Call) -> list[str]:
        """The path under the API's prefix as segments, split on the raw path and percent-decoded one by one, so an
        id holding an encoded "/" (%2F) stays one segment (the server decodes the path before routing)."""
        raw = (call.request.scope.get("raw_path") or call.request.url.path.encode()).decode("latin-1")
        path, prefix = raw.split("?", 1)[0], call.prefix
        under = path[path.index(prefix) + len(prefix):] if prefix in path else path
        return [unquote(p, encoding="utf-8", errors="replace") for p in under.split("/") if p]

    def endpoint(self, call: Call) -> str:
        """The route for /_sandbox/stats: the API prefix and the segments, the segment after a collection named in
        `ids` shown as its placeholder (unless it is one of `not_ids`)."""
        shown = list(call.parts)
        for i in range(1, len(shown)):
            if call.parts[i - 1] in self.ids and call.parts[i] not in self.not_ids:
                shown[i] = self.ids[call.parts[i - 1]]
        return "/".join([call.prefix, *shown])

    def is_write(self, call: Call) -> bool:
        """Whether the request changes anything: for injected faults (`writes_only`, after-commit faults) and for
        /_sandbox/stats api_writes. By default every POST, PATCH, PUT and DELETE."""
        return call.method in WRITE_METHODS

    def authenticate(self, call: Call) -> Any:
        """The company the credentials name (kept as `call.principal`), or raise the vendor's 401."""
        raise NotImplementedError

    def limits(self, call: Call) -> None:
        """Raise the vendor's 429 when a limit is spent (count the request otherwise). Default: no limits."""

    def parse_body(self, call: Call) -> Any:
        """The body as exact JSON (ledger_pipeline.money.loads_exact: amounts stay Decimals); {} when the method
        carries none or it is empty. Raises Problem("malformed_body")."""
        raw = self.body_bytes(call) if call.method in BODY_METHODS else b""
        if not raw:
            return {}
        try:
            return loads_exact(raw)
        except ValueError as exc:
            raise Problem("malformed_body", 400, str(exc)) from None

    def body_bytes(self, call: Call) -> bytes:
        """The JSON text of the body (a vendor may wrap it, e.g. Zoho's form-encoded JSONString)."""
        return call.raw

    def dispatch(self, call: Call) -> tuple[int, Any]:
        """(status, payload) of the vendor's resource; raise one of `errors` for a refusal."""
        raise NotImplementedError

    def error_payload(self, err: Exception) -> tuple[int, Any, dict[str, str]]:
        """(status, body, headers) of an error in the vendor's shape: one of `errors`, or a Problem."""
        raise NotImplementedError

    def respond(self, call: Call, status: int, payload: Any) -> Response:
        """The answer: exact JSON (Decimals as numbers), or no body for a 204."""
        if status == 204:
            return Response(status_code=204, headers=call.headers)
        return Response(dumps_exact(payload), status_code=status, headers=call.headers, media_type=self.media_type)

    # -- /_sandbox -------------------------------------------------------------------------------------------
    def inspect_entries(self, login: str | None) -> list[dict]:
        """Every company's entries (or one company's) for GET /_sandbox/journal_entries: each with `system`,
        `company_login`, `custom_id` (our id as the system stores it), `status`, `transaction_date` (ISO),
        `total_debit`, `total_credit` and `transaction_account_lines` [{debit, credit, account: {id}}] (amounts
        as exact decimals); `inspected` builds one."""
        raise NotImplementedError

    def company_by_login(self, login: str) -> sqlite3.Row | None:
        table, _ = self.companies
        return self.db.execute(f"SELECT * FROM {table} WHERE login = ?", (login,)).fetchone()

    def company_by_id(self, key: Any) -> sqlite3.Row | None:
        table, column = self.companies
        return self.db.execute(f"SELECT * FROM {table} WHERE {column} = ?", (key,)).fetchone()

    def control_company(self, login: str, body: dict) -> Any:
        """The key of the company a control names (None when there is none)."""
        row = self.company_by_login(login)
        return None if row is None else row[self.companies[1]]

    def control_answer(self, company: Any) -> dict:
        """What a control answers when its handler answers nothing: ok, and the company's key (`control_echo`)."""
        return {"ok": True} if self.control_echo is None else {"ok": True, self.control_echo: company}

    async def control(self, login: str, action: str, body: dict) -> dict | None:
        """POST /_sandbox/<system>/companies/<login>/<action>: the emulator's `do_<action>(company, body)`
        (lock_date, revoke, accounts, entries, and the system's own, e.g. Aden's approvals); None for an unknown
        action. Raises KeyError for an unknown company, ValueError for a refused one (a 400)."""
        company = self.control_company(login, body)
        if company is None:
            raise KeyError(login)
        name = self.control_aliases.get(action, action)
        handler = getattr(self, f"do_{name}", None) if name.isidentifier() else None
        if handler is None:
            return None
        result = handler(company, body)
        return self.control_answer(company) if result is None else result


def inspected(system: str, login: str | None, custom_id: Any, status: str, date: str,
              lines: Iterable[tuple[int, int, Any, dict]], currency: str, **extra: Any) -> dict:
    """One entry as GET /_sandbox/journal_entries shows it. `lines`: (debit minor units, credit minor units,
    account id, the line's own extra fields), minor units of `currency` (ISO 4217 code: its minor unit, 0 to 3
    decimals); totals are the lines' sums as exact decimals; `currency` is shown with the entry (and
    `exchange_rate`, when the emulator keeps one, among `extra`)."""
    lines = list(lines)
    return {"system": system, "company_login": login, "custom_id": custom_id, "status": status,
            "transaction_date": date, "currency": currency, **extra,
            "total_debit": from_minor(sum(d for d, _, _, _ in lines), currency),
            "total_credit": from_minor(sum(c for _, c, _, _ in lines), currency),
            "transaction_account_lines": [{**more, "debit": from_minor(d, currency), "credit": from_minor(c, currency),
                                           "account": {"id": acc}} for d, c, acc, more in lines]}


def token_fault(ctx: SandboxContext, login: str | None, system: str | None = None) -> Response | DroppedResponse | None:
    """The injected token-endpoint failure for this company's refresh (`Faults.token_failure`, limited to
    `Faults.systems` when given), as a response (None: answer normally)."""
    f = ctx.faults
    if not f.token_failure or (f.token_failure_logins is not None and login not in f.token_failure_logins):
        return None
    if system is not None and f.systems is not None and system not in f.systems:
        return None
    if f.token_failure == "drop":
        return DroppedResponse()
    if f.token_failure == "garbage":
        return Response("<html>upstream proxy error</html>", status_code=200, media_type="application/json")
    return Response('{"error": "server_error"}', status_code=503, media_type="application/json")


def client_host(request: Request) -> str:
    return request.client.host if request.client else "?"
