"""The Rootfi API client (httpx): one `api_key` for the account, a `company_id` per tenant, paced, retried where safe.

Vendor reference (docs.integrationlabs.co): [JE-ALL] v2 accounting/journal-entries/get-all-journal-entries,
[JE-NEW] v2 accounting/journal-entries/create-journal-entries, [AC-ALL] v2 accounting/accounts/get-all-accounts,
[AC-NEW] v2 accounting/accounts/create-accounts, [JOB2] v2 core/jobs/get-job, [JOB3] v3 core/sync/get-job,
[V3-ALL] v3 accounting/accounts/get-all-accounts (all under /api-reference/).

- Paths: lists `POST /accounting/<model>/all` [JE-ALL, AC-ALL]; writes `POST /api/write/<model>` ([AC-NEW]'s
  example) falling back once to `/accounting/<model>` ([JE-NEW]'s header) on a 404, since the docs show both; jobs
  `GET /jobs/{id}` [JOB2] falling back to `/v3/core/syncs/jobs/{id}` [JOB3]. Whichever answers first is kept. Every
  id put in a path is one encoded segment (`path`).
- Answers: lists in the nested envelope `{"data": {"data": [...], "total_count"}}` [JE-ALL] (a flat v3 list is read
  too); a job's `status` CREATED | RUNNING | SUCCESS | FAILED [JOB2]. A 404 on a look-up (a job) is "not found".
- Pacing: the host-shared limiter (ledger_pipeline.ratelimit) under Rootfi's limits as the sandbox emulates them
  (Rootfi publishes none): 600 requests/min per API key (`rootfi:account`, shared by every tenant) and 60/min per
  company (`rootfi:company:<id>`), 5 % headroom, time-scaled like the sandbox.
- Requests go through the shared request core (ledger_pipeline.systems.core) with `RootfiDialect`: every request is
  retried on 429 (honouring Retry-After), 401 (a refused key is refused before anything is processed; it ends
  `retryable`, naming ROOTFI_API_KEY, never a tenant's needs_reauth: the key is the account's) and connect errors
  (nothing reached Rootfi). Reads (GET and the `/all` list POSTs), PUT (a full replacement: a replay lands on the
  same state) and DELETE (a replay answers 404, which the engine treats as deleted) also on 5xx and transport
  errors. The upload POST is never replayed: there is no idempotency key and `document_number` is not unique, so a
  5xx or a dropped connection there raises kind="uncertain", and the sink lists by document_number before anything
  is sent again.
- A company that is no longer linked (403 COMPANY_NOT_LINKED / 404 COMPANY_NOT_FOUND) is that tenant's NeedsReauth;
  the vault marks it so the tenant is skipped until `connect` links it again.
- The API key is sent as a header and never logged, stored in the rate-limit state or put in an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any

import httpx

from ledger_pipeline.ratelimit import Priority, Rule, scaled_rules
from ledger_pipeline.systems.core import (
    SAFE_METHODS,
    ApiClient,
    ApiCore,
    ApiError,
    Call,
    Dialect,
    Resolution,
    path,
)
from ledger_pipeline.systems.paging import OffsetPaging, pages

PER_KEY_MINUTE = 600
PER_COMPANY_MINUTE = 60
PAGE_SIZE = 100  # our largest `take` (Rootfi publishes no maximum; the sandbox takes 100)
WRITE_ROOTS = ("/api/write", "/accounting")  # [AC-NEW]'s example path first, then [JE-NEW]'s header path
JOB_PATHS = (("jobs",), ("v3", "core", "syncs", "jobs"))  # [JOB2], [JOB3]
UNLINKED = ("COMPANY_NOT_LINKED", "COMPANY_NOT_FOUND")


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
                                                 "\"total_count\": N}}", system="rootfi")
    try:
        return [r for r in records if isinstance(r, dict)], None if total is None else int(total)
    except (TypeError, ValueError):
        return [r for r in records if isinstance(r, dict)], None


def rootfi_message(data: Any) -> tuple[str | None, str]:
    """(code, message) from Rootfi's `{"error": {"code", "message"}}` (or a bare string)."""
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return err.get("code"), str(err.get("message") or err)[:500]
        if err is not None:
            return None, str(err)[:500]
    return None, str(data)[:500]


