"""The shared request core (ledger_pipeline.systems.core), the paginators, and the QuickBooks, Zoho, Aden and Rootfi
dialects on it (what their sandboxes do not stage: Retry-After, 610 on a look-up vs a write, batch metering, a
token refused after its refresh, which writes are replayed) against a real HTTP server on loopback.

The server (http.server, a thread) answers from a per-test script and logs every request it received, raw path and
body included; the token vault is the real one (SQLite), the limiter the real host limiter (SQLite, with its own
injected clock). Waits go through injected sleeps; stamina runs in test mode (no backoff sleeps): nothing here waits
on the wall clock.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import pickle
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
import pytest
import stamina
from cryptography.fernet import Fernet

from ledger_pipeline.ratelimit import HostLimiter, Rule
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.vault import NeedsReauth, TokenSet, TokenVault
from ledger_pipeline.systems.aden.client import AdenClient, AdenDialect, AdenError
from ledger_pipeline.systems.core import (
    ApiCore,
    ApiError,
    Call,
    Dialect,
    Resolution,
    TokenSource,
    VaultTokenAuth,
    path,
    retry_after_seconds,
)
from ledger_pipeline.systems.paging import CursorPaging, OffsetPaging, PageNumberPaging, records
from ledger_pipeline.systems.quickbooks.client import QuickBooksClient, QuickBooksDialect, QuickBooksError
from ledger_pipeline.systems.quickbooks.sink import classify as qbo_classify
from ledger_pipeline.systems.rootfi.client import RootfiClient, RootfiDialect, RootfiError
from ledger_pipeline.systems.zoho.client import ZohoClient, ZohoDialect, ZohoError

DROP = "drop"  # read the request, then close the connection without an answer
TENANT = "t1"


# -- the server ----------------------------------------------------------------------------------------------------
class Server:
    """Scripted answers per (method, raw path): a queue of replies (then the default), or a function of the request.
    Every request is logged as (method, raw path, query, headers, body)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, dict, dict, bytes]] = []
        self.plans: dict[tuple[str, str], deque] = {}
        self.routes: dict[tuple[str, str], Callable[[dict, dict, bytes], Any]] = {}
        self.tokens: set[str] | None = None  # None: no auth check; else the accepted bearer tokens
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                raw, _, query = self.path.partition("?")
                headers = {k.lower(): v for k, v in self.headers.items()}
                q = {k: v[0] for k, v in parse_qs(query).items()}
                reply = outer.answer(self.command, raw, q, headers, body)
                if reply == DROP:
                    self.close_connection = True
                    return
                status, extra, payload = reply
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def plan(self, method: str, raw: str, *replies: Any) -> None:
        self.plans[(method, raw)] = deque(replies)

    def answer(self, method: str, raw: str, query: dict, headers: dict, body: bytes) -> Any:
        with self.lock:
            self.log.append((method, raw, query, headers, body))
            if self.tokens is not None:
                auth = headers.get("authorization", "")
                if not (auth.startswith("Bearer ") and auth.removeprefix("Bearer ") in self.tokens):
                    return 401, {}, {"error": "invalid_token"}
            queue = self.plans.get((method, raw))
            if queue:
                return queue.popleft()
            route = self.routes.get((method, raw))
        if route is not None:
            return route(query, headers, body)
        return 200, {}, {"ok": True, "raw": raw}

    def sent(self, method: str | None = None, raw: str | None = None) -> list[tuple]:
        with self.lock:
            return [r for r in self.log if (method is None or r[0] == method) and (raw is None or r[1] == raw)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def no_backoff_sleeps() -> Iterator[None]:
    """stamina's test mode: its backoff sleeps are 0; our attempts are kept (capped at 100)."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


# -- a dialect as a system would write one -------------------------------------------------------------------------
class DemoError(ApiError):
    @property
    def code(self) -> str | None:
        err = self.body.get("error") if isinstance(self.body, dict) else None
        return err.get("code") if isinstance(err, dict) else None


class DemoDialect(Dialect):
    system, title, error = "demo", "Demo Ledger", DemoError

    def __init__(self, base_url: str, token: TokenSource | None = None, rules: list[Rule] | None = None):
        super().__init__(base_url)
        self.token, self._rules = token, rules or []

    def auth(self, tenant: str) -> httpx.Auth | None:
        return VaultTokenAuth(tenant, self.token) if self.token else None

    def rules(self, tenant: str, limit_key: Any) -> list[Rule]:
        return self._rules

    def prepare(self, call: Call) -> Call:
        if call.idempotency_key:
            return replace(call, headers={**call.headers, "Idempotency-Key": call.idempotency_key})
        return call

    def classify(self, response: httpx.Response, data: Any) -> Resolution:
        if response.status_code == 409:
            return Resolution.reject("duplicate")
        return super().classify(response, data)


class Sleeps:
    """An injected sleep: records every wait (thread-safe), never sleeps."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self.lock:
            self.calls.append(seconds)


NOW = 1_800_000_000.0  # the injected clock (epoch seconds)


def make_core(server: Server, *, token: TokenSource | None = None, rules: list[Rule] | None = None,
              limiter: HostLimiter | None = None, sleeps: Sleeps | None = None, **kw: Any) -> ApiCore:
    return ApiCore(DemoDialect(server.url, token, rules), limiter=limiter, sleep=sleeps or Sleeps(),
                   clock=lambda: NOW, **kw)


class Grants:
    """The real vault (SQLite) with a refresh function that mints t1, t2, ... and registers them with the server."""

    def __init__(self, tmp_path: Path, server: Server, fail: int = 0, revoke: bool = False, accept: bool = True):
        self.vault = TokenVault(make_ops_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}"), Fernet.generate_key(),
                                tmp_path / "locks", system="demo")
        self.vault.store(TENANT, TokenSet("t0", "r0", 3600))
        self.server, self.fail, self.revoke, self.accept = server, fail, revoke, accept
        self.refreshed_with: list[str] = []
        self.counter = itertools.count(1)

    def refresh(self, refresh_token: str) -> TokenSet:
        self.refreshed_with.append(refresh_token)
        if self.revoke:
            raise NeedsReauth(TENANT, "the grant was revoked", "demo")
        if self.fail > 0:
            self.fail -= 1
            raise RuntimeError("token endpoint answered 502")
        n = next(self.counter)
        if self.server.tokens is not None and self.accept:  # the server accepts what the token endpoint issued
            self.server.tokens.add(f"t{n}")
        return TokenSet(f"t{n}", f"r{n}", 3600)

    def token(self, tenant: str, stale: str | None) -> str:
        return self.vault.access_token(tenant, self.refresh, stale)


