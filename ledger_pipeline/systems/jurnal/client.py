"""The Jurnal partner-API client (httpx): paced under Jurnal's limits, retried where that is safe, errors classified.

- Pacing: a sliding-window limiter per token (30/min, 1,800/h) and per client IP (40/min, 2,500/h), a few
  percent under each, so 429s are rare rather than the pacing mechanism.
- Retries (stamina: exponential backoff with jitter): reads on 429, 5xx and transport errors; any request on 429
  or a connect error (nothing reached Jurnal). A write that may have reached Jurnal (timeout, dropped connection,
  5xx) is never blindly resent: it raises `kind="uncertain"`, and the posting sink looks the entry up first.
- 401: refresh the token once and retry once (then back off and retry); a refused grant becomes `NeedsReauth`.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import stamina

from ledger_pipeline.money import dumps_exact, loads_exact

Kind = Literal["retryable", "uncertain", "needs_reauth", "rejected"]


class JurnalError(Exception):
    def __init__(self, kind: Kind, tenant_id: str, message: str, status: int | None = None, body: Any = None):
        super().__init__(f"tenant {tenant_id}: {message}")
        self.kind, self.tenant_id, self.status, self.body, self.message = kind, tenant_id, status, body, message


class _Retry(Exception):
    """Internal: a failure worth another attempt."""

    def __init__(self, error: JurnalError):
        self.error = error


@dataclass(frozen=True)
class Limits:
    per_token_minute: int = 30
    per_token_hour: int = 1800
    per_ip_minute: int = 40
    per_ip_hour: int = 2500
    headroom: float = 0.95  # stay this far under each limit (clock skew, in-flight requests)


class RateLimiter:
    """Sliding-window log limiter: at most N sends in any window of W seconds, per key. Thread-safe."""

    def __init__(self, limits: Limits = Limits(), scale: float = 1.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.limits, self.scale, self._sleep, self._clock = limits, scale, sleep, clock
        self._log: dict[tuple, collections.deque] = {}
        self._lock = threading.Lock()
        self.waited = 0.0

    def _rules(self, token_key: str) -> list[tuple[tuple, int, float]]:
        lim, s = self.limits, self.scale

        def cap(n: int) -> int:
            return max(1, int(n * lim.headroom))

        return [
            (("ip", "m"), cap(lim.per_ip_minute), 60 / s),
            (("ip", "h"), cap(lim.per_ip_hour), 3600 / s),
            (("tok", token_key, "m"), cap(lim.per_token_minute), 60 / s),
            (("tok", token_key, "h"), cap(lim.per_token_hour), 3600 / s),
        ]

    def acquire(self, token_key: str) -> None:
        while True:
            with self._lock:
                now = self._clock()
                wait = 0.0
                rules = self._rules(token_key)
                for key, n, window in rules:
                    log = self._log.setdefault(key, collections.deque())
                    while log and log[0] <= now - window:
                        log.popleft()
                    if len(log) >= n:
                        wait = max(wait, log[0] + window - now)
                if wait <= 0:
                    for key, _, _ in rules:
                        self._log[key].append(now)
                    return
            self.waited += wait
            self._sleep(wait)


_SHARED: dict[tuple[str, float], RateLimiter] = {}
_SHARED_GUARD = threading.Lock()


def shared_limiter(base_url: str, scale: float = 1.0) -> RateLimiter:
    """One limiter per Jurnal host and process: the per-IP budget is shared by every session and asset."""
    with _SHARED_GUARD:
        return _SHARED.setdefault((base_url.rstrip("/"), scale), RateLimiter(scale=scale))


class JurnalClient:
    """One client for every tenant: a pooled httpx connection, the limiter, the token vault's access tokens."""

    def __init__(self, base_url: str, access_token: Callable[[str, str | None], str],
                 limiter: RateLimiter | None = None, http: httpx.Client | None = None,
                 attempts: int = 6, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._access_token = access_token  # (tenant_id, stale_token_or_None) -> live token
        self.limiter = limiter or shared_limiter(base_url)
        self.http = http or httpx.Client(
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=20),
        )
        self.attempts, self.backoff_initial, self.backoff_max = attempts, backoff_initial, backoff_max
        self.requests = 0

    def close(self) -> None:
        self.http.close()

    # -- core -------------------------------------------------------------------------------------------------
    def request(self, tenant_id: str, method: str, path: str, body: Any = None,
                params: dict | None = None) -> tuple[int, Any]:
        is_write = method != "GET"
        try:
            for attempt in stamina.retry_context(on=_Retry, attempts=self.attempts,
                                                 wait_initial=self.backoff_initial, wait_max=self.backoff_max,
                                                 wait_jitter=self.backoff_initial, timeout=None):
                with attempt:
                    return self._once(tenant_id, method, path, body, params, is_write)
        except _Retry as exc:
            raise exc.error from None
        raise AssertionError("unreachable")

    def _once(self, tenant_id: str, method: str, path: str, body: Any, params: dict | None,
              is_write: bool) -> tuple[int, Any]:
        token = self._access_token(tenant_id, None)
        for refreshed in (False, True):
            self.limiter.acquire(tenant_id)
            self.requests += 1
            try:
                resp = self.http.request(
                    method, f"{self.base_url}{path}", params=params,
                    content=dumps_exact(body).encode() if body is not None else None,
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                             "Accept": "application/json"},
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise _Retry(JurnalError("retryable", tenant_id, f"cannot connect to Jurnal ({exc})")) from exc
            except httpx.TransportError as exc:
                err = JurnalError("uncertain" if is_write else "retryable", tenant_id,
                                  f"{method} {path}: {type(exc).__name__} ({exc}); the outcome is unknown")
                if is_write:
                    raise err from exc
                raise _Retry(err) from exc
            if resp.status_code == 401 and not refreshed:
                token = self._access_token(tenant_id, token)  # refresh once, retry once
                continue
            break
        return self._classify(tenant_id, method, path, resp, is_write)

    @staticmethod
    def _classify(tenant_id: str, method: str, path: str, resp: httpx.Response,
                  is_write: bool) -> tuple[int, Any]:
        status = resp.status_code
        try:
            data = loads_exact(resp.content) if resp.content else None
        except ValueError:
            data = resp.text[:500]
        if status < 300:
            return status, data
        what = f"{method} {path} -> {status}: {jurnal_message(data)}"
        if status == 401:  # refused even after a refresh: not processed, so safe to try again later
            raise _Retry(JurnalError("retryable", tenant_id, what + " (after a token refresh)", status, data))
        if status == 429:
            raise _Retry(JurnalError("retryable", tenant_id, what, status, data))
        if status >= 500:
            if is_write:
                raise JurnalError("uncertain", tenant_id, what + "; the write may have been applied", status, data)
            raise _Retry(JurnalError("retryable", tenant_id, what, status, data))
        raise JurnalError("rejected", tenant_id, what, status, data)

    # -- endpoints --------------------------------------------------------------------------------------------
    def accounts(self, tenant_id: str, include_archive: bool = True) -> list[dict]:
        _, data = self.request(tenant_id, "GET", "/accounts",
                               params={"include_archive": str(include_archive).lower()})
        return data["accounts"]

    def get_entry(self, tenant_id: str, ref: str | int) -> dict | None:
        try:
            _, data = self.request(tenant_id, "GET", f"/journal_entries/{ref}")
        except JurnalError as exc:
            if exc.status == 404:
                return None
            raise
        return data["journal_entry"]

    def list_entries(self, tenant_id: str, start_date: str, end_date: str) -> list[dict]:
        """Every entry dated in [start_date, end_date] (DD-MM-YYYY), all pages of 100."""
        out, page = [], 1
        while True:
            _, data = self.request(tenant_id, "GET", "/journal_entries", params={
                "start_date": start_date, "end_date": end_date, "page": page, "page_size": 100})
            out += data["journal_entries"]
            if page >= int(data.get("total_pages") or 1):
                return out
            page += 1

    def create_entry(self, tenant_id: str, entry: dict) -> dict:
        _, data = self.request(tenant_id, "POST", "/journal_entries", {"journal_entry": entry})
        return data["journal_entry"]

    def batch_create(self, tenant_id: str, entries: list[dict]) -> list[dict]:
        """Per-item results: {"status": 201, "body": entry} or {"status": 409|422, "content": errors}."""
        _, data = self.request(tenant_id, "POST", "/journal_entries/batch_create",
                               {"journal_entries": [{"journal_entry": e} for e in entries]})
        return [item["journal_entry"] for item in data["journal_entries"]]

    def update_entry(self, tenant_id: str, remote_id: int, entry: dict) -> dict:
        _, data = self.request(tenant_id, "PATCH", f"/journal_entries/{remote_id}", {"journal_entry": entry})
        return data["journal_entry"]

    def delete_entry(self, tenant_id: str, remote_id: int) -> None:
        self.request(tenant_id, "DELETE", f"/journal_entries/{remote_id}")


def jurnal_message(data: Any) -> str:
    """Jurnal's own words: a field map, error_full_messages, or message/error."""
    if isinstance(data, dict):
        if data.get("error_full_messages"):
            return "; ".join(map(str, data["error_full_messages"]))
        for key in ("message", "error", "errors"):
            if key in data and not isinstance(data[key], dict | list):
                return str(data[key])
        parts = [f"{k}: {'; '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in data.items()]
        return ", ".join(parts)[:500]
    return str(data)[:500]
