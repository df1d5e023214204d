"""The Aden GL client (httpx): `Authorization: jwt <token>`, paced on the host limiter, retried where that is safe.

- Pacing: Aden documents "Standard limit: 1000 requests per minute" and a burst limit of 100/s, with 429 beyond
  (https://docs.adenhq.com/development); we pace at 1000/minute per company token, 5 % under it, on the host-shared
  limiter (ledger_pipeline.ratelimit) so every process on the host shares the budget. 429s are honoured (Retry-After).
- Retries (stamina, exponential backoff with jitter): reads on 429, 5xx and transport errors. Every write we send
  carries an `X-Idempotency-Key` (documented for approval actions and "recommended for mutations", same page), so a
  write is retried on 5xx and transport errors too: the replay is safe. When the attempts run out, a write that may
  have reached Aden raises `kind="uncertain"` (the sink looks the entry up before writing again), one that never did
  `retryable`.
- 401: Aden's JWT comes from the administrator and cannot be refreshed, so a 401 is either spurious or a revocation:
  the vault is asked again with `stale=` the refused token, which runs `AdenAuth.check` (probe, NeedsReauth when
  revoked or expired); an accepted token is retried once.
- Paths: every id in a path is one URL-encoded segment (`seg`: quote with safe=""), so an id holding "/", "#", "?",
  "%", spaces or non-ASCII stays one segment (an f-string path would not encode it).
- Answers: single objects are bare (no "data" envelope); lists are {"data": [...], "pagination": {total, limit, offset,
  has_more}} (https://docs.adenhq.com/api-reference/general-ledger/journal-entries/list).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import quote

import httpx
import stamina

from ledger_pipeline.money import dumps_exact, loads_exact
from ledger_pipeline.ratelimit import Priority, Rule, host_limiter_at, scaled_rules, state_path
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.vault import TokenEndpointError

Kind = Literal["retryable", "uncertain", "rejected"]
PER_TOKEN_MINUTE = 1000  # documented, see the module docstring
PAGE = 100  # Aden's page size cap for limit/offset ("max 100", journal-entries/list)


def seg(value: object) -> str:
    """One path segment, URL-encoded ("/" included)."""
    return quote(str(value), safe="")


class AdenError(Exception):
    """An Aden failure for one tenant; `code`/`field` come from Aden's error body when there is one."""

    def __init__(self, kind: Kind, tenant_id: str, message: str, status: int | None = None, body: Any = None):
        super().__init__(f"tenant {tenant_id}: {message}")
        self.kind, self.tenant_id, self.status, self.body, self.message = kind, tenant_id, status, body, message

    @property
    def code(self) -> str | None:
        err = self.body.get("error") if isinstance(self.body, dict) else None
        return err.get("code") if isinstance(err, dict) else None

    @property
    def field(self) -> str:
        err = self.body.get("error") if isinstance(self.body, dict) else None
        details = err.get("details") if isinstance(err, dict) else None
        return str(details.get("field") or "") if isinstance(details, dict) else ""

    @property
    def text(self) -> str:
        return aden_message(self.body) if self.body is not None else self.message


class _Retry(Exception):
    def __init__(self, error: AdenError, wait: float | None = None):
        self.error, self.wait = error, wait


class AdenLimiter:
    """One rule per company token on the host-shared limiter."""

    def __init__(self, settings: Settings, scale: float, per_minute: int = PER_TOKEN_MINUTE):
        self.host = host_limiter_at(state_path(settings.lock_dir, settings.source_address))
        self.scale, self.per_minute = scale, per_minute
        self.waited = 0.0
        self._lock = threading.Lock()

    def rules(self, tenant_id: str) -> list[Rule]:
        return scaled_rules(f"aden:token:{tenant_id}", [(self.per_minute, 60)], self.scale)

    def acquire(self, tenant_id: str, priority: Priority) -> None:
        waited = self.host.acquire(self.rules(tenant_id), priority)
        with self._lock:
            self.waited += waited