def retry_after(seconds: float) -> tuple:
    return 429, {"Retry-After": f"{seconds:g}"}, {"error": "too many requests"}


# -- Retry-After ---------------------------------------------------------------------------------------------------
def test_429_retry_after_seconds_is_slept_then_retried(server: Server) -> None:
    server.plan("GET", "/accounts", retry_after(7), (200, {}, {"accounts": []}))
    sleeps = Sleeps()
    core = make_core(server, sleeps=sleeps)
    answer = core.call(TENANT, "GET", "/accounts")
    assert answer.data == {"accounts": []} and answer.sent == 2
    assert sleeps.calls == [7.0]
    assert core.waited == 7.0 and core.requests == 2


def test_429_retry_after_http_date_is_measured_from_the_injected_clock(server: Server) -> None:
    when = email.utils.formatdate(NOW + 30, usegmt=True)  # e.g. "Fri, 15 Jan 2027 08:00:30 GMT"
    server.plan("GET", "/accounts", (429, {"Retry-After": when}, {}), (200, {}, {}))
    sleeps = Sleeps()
    make_core(server, sleeps=sleeps).call(TENANT, "GET", "/accounts")
    assert sleeps.calls == [30.0]


def test_retry_after_parsing_both_forms() -> None:
    assert retry_after_seconds("120", NOW) == 120.0
    assert retry_after_seconds(email.utils.formatdate(NOW - 5, usegmt=True), NOW) == 0.0  # in the past: no wait
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 -0000", 1445412480.0 - 60) == 60.0
    assert retry_after_seconds("soon", NOW) is None and retry_after_seconds(None, NOW) is None
    assert retry_after_seconds("nan", NOW) is None


def test_a_retry_after_longer_than_a_run_waits_for_the_next_run(server: Server) -> None:
    server.plan("GET", "/accounts", retry_after(3600))
    sleeps = Sleeps()
    with pytest.raises(DemoError) as err:
        make_core(server, sleeps=sleeps).call(TENANT, "GET", "/accounts")
    assert err.value.kind == "retryable" and err.value.retry_after == 3600.0
    assert "next run" in str(err.value) and str(err.value).startswith(f"tenant {TENANT}: Demo Ledger GET /accounts")
    assert sleeps.calls == [] and len(server.sent()) == 1


# -- retries and the uncertain-write rule --------------------------------------------------------------------------
def test_5xx_on_a_read_is_retried(server: Server) -> None:
    server.plan("GET", "/accounts", (503, {}, {"message": "busy"}), (502, {}, b"<html>bad gateway</html>"),
                (200, {}, {"accounts": [1]}))
    core = make_core(server)
    assert core.call(TENANT, "GET", "/accounts").data == {"accounts": [1]}
    assert len(server.sent("GET", "/accounts")) == 3 and core.requests == 3


