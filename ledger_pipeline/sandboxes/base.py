"""What every emulated system shares: fault injection, the rate-limit clock, request stats and the state file.

One `ledger-pipeline sandbox` process serves every emulation (`Emulator`), each under its own path prefix; the
`/_sandbox` inspection endpoints (server.py) read all of them alike.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request
from starlette.routing import BaseRoute

WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")


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
    writes_only: bool = False  # faults only on POST/PATCH/PUT/DELETE
    systems: list[str] | None = None  # only these systems (None: every system)
    # The token endpoint failing a refresh: "5xx", "garbage" (200 with a body that is not JSON) or "drop"; for
    # the companies in token_failure_logins (None: every company).
    token_failure: str | None = None
    token_failure_logins: list[str] | None = None


@dataclass
class Limits:
    """Rate limits: on/off and the time scale are shared; the numbers are Jurnal's (other emulations keep their
    own system's numbers and use `enabled` and `scale`)."""

    enabled: bool = True
    scale: float = 1.0  # 100 = the clock runs 100x faster (3,000/min per token)
    per_token_minute: int = 30
    per_token_hour: int = 1800
    per_ip_minute: int = 40
    per_ip_hour: int = 2500


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

    def __init__(self, state_path: Path | str | None, limits: Limits | None = None, faults: Faults | None = None,
                 access_ttl: float = 3600):
        self.state_path = str(state_path) if state_path else None
        if state_path:
            Path(state_path).parent.mkdir(parents=True, exist_ok=True)
        self.limits = limits or Limits()
        self.access_ttl = access_ttl
        self.stats: Counter = Counter()  # (system, method, endpoint, status) -> count
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

    def count(self, system: str, method: str, endpoint: str, status: Any) -> None:
        self.stats[(system, method, endpoint, status)] += 1

    def count_address(self, system: str, address: str, login: str | None, status: Any) -> None:
        """Which address called for which company: proves a tenant's traffic leaves from one place."""
        self.by_address[(system, address, login or "?", status)] += 1

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


def token_fault(ctx: SandboxContext, login: str | None):  # noqa: ANN201
    """The injected token-endpoint failure for this company's refresh, as a response (None: answer normally)."""
    from starlette.responses import Response

    f = ctx.faults
    if not f.token_failure or (f.token_failure_logins is not None and login not in f.token_failure_logins):
        return None
    if f.token_failure == "drop":
        return DroppedResponse()
    if f.token_failure == "garbage":
        return Response("<html>upstream proxy error</html>", status_code=200, media_type="application/json")
    return Response('{"error": "server_error"}', status_code=503, media_type="application/json")


def client_host(request: Request) -> str:
    return request.client.host if request.client else "?"


class Emulator(Protocol):
    """One emulated accounting system inside the sandbox."""

    system: str

    def routes(self) -> list[BaseRoute]:
        """Its API and auth routes, full paths (under its prefix)."""

    def inspect_entries(self, login: str | None) -> list[dict]:
        """Every company's entries (or one company's) for GET /_sandbox/journal_entries: each with `system`,
        `company_login`, `custom_id` (our id as the system stores it), `status`, `transaction_date` (ISO),
        `total_debit`, `total_credit` and `transaction_account_lines` [{debit, credit, account: {id}}] (amounts
        as exact decimals)."""

    async def control(self, login: str, action: str, body: dict) -> dict | None:
        """POST /_sandbox/<system>/companies/<login>/<action> (lock_date, revoke, accounts, and the system's own,
        e.g. Aden's approvals): the result, or None for an unknown action. Raise KeyError for an unknown company."""

    def close(self) -> None: ...
