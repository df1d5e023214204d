"""The Jurnal partner-API client (httpx): paced under Jurnal's limits, retried where that is safe, errors classified.

- Pacing: a sliding-window limiter per token (30/min, 1,800/h) and per source IP (40/min, 2,500/h), a few
  percent under each, so 429s are rare rather than the pacing mechanism. Its state is shared by every process on
  the host (ledger_pipeline.ratelimit), per source address (LEDGER_SOURCE_ADDRESS, which the HTTP client binds);
  posting requests go before background reads (chart and drift reads set `priority="background"`).
- Retries (stamina: exponential backoff with jitter): reads on 429, 5xx and transport errors; any request on 429
  or a connect error (nothing reached Jurnal). A write that may have reached Jurnal (timeout, dropped connection,
  5xx) is never blindly resent: it raises `kind="uncertain"`, and the posting sink looks the entry up first.
- 401: refresh the token once and retry once (then back off and retry); a refused grant becomes `NeedsReauth`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import stamina

from ledger_pipeline.money import dumps_exact, loads_exact
from ledger_pipeline.ratelimit import (
    HostLimiter,
    Priority,
    Rule,
    address_key,
    host_limiter_at,
    scaled_rules,
    state_path,
)
from ledger_pipeline.settings import Settings, load_settings
from ledger_pipeline.state.vault import TokenEndpointError
from ledger_pipeline.systems.http import http_client

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


class JurnalLimiter:
    """Jurnal's four limits as rules on the host-shared limiter: per source IP (`ip:<address>`, minute and hour) and
    per token (`token:<tenant>`, minute and hour), `headroom` under each. `waited` counts this client's waits."""

    def __init__(self, host: HostLimiter, limits: Limits = Limits(), scale: float = 1.0,
                 source_address: str | None = None):
        self.host, self.limits, self.scale = host, limits, scale
        self.ip_key = f"ip:{address_key(source_address)}"
        self.waited = 0.0
        self._lock = threading.Lock()

    def rules(self, token_key: str) -> list[Rule]:
        lim, s, h = self.limits, self.scale, self.limits.headroom
        return [*scaled_rules(self.ip_key, [(lim.per_ip_minute, 60), (lim.per_ip_hour, 3600)], s, h),
                *scaled_rules(f"token:{token_key}", [(lim.per_token_minute, 60), (lim.per_token_hour, 3600)], s, h)]

    def acquire(self, token_key: str, priority: Priority = "posting") -> float:
        waited = self.host.acquire(self.rules(token_key), priority)
        with self._lock:
            self.waited += waited
        return waited


def host_limiter(settings: Settings, scale: float | None = None, limits: Limits = Limits()) -> JurnalLimiter:
    """A limiter on this host's shared budget for `settings.source_address` (state under `settings.lock_dir`)."""
    host = host_limiter_at(state_path(settings.lock_dir, settings.source_address))
    return JurnalLimiter(host, limits, settings.rate_limit_scale if scale is None else scale,
                         settings.source_address)



class JurnalClient:
    """One client for every tenant: a pooled httpx connection, the limiter, the token vault's access tokens."""

    def __init__(self, base_url: str, access_token: Callable[[str, str | None], str],
                 limiter: JurnalLimiter | None = None, http: httpx.Client | None = None,
                 attempts: int = 6, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 timeout: float = 30.0, source_address: str | None = None, priority: Priority = "posting"):
        self.base_url = base_url.rstrip("/")
        self._access_token = access_token  # (tenant_id, stale_token_or_None) -> live token
        self.limiter = limiter or host_limiter(load_settings())
        self.source_address = source_address
        self.http = http or http_client(source_address, timeout)
        # "posting" goes first on this host; chart and drift reads set "background" (or pass priority= per request)
        self.priority: Priority = priority
        self.attempts, self.backoff_initial, self.backoff_max = attempts, backoff_initial, backoff_max
        self.requests = 0

    def close(self) -> None:
        self.http.close()

    # -- core -------------------------------------------------------------------------------------------------
    def request(self, tenant_id: str, method: str, path: str, body: Any = None,
                params: dict | None = None, priority: Priority | None = None) -> tuple[int, Any]:
        is_write = method != "GET"
        prio = priority or self.priority
        try:
            for attempt in stamina.retry_context(on=_Retry, attempts=self.attempts,
                                                 wait_initial=self.backoff_initial, wait_max=self.backoff_max,
                                                 wait_jitter=self.backoff_initial, timeout=None):
                with attempt:
                    return self._once(tenant_id, method, path, body, params, is_write, prio)
        except _Retry as exc:
            raise exc.error from None
        raise AssertionError("unreachable")

    def _once(self, tenant_id: str, method: str, path: str, body: Any, params: dict | None,
              is_write: bool, priority: Priority = "posting") -> tuple[int, Any]:
        token = self._token(tenant_id, None)
        for refreshed in (False, True):
            self.limiter.acquire(tenant_id, priority)
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
                token = self._token(tenant_id, token)  # refresh once, retry once
                continue
            break
        return self._classify(tenant_id, method, path, resp, is_write)

    def _token(self, tenant_id: str, stale: str | None) -> str:
        """A live token; a failing token endpoint is this tenant's retryable problem (nothing was sent)."""
        try:
            return self._access_token(tenant_id, stale)
        except TokenEndpointError as exc:
            raise _Retry(JurnalError("retryable", tenant_id, str(exc))) from exc

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