class AdenClient:
    """One client for every tenant: pooled connections, the limiter, the vault's JWTs."""

    def __init__(self, base_url: str, access_token: Callable[[str, str | None], str], limiter: AdenLimiter,
                 http: httpx.Client, attempts: int = 6, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 priority: Priority = "posting"):
        self.base_url = base_url.rstrip("/")
        self._access_token = access_token  # (tenant_id, refused_token_or_None) -> live token
        self.limiter, self.http = limiter, http
        self.attempts, self.backoff_initial, self.backoff_max = attempts, backoff_initial, backoff_max
        self.priority: Priority = priority
        self.page_size = PAGE
        self.requests = 0

    def close(self) -> None:
        self.http.close()

    def request(self, tenant_id: str, method: str, path: str, body: Any = None, params: dict | None = None,
                idempotency_key: str | None = None, priority: Priority | None = None) -> tuple[int, Any, bool]:
        """(status, parsed body, replayed). Amounts come back as Decimal (never float)."""
        is_write = method != "GET"
        safe = not is_write or idempotency_key is not None
        reached = [False]  # did any attempt possibly reach Aden (for a write's final classification)
        try:
            for attempt in stamina.retry_context(on=_Retry, attempts=self.attempts, wait_initial=self.backoff_initial,
                                                 wait_max=self.backoff_max, wait_jitter=self.backoff_initial,
                                                 timeout=None):
                with attempt:
                    return self._once(tenant_id, method, path, body, params, idempotency_key, is_write, safe,
                                      priority or self.priority, reached)
        except _Retry as exc:
            err = exc.error
            if is_write and reached[0] and err.kind == "retryable" and err.status != 429:
                err.kind = "uncertain"
                err.message += "; the write may have been applied"
            raise err from None
        raise AssertionError("unreachable")

    def _once(self, tenant_id: str, method: str, path: str, body: Any, params: dict | None, key: str | None,
              is_write: bool, safe: bool, priority: Priority, reached: list[bool]) -> tuple[int, Any, bool]:
        token = self._token(tenant_id, None)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["X-Idempotency-Key"] = key
        for checked in (False, True):
            self.limiter.acquire(tenant_id, priority)
            self.requests += 1
            try:
                resp = self.http.request(method, f"{self.base_url}{path}", params=params,
                                         content=dumps_exact(body).encode() if body is not None else None,
                                         headers={**headers, "Authorization": f"jwt {token}"})
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise _Retry(AdenError("retryable", tenant_id, f"cannot connect to Aden ({type(exc).__name__})")
                             ) from exc
            except httpx.TransportError as exc:
                reached[0] = reached[0] or is_write
                err = AdenError("retryable", tenant_id, f"{method} {path}: {type(exc).__name__}; no answer")
                if safe:
                    raise _Retry(err) from exc
                err.kind = "uncertain"
                raise err from exc
            if resp.status_code == 401 and not checked:
                token = self._token(tenant_id, token)  # introspect: NeedsReauth if revoked, else the same token
                continue
            break
        return self._classify(tenant_id, method, path, resp, is_write, safe, reached)

    def _token(self, tenant_id: str, refused: str | None) -> str:
        try:
            return self._access_token(tenant_id, refused)
        except TokenEndpointError as exc:
            raise _Retry(AdenError("retryable", tenant_id, str(exc))) from exc

    @staticmethod
    def _classify(tenant_id: str, method: str, path: str, resp: httpx.Response, is_write: bool, safe: bool,
                  reached: list[bool]) -> tuple[int, Any, bool]:
        status = resp.status_code
        try:
            data = loads_exact(resp.content) if resp.content else None
        except ValueError:
            data = resp.text[:300]
        if status < 300:
            return status, data, resp.headers.get("idempotent-replayed") == "true"
        what = f"{method} {path} -> {status}: {aden_message(data)}"
        if status == 401:  # refused although introspection said the token is live: not processed
            raise _Retry(AdenError("retryable", tenant_id, what + " (token still active)", status, data))
        if status == 429:  # honour Retry-After (capped), then the backoff
            with contextlib.suppress(ValueError):
                time.sleep(min(float(resp.headers.get("retry-after", 0)), 60.0))
            raise _Retry(AdenError("retryable", tenant_id, what, status, data))
        if status >= 500:
            reached[0] = reached[0] or is_write
            err = AdenError("retryable", tenant_id, what, status, data)
            if safe:
                raise _Retry(err)
            err.kind = "uncertain"
            raise err
        raise AdenError("rejected", tenant_id, what, status, data)

    # -- endpoints --------------------------------------------------------------------------------------------
    def pages(self, tenant_id: str, path: str, params: dict | None = None,
              priority: Priority | None = None) -> list[dict]:
        """Every record of a limit/offset listing."""
        out: list[dict] = []
        while True:
            _, data, _ = self.request(tenant_id, "GET", path, params={**(params or {}), "limit": self.page_size,
                                                                      "offset": len(out)}, priority=priority)
            batch = data.get("data") or [] if isinstance(data, dict) else []
            out += batch
            paging = data.get("pagination") or {} if isinstance(data, dict) else {}
            total, more = paging.get("total"), paging.get("has_more")
            if (not batch or more is False or (more is None and len(batch) < self.page_size)
                    or (total is not None and len(out) >= int(total))):
                return out


def aden_message(data: Any) -> str:
    """Aden's own words: `error.message` plus the field it names."""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        details = err.get("details") if isinstance(err.get("details"), dict) else {}
        where = f" ({details['field']})" if details.get("field") else ""
        return f"{err.get('code', 'ERROR')}: {err.get('message', '')}{where}"
    return str(data)[:300]
