"""The QuickBooks Online accounting-API client (httpx): paced and bounded per realm, retried where safe.

- Every call goes to `<base>/v3/company/{realmId}/...` with `minorversion=75` and `Authorization: Bearer`.
- Pacing (ledger_pipeline.ratelimit, shared by every process on the host): 500 requests/min per realm, a batch
  counting one request per item ("each item is metered like a separate call"), and 40 batch calls/min per realm,
  each a few percent under the limit. Concurrency: at most `max_concurrent` (10) requests in flight per realm in this
  process (a semaphore per realm), whatever the caller does with threads.
- Retries (stamina, exponential backoff with jitter): reads on 429, 5xx and transport errors; writes too, because
  every create/update/delete carries a `requestid` that is stable for one intended write, so QuickBooks answers a
  replay with the original response and changes nothing. A write sent without a requestid is retried only when
  nothing reached QuickBooks (connect error, 429); an unknown outcome raises `kind="uncertain"`.
- 401: refresh the token once and retry once; a refused grant becomes `NeedsReauth`; a failing token endpoint is
  this tenant's retryable problem.
- Faults are read in each shape QuickBooks answers with (`fault_errors`): the data services' `Fault.Error[]`, the
  gateway's lower-case `fault.error[]` on 401/403, and XML.
- Realm and entry ids go into the path as single percent-encoded segments; a look-up answered 610 or 404 is "not
  found".
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote as url_quote

import httpx
import stamina

from ledger_pipeline.money import dumps_exact, loads_exact
from ledger_pipeline.ratelimit import HostLimiter, Priority, Rule, host_limiter_at, scaled_rules, state_path
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.vault import TokenEndpointError
from ledger_pipeline.systems.http import http_client

Kind = Literal["retryable", "uncertain", "rejected"]
MINOR_VERSION = "75"
MAX_RESULTS = 1000


class QuickBooksError(Exception):
    def __init__(self, kind: Kind, tenant_id: str, message: str, status: int | None = None, body: Any = None):
        super().__init__(f"tenant {tenant_id}: {message}")
        self.kind, self.tenant_id, self.status, self.body, self.message = kind, tenant_id, status, body, message

    @property
    def errors(self) -> list[dict]:
        """The Fault's errors, normalised to `{Message, Detail, code, element}` (possibly empty)."""
        return fault_errors(self.body)

    @property
    def code(self) -> str:
        return str(self.errors[0].get("code", "")) if self.errors else ""

    @property
    def text(self) -> str:
        return fault_text(self.body)


# An XML fault (Intuit's gateway answers some 401s in XML whatever Accept says: routablehq/python-quickbooks#120,
# intuit/oauth-jsclient#91): <Fault type="..."><Error code="100"><Message>..</Message><Detail>..</Detail></Error>
_XML_ERROR = re.compile(r'<Error\s+code="(?P<code>[^"]*)"\s*>\s*(?:<Message>(?P<message>.*?)</Message>)?\s*'
                        r'(?:<Detail>(?P<detail>.*?)</Detail>)?', re.S)


def fault_errors(body: Any) -> list[dict]:
    """The errors of a QuickBooks fault in whichever of its shapes it came, as `{Message, Detail, code, element}`.

    - Data-services faults: `{"Fault": {"Error": [{"Message", "Detail", "code", "element"}], "type"}, "time"}`
      (developer.intuit.com, "Handling common errors").
    - The gateway's 401/403: all lower case, `{"fault": {"error": [{"message", "detail", "code": "3200", "element"}],
      "type": "AUTHENTICATION"}, ...}` (bodies quoted in routablehq/python-quickbooks#250 and
      intuit/oauth-jsclient#2).
    - XML `<IntuitResponse><Fault><Error code=..>` (python-quickbooks#120).
    Each error's code is a string ("" when absent)."""
    if isinstance(body, str):
        return [{"Message": m["message"] or "", "Detail": m["detail"] or "", "code": m["code"], "element": ""}
                for m in _XML_ERROR.finditer(body)]
    if not isinstance(body, dict):
        return []
    fault = body.get("Fault") if isinstance(body.get("Fault"), dict) else body.get("fault")
    if not isinstance(fault, dict):
        return []
    errors = fault.get("Error") if fault.get("Error") is not None else fault.get("error")
    out = []
    for e in errors if isinstance(errors, list) else []:
        if not isinstance(e, dict):
            continue
        low = {str(k).lower(): v for k, v in e.items()}
        out.append({"Message": str(low.get("message") or ""), "Detail": str(low.get("detail") or ""),
                    "code": str(low.get("code") or ""), "element": str(low.get("element") or "")})
    return out


