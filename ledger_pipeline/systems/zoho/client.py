"""The Zoho Books v3 client (httpx): the tenant's api_domain and organization_id, paced under Zoho's limits,
retried only where that is safe, errors classified.

- Where: `<api_domain>/books/v3` from the tenant's stored connection (Zoho names the data centre in the token
  reply); the configured API base is only the fallback for a connection stored without one. Every call carries
  `organization_id` and `Authorization: Zoho-oauthtoken <token>`.
- Pacing: 100 requests/min per organization on the host-shared limiter (`zoho-org:<id>`), a few percent under.
- Retries (stamina): reads on 429 (per-minute), 5xx and transport errors; any request on a connect error (nothing
  reached Zoho). Zoho has no idempotency key, so a create/update/delete that may have reached Zoho (timeout,
  dropped connection, 5xx) is never resent here: it raises `uncertain`, and the engine searches reference_number
  before writing again.
- The daily cap is never retried: a 429 whose message names the day ("API usage limit exceeded" is all Zoho
  documents for the cap, zoho.com/books/api/v3/errors, with no code of its own; the per-day numbers come from Zoho's
  KB "per-day API limit") marks the tenant's organization spent in this client for the day (no further request is
  sent for it) and raises `deferred`. Any other 429 is the per-minute limit: paced and retried.
- Paths carry ids as single percent-encoded segments; every other value goes as an encoded query parameter.
- 401: refresh once, retry once; a refused grant becomes `NeedsReauth`; a failing token endpoint is retryable.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import quote

import httpx
import stamina

from ledger_pipeline.money import dumps_exact, loads_exact
from ledger_pipeline.ratelimit import HostLimiter, Priority, Rule, scaled_rules
from ledger_pipeline.state.vault import TokenEndpointError
from ledger_pipeline.systems.http import http_client

Kind = Literal["retryable", "uncertain", "rejected", "deferred"]
PER_MINUTE = 100  # requests per minute per organization
MAX_PER_PAGE = 200


class ZohoError(Exception):
    def __init__(self, kind: Kind, tenant_id: str, message: str, status: int | None = None,
                 code: int | None = None, zoho_message: str | None = None):
        super().__init__(f"tenant {tenant_id}: {message}")
        self.kind, self.tenant_id, self.message = kind, tenant_id, message
        self.status, self.code, self.zoho_message = status, code, zoho_message


class _Retry(Exception):
    def __init__(self, error: ZohoError):
        self.error = error


def is_daily_limit(status: int, code: Any, message: str) -> bool:
    """Zoho's daily cap, told apart from the per-minute limit (both are HTTP 429, with no documented code of their
    own): by the message naming the day."""
    text = message.lower()
    return status == 429 and ("daily" in text or "per day" in text or "for the day" in text or "tomorrow" in text)


def segment(value: object) -> str:
    """One URL path segment: every reserved character percent-encoded."""
    return quote(str(value), safe="")


class ZohoLimiter:
    """Zoho's per-organization minute window as a rule on the host-shared limiter."""

    def __init__(self, host: HostLimiter, scale: float = 1.0, headroom: float = 0.95):
        self.host, self.scale, self.headroom = host, scale, headroom
        self.waited = 0.0
        self._lock = threading.Lock()

    def rules(self, organization_id: str) -> list[Rule]:
        return scaled_rules(f"zoho-org:{organization_id}", [(PER_MINUTE, 60)], self.scale, self.headroom)

    def acquire(self, organization_id: str, priority: Priority = "posting") -> float:
        waited = self.host.acquire(self.rules(organization_id), priority)
        with self._lock:
            self.waited += waited
        return waited



