"""The Jurnal API as a dialect of the shared request core (ledger_pipeline.systems.core), and its endpoints as thin
calls to `ApiCore.call`.

- Two ways in, chosen per connection (`Credentials`, systems/jurnal/auth.py): the OAuth2 partner API (Bearer on
  `/partner/core/api/v1`) or Mekari's API gateway (HMAC-signed requests on `/public/jurnal/api/v1`). Paths and
  bodies are the same on both (Mekari's Swagger "Jurnal API Doc" 2.0.0, shared/reference/specs/). `JurnalAuth`
  signs each request as sent (the request line with its query, the body's Digest, the Date from `clock`).
- Pacing: a sliding-window limit per token (30/min, 1,800/h) and per source IP (40/min, 2,500/h), a few percent
  under each (`jurnal_rules`), so 429s are rare rather than the pacing mechanism. The limiter's state is shared by
  every process on the host (ledger_pipeline.ratelimit), per source address (LEDGER_SOURCE_ADDRESS, which the HTTP
  client binds); posting requests go before background reads (chart and drift reads set `priority="background"`).
- Retries (the core): reads on 429, 5xx and transport errors; any request on 429 or a connect error (nothing
  reached Jurnal). A write that may have reached Jurnal (timeout, dropped connection, 5xx) is never blindly resent
  (Jurnal has no idempotency key: custom_id is checked, not replayed): it raises `kind="uncertain"`, and the
  posting sink looks the entry up first.
- 401: OAuth refreshes the token once and re-sends once; a refused grant is `kind="needs_reauth"`. HMAC: a refused
  Date (clock skew over 300 s) is this host's clock problem (retryable at once, named); any other refusal means the
  credentials are wrong or revoked: `needs_reauth` (the vault marks the connection).
- A 404 is "not found", except Kong's "no Route matched" (Mekari's gateway has no such path): a wrong base URL,
  rejected and named.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any

import httpx

from ledger_pipeline.ratelimit import Priority, Rule, address_key, scaled_rules
from ledger_pipeline.systems.core import ApiClient, ApiError, Call, Dialect, Resolution, path
from ledger_pipeline.systems.jurnal.auth import Credentials
from ledger_pipeline.systems.paging import PageNumberPaging, records

PAGE_SIZE = 100  # journal_entries per page


class JurnalError(ApiError):
    """A failed Jurnal call (`body`: Jurnal's answer, e.g. a field map of refusals)."""


@dataclass(frozen=True)
class JurnalLimits:
    """Jurnal's documented limits (Mekari Jurnal API rate limits): per token and per source IP, and the headroom we
    keep under each."""

    per_token_minute: int = 30
    per_token_hour: int = 1800
    per_ip_minute: int = 40
    per_ip_hour: int = 2500
    headroom: float = 0.95  # stay this far under each limit (clock skew, in-flight requests)


Limits = JurnalLimits  # 0.2.0's name, kept for one release (until 0.4.0)


def jurnal_rules(tenant: str, limits: JurnalLimits = JurnalLimits(), scale: float = 1.0,
                 source_address: str | None = None) -> list[Rule]:
    """Jurnal's four limits for one request of `tenant`: per source IP (`ip:<address>`, minute and hour) and per
    token (`token:<tenant>`, minute and hour), `headroom` under each, time divided by `scale`."""
    lim, h = limits, limits.headroom
    return [*scaled_rules(f"ip:{address_key(source_address)}", [(lim.per_ip_minute, 60), (lim.per_ip_hour, 3600)],
                          scale, h),
            *scaled_rules(f"token:{tenant}", [(lim.per_token_minute, 60), (lim.per_token_hour, 3600)], scale, h)]


# (tenant_id, the credentials just refused with a 401 or None) -> live credentials; raises NeedsReauth when there are
# none (revoked grant, refused HMAC credentials) and TokenEndpointError when a token refresh failed.
CredentialResolver = Callable[[str, Credentials | None], Credentials]
CLOCK_SKEW_WORDS = ("x-date", "date header", "clock skew")  # the gateway's 401 for a Date outside its 300 s skew


class JurnalAuth(httpx.Auth):
    """One tenant's credentials on each request: Bearer, or Mekari's HMAC signature over the request as sent. On a
    401 (not a refused Date) asks the resolver once more with the refused credentials (OAuth: refreshed; HMAC:
    NeedsReauth) and re-sends once."""

    requires_request_body = True  # the HMAC Digest covers the body
    requires_response_body = True  # a refused Date is told by the 401's words

    def __init__(self, tenant: str, credentials: CredentialResolver, clock: Callable[[], float]):
        self.tenant, self.credentials, self.clock = tenant, credentials, clock

    def _sign(self, request: httpx.Request, creds: Credentials) -> None:
        target = request.url.raw_path.decode("ascii")  # path?query exactly as sent: what an HMAC signature covers
        request.headers.update(creds.headers(request.method, target, request.content, self.clock()))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        creds = self.credentials(self.tenant, None)
        self._sign(request, creds)
        response = yield request
        if response.status_code == 401 and not (creds.mode == "hmac" and _clock_refused(response)):
            self._sign(request, self.credentials(self.tenant, creds))
            yield request

    def __repr__(self) -> str:
        return f"JurnalAuth(tenant={self.tenant!r})"


class JurnalDialect(Dialect):
    """Jurnal's way of saying things. `credentials`: the tenant's live credentials (session.credential_resolver);
    `base_of`: tenant -> API base of its connection's mode (partner API or gateway; NeedsReauth when not
    connected); `clock`: dates HMAC-signed requests (seconds since the epoch)."""

    system, title, error = "jurnal", "Jurnal", JurnalError

    def __init__(self, credentials: CredentialResolver, base_of: Callable[[str], str],
                 limits: JurnalLimits = JurnalLimits(), scale: float = 1.0, source_address: str | None = None,
                 clock: Callable[[], float] = time.time):
        super().__init__()
        self.credentials, self.base_of, self.clock = credentials, base_of, clock
        self.limits, self.scale, self.source_address = limits, scale, source_address

    def auth(self, tenant: str) -> httpx.Auth:
        return JurnalAuth(tenant, self.credentials, lambda: self.clock())

    def prepare(self, call: Call) -> Call:
        return replace(call, url=self.base_of(call.tenant).rstrip("/") + call.url)

    def rules(self, tenant: str, limit_key: Any) -> list[Rule]:
        return jurnal_rules(tenant, self.limits, self.scale, self.source_address)

    def message(self, data: Any) -> str:
        return jurnal_message(data)

    def classify(self, response: httpx.Response, data: Any) -> Resolution:
        status = response.status_code
        if status == 401 and _clock_refused(response):
            return Resolution.reject("retryable", f"Mekari refused the request's Date header ({response.text[:200]})"
                                                  ": this host's clock is more than 300 s off; fix its time (NTP) "
                                                  "and re-run")
        if status == 404 and _no_route(data):  # the gateway has no such route: a wrong base URL, not a missing entry
            return Resolution.reject("rejected", f"{jurnal_message(data)} (the API base URL is wrong: check "
                                                 "JURNAL_API_BASE_URL / JURNAL_GATEWAY_BASE_URL)")
        return super().classify(response, data)


class JurnalClient(ApiClient):
    """Jurnal's endpoints for every tenant over one ApiCore (with a JurnalDialect); `clock` dates HMAC-signed
    requests."""

    @property
    def clock(self) -> Callable[[], float]:
        return self.core.dialect.clock  # type: ignore[attr-defined]

    @clock.setter
    def clock(self, value: Callable[[], float]) -> None:
        self.core.dialect.clock = value  # type: ignore[attr-defined]

    def request(self, tenant_id: str, method: str, url: str, body: Any = None, params: dict | None = None,
                priority: Priority | None = None) -> tuple[int, Any]:
        """(status, parsed JSON) of a 2xx answer; `url` is relative to the API base (`path("journal_entries",
        ref)`). Raises JurnalError (kind retryable, uncertain, rejected, not_found, needs_reauth)."""
        answer = self.core.call(tenant_id, method, url, body=body, params=params, priority=priority)
        return answer.status, answer.data

    # -- endpoints --------------------------------------------------------------------------------------------
    def accounts(self, tenant_id: str, include_archive: bool = True) -> list[dict]:
        _, data = self.request(tenant_id, "GET", "/accounts",
                               params={"include_archive": str(include_archive).lower()})
        return data["accounts"]

    def get_entry(self, tenant_id: str, ref: str | int) -> dict | None:
        """The entry whose Jurnal id or custom_id is `ref` (Swagger: "Journal Entry ID or Custom ID"), or None when
        Jurnal answers 404: a 404 is "not found", never "unreachable" (transport failures raise)."""
        try:
            _, data = self.request(tenant_id, "GET", path("journal_entries", ref))
        except JurnalError as exc:
            if exc.kind == "not_found":
                return None
            raise
        return data["journal_entry"] if isinstance(data, dict) and "journal_entry" in data else data

    def list_entries(self, tenant_id: str, start_date: str, end_date: str) -> list[dict]:
        """Every entry dated in [start_date, end_date] (DD-MM-YYYY), all pages of 100 (until `total_pages`)."""
        paging = PageNumberPaging(size=PAGE_SIZE, size_param="page_size", total_pages="total_pages")
        return list(records(self.core, tenant_id, "/journal_entries", paging, items="journal_entries",
                            params={"start_date": start_date, "end_date": end_date}))

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
        _, data = self.request(tenant_id, "PATCH", path("journal_entries", remote_id), {"journal_entry": entry})
        return data["journal_entry"]

    def delete_entry(self, tenant_id: str, remote_id: str | int) -> None:
        self.request(tenant_id, "DELETE", path("journal_entries", remote_id))


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
    return "" if data is None else str(data)[:500]