def fault_text(body: Any) -> str:
    """QuickBooks' own words from a fault (any of its shapes): 'Message: Detail (code)' per error."""
    errors = fault_errors(body)
    if errors:
        return "; ".join(f"{e['Message']}: {e['Detail']} (code {e['code']})".strip() for e in errors)
    return str(body)[:300]


class _Retry(Exception):
    def __init__(self, error: QuickBooksError):
        self.error = error


@dataclass(frozen=True)
class Limits:
    per_realm_minute: int = 500
    batch_per_realm_minute: int = 40
    max_concurrent: int = 10
    headroom: float = 0.95


class QuickBooksLimiter:
    """QuickBooks' per-realm minute limits as rules on the host-shared limiter."""

    def __init__(self, host: HostLimiter, limits: Limits = Limits(), scale: float = 1.0):
        self.host, self.limits, self.scale = host, limits, scale
        self.waited = 0.0
        self._lock = threading.Lock()

    def rules(self, realm: str, batch: bool) -> list[Rule]:
        lim, s, h = self.limits, self.scale, self.limits.headroom
        rules = scaled_rules(f"qbo-realm:{realm}", [(lim.per_realm_minute, 60)], s, h)
        if batch:
            rules += scaled_rules(f"qbo-batch:{realm}", [(lim.batch_per_realm_minute, 60)], s, h)
        return rules

    def acquire(self, realm: str, items: int = 1, batch: bool = False, priority: Priority = "posting") -> float:
        """One slot per metered item (a batch of n items takes n request slots and one batch slot)."""
        waited = self.host.acquire(self.rules(realm, batch), priority)
        for _ in range(max(0, items - 1)):
            waited += self.host.acquire(self.rules(realm, False), priority)
        with self._lock:
            self.waited += waited
        return waited


def host_limiter(settings: Settings, scale: float, limits: Limits = Limits()) -> QuickBooksLimiter:
    return QuickBooksLimiter(host_limiter_at(state_path(settings.lock_dir, settings.source_address)), limits, scale)