def test_a_read_that_keeps_failing_is_retryable(server: Server) -> None:
    server.plan("GET", "/accounts", *[(500, {}, {"message": "boom"})] * 3)
    with pytest.raises(DemoError) as err:
        make_core(server, attempts=3).call(TENANT, "GET", "/accounts")
    assert err.value.kind == "retryable" and err.value.status == 500 and "boom" in err.value.message
    assert len(server.sent()) == 3


def test_a_write_dropped_after_sending_is_uncertain_and_sent_once(server: Server) -> None:
    server.plan("POST", "/entries", DROP, (201, {}, {"id": 1}))
    core = make_core(server)
    with pytest.raises(DemoError) as err:
        core.call(TENANT, "POST", "/entries", body={"memo": "x"})
    assert err.value.kind == "uncertain" and "may have been applied" in str(err.value)
    assert [json.loads(r[4]) for r in server.sent("POST", "/entries")] == [{"memo": "x"}]  # it did arrive, once
    assert core.requests == 1


def test_a_write_answered_5xx_is_uncertain_and_sent_once(server: Server) -> None:
    server.plan("POST", "/entries", (500, {}, {"message": "oops"}), (201, {}, {"id": 1}))
    with pytest.raises(DemoError) as err:
        make_core(server).call(TENANT, "POST", "/entries", body={"memo": "x"})
    assert err.value.kind == "uncertain" and err.value.status == 500
    assert len(server.sent("POST")) == 1


def test_a_replay_safe_write_is_retried_with_the_same_key_and_body(server: Server) -> None:
    server.plan("POST", "/entries", DROP, (503, {}, {}), (201, {}, {"id": 7}))
    answer = make_core(server).call(TENANT, "POST", "/entries", body={"amount": Decimal("10.10")},
                                    idempotency_key="r2a-pl-t1-202501")
    assert answer.status == 201 and answer.data == {"id": 7} and answer.sent == 3
    posts = server.sent("POST", "/entries")
    assert {r[3]["idempotency-key"] for r in posts} == {"r2a-pl-t1-202501"}
    assert {r[4] for r in posts} == {b'{"amount":10.10}'}  # exact money on the wire, identical replays


def test_a_replay_safe_write_whose_retries_run_out_is_uncertain(server: Server) -> None:
    server.plan("POST", "/entries", *[(503, {}, {})] * 3)
    with pytest.raises(DemoError) as err:
        make_core(server, attempts=3).call(TENANT, "POST", "/entries", body={}, idempotency_key="k")
    assert err.value.kind == "uncertain" and len(server.sent("POST")) == 3


def test_a_write_refused_with_429_is_resent(server: Server) -> None:
    server.plan("POST", "/entries", retry_after(1), (201, {}, {"id": 2}))
    sleeps = Sleeps()
    answer = make_core(server, sleeps=sleeps).call(TENANT, "POST", "/entries", body={"memo": "x"})
    assert answer.data == {"id": 2} and len(server.sent("POST")) == 2 and sleeps.calls == [1.0]


def test_a_write_that_cannot_connect_is_retryable_never_uncertain() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    core = ApiCore(DemoDialect(f"http://127.0.0.1:{port}"), attempts=3, sleep=Sleeps())
    with pytest.raises(DemoError) as err:
        core.call(TENANT, "POST", "/entries", body={"memo": "x"})
    assert err.value.kind == "retryable" and err.value.status is None and "cannot connect" in str(err.value)


def test_404_is_not_found_and_other_4xx_rejected_with_the_systems_words(server: Server) -> None:
    server.plan("GET", "/entries/9", (404, {}, {"error": {"code": "NOT_FOUND", "message": "no such entry"}}))
    server.plan("POST", "/entries", (422, {}, {"message": "debits != credits"}))
    server.plan("PUT", "/entries/9", (409, {}, {"message": "taken"}))
    core = make_core(server)
    with pytest.raises(DemoError) as err:
        core.call(TENANT, "GET", path("entries", 9))
    assert err.value.kind == "not_found" and err.value.status == 404 and err.value.code == "NOT_FOUND"
    again = pickle.loads(pickle.dumps(err.value))  # errors cross process boundaries intact
    assert (type(again), again.kind, again.code, str(again)) == (DemoError, "not_found", "NOT_FOUND", str(err.value))
    with pytest.raises(ApiError) as err:
        core.call(TENANT, "POST", "/entries", body={})
    assert err.value.kind == "rejected" and "debits != credits" in str(err.value)
    with pytest.raises(ApiError) as err:
        core.call(TENANT, "PUT", path("entries", 9), body={})
    assert err.value.kind == "duplicate" and err.value.sink_error().kind == "duplicate"
    assert len(server.sent()) == 3  # none retried