class ZohoClient:
    """One client for every Zoho tenant: pooled httpx, the limiter, the vault's tokens and connection details."""

    def __init__(self, default_api_base: str, access_token: Callable[[str, str | None], str],
                 details: Callable[[str], tuple[str | None, dict]], limiter: ZohoLimiter,
                 http: httpx.Client | None = None, attempts: int = 6, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, timeout: float = 30.0, source_address: str | None = None,
                 priority: Priority = "posting"):
        self.default_api_base = default_api_base.rstrip("/")
        self._access_token = access_token  # (tenant_id, stale_or_None) -> live token
        self._details = details  # tenant_id -> (company_id, extra)
        self.limiter = limiter
        self.http = http or http_client(source_address, timeout)
        self.priority: Priority = priority
        self.attempts, self.backoff_initial, self.backoff_max = attempts, backoff_initial, backoff_max
        self.requests = 0
        self.spent: dict[str, tuple[str, str]] = {}  # organization_id -> (UTC day, Zoho's message)
        self._where: dict[str, tuple[str, str]] = {}

    def close(self) -> None:
        self.http.close()

    def where(self, tenant_id: str) -> tuple[str, str]:
        """(API base, organization_id) of the tenant's connection (NeedsReauth when it is not connected)."""
        if tenant_id not in self._where:
            company_id, extra = self._details(tenant_id)
            org = str(extra.get("organization_id") or company_id or "")
            domain = str(extra.get("api_domain") or "").rstrip("/")
            base = f"{domain}/books/v3" if domain else self.default_api_base
            if not org:
                raise ZohoError("rejected", tenant_id, "the Zoho connection has no organization_id: reconnect it")
            self._where[tenant_id] = (base, org)
        return self._where[tenant_id]

    # -- core -------------------------------------------------------------------------------------------------
    def request(self, tenant_id: str, method: str, path: str, body: Any = None, params: dict | None = None,
                priority: Priority | None = None) -> tuple[int, dict]:
        base, org = self.where(tenant_id)
        self._check_spent(tenant_id, org)
        prio = priority or self.priority
        try:
            for attempt in stamina.retry_context(on=_Retry, attempts=self.attempts,
                                                 wait_initial=self.backoff_initial, wait_max=self.backoff_max,
                                                 wait_jitter=self.backoff_initial, timeout=None):
                with attempt:
                    return self._once(tenant_id, base, org, method, path, body, params, prio)
        except _Retry as exc:
            raise exc.error from None
        raise AssertionError("unreachable")

    def _check_spent(self, tenant_id: str, org: str) -> None:
        spent = self.spent.get(org)
        if spent and spent[0] == _today():
            raise ZohoError("deferred", tenant_id, f"Zoho's daily API limit for this organization is spent "
                                                   f"({spent[1]}): deferred to the next run", 429)

    def _once(self, tenant_id: str, base: str, org: str, method: str, path: str, body: Any,
              params: dict | None, priority: Priority) -> tuple[int, dict]:
        is_write = method != "GET"
        token = self._token(tenant_id, None)
        for refreshed in (False, True):
            self.limiter.acquire(org, priority)
            self.requests += 1
            try:
                resp = self.http.request(
                    method, f"{base}{path}", params={**(params or {}), "organization_id": org},
                    content=dumps_exact(body).encode() if body is not None else None,
                    headers={"Authorization": f"Zoho-oauthtoken {token}", "Accept": "application/json",
                             **({"Content-Type": "application/json"} if body is not None else {})},
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise _Retry(ZohoError("retryable", tenant_id, f"cannot connect to Zoho ({type(exc).__name__})")
                             ) from exc
            except httpx.TransportError as exc:
                err = ZohoError("uncertain" if is_write else "retryable", tenant_id,
                                f"{method} {path}: {type(exc).__name__}; the outcome is unknown")
                if is_write:
                    raise err from exc
                raise _Retry(err) from exc
            if resp.status_code == 401 and not refreshed:
                token = self._token(tenant_id, token)  # refresh once, retry once
                continue
            break
        return self._classify(tenant_id, org, method, path, resp, is_write)

    def _token(self, tenant_id: str, stale: str | None) -> str:
        try:
            return self._access_token(tenant_id, stale)
        except TokenEndpointError as exc:
            raise _Retry(ZohoError("retryable", tenant_id, str(exc))) from exc

    def _classify(self, tenant_id: str, org: str, method: str, path: str, resp: httpx.Response,
                  is_write: bool) -> tuple[int, dict]:
        status = resp.status_code
        try:
            data = loads_exact(resp.content) if resp.content else {}
        except ValueError:
            data = {"message": resp.text[:300]}
        if not isinstance(data, dict):
            data = {"message": str(data)[:300]}
        code, message = data.get("code"), str(data.get("message", ""))
        what = f"{method} {path} -> {status} (code {code}): {message}"
        if status < 300 and code in (0, None):
            return status, data
        if status < 300:  # 2xx with a non-zero code: Zoho said no
            raise ZohoError("rejected", tenant_id, what, status, code, message)
        if status == 429 and is_daily_limit(status, code, message):
            self.spent[org] = (_today(), message)
            raise ZohoError("deferred", tenant_id, f"Zoho's daily API limit for this organization is spent "
                                                   f"({message}): deferred to the next run", status, code, message)
        if status in (401, 429):  # not processed: safe to send again after a pause
            raise _Retry(ZohoError("retryable", tenant_id, what, status, code, message))
        if status >= 500:
            if is_write:
                raise ZohoError("uncertain", tenant_id, what + "; the write may have been applied", status, code,
                                message)
            raise _Retry(ZohoError("retryable", tenant_id, what, status, code, message))
        raise ZohoError("rejected", tenant_id, what, status, code, message)

    # -- endpoints --------------------------------------------------------------------------------------------
    def chart_of_accounts(self, tenant_id: str, per_page: int = MAX_PER_PAGE,
                          priority: Priority | None = None) -> list[dict]:
        """Every account, inactive included (filter_by=AccountType.All), every page."""
        out, page = [], 1
        while True:
            _, data = self.request(tenant_id, "GET", "/chartofaccounts", params={
                "filter_by": "AccountType.All", "page": page, "per_page": per_page}, priority=priority)
            out += data.get("chartofaccounts", [])
            if not (data.get("page_context") or {}).get("has_more_page"):
                return out
            page += 1

    def list_journals(self, tenant_id: str, params: dict, per_page: int = MAX_PER_PAGE) -> list[dict]:
        """Journal summaries (no line items) matching `params`, every page."""
        out, page = [], 1
        while True:
            _, data = self.request(tenant_id, "GET", "/journals", params={**params, "page": page,
                                                                          "per_page": per_page})
            out += data.get("journals", [])
            if not (data.get("page_context") or {}).get("has_more_page"):
                return out
            page += 1

    def get_journal(self, tenant_id: str, journal_id: str) -> dict | None:
        try:
            _, data = self.request(tenant_id, "GET", f"/journals/{segment(journal_id)}")
        except ZohoError as exc:
            if exc.status == 404:  # "Journal does not exist." (code 1002), or a URL Zoho does not know: not there
                return None
            raise
        return data["journal"]

    def create_journal(self, tenant_id: str, body: dict) -> dict:
        _, data = self.request(tenant_id, "POST", "/journals", body)
        return data["journal"]

    def update_journal(self, tenant_id: str, journal_id: str, body: dict) -> dict:
        _, data = self.request(tenant_id, "PUT", f"/journals/{segment(journal_id)}", body)
        return data["journal"]

    def delete_journal(self, tenant_id: str, journal_id: str) -> None:
        self.request(tenant_id, "DELETE", f"/journals/{segment(journal_id)}")


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()