class QuickBooksClient:
    """One client for every tenant: pooled HTTP, the limiter, per-realm concurrency, the vault's tokens."""

    def __init__(self, base_url: str, access_token: Callable[[str, str | None], str],
                 realm_of: Callable[[str], str], limiter: QuickBooksLimiter, http: httpx.Client | None = None,
                 attempts: int = 6, backoff_initial: float = 0.5, backoff_max: float = 30.0, timeout: float = 30.0,
                 source_address: str | None = None, priority: Priority = "posting", page_size: int = MAX_RESULTS):
        self.base_url = base_url.rstrip("/")
        self._access_token, self._realm_of = access_token, realm_of
        self.limiter = limiter
        self.http = http or http_client(source_address, timeout)
        self.priority: Priority = priority
        self.attempts, self.backoff_initial, self.backoff_max = attempts, backoff_initial, backoff_max
        self.page_size = min(MAX_RESULTS, page_size)  # MAXRESULTS per query page (QuickBooks caps it at 1000)
        self.requests = 0
        self._lock = threading.Lock()
        self._realms: dict[str, str] = {}
        self._gates: dict[str, threading.BoundedSemaphore] = {}

    def close(self) -> None:
        self.http.close()

    def realm(self, tenant_id: str) -> str:
        with self._lock:
            if tenant_id in self._realms:
                return self._realms[tenant_id]
        realm = self._realm_of(tenant_id)
        with self._lock:
            self._realms[tenant_id] = realm
        return realm

    def _gate(self, realm: str) -> threading.BoundedSemaphore:
        with self._lock:
            gate = self._gates.get(realm)
            if gate is None:
                gate = self._gates[realm] = threading.BoundedSemaphore(self.limiter.limits.max_concurrent)
            return gate

    # -- core -------------------------------------------------------------------------------------------------
    def request(self, tenant_id: str, method: str, path: str, body: Any = None, params: dict | None = None,
                request_id: str | None = None, items: int = 1, batch: bool = False) -> Any:
        is_write = method != "GET"
        params = {**(params or {}), "minorversion": MINOR_VERSION}
        if request_id:
            params["requestid"] = request_id
        try:
            for attempt in stamina.retry_context(on=_Retry, attempts=self.attempts,
                                                 wait_initial=self.backoff_initial, wait_max=self.backoff_max,
                                                 wait_jitter=self.backoff_initial, timeout=None):
                with attempt:
                    return self._once(tenant_id, method, path, body, params, is_write, request_id is not None,
                                      items, batch)
        except _Retry as exc:
            err = exc.error
            if is_write and (err.kind == "uncertain" or (err.status or 0) >= 500):
                # replayed with the same requestid and still no answer: the write may or may not be there
                raise QuickBooksError("uncertain", tenant_id, err.message, err.status, err.body) from None
            raise err from None
        raise AssertionError("unreachable")

    def _once(self, tenant_id: str, method: str, path: str, body: Any, params: dict, is_write: bool,
              idempotent: bool, items: int, batch: bool) -> Any:
        realm = self.realm(tenant_id)
        token = self._token(tenant_id, None)
        url = f"{self.base_url}/v3/company/{segment(realm)}{path}"
        content = dumps_exact(body).encode() if body is not None else None
        for refreshed in (False, True):
            self.limiter.acquire(realm, items, batch, self.priority)
            with self._gate(realm):
                with self._lock:
                    self.requests += 1
                try:
                    resp = self.http.request(method, url, params=params, content=content, headers={
                        "Authorization": f"Bearer {token}", "Accept": "application/json",
                        **({"Content-Type": "application/json"} if content is not None else {})})
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    raise _Retry(QuickBooksError("retryable", tenant_id,
                                                 f"cannot connect to QuickBooks ({type(exc).__name__})")) from exc
                except httpx.TransportError as exc:
                    err = QuickBooksError("uncertain" if is_write else "retryable", tenant_id,
                                          f"{method} {path}: {type(exc).__name__}; the outcome is unknown")
                    if is_write and not idempotent:
                        raise err from exc
                    raise _Retry(err) from exc  # a read, or a write whose requestid makes the replay safe
            if resp.status_code == 401 and not refreshed:
                token = self._token(tenant_id, token)  # refresh once, retry once
                continue
            break
        return self._classify(tenant_id, method, path, resp, is_write, idempotent)

    def _token(self, tenant_id: str, stale: str | None) -> str:
        try:
            return self._access_token(tenant_id, stale)
        except TokenEndpointError as exc:
            raise _Retry(QuickBooksError("retryable", tenant_id, str(exc))) from exc

    @staticmethod
    def _classify(tenant_id: str, method: str, path: str, resp: httpx.Response, is_write: bool,
                  idempotent: bool) -> Any:
        status = resp.status_code
        try:
            data = loads_exact(resp.content) if resp.content else None
        except ValueError:
            data = resp.text[:300]
        if status < 300:
            return data
        what = f"{method} {path} -> {status}: {fault_text(data)}"
        if status in (401, 429):  # not processed: safe to send again
            raise _Retry(QuickBooksError("retryable", tenant_id, what, status, data))
        if status >= 500:
            if is_write and not idempotent:
                raise QuickBooksError("uncertain", tenant_id, what + "; the write may have been applied", status, data)
            raise _Retry(QuickBooksError("retryable", tenant_id, what, status, data))
        raise QuickBooksError("rejected", tenant_id, what, status, data)

    # -- endpoints --------------------------------------------------------------------------------------------
    def query(self, tenant_id: str, text: str) -> dict:
        return self.request(tenant_id, "GET", "/query", params={"query": text}).get("QueryResponse") or {}

    def query_all(self, tenant_id: str, entity: str, text: str, page_size: int | None = None) -> list[dict]:
        """Every row of `text` (no paging clause), page by page until a short page."""
        size = min(MAX_RESULTS, page_size or self.page_size)
        out, start = [], 1
        while True:
            rows = self.query(tenant_id, f"{text} STARTPOSITION {start} MAXRESULTS {size}").get(entity) or []
            out += rows
            if len(rows) < size:
                return out
            start += size

    def accounts(self, tenant_id: str, page_size: int | None = None) -> list[dict]:
        """The whole chart, inactive accounts included (a plain Account query returns active ones only)."""
        return self.query_all(tenant_id, "Account", "select * from Account where Active in (true, false)", page_size)

    def get_entry(self, tenant_id: str, entry_id: str) -> dict | None:
        try:
            return self.request(tenant_id, "GET", f"/journalentry/{segment(entry_id)}")["JournalEntry"]
        except QuickBooksError as exc:
            if exc.status == 400 and exc.code == "610" or exc.status == 404:
                return None  # "Object Not Found" (610), or a plain 404: not there
            raise

    def entries_by_doc_number(self, tenant_id: str, doc_number: str) -> list[dict]:
        return self.query_all(tenant_id, "JournalEntry",
                              f"select * from JournalEntry where DocNumber = '{quote(doc_number)}'")

    def entries_between(self, tenant_id: str, first: str, last: str) -> list[dict]:
        """Entries dated first..last (ISO, inclusive)."""
        return self.query_all(tenant_id, "JournalEntry", f"select * from JournalEntry where TxnDate >= "
                                                         f"'{quote(first)}' and TxnDate <= '{quote(last)}'")

    def create_entry(self, tenant_id: str, entry: dict, request_id: str) -> dict:
        return self.request(tenant_id, "POST", "/journalentry", entry, request_id=request_id)["JournalEntry"]

    def update_entry(self, tenant_id: str, entry: dict, request_id: str) -> dict:
        return self.request(tenant_id, "POST", "/journalentry", entry, request_id=request_id)["JournalEntry"]

    def delete_entry(self, tenant_id: str, entry_id: str, sync_token: str, request_id: str) -> None:
        self.request(tenant_id, "POST", "/journalentry", {"Id": entry_id, "SyncToken": sync_token},
                     params={"operation": "delete"}, request_id=request_id)

    def batch(self, tenant_id: str, items: list[dict], request_id: str) -> list[dict]:
        """BatchItemRequest[] (at most 30) -> a BatchItemResponse per item, in bId order of the request."""
        data = self.request(tenant_id, "POST", "/batch", {"BatchItemRequest": items}, request_id=request_id,
                            items=len(items), batch=True)
        by_bid = {str(r.get("bId")): r for r in data.get("BatchItemResponse") or []}
        return [by_bid.get(str(item["bId"]), {"bId": item["bId"], "Fault": {
            "Error": [{"Message": "no BatchItemResponse for this bId", "code": "missing"}]}}) for item in items]


def segment(value: object) -> str:
    """One URL path segment: every reserved character percent-encoded (a realm or an entry id is data, not path)."""
    return url_quote(str(value), safe="")


def quote(value: str) -> str:
    """A string literal inside a QuickBooks query (backslash-escaped quotes)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
