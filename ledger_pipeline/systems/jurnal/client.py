"""The Jurnal API client (httpx): paced under Jurnal's limits, retried where that is safe, errors classified.

- Two ways in, chosen per connection (`Credentials`, systems/jurnal/auth.py): the OAuth2 partner API (Bearer on
  `/partner/core/api/v1`) or Mekari's API gateway (HMAC-signed requests on `/public/jurnal/api/v1`). Paths and
  bodies are the same on both (Mekari's Swagger "Jurnal API Doc" 2.0.0, shared/reference/specs/).
- Pacing: a sliding-window limiter per token (30/min, 1,800/h) and per source IP (40/min, 2,500/h), a few
  percent under each, so 429s are rare rather than the pacing mechanism. Its state is shared by every process on
  the host (ledger_pipeline.ratelimit), per source address (LEDGER_SOURCE_ADDRESS, which the HTTP client binds);
  posting requests go before background reads (chart and drift reads set `priority="background"`).
- Retries (stamina: exponential backoff with jitter): reads on 429, 5xx and transport errors; any request on 429
  or a connect error (nothing reached Jurnal). A write that may have reached Jurnal (timeout, dropped connection,
  5xx) is never blindly resent: it raises `kind="uncertain"`, and the posting sink looks the entry up first.
- 401: OAuth refreshes the token once and retries once (then backs off and retries); a refused grant becomes
  `NeedsReauth`. HMAC: a refused Date (clock skew over 300 s) is this host's clock problem (retryable, named);
  any other refusal means the credentials are wrong or revoked: `NeedsReauth`.
- Identifiers in a path are percent-encoded as one segment (`quote(ref, safe="")`): a custom id holding `/`, `#`,
  `?`, `%`, spaces or non-ASCII stays one path segment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

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
from ledger_pipeline.systems.jurnal.auth import Credentials

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



# (tenant_id, the credentials just refused with a 401 or None) -> live credentials; raises NeedsReauth when there are
# none (revoked grant, refused HMAC credentials) and TokenEndpointError when a token refresh failed.
CredentialResolver = Callable[[str, Credentials | None], Credentials]
CLOCK_SKEW_WORDS = ("x-date", "date header", "clock skew")  # the gateway's 401 for a Date outside its 300 s skew


class JurnalClient:
    """One client for every tenant: a pooled httpx connection, the limiter, and each tenant's credentials (OAuth
    access tokens from the vault, or HMAC client id and secret). `clock` dates HMAC-signed requests."""

    def __init__(self, credentials: CredentialResolver, limiter: JurnalLimiter | None = None,
                 http: httpx.Client | None = None, attempts: int = 6, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, timeout: float = 30.0, source_address: str | None = None,
                 priority: Priority = "posting", clock: Callable[[], float] = time.time):
        self._credentials = credentials
        self.limiter = limiter or host_limiter(load_settings())
        self.source_address = source_address
        self.http = http or http_client(source_address, timeout)
        # "posting" goes first on this host; chart and drift reads set "background" (or pass priority= per request)
        self.priority: Priority = priority
        self.attempts, self.backoff_initial, self.backoff_max = attempts, backoff_initial, backoff_max
        self.clock = clock
        self.requests = 0

    def close(self) -> None:
        self.http.close()

    # -- core -------------------------------------------------------------------------------------------------
    def request(self, tenant_id: str, method: str, path: str, body: Any = None,
                params: dict | None = None, priority: Priority | None = None) -> tuple[int, Any]:
        """(status, parsed JSON) of a 2xx answer; `path` is relative to the API base (`/journal_entries/...`), its
        identifiers already encoded (see `segment`). Raises JurnalError (kind retryable, uncertain, rejected) or
        NeedsReauth."""
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
        creds = self._creds(tenant_id, None)
        content = dumps_exact(body).encode() if body is not None else b""
        for refreshed in (False, True):
            url = httpx.URL(f"{creds.base_url}{path}", params=params)
            target = url.raw_path.decode("ascii")  # path?query exactly as sent: what an HMAC signature covers
            headers = {"Content-Type": "application/json", "Accept": "application/json",
                       **creds.headers(method, target, content, self.clock())}
            self.limiter.acquire(tenant_id, priority)
            self.requests += 1
            try:
                resp = self.http.request(method, url, content=content or None, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise _Retry(JurnalError("retryable", tenant_id, f"cannot connect to Jurnal ({exc})")) from exc
            except httpx.TransportError as exc:
                err = JurnalError("uncertain" if is_write else "retryable", tenant_id,
                                  f"{method} {path}: {type(exc).__name__} ({exc}); the outcome is unknown")
                if is_write:
                    raise err from exc
                raise _Retry(err) from exc
            if resp.status_code == 401 and not refreshed:
                if creds.mode == "hmac" and _clock_refused(resp):
                    raise JurnalError("retryable", tenant_id, (
                        f"{method} {path}: Mekari refused the request's Date header ({resp.text[:200]}): this "
                        "host's clock is more than 300 s off; fix its time (NTP) and re-run"), 401, resp.text[:500])
                creds = self._creds(tenant_id, creds)  # OAuth: refresh once, retry once; HMAC: NeedsReauth
                continue
            break
        return self._classify(tenant_id, method, path, resp, is_write)

    def _creds(self, tenant_id: str, refused: Credentials | None) -> Credentials:
        """Live credentials; a failing token endpoint is this tenant's retryable problem (nothing was sent)."""
        try:
            return self._credentials(tenant_id, refused)
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
        if status == 404 and _no_route(data):  # the gateway has no such route: a wrong base URL, not a missing entry
            raise JurnalError("rejected", tenant_id, what + " (the API base URL is wrong: check "
                              "JURNAL_API_BASE_URL / JURNAL_GATEWAY_BASE_URL)", status, data)
        raise JurnalError("rejected", tenant_id, what, status, data)

    # -- endpoints --------------------------------------------------------------------------------------------
    def accounts(self, tenant_id: str, include_archive: bool = True) -> list[dict]:
        _, data = self.request(tenant_id, "GET", "/accounts",
                               params={"include_archive": str(include_archive).lower()})
        return data["accounts"]

    def get_entry(self, tenant_id: str, ref: str | int) -> dict | None:
        """The entry whose Jurnal id or custom_id is `ref` (Swagger: "Journal Entry ID or Custom ID"), or None when
        Jurnal answers 404: a 404 is "not found", never "unreachable" (transport failures raise)."""
        try:
            _, data = self.request(tenant_id, "GET", f"/journal_entries/{segment(ref)}")
        except JurnalError as exc:
            if exc.status == 404 and exc.kind == "rejected" and not _no_route(exc.body):
                return None
            raise
        return data["journal_entry"] if isinstance(data, dict) and "journal_entry" in data else data

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
        """One result per entry, in order: the inner `journal_entry` of each item, i.e. {"status": 201|409|422|...,
        "body": ..., "content": ...}. Mekari's Swagger: `body` echoes the request, `content` holds the result (the
        field map of a refusal); the sink reads the created entry robustly from either (sink.created_entry)."""
        _, data = self.request(tenant_id, "POST", "/journal_entries/batch_create",
                               {"journal_entries": [{"journal_entry": e} for e in entries]})
        items = data["journal_entries"] if isinstance(data, dict) else data
        return [item.get("journal_entry", item) if isinstance(item, dict) else {} for item in items]

    def update_entry(self, tenant_id: str, remote_id: str | int, entry: dict) -> dict:
        _, data = self.request(tenant_id, "PATCH", f"/journal_entries/{segment(remote_id)}", {"journal_entry": entry})
        return data["journal_entry"]

    def delete_entry(self, tenant_id: str, remote_id: str | int) -> None:
        self.request(tenant_id, "DELETE", f"/journal_entries/{segment(remote_id)}")


def segment(ref: str | int) -> str:
    """One path segment: every reserved character percent-encoded (`/` too), UTF-8 for non-ASCII."""
    return quote(str(ref), safe="")


def _clock_refused(resp: httpx.Response) -> bool:
    text = resp.text.lower()
    return any(word in text for word in CLOCK_SKEW_WORDS)


def _no_route(data: Any) -> bool:
    """Kong's answer for a path it has no route for (Mekari's gateway): {"message": "no Route matched with those
    values"}."""
    return isinstance(data, dict) and "no route matched" in str(data.get("message", "")).lower()


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
