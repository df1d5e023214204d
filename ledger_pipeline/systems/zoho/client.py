"""The Zoho Books v3 API as a dialect of the shared request core (ledger_pipeline.systems.core), and its endpoints as
thin calls to `ApiCore.call`.

- Where: `<api_domain>/books/v3` from the tenant's stored connection (Zoho names the data centre in the token
  reply); the configured API base is only the fallback for a connection stored without one. Every call carries
  `organization_id` and `Authorization: Zoho-oauthtoken <token>` (zoho.com/books/api/v3/introduction).
- Pacing: 100 requests/min per organization on the host-shared limiter (`zoho-org:<id>`), a few percent under.
- Zoho has no idempotency key, so a create/update/delete that may have reached Zoho (timeout, dropped connection,
  5xx) is never re-sent: the core raises `uncertain`, and the sink searches reference_number before writing again.
- Zoho's answers carry `code` (0: success): a 2xx with another code is a refusal (zoho.com/books/api/v3/errors).
- The daily cap is never retried: a 429 whose message names the day ("API usage limit exceeded" is all Zoho
  documents for the cap, zoho.com/books/api/v3/errors, with no code of its own; the per-day numbers come from Zoho's
  KB "per-day API limit") marks the tenant's organization spent in this process for the (UTC) day (no further
  request is sent for it) and raises `deferred`. Any other 429 is the per-minute limit: paced and retried.
- Listings page with `page`/`per_page` (at most 200) until `page_context.has_more_page` is false.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from ledger_pipeline.ratelimit import Priority, Rule, scaled_rules
from ledger_pipeline.systems.core import (
    ApiClient,
    ApiError,
    Call,
    Dialect,
    Resolution,
    TokenSource,
    VaultTokenAuth,
    path,
)
from ledger_pipeline.systems.paging import PageNumberPaging, records

PER_MINUTE = 100  # requests per minute per organization
MAX_PER_PAGE = 200


class ZohoError(ApiError):
    """A failed Zoho call; `code` and `zoho_message` are Zoho's own from the answer's body (None when absent)."""

    @property
    def code(self) -> int | None:
        return self.body.get("code") if isinstance(self.body, dict) else None

    @property
    def zoho_message(self) -> str | None:
        if isinstance(self.body, dict):
            return None if self.body.get("message") is None else str(self.body["message"])
        return self.body if isinstance(self.body, str) and self.body else None


def is_daily_limit(status: int, code: Any, message: str) -> bool:
    """Zoho's daily cap, told apart from the per-minute limit (both are HTTP 429, with no documented code of their
    own): by the message naming the day."""
    text = message.lower()
    return status == 429 and ("daily" in text or "per day" in text or "for the day" in text or "tomorrow" in text)


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


class ZohoDialect(Dialect):
    """Zoho's way of saying things. `token`: (tenant, stale) -> live token (the vault); `details`: tenant ->
    (company_id, extra) of the stored connection (extra holds api_domain and organization_id); `scale`: the pacing
    clock."""

    system, title, error = "zoho", "Zoho", ZohoError

    def __init__(self, default_api_base: str, token: TokenSource, details: Callable[[str], tuple[str | None, dict]],
                 scale: float = 1.0, headroom: float = 0.95):
        super().__init__(default_api_base)
        self.token, self.details, self.scale, self.headroom = token, details, scale, headroom
        self.spent: dict[str, tuple[str, str]] = {}  # organization_id -> (UTC day, Zoho's message)
        self._where: dict[str, tuple[str, str]] = {}

    def where(self, tenant: str) -> tuple[str, str]:
        """(API base, organization_id) of the tenant's connection (NeedsReauth when it is not connected)."""
        if tenant not in self._where:
            company_id, extra = self.details(tenant)
            org = str(extra.get("organization_id") or company_id or "")
            domain = str(extra.get("api_domain") or "").rstrip("/")
            if not org:
                raise ZohoError("rejected", tenant, "the Zoho connection has no organization_id: reconnect it with "
                                f"`ledger-pipeline connect --tenant {tenant} --system zoho`", system=self.system)
            self._where[tenant] = (f"{domain}/books/v3" if domain else self.base, org)
        return self._where[tenant]

    def base_url(self, tenant: str) -> str:
        return self.where(tenant)[0]

    def auth(self, tenant: str) -> httpx.Auth:
        return VaultTokenAuth(tenant, self.token, scheme="Zoho-oauthtoken")

    def prepare(self, call: Call) -> Call:
        org = self.where(call.tenant)[1]
        spent = self.spent.get(org)
        if spent and spent[0] == _today():
            raise ZohoError("deferred", call.tenant, f"Zoho's daily API limit for this organization is spent "
                                                     f"({spent[1]}): deferred to the next run", 429,
                            {"message": spent[1]}, system=self.system)
        return replace(call, params={**(call.params or {}), "organization_id": org})

    def rules(self, tenant: str, limit_key: Any) -> list[Rule]:
        return scaled_rules(f"zoho-org:{self.where(tenant)[1]}", [(PER_MINUTE, 60)], self.scale, self.headroom)

    def message(self, data: Any) -> str:
        if isinstance(data, dict):
            return f"{data.get('message', '')} (code {data.get('code')})"
        return super().message(data)

    def classify(self, response: httpx.Response, data: Any) -> Resolution:
        status = response.status_code
        body = data if isinstance(data, dict) else {}
        if 200 <= status < 300 and body.get("code") not in (0, None):
            return Resolution.reject("rejected")  # 2xx with a non-zero code: Zoho said no
        message = str(body.get("message") or data or "")
        if is_daily_limit(status, body.get("code"), message):
            org = response.request.url.params.get("organization_id", "")
            self.spent[org] = (_today(), message)
            return Resolution.reject("deferred", f"Zoho's daily API limit for this organization is spent "
                                                 f"({message}): deferred to the next run")
        return super().classify(response, data)