class RootfiError(ApiError):
    """A failed call: `kind` says what the engine may do next; `code`/`detail` are Rootfi's own words (None when
    the answer carried none)."""

    @property
    def code(self) -> str | None:
        return None if self.body is None else rootfi_message(self.body)[0]

    @property
    def detail(self) -> str | None:
        return None if self.body is None else rootfi_message(self.body)[1]


class RootfiAuth(httpx.Auth):
    """The account's `api_key` header (never shown). A 403/404 COMPANY_NOT_LINKED / COMPANY_NOT_FOUND answer is
    recorded through `on_unlinked(tenant, detail)` (the vault marks the tenant needs_reauth, so later runs skip it
    until `connect` links it again), like a revoked grant at a token endpoint."""

    requires_response_body = True

    def __init__(self, tenant: str, api_key: str, on_unlinked: Callable[[str, str], None] | None):
        self.tenant, self._key, self.on_unlinked = tenant, api_key, on_unlinked

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["api_key"] = self._key
        response = yield request
        if self.on_unlinked and response.status_code in (403, 404):
            code, text = rootfi_message(_json(response))
            if code in UNLINKED:
                self.on_unlinked(self.tenant, f"Rootfi: {text}")

    def __repr__(self) -> str:
        return f"RootfiAuth(tenant={self.tenant!r}, ***)"


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


class RootfiDialect(Dialect):
    """Rootfi's way of saying things. `api_key`: the account's key (sent as the `api_key` header, never shown);
    `company_of`: tenant -> company_id (raises NeedsReauth when the tenant is not linked); `on_unlinked(tenant,
    detail)`: records a company Rootfi says is no longer linked (the vault's mark_needs_reauth); `scale`: the pacing
    clock."""

    system, title, error = "rootfi", "Rootfi", RootfiError

    def __init__(self, base_url: str, api_key: str, company_of: Callable[[str], str], scale: float = 1.0,
                 on_unlinked: Callable[[str, str], None] | None = None, headroom: float = 0.95):
        super().__init__(base_url)
        self._key = api_key
        self.company_of, self.on_unlinked, self.scale, self.headroom = company_of, on_unlinked, scale, headroom

    def __repr__(self) -> str:  # never show the key
        return f"RootfiDialect({self.base!r})"

    def auth(self, tenant: str) -> httpx.Auth:
        return RootfiAuth(tenant, self._key, self.on_unlinked)

    def prepare(self, call: Call) -> Call:
        """`company_id` into the body (POST/PUT, a number when it is one) or the query (GET/DELETE); the limiter
        counts the call against that company (`limit_key`)."""
        company_id = self.company_of(call.tenant)
        if call.method in ("POST", "PUT"):
            body = {"company_id": int(company_id) if company_id.isdigit() else company_id, **(call.body or {})}
            return replace(call, body=body, limit_key=company_id)
        return replace(call, params={"company_id": company_id, **(call.params or {})}, limit_key=company_id)

    def is_write(self, call: Call) -> bool:
        return call.method not in SAFE_METHODS and not call.url.endswith("/all")  # `POST .../all` is a list read

    def replay_safe(self, call: Call) -> bool:
        return not self.is_write(call) or call.method in ("PUT", "DELETE")

    def rules(self, tenant: str, limit_key: Any) -> list[Rule]:
        rules = scaled_rules("rootfi:account", [(PER_KEY_MINUTE, 60)], self.scale, self.headroom)
        if limit_key:
            rules += scaled_rules(f"rootfi:company:{limit_key}", [(PER_COMPANY_MINUTE, 60)], self.scale,
                                  self.headroom)
        return rules

    def message(self, data: Any) -> str:
        code, text = rootfi_message(data)
        return f"{code or ''}: {text}" if code else text

    def classify(self, response: httpx.Response, data: Any) -> Resolution:
        status = response.status_code
        if status in (403, 404) and rootfi_message(data)[0] in UNLINKED:  # recorded by RootfiAuth
            return Resolution.reject("needs_reauth", f"Rootfi: {rootfi_message(data)[1]} (the company is no longer "
                                                     "linked)")
        if status == 401:  # the account's key was refused before anything was processed
            return Resolution.retry(f"{self.message(data)} (check ROOTFI_API_KEY)", unprocessed=True)
        return super().classify(response, data)


