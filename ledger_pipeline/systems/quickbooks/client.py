"""The QuickBooks Online accounting API as a dialect of the shared request core (ledger_pipeline.systems.core), and
its endpoints as thin calls to `ApiCore.call`.

- Where: every call goes to `<base>/v3/company/{realmId}/...` (the realm one percent-encoded segment) with
  `minorversion=75` and `Authorization: Bearer <token>` (the vault's; a 401 refreshes it once and re-sends).
- Pacing (the host-shared limiter): 500 requests/min per realm, a batch counting one request per item ("each item is
  metered like a separate call") plus one of 40 batch calls/min per realm, each a few percent under the limit
  (`QuickBooksLimits`). Concurrency: at most `max_concurrent` (10) requests in flight per realm in this process (a
  semaphore per realm), whatever the caller does with threads.
- Exactly once: every create/update/delete carries a `requestid` stable for one intended write, so QuickBooks
  answers a replay with the original response and changes nothing: the core re-sends such writes on 5xx and
  transport errors (replay-safe); when the attempts run out after one may have landed, `kind="uncertain"`.
- A token QuickBooks refuses again right after its refresh is retried and ends `retryable`, never `needs_reauth`:
  Intuit's token endpoint says when a grant is gone (invalid_grant, which the vault records), and the gateway's 401
  does not (its bodies: routablehq/python-quickbooks#250, intuit/oauth-jsclient#91).
- Faults are read in each shape QuickBooks answers with (`fault_errors`): the data services' `Fault.Error[]`, the
  gateway's lower-case `fault.error[]` on 401/403, and XML. A look-up answered 610 ("Object Not Found") or 404 is
  `kind="not_found"`; a 610 on a write names a missing account (the sink says "account").
- Queries page with `STARTPOSITION` (1-based) / `MAXRESULTS` (at most 1000) inside the query text.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx

from ledger_pipeline.ratelimit import Rule, scaled_rules
from ledger_pipeline.systems.core import (
    ApiClient,
    ApiCore,
    ApiError,
    Call,
    Dialect,
    Resolution,
    TokenSource,
    VaultTokenAuth,
    path,
)
from ledger_pipeline.systems.paging import OffsetPaging, records

MINOR_VERSION = "75"
MAX_RESULTS = 1000


class QuickBooksError(ApiError):
    """A failed QuickBooks call; `errors`/`code`/`text` read QuickBooks' fault from the body."""

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
    return "" if body is None else str(body)[:300]


@dataclass(frozen=True)
class QuickBooksLimits:
    """QuickBooks' documented per-realm limits (developer.intuit.com, "Rate limits and throttles")."""

    per_realm_minute: int = 500
    batch_per_realm_minute: int = 40
    max_concurrent: int = 10
    headroom: float = 0.95


class QuickBooksDialect(Dialect):
    """QuickBooks' way of saying things. `token`: (tenant, stale) -> live token (the vault, refreshing through
    Intuit's token endpoint); `realm_of`: tenant -> realmId (may raise NeedsReauth); `scale`: the pacing clock."""

    system, title, error = "quickbooks", "QuickBooks", QuickBooksError

    def __init__(self, base_url: str, token: TokenSource, realm_of: Callable[[str], str], scale: float = 1.0,
                 limits: QuickBooksLimits = QuickBooksLimits()):
        super().__init__(base_url)
        self.token, self.realm_of, self.scale, self.limits = token, realm_of, scale, limits
        self._lock = threading.Lock()
        self._realms: dict[str, str] = {}
        self._gates: dict[str, threading.BoundedSemaphore] = {}

    def realm(self, tenant: str) -> str:
        with self._lock:
            if tenant in self._realms:
                return self._realms[tenant]
        realm = self.realm_of(tenant)
        with self._lock:
            self._realms[tenant] = realm
        return realm

    def auth(self, tenant: str) -> httpx.Auth:
        return VaultTokenAuth(tenant, self.token)

    def prepare(self, call: Call) -> Call:
        params = {**(call.params or {}), "minorversion": MINOR_VERSION}
        if call.idempotency_key:
            params["requestid"] = call.idempotency_key
        return replace(call, url=path("v3", "company", self.realm(call.tenant)) + call.url, params=params)

    def rules(self, tenant: str, limit_key: Any) -> list[Rule]:
        """`limit_key`: the number of items of a batch call (None: not a batch)."""
        lim, realm = self.limits, self.realm(tenant)
        rules = scaled_rules(f"qbo-realm:{realm}", [(lim.per_realm_minute, 60)], self.scale, lim.headroom)
        if limit_key:
            rules += scaled_rules(f"qbo-batch:{realm}", [(lim.batch_per_realm_minute, 60)], self.scale, lim.headroom)
        return rules

    def slots(self, call: Call) -> list[list[Rule]]:
        """One request slot per metered item; a batch of n items: n request slots and one batch slot."""
        return [self.rules(call.tenant, call.limit_key)] + [self.rules(call.tenant, None)] * ((call.limit_key or 1) - 1)

    def in_flight(self, call: Call) -> contextlib.AbstractContextManager:
        realm = self.realm(call.tenant)
        with self._lock:
            gate = self._gates.get(realm)
            if gate is None:
                gate = self._gates[realm] = threading.BoundedSemaphore(self.limits.max_concurrent)
        return gate

    def message(self, data: Any) -> str:
        return fault_text(data)

    def classify(self, response: httpx.Response, data: Any) -> Resolution:
        status = response.status_code
        if status == 401:  # refused right after a refresh: not processed; see the module docstring
            return Resolution.retry(f"{fault_text(data)} (refused again after a token refresh)", unprocessed=True)
        if status == 400 and response.request.method == "GET" and any(e["code"] == "610" for e in fault_errors(data)):
            return Resolution.reject("not_found")  # "Object Not Found" on a look-up
        return super().classify(response, data)