# -- tokens --------------------------------------------------------------------------------------------------------
def test_401_refreshes_once_then_succeeds(tmp_path: Path, server: Server) -> None:
    server.tokens = set()  # t0 is refused; refreshed tokens are accepted
    grants = Grants(tmp_path, server)
    core = make_core(server, token=grants.token)
    assert core.call(TENANT, "GET", "/accounts").sent == 2
    assert [r[3]["authorization"] for r in server.sent()] == ["Bearer t0", "Bearer t1"]
    assert grants.refreshed_with == ["r0"]
    assert core.call(TENANT, "GET", "/accounts").sent == 1  # the vault keeps the fresh token
    assert server.sent()[-1][3]["authorization"] == "Bearer t1"


def test_401_again_after_the_refresh_is_needs_reauth(tmp_path: Path, server: Server) -> None:
    server.tokens = set()
    grants = Grants(tmp_path, server, accept=False)
    with pytest.raises(DemoError) as err:
        make_core(server, token=grants.token, reauth_after=1).call(TENANT, "GET", "/accounts")
    assert err.value.kind == "needs_reauth" and "ledger-pipeline connect --tenant t1 --system demo" in str(err.value)
    assert len(server.sent()) == 2 and grants.refreshed_with == ["r0"]


def test_by_default_a_refused_refresh_is_tried_twice_then_needs_reauth(tmp_path: Path, server: Server) -> None:
    server.tokens = set()
    grants = Grants(tmp_path, server, accept=False)
    with pytest.raises(DemoError) as err:
        make_core(server, token=grants.token).call(TENANT, "GET", "/accounts")
    assert err.value.kind == "needs_reauth"
    assert len(server.sent()) == 4 and grants.refreshed_with == ["r0", "r1"]


def test_a_spurious_401_after_a_refresh_is_absorbed(tmp_path: Path, server: Server) -> None:
    unauthorized = (401, {}, {"error": "invalid_token"})
    server.plan("GET", "/accounts", unauthorized, unauthorized, (200, {}, {"ok": 1}))  # the sandboxes' 401 fault
    grants = Grants(tmp_path, server)
    assert make_core(server, token=grants.token).call(TENANT, "GET", "/accounts").data == {"ok": 1}
    assert len(server.sent()) == 3


def test_a_revoked_grant_is_needs_reauth_and_recorded(tmp_path: Path, server: Server) -> None:
    server.tokens = set()
    grants = Grants(tmp_path, server, revoke=True)
    with pytest.raises(DemoError) as err:
        make_core(server, token=grants.token).call(TENANT, "POST", "/entries", body={})
    assert err.value.kind == "needs_reauth" and str(err.value).startswith("tenant t1: demo connection needs re-auth")
    assert grants.vault.statuses()[TENANT][0] == "needs_reauth"
    assert len(server.sent()) == 1


def test_a_failing_token_endpoint_is_retryable(tmp_path: Path, server: Server) -> None:
    server.tokens = set()
    grants = Grants(tmp_path, server, fail=1)
    core = make_core(server, token=grants.token)
    assert core.call(TENANT, "GET", "/accounts").status == 200  # 401, refresh fails; next attempt: 401, refresh
    assert grants.refreshed_with == ["r0", "r0"]
    grants.fail = 10
    grants.vault.store(TENANT, TokenSet("t-stale", "r9", 3600))
    with pytest.raises(DemoError) as err:
        make_core(server, token=grants.token, attempts=2).call(TENANT, "GET", "/accounts")
    assert err.value.kind == "retryable" and "refreshing the demo token failed" in str(err.value)
    assert grants.vault.statuses()[TENANT][0] == "connected"  # a broken endpoint is not a lost grant


# -- paths ---------------------------------------------------------------------------------------------------------
HOSTILE = ["a/b", "a#b", "a?b=c", "100%", "50%2F", "with space", "Ünïcødé-日本", ".", "..", "a+b&c=d", "~x"]


@pytest.mark.parametrize("remote_id", HOSTILE)
def test_hostile_ids_reach_the_server_as_one_segment(server: Server, remote_id: str) -> None:
    make_core(server).call(TENANT, "DELETE", path("entries", remote_id), replay_safe=True)
    (_, raw, query, _, _), = server.sent("DELETE")
    head, segment = raw.rsplit("/", 1)
    assert head == "/entries" and unquote(segment) == remote_id and query == {}


def test_path_refuses_a_missing_id() -> None:
    assert path("journal_entries", 42) == "/journal_entries/42"
    for bad in ("", None):
        with pytest.raises(ValueError, match="id is missing"):
            path("journal_entries", bad)  # type: ignore[arg-type]