class RootfiClient(ApiClient):
    """Rootfi's endpoints for every tenant over one ApiCore (with a RootfiDialect)."""

    def __init__(self, core: ApiCore, page_size: int = PAGE_SIZE):
        super().__init__(core)
        self.page_size = page_size
        # which of the documented paths this Rootfi answers (learnt on the first success)
        self._write_root, self._write_root_known = WRITE_ROOTS[0], False
        self._job_path, self._job_path_known = JOB_PATHS[0], False

    def __repr__(self) -> str:  # never show the key
        return f"RootfiClient({self.core.dialect.base!r})"

    def request(self, tenant_id: str, method: str, url: str, body: dict | None = None, params: dict | None = None,
                replay_safe: bool | None = None, priority: Priority | None = None) -> Any:
        """The answer's body. Raises RootfiError (kind="needs_reauth", recorded, when the company is unlinked)."""
        return self.core.call(tenant_id, method, url, body=body, params=params, replay_safe=replay_safe,
                              priority=priority).data

    # -- endpoints --------------------------------------------------------------------------------------------
    def list_all(self, tenant_id: str, url: str, filter_: dict | None = None,
                 order_by: dict | None = None) -> list[dict]:
        """Every record of a `/all` endpoint, page by page (take/skip in the body). The answer is the nested
        envelope `{"data": {"data": [...], "total_count": N}}` [JE-ALL, AC-ALL]; a flat `{"data": [...],
        "total_count"}` (v3's shape) is read too. Paging stops at a short or empty page, at total_count (0 is not
        taken as the end: the docs' own example answers total_count 0 beside a record), or at a page with nothing
        new (a server that ignores skip). A filter is only a hint to the server: callers check every record."""
        paging = OffsetPaging(limit=self.page_size, limit_param="take", offset_param="skip",
                              total=lambda d: list_page(tenant_id, url, d)[1] or None)
        body = {"orderBy": order_by or {"rootfi_id": "asc"}, **({"filter": filter_} if filter_ else {})}
        out: list[dict] = []
        seen: set = set()
        for page in pages(self.core, tenant_id, url, paging, method="POST", body=body, where="body",
                          items=lambda d: list_page(tenant_id, url, d)[0]):
            fresh = [r for r in page.items if r.get("rootfi_id") is None or r.get("rootfi_id") not in seen]
            seen.update(r.get("rootfi_id") for r in page.items)
            out += fresh
            if not fresh:
                break
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
                data = self.request(tenant_id, method, root + tail, body)
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
        prefixes = [self._job_path, *[p for p in JOB_PATHS if p != self._job_path]]
        for n, prefix in enumerate(prefixes):
            try:
                data = self.request(tenant_id, "GET", path(*prefix, job_id))
            except RootfiError as exc:
                if exc.status == 404:
                    if self._job_path_known or n + 1 == len(prefixes):
                        return None
                    continue
                raise
            self._job_path, self._job_path_known = prefix, True
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
        data = self._write(tenant_id, "PUT", path("journal_entries", rootfi_id), {"data": item})
        return data["data"]

    def delete_entry(self, tenant_id: str, rootfi_id: str) -> None:
        self._write(tenant_id, "DELETE", path("journal_entries", rootfi_id))