class QuickBooksClient(ApiClient):
    """QuickBooks' endpoints for every tenant over one ApiCore (with a QuickBooksDialect)."""

    def __init__(self, core: ApiCore, page_size: int = MAX_RESULTS):
        super().__init__(core)
        self.page_size = min(MAX_RESULTS, page_size)  # MAXRESULTS per query page (QuickBooks caps it at 1000)

    def realm(self, tenant_id: str) -> str:
        """The tenant's realmId (raises NeedsReauth when none is stored)."""
        return self.core.dialect.realm(tenant_id)  # type: ignore[attr-defined]

    def request(self, tenant_id: str, method: str, url: str, body: Any = None, params: dict | None = None,
                request_id: str | None = None, items: int | None = None) -> Any:
        """The answer's body; `request_id` makes a write replay-safe; `items`: a batch's size. Raises
        QuickBooksError."""
        return self.core.call(tenant_id, method, url, body=body, params=params, idempotency_key=request_id,
                              limit_key=items).data

    # -- endpoints --------------------------------------------------------------------------------------------
    def query(self, tenant_id: str, text: str) -> dict:
        return self.request(tenant_id, "GET", "/query", params={"query": text}).get("QueryResponse") or {}

    def query_all(self, tenant_id: str, entity: str, text: str, page_size: int | None = None) -> list[dict]:
        """Every row of `text` (no paging clause), page by page until a short page."""
        paging = OffsetPaging(limit=min(MAX_RESULTS, page_size or self.page_size), limit_param="MAXRESULTS",
                              offset_param="STARTPOSITION", start=1)

        def where(params: dict | None, body: Any, f: dict) -> tuple[dict, Any]:
            return {"query": f"{text} STARTPOSITION {f['STARTPOSITION']} MAXRESULTS {f['MAXRESULTS']}"}, body

        return list(records(self.core, tenant_id, "/query", paging, where=where,
                            items=lambda d: ((d or {}).get("QueryResponse") or {}).get(entity)))

    def accounts(self, tenant_id: str, page_size: int | None = None) -> list[dict]:
        """The whole chart, inactive accounts included (a plain Account query returns active ones only)."""
        return self.query_all(tenant_id, "Account", "select * from Account where Active in (true, false)", page_size)

    def get_entry(self, tenant_id: str, entry_id: str) -> dict | None:
        """The JournalEntry, or None when QuickBooks does not have it (610 or 404)."""
        try:
            return self.request(tenant_id, "GET", path("journalentry", entry_id))["JournalEntry"]
        except QuickBooksError as exc:
            if exc.kind == "not_found":
                return None
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
                            items=len(items))
        by_bid = {str(r.get("bId")): r for r in data.get("BatchItemResponse") or []}
        return [by_bid.get(str(item["bId"]), {"bId": item["bId"], "Fault": {
            "Error": [{"Message": "no BatchItemResponse for this bId", "code": "missing"}]}}) for item in items]


def quote(value: str) -> str:
    """A string literal inside a QuickBooks query (backslash-escaped quotes)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
