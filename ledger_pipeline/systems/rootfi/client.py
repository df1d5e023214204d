"""The Rootfi API client (httpx): one `api_key` for the account, a `company_id` per tenant, paced, retried where safe.

Vendor reference (docs.integrationlabs.co): [JE-ALL] v2 accounting/journal-entries/get-all-journal-entries,
[JE-NEW] v2 accounting/journal-entries/create-journal-entries, [AC-ALL] v2 accounting/accounts/get-all-accounts,
[AC-NEW] v2 accounting/accounts/create-accounts, [JOB2] v2 core/jobs/get-job, [JOB3] v3 core/sync/get-job,
[V3-ALL] v3 accounting/accounts/get-all-accounts (all under /api-reference/).

- Paths: lists `POST /accounting/<model>/all` [JE-ALL, AC-ALL]; writes `POST /api/write/<model>` ([AC-NEW]'s
  example) falling back once to `/accounting/<model>` ([JE-NEW]'s header) on a 404, since the docs show both; jobs
  `GET /jobs/{id}` [JOB2] falling back to `/v3/core/syncs/jobs/{id}` [JOB3]. Whichever answers first is kept. Every
  id put in a path is one encoded segment (`seg`).
- Answers: lists in the nested envelope `{"data": {"data": [...], "total_count"}}` [JE-ALL] (a flat v3 list is read
  too); a job's `status` CREATED | RUNNING | SUCCESS | FAILED [JOB2]. A 404 on a look-up (a job) is "not found".
- Pacing: the host-shared limiter (ledger_pipeline.ratelimit) under Rootfi's limits as the sandbox emulates them
  (Rootfi publishes none): 600 requests/min per API key (`rootfi:account`, shared by every tenant) and 60/min per
  company (`rootfi:company:<id>`), 5 % headroom, time-scaled like the sandbox.
- Retries (stamina, exponential backoff with jitter): every request on 429 (honouring Retry-After), 401 (a refused
  key is refused before anything is processed) and connect errors (nothing reached Rootfi). Reads (GET and the
  `/all` list POSTs), PUT (a full replacement: a replay lands on the same state) and DELETE (a replay answers 404,
  which the engine treats as deleted) also on 5xx and transport errors. The upload POST is never replayed: there
  is no idempotency key and `document_number` is not unique, so a 5xx or a dropped connection there raises
  kind="uncertain", and the sink lists by document_number before anything is sent again.
- A company that is no longer linked (403 COMPANY_NOT_LINKED / 404 COMPANY_NOT_FOUND) is that tenant's NeedsReauth;
  the vault marks it so the tenant is skipped until `connect` links it again.
- The API key is sent as a header and never logged, stored in the rate-limit state or put in an exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import quote

import httpx
import stamina

from ledger_pipeline.money import dumps_exact, loads_exact
from ledger_pipeline.ratelimit import HostLimiter, Priority, Rule, scaled_rules
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.http import http_client

Kind = Literal["retryable", "uncertain", "rejected"]

PER_KEY_MINUTE = 600
PER_COMPANY_MINUTE = 60
PAGE_SIZE = 100  # our largest `take` (Rootfi publishes no maximum; the sandbox takes 100)
WRITE_ROOTS = ("/api/write", "/accounting")  # [AC-NEW]'s example path first, then [JE-NEW]'s header path
JOB_PATHS = ("/jobs/{}", "/v3/core/syncs/jobs/{}")  # [JOB2], [JOB3]


def seg(value: object) -> str:
    """One URL path segment: every reserved character encoded (`/`, `?`, `#`, `%`, space, non-ASCII)."""
    return quote(str(value), safe="")


def list_page(tenant_id: str, path: str, reply: Any) -> tuple[list[dict], int | None]:
    """(records, total_count) of a list answer: v2's nested `{"data": {"data": [...], "total_count"}}` [JE-ALL]
    or a flat `{"data": [...], "total_count"}` (v3 [V3-ALL]); anything else is a named error."""
    body = reply.get("data") if isinstance(reply, dict) else None
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        records, total = body["data"], body.get("total_count")
    elif isinstance(body, list):
        records, total = body, reply.get("total_count")
    else:
        raise RootfiError("rejected", tenant_id, f"POST {path}: the answer is not a Rootfi list "
                                                 f"({str(reply)[:200]}); expected {{\"data\": {{\"data\": [...], "
                                                 "\"total_count\": N}}")
    try:
        return [r for r in records if isinstance(r, dict)], None if total is None else int(total)
    except (TypeError, ValueError):
        return [r for r in records if isinstance(r, dict)], None


class RootfiError(Exception):
    """A failed call: `kind` says what the engine may do next; `code`/`message` are Rootfi's own words."""

    def __init__(self, kind: Kind, tenant_id: str, message: str, status: int | None = None,
                 code: str | None = None, detail: str | None = None):
        super().__init__(f"tenant {tenant_id}: {message}")
        self.kind, self.tenant_id, self.message, self.status = kind, tenant_id, message, status
        self.code, self.detail = code, detail  # Rootfi's error code and message