class ZohoClient(ApiClient):
    """Zoho Books' endpoints for every tenant over one ApiCore (with a ZohoDialect)."""

    def request(self, tenant_id: str, method: str, url: str, body: Any = None, params: dict | None = None,
                priority: Priority | None = None) -> tuple[int, Any]:
        """(status, parsed body). Raises ZohoError."""
        answer = self.core.call(tenant_id, method, url, body=body, params=params, priority=priority)
        return answer.status, answer.data

    def _all(self, tenant_id: str, url: str, items: str, params: dict, per_page: int,
             priority: Priority | None = None) -> list[dict]:
        paging = PageNumberPaging(size=per_page, has_more="page_context.has_more_page")
        return list(records(self.core, tenant_id, url, paging, items=items, params=params, priority=priority))

    # -- endpoints --------------------------------------------------------------------------------------------
    def chart_of_accounts(self, tenant_id: str, per_page: int = MAX_PER_PAGE,
                          priority: Priority | None = None) -> list[dict]:
        """Every account, inactive included (filter_by=AccountType.All), every page."""
        return self._all(tenant_id, "/chartofaccounts", "chartofaccounts", {"filter_by": "AccountType.All"},
                         per_page, priority)

    def list_journals(self, tenant_id: str, params: dict, per_page: int = MAX_PER_PAGE) -> list[dict]:
        """Journal summaries (no line items) matching `params`, every page."""
        return self._all(tenant_id, "/journals", "journals", params, per_page)

    def get_journal(self, tenant_id: str, journal_id: str) -> dict | None:
        """The journal, or None when Zoho does not have it (404: "Journal does not exist.", code 1002)."""
        try:
            return self.request(tenant_id, "GET", path("journals", journal_id))[1]["journal"]
        except ZohoError as exc:
            if exc.kind == "not_found":
                return None
            raise

    def create_journal(self, tenant_id: str, body: dict) -> dict:
        return self.request(tenant_id, "POST", "/journals", body)[1]["journal"]

    def update_journal(self, tenant_id: str, journal_id: str, body: dict) -> dict:
        return self.request(tenant_id, "PUT", path("journals", journal_id), body)[1]["journal"]

    def delete_journal(self, tenant_id: str, journal_id: str) -> None:
        self.request(tenant_id, "DELETE", path("journals", journal_id))