# -- paging --------------------------------------------------------------------------------------------------------
ROWS = [{"id": i} for i in range(23)]


def test_offset_paging_reads_every_record_once(server: Server) -> None:
    def offset(q: dict, _h: dict, _b: bytes) -> tuple:
        lo, n = int(q["offset"]), int(q["limit"])
        return 200, {}, {"data": ROWS[lo:lo + n], "pagination": {"total": len(ROWS)}}

    server.routes[("GET", "/accounts")] = offset
    core = make_core(server)
    got = list(records(core, TENANT, "/accounts", OffsetPaging(limit=10, total="pagination.total"), items="data",
                       params={"active": "all"}))
    assert got == ROWS
    assert [(r[2]["offset"], r[2]["active"]) for r in server.sent()] == [("0", "all"), ("10", "all"), ("20", "all")]


def test_offset_paging_in_a_post_body(server: Server) -> None:
    def take_skip(_q: dict, _h: dict, body: bytes) -> tuple:
        b = json.loads(body)
        return 200, {}, {"data": ROWS[b["skip"]:b["skip"] + b["take"]], "total_count": len(ROWS)}

    server.routes[("POST", "/accounts/all")] = take_skip
    paging = OffsetPaging(limit=23, limit_param="take", offset_param="skip", total="total_count")
    got = list(records(make_core(server), TENANT, "/accounts/all", paging, items="data", method="POST",
                       body={"orderBy": {"id": "asc"}}, where="body", replay_safe=True))
    assert got == ROWS and len(server.sent()) == 1  # total reached: no empty page asked for
    assert json.loads(server.sent()[0][4]) == {"orderBy": {"id": "asc"}, "take": 23, "skip": 0}