class _Retry(Exception):
    def __init__(self, error: RootfiError):
        self.error = error


class RootfiLimiter:
    """Rootfi's limits on the host-shared limiter: per API key (the account) and per company."""

    def __init__(self, host: HostLimiter, scale: float = 1.0, headroom: float = 0.95):
        self.host, self.scale, self.headroom = host, scale, headroom
        self.waited = 0.0

    def rules(self, company_id: str | None) -> list[Rule]:
        rules = scaled_rules("rootfi:account", [(PER_KEY_MINUTE, 60)], self.scale, self.headroom)
        if company_id:
            rules += scaled_rules(f"rootfi:company:{company_id}", [(PER_COMPANY_MINUTE, 60)], self.scale,
                                  self.headroom)
        return rules

    def acquire(self, company_id: str | None, priority: Priority = "posting") -> float:
        waited = self.host.acquire(self.rules(company_id), priority)
        self.waited += waited
        return waited


def rootfi_message(data: Any) -> tuple[str | None, str]:
    """(code, message) from Rootfi's `{"error": {"code", "message"}}` (or a bare string)."""
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return err.get("code"), str(err.get("message") or err)[:500]
        if err is not None:
            return None, str(err)[:500]
    return None, str(data)[:500]


class RootfiClient:
    """One client for every tenant: a pooled httpx connection, the account's API key, the limiter."""

    def __init__(self, base_url: str, api_key: str, company_of: Callable[[str], str],
                 limiter: RootfiLimiter, on_unlinked: Callable[[str, str], None] | None = None,
                 http: httpx.Client | None = None, attempts: int = 6, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, timeout: float = 30.0, source_address: str | None = None,
                 priority: Priority = "posting", page_size: int = PAGE_SIZE):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.company_of = company_of  # tenant -> company_id (raises NeedsReauth when the tenant is not linked)
        self.on_unlinked = on_unlinked  # (tenant, detail): record that the tenant must be linked again
        self.limiter = limiter
        self.http = http or http_client(source_address, timeout)
        self.priority: Priority = priority
        self.attempts, self.backoff_initial, self.backoff_max = attempts, backoff_initial, backoff_max
        self.page_size = page_size
        self.requests = 0
        # which of the documented paths this Rootfi answers (learnt on the first success)
        self._write_root, self._write_root_known = WRITE_ROOTS[0], False
        self._job_path, self._job_path_known = JOB_PATHS[0], False

    def __repr__(self) -> str:  # never show the key
        return f"RootfiClient({self.base_url!r})"

    def close(self) -> None:
        self.http.close()

    # -- core -------------------------------------------------------------------------------------------------
    def request(self, tenant_id: str, method: str, path: str, body: dict | None = None,
                params: dict | None = None, replay_safe: bool | None = None,
                priority: Priority | None = None) -> tuple[str, Any]:
        """(company_id, answer). `company_id` goes into the body (POST/PUT) or the query (GET/DELETE)."""
        company_id = self.company_of(tenant_id)
        if method in ("POST", "PUT"):
            body = {"company_id": int(company_id) if company_id.isdigit() else company_id, **(body or {})}
        else:
            params = {"company_id": company_id, **(params or {})}
        safe = replay_safe if replay_safe is not None else method != "POST" or path.endswith("/all")
        try:
            for attempt in stamina.retry_context(on=_Retry, attempts=self.attempts,
                                                 wait_initial=self.backoff_initial, wait_max=self.backoff_max,
                                                 wait_jitter=self.backoff_initial, timeout=None):
                with attempt:
                    return company_id, self._once(tenant_id, company_id, method, path, body, params, safe,
                                                  priority or self.priority)
        except _Retry as exc:
            raise exc.error from None
        raise AssertionError("unreachable")

    def _once(self, tenant_id: str, company_id: str, method: str, path: str, body: dict | None,
              params: dict | None, safe: bool, priority: Priority) -> Any:
        self.limiter.acquire(company_id, priority)
        self.requests += 1
        try:
            resp = self.http.request(method, f"{self.base_url}{path}", params=params,
                                     content=dumps_exact(body).encode() if body is not None else None,
                                     headers={"api_key": self._api_key, "Content-Type": "application/json",
                                              "Accept": "application/json"})
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Retry(RootfiError("retryable", tenant_id, f"cannot connect to Rootfi ({type(exc).__name__})")
                         ) from exc
        except httpx.TransportError as exc:
            err = RootfiError("retryable" if safe else "uncertain", tenant_id,
                              f"{method} {path}: {type(exc).__name__}; the outcome is unknown")
            if safe:
                raise _Retry(err) from exc
            raise err from exc
        return self._classify(tenant_id, method, path, resp, safe)

    def _classify(self, tenant_id: str, method: str, path: str, resp: httpx.Response, safe: bool) -> Any:
        status = resp.status_code
        try:
            data = loads_exact(resp.content) if resp.content else None
        except ValueError:
            data = resp.text[:300]
        if status < 300:
            return data
        code, text = rootfi_message(data)
        what = f"{method} {path} -> {status} {code or ''}: {text}"
        if status in (403, 404) and code in ("COMPANY_NOT_LINKED", "COMPANY_NOT_FOUND"):
            if self.on_unlinked:
                self.on_unlinked(tenant_id, f"Rootfi: {text}")
            raise NeedsReauth(tenant_id, f"Rootfi: {text}", "rootfi")
        if status == 401:  # refused before processing: safe to send again (a bad key fails after the retries)
            raise _Retry(RootfiError("retryable", tenant_id, what + " (check ROOTFI_API_KEY)", status, code, text))
        if status == 429:
            try:
                wait = float(resp.headers.get("retry-after", "0"))
            except ValueError:
                wait = 0.0
            if wait > 0:
                time.sleep(min(wait, self.backoff_max))
            raise _Retry(RootfiError("retryable", tenant_id, what, status, code, text))
        if status >= 500:
            if safe:
                raise _Retry(RootfiError("retryable", tenant_id, what, status, code, text))
            raise RootfiError("uncertain", tenant_id, what + "; the upload may have been accepted", status, code, text)
        raise RootfiError("rejected", tenant_id, what, status, code, text)

    # -- endpoints --------------------------------------------------------------------------------------------
    def list_all(self, tenant_id: str, path: str, filter_: dict | None = None,
                 order_by: dict | None = None) -> list[dict]:
        """Every record of a `/all` endpoint, page by page (take/skip). The answer is the nested envelope
        `{"data": {"data": [...], "total_count": N}}` [JE-ALL, AC-ALL]; a flat `{"data": [...], "total_count"}`
        (v3's shape) is read too. Paging stops at a short or empty page, or at total_count (the docs' own example
        answers total_count 0 beside a record, so a full page is never taken as the end on that alone). A filter
        is only a hint to the server: callers check every record themselves."""
        out: list[dict] = []
        seen: set = set()
        while True:
            body = {"take": self.page_size, "skip": len(out), "orderBy": order_by or {"rootfi_id": "asc"}}
            if filter_:
                body["filter"] = filter_
            _, data = self.request(tenant_id, "POST", path, body)
            page, total = list_page(tenant_id, path, data)
            fresh = [r for r in page if r.get("rootfi_id") is None or r.get("rootfi_id") not in seen]
            seen.update(r.get("rootfi_id") for r in page)
            out += fresh
            if not fresh or len(page) < self.page_size or (total and len(out) >= total):
                return out

    def accounts(self, tenant_id: str) -> list[dict]:
        return self.list_all(tenant_id, "/accounting/accounts/all")

    def entries(self, tenant_id: str, filter_: dict) -> list[dict]:
        return self.list_all(tenant_id, "/accounting/journal_entries/all", filter_)

    def _write(self, tenant_id: str, method: str, tail: str, body: dict | None = None) -> Any:
        """A write under `/api/write/<model>` ([AC-NEW]'s example), or under `/accounting/<model>` ([JE-NEW]'s and
        [AC-NEW]'s headers) when the first answers 404 before either has worked: the docs show both. A 404 is
        answered before anything is processed, so trying the other path writes nothing twice."""
        roots = [self._write_root, *[r for r in WRITE_ROOTS if r != self._write_root]]
        for n, root in enumerate(roots):
            try:
                _, data = self.request(tenant_id, method, root + tail, body)
            except RootfiError as exc:
                if exc.status == 404 and not self._write_root_known and n + 1 < len(roots):
                    continue
                raise
            self._write_root, self._write_root_known = root, True
            return data
        raise AssertionError("unreachable")

    def upload(self, tenant_id: str, items: list[dict]) -> dict:
        """One upload job for a batch of entries [JE-NEW]: {status, upload_job_id, data: [{job_id, status,
        response, error}]} (what `data` holds in the reply)."""
        data = self._write(tenant_id, "POST", "/journal_entries", {"data": items})
        return data.get("data") if isinstance(data, dict) else data

    def job(self, tenant_id: str, job_id: str) -> dict | None:
        """One job: `GET /jobs/{id}` [JOB2], or `GET /v3/core/syncs/jobs/{id}` [JOB3] when the v2 path answers
        404 before either has worked. None when the job is not there (404): "not found", never "unreachable"."""
        paths = [self._job_path, *[p for p in JOB_PATHS if p != self._job_path]]
        for n, path in enumerate(paths):
            try:
                _, data = self.request(tenant_id, "GET", path.format(seg(job_id)))
            except RootfiError as exc:
                if exc.status == 404:
                    if self._job_path_known or n + 1 == len(paths):
                        return None
                    continue
                raise
            self._job_path, self._job_path_known = path, True
            return data.get("data") if isinstance(data, dict) else None
        return None

    def upload_jobs(self, tenant_id: str, statuses: tuple[str, ...] = ("CREATED", "RUNNING")) -> list[dict]:
        """The company's upload jobs with items in `statuses`, through the sandbox's stand-in listing (Rootfi
        publishes no such endpoint): [] when it answers 404 (cannot tell)."""
        try:
            return self.list_all(tenant_id, "/accounting/upload_jobs/all", {"status": {"in": list(statuses)}})
        except RootfiError as exc:
            if exc.status == 404:
                return []
            raise

    def update_entry(self, tenant_id: str, rootfi_id: str, item: dict) -> dict:
        data = self._write(tenant_id, "PUT", f"/journal_entries/{seg(rootfi_id)}", {"data": item})
        return data["data"]

    def delete_entry(self, tenant_id: str, rootfi_id: str) -> None:
        self._write(tenant_id, "DELETE", f"/journal_entries/{seg(rootfi_id)}")