@pytest.mark.parametrize("style", ["has_more", "total_pages", "short_page"])
def test_page_number_paging(server: Server, style: str) -> None:
    def pages(q: dict, _h: dict, _b: bytes) -> tuple:
        page, size = int(q["page"]), int(q["per_page"])
        chunk = ROWS[(page - 1) * size:page * size]
        return 200, {}, {"items": chunk, "page_context": {"has_more_page": page * size < len(ROWS)},
                         "total_pages": -(-len(ROWS) // size)}

    server.routes[("GET", "/journals")] = pages
    paging = {"has_more": PageNumberPaging(size=5, has_more="page_context.has_more_page"),
              "total_pages": PageNumberPaging(size=5, total_pages="total_pages"),
              "short_page": PageNumberPaging(size=5)}[style]
    assert list(records(make_core(server), TENANT, "/journals", paging, items="items")) == ROWS
    assert [r[2]["page"] for r in server.sent()] == ["1", "2", "3", "4", "5"]


def test_cursor_paging_and_a_cursor_that_loops(server: Server) -> None:
    def cursor(q: dict, _h: dict, _b: bytes) -> tuple:
        at = int(q.get("cursor", "0"))
        nxt = at + 10 if at + 10 < len(ROWS) else None
        return 200, {}, {"data": ROWS[at:at + 10], "next_cursor": None if nxt is None else str(nxt)}

    server.routes[("GET", "/changes")] = cursor
    server.routes[("GET", "/stuck")] = lambda q, h, b: (200, {}, {"data": [1], "next_cursor": "same"})
    core = make_core(server)
    assert list(records(core, TENANT, "/changes", CursorPaging(size=10), items="data")) == ROWS
    assert [r[2].get("cursor") for r in server.sent()] == [None, "10", "20"]
    with pytest.raises(DemoError, match="points back to an earlier page") as err:
        list(records(core, TENANT, "/stuck", CursorPaging(), items="data"))
    assert err.value.kind == "rejected" and len(server.sent("GET", "/stuck")) == 2


# -- the limiter and the counters ----------------------------------------------------------------------------------
def test_the_limiter_is_consulted_for_every_request_sent(tmp_path: Path, server: Server) -> None:
    t = [NOW]
    slept: list[float] = []

    def limiter_sleep(s: float) -> None:
        slept.append(s)
        t[0] += s

    limiter = HostLimiter(tmp_path / "rl.sqlite", clock=lambda: t[0], sleep=limiter_sleep)
    grants: list[tuple[list[Rule], str]] = []
    limiter.on_grant = lambda rules, priority, _now: grants.append((rules, priority))
    rules = [Rule("demo:t1", 1000, 60.0), Rule("demo:ip", 1000, 3600.0)]
    server.tokens = set()
    core = make_core(server, token=Grants(tmp_path, server).token, rules=rules, limiter=limiter)
    server.plan("GET", "/accounts", retry_after(1), (503, {}, {}))  # (after the 401 + refresh: 429, 503, 200)
    core.call(TENANT, "GET", "/accounts", priority="background")
    assert core.requests == len(server.sent()) == 4 == len(grants)
    assert all(r == rules and p == "background" for r, p in grants)
    # a tight rule: the second request waits for the window, and the core counts the wait
    tight = make_core(server, rules=[Rule("demo:tight", 1, 10.0)], limiter=limiter)
    server.tokens = None
    tight.call(TENANT, "GET", "/a")
    tight.call(TENANT, "GET", "/a")
    assert sum(slept) == pytest.approx(10.0) and tight.waited == pytest.approx(10.0) and tight.requests == 2


def test_counters_are_exact_under_threads(server: Server) -> None:
    seen: set[str] = set()
    lock = threading.Lock()

    def once_limited(q: dict, _h: dict, _b: bytes) -> tuple:
        with lock:
            first = q["n"] not in seen
            seen.add(q["n"])
        return retry_after(0.5) if first else (200, {}, {"n": q["n"]})

    server.routes[("GET", "/limited")] = once_limited
    sleeps = Sleeps()
    core = make_core(server, sleeps=sleeps)
    threads, calls = 8, 25

    def work(k: int) -> None:
        for i in range(calls):
            assert core.call(TENANT, "GET", "/limited", params={"n": f"{k}-{i}"}).data == {"n": f"{k}-{i}"}

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert core.requests == 2 * threads * calls == len(server.sent())
    assert core.waited == 0.5 * threads * calls and len(sleeps.calls) == threads * calls


def test_amounts_are_exact_both_ways(server: Server) -> None:
    server.plan("POST", "/entries", (201, {}, b'{"total": 1234567890.12, "lines": [{"debit": 0.10}]}'))
    answer = make_core(server).call(TENANT, "POST", "/entries", body={"debit": Decimal("0.30")}, idempotency_key="k")
    assert answer.data == {"total": Decimal("1234567890.12"), "lines": [{"debit": Decimal("0.10")}]}
    assert server.sent()[0][4] == b'{"debit":0.30}'


# -- the systems' dialects on the core (QuickBooks, Zoho, Aden) ----------------------------------------------------
QBO = "/v3/company/r%2F1"  # the realm "r/1", one segment
FAULT_610 = {"Fault": {"Error": [{"Message": "Object Not Found", "Detail": "Something you're trying to use has been "
                                  "made inactive", "code": "610"}], "type": "ValidationFault"}}


def qbo_client(server: Server, token: TokenSource | None = None, limiter: HostLimiter | None = None,
               sleeps: Sleeps | None = None, **kw: Any) -> QuickBooksClient:
    dialect = QuickBooksDialect(server.url, token or (lambda t, s: "tok"), lambda t: "r/1")
    return QuickBooksClient(ApiCore(dialect, limiter=limiter, sleep=sleeps or Sleeps(), clock=lambda: NOW, **kw))


def test_quickbooks_realm_minorversion_requestid_and_batch_slots(tmp_path: Path, server: Server) -> None:
    limiter = HostLimiter(tmp_path / "rl.sqlite")
    grants: list[list[Rule]] = []
    limiter.on_grant = lambda rules, _prio, _now: grants.append(rules)
    client = qbo_client(server, limiter=limiter)
    ok = {"BatchItemResponse": [{"bId": str(i), "JournalEntry": {"Id": str(i)}} for i in range(3)]}
    server.plan("POST", f"{QBO}/batch", (503, {}, {}), (200, {}, ok))
    items = [{"bId": str(i), "operation": "create", "JournalEntry": {"DocNumber": f"d{i}"}} for i in range(3)]
    assert [r["JournalEntry"]["Id"] for r in client.batch(TENANT, items, "rid-1")] == ["0", "1", "2"]
    sent = server.sent("POST", f"{QBO}/batch")
    assert len(sent) == 2, "a write carrying a requestid is re-sent after a 503 (QuickBooks replays it)"
    assert all(q == {"minorversion": "75", "requestid": "rid-1"} for _, _, q, _, _ in sent)
    assert sent[0][4] == sent[1][4] and sent[0][3]["authorization"] == "Bearer tok"
    realm, batch = Rule("qbo-realm:r/1", 475, 60.0), Rule("qbo-batch:r/1", 38, 60.0)
    assert grants == [[realm, batch], [realm], [realm]] * 2, "each item metered, plus one batch call, per send"


def test_quickbooks_610_is_not_found_on_a_look_up_and_an_account_on_a_write(server: Server) -> None:
    client = qbo_client(server)
    server.plan("GET", f"{QBO}/journalentry/a%2Fb", (400, {}, FAULT_610))
    assert client.get_entry(TENANT, "a/b") is None
    server.plan("POST", f"{QBO}/journalentry", (400, {}, FAULT_610))
    with pytest.raises(QuickBooksError) as err:
        client.create_entry(TENANT, {"DocNumber": "d"}, "rid-2")
    assert err.value.kind == "rejected" and err.value.code == "610" and qbo_classify(err.value).kind == "account"
    server.plan("GET", f"{QBO}/query", retry_after(4), (200, {}, {"QueryResponse": {"Account": [{"Id": "1"}]}}))
    sleeps = Sleeps()
    assert qbo_client(server, sleeps=sleeps).query(TENANT, "select * from Account") == {"Account": [{"Id": "1"}]}
    assert sleeps.calls == [4.0], "QuickBooks' Retry-After is honoured"


def test_quickbooks_token_refused_after_its_refresh_is_retryable_not_reauth(tmp_path: Path, server: Server) -> None:
    server.tokens = set()
    grants = Grants(tmp_path, server, accept=False)  # the token endpoint works; the gateway refuses every token
    with pytest.raises(QuickBooksError) as err:
        qbo_client(server, token=grants.token, attempts=3).query(TENANT, "select * from Account")
    assert err.value.kind == "retryable" and "refused again after a token refresh" in err.value.message
    assert len(server.sent("GET", f"{QBO}/query")) == 6 and len(grants.refreshed_with) == 3, "refreshed once a try"
    assert grants.vault.statuses()[TENANT][0] == "connected"


ZOHO = "/dc/books/v3"


def test_zoho_api_domain_codes_writes_without_a_key_and_the_daily_cap(server: Server) -> None:
    sleeps = Sleeps()
    dialect = ZohoDialect(server.url + "/fallback", lambda t, s: "tok",
                          lambda t: ("org/1", {"api_domain": server.url + "/dc", "organization_id": "org/1"}))
    client = ZohoClient(ApiCore(dialect, sleep=sleeps, clock=lambda: NOW))
    page = {"code": 0, "page_context": {"has_more_page": True}}
    server.plan("GET", f"{ZOHO}/journals", (200, {}, {**page, "journals": [{"journal_id": "1"}]}),
                (200, {}, {**page, "journals": [{"journal_id": "2"}], "page_context": {"has_more_page": False}}))
    assert [j["journal_id"] for j in client.list_journals(TENANT, {"reference_number": "k"}, per_page=1)] == ["1", "2"]
    sent = server.sent("GET", f"{ZOHO}/journals")
    assert [q for _, _, q, _, _ in sent] == [{"reference_number": "k", "page": str(n), "per_page": "1",
                                              "organization_id": "org/1"} for n in (1, 2)]
    assert {h["authorization"] for _, _, _, h, _ in sent} == {"Zoho-oauthtoken tok"}

    server.plan("POST", f"{ZOHO}/journals", (200, {}, {"code": 4, "message": "Invalid value passed for line_id"}))
    with pytest.raises(ZohoError) as err:
        client.create_journal(TENANT, {"reference_number": "k"})
    assert err.value.kind == "rejected" and err.value.code == 4 and "line_id" in (err.value.zoho_message or "")

    server.plan("PUT", f"{ZOHO}/journals/j%2F1", (503, {}, {"code": 1, "message": "down"}))
    with pytest.raises(ZohoError) as err:
        client.update_journal(TENANT, "j/1", {"reference_number": "k"})
    assert err.value.kind == "uncertain" and len(server.sent("PUT", f"{ZOHO}/journals/j%2F1")) == 1, "sent once"

    server.plan("GET", f"{ZOHO}/journals/j1", (429, {"Retry-After": "3"}, {"code": 45, "message": "slow down"}),
                (200, {}, {"code": 0, "journal": {"journal_id": "j1"}}))
    assert client.get_journal(TENANT, "j1") == {"journal_id": "j1"} and sleeps.calls == [3.0], "per-minute: waited"

    server.plan("POST", f"{ZOHO}/journals", (429, {}, {"code": 45, "message": "You have reached the daily limit"}))
    with pytest.raises(ZohoError) as err:
        client.create_journal(TENANT, {"reference_number": "k"})
    assert err.value.kind == "deferred" and dialect.spent["org/1"][1] == "You have reached the daily limit"
    before = len(server.sent())
    with pytest.raises(ZohoError) as err:
        client.get_journal(TENANT, "j1")
    assert err.value.kind == "deferred" and len(server.sent()) == before, "nothing sent for a spent organization"


def test_aden_keyed_writes_are_resent_replays_recognised_and_errors_read(server: Server) -> None:
    client = AdenClient(ApiCore(AdenDialect(server.url, lambda t, s: "jwt-1"), sleep=Sleeps(), clock=lambda: NOW))
    server.plan("POST", "/journal-entries", (502, {}, {}),
                (201, {"Idempotent-Replayed": "true"}, {"journal_entry_id": "x", "total_debit": 5.25}))
    status, data, replayed = client.request(TENANT, "POST", "/journal-entries", {"a": 1}, idempotency_key="k1")
    assert (status, replayed, data["total_debit"]) == (201, True, Decimal("5.25"))
    sent = server.sent("POST", "/journal-entries")
    assert len(sent) == 2 and {(h["x-idempotency-key"], h["authorization"]) for _, _, _, h, _ in sent} == {
        ("k1", "jwt jwt-1")}
    refusal = {"error": {"code": "VALIDATION_ERROR", "message": "outside", "details": {"field": "tran_date"}}}
    server.plan("POST", "/journal-entries", (400, {}, refusal))
    with pytest.raises(AdenError) as err:
        client.request(TENANT, "POST", "/journal-entries", {"a": 1}, idempotency_key="k2")
    assert (err.value.kind, err.value.code, err.value.field) == ("rejected", "VALIDATION_ERROR", "tran_date")
    assert "VALIDATION_ERROR: outside (tran_date)" in str(err.value)
    client.page_size = 2  # a full last page that says has_more=false (no total): no extra request
    server.plan("GET", "/accounts", (200, {}, {"data": [{"id": 1}, {"id": 2}], "pagination": {
        "limit": 2, "offset": 0, "has_more": False}}))
    assert client.pages(TENANT, "/accounts") == [{"id": 1}, {"id": 2}] and len(server.sent("GET", "/accounts")) == 1


def test_rootfi_company_placement_reads_by_post_and_which_writes_are_replayed(tmp_path: Path, server: Server) -> None:
    limiter = HostLimiter(tmp_path / "rl.sqlite")
    grants: list[list[Rule]] = []
    limiter.on_grant = lambda rules, _prio, _now: grants.append(rules)
    unlinked: list[tuple[str, str]] = []
    dialect = RootfiDialect(server.url, "secret-key", lambda t: "42", on_unlinked=lambda t, why: unlinked.append(
        (t, why)))
    client = RootfiClient(ApiCore(dialect, limiter=limiter, sleep=Sleeps(), clock=lambda: NOW), page_size=2)
    page = {"data": {"data": [{"rootfi_id": 1}, {"rootfi_id": 2}], "total_count": 0}}  # the docs' total_count 0
    server.plan("POST", "/accounting/accounts/all", (503, {}, {}), (200, {}, page), (200, {}, page))
    assert client.accounts(TENANT) == [{"rootfi_id": 1}, {"rootfi_id": 2}], "a page with nothing new ends it"
    sent = server.sent("POST", "/accounting/accounts/all")
    assert len(sent) == 3, "a list POST is a read: re-sent after a 503; total_count 0 is not the end"
    assert [json.loads(b) for *_, b in sent][1:] == [
        {"company_id": 42, "orderBy": {"rootfi_id": "asc"}, "take": 2, "skip": s} for s in (0, 2)]
    assert {h["api_key"] for _, _, _, h, _ in sent} == {"secret-key"} and "secret-key" not in repr(client)
    assert grants[0] == [Rule("rootfi:account", 570, 60.0), Rule("rootfi:company:42", 57, 60.0)]

    server.plan("PUT", "/api/write/journal_entries/a%2F1", (503, {}, {}), (200, {}, {"data": {"rootfi_id": "a/1"}}))
    assert client.update_entry(TENANT, "a/1", {"x": 1}) == {"rootfi_id": "a/1"}, "a PUT replay lands the same"
    server.plan("POST", "/api/write/journal_entries", (503, {}, {}))
    with pytest.raises(RootfiError) as err:
        client.upload(TENANT, [{"document_number": "d"}])
    assert err.value.kind == "uncertain" and len(server.sent("POST", "/api/write/journal_entries")) == 1
    server.plan("GET", "/jobs/j1", (403, {}, {"error": {"code": "COMPANY_NOT_LINKED", "message": "unlinked"}}))
    with pytest.raises(RootfiError) as err:
        client.job(TENANT, "j1")
    assert err.value.kind == "needs_reauth" and "--tenant t1 --system rootfi" in str(err.value)
    assert unlinked == [(TENANT, "Rootfi: unlinked")] and server.sent("GET", "/jobs/j1")[0][2] == {"company_id": "42"}
    server.plan("POST", "/accounting/accounts/all", (404, {}, {"error": {"code": "COMPANY_NOT_FOUND",
                                                                        "message": "gone"}}))
    with pytest.raises(RootfiError) as err:
        client.accounts(TENANT)  # a paged read records it too
    assert err.value.kind == "needs_reauth" and unlinked[-1] == (TENANT, "Rootfi: gone")
