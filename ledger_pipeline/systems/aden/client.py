"""The Aden GL API as a dialect of the shared request core (ledger_pipeline.systems.core), and its calls as thin calls
to `ApiCore.call`.

- Auth: `Authorization: jwt <token>` (https://docs.adenhq.com/development). Aden's JWT comes from the administrator
  and cannot be refreshed, so after a 401 the vault is asked again with `stale=` the refused token, which runs
  `AdenAuth.check` (probe; NeedsReauth when revoked or expired); a token the probe accepts is re-sent once.
- Pacing: Aden documents "Standard limit: 1000 requests per minute" and a burst limit of 100/s, with 429 beyond
  (same page); we pace at 1000/minute per company token, 5 % under it, on the host-shared limiter. 429s are
  honoured (Retry-After).
- Exactly once: every write we send carries an `X-Idempotency-Key` (documented for approval actions and
  "recommended for mutations", same page), so the core re-sends a write on 5xx and transport errors: the replay is
  safe. When the attempts run out, a write that may have reached Aden raises `kind="uncertain"` (the sink looks the
  entry up before writing again), one that never did `retryable`. A replayed answer says `Idempotent-Replayed: true`.
- Answers: single objects are bare (no "data" envelope); lists are {"data": [...], "pagination": {total, limit, offset,
  has_more}} (https://docs.adenhq.com/api-reference/general-ledger/journal-entries/list); errors are {"error":
  {"code", "message", "details": {"field", "value"}}}.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx

from ledger_pipeline.ratelimit import Priority, Rule, scaled_rules
from ledger_pipeline.systems.core import ApiClient, ApiCore, ApiError, Call, Dialect, TokenSource, VaultTokenAuth
from ledger_pipeline.systems.paging import OffsetPaging, records

PER_TOKEN_MINUTE = 1000  # documented, see the module docstring
PAGE = 100  # Aden's page size cap for limit/offset ("max 100", journal-entries/list)


class AdenError(ApiError):
    """A failed Aden call; `code`/`field` come from Aden's error body when there is one."""

    def _error(self) -> dict:
        err = self.body.get("error") if isinstance(self.body, dict) else None
        return err if isinstance(err, dict) else {}

    @property
    def code(self) -> str | None:
        return self._error().get("code")

    @property
    def field(self) -> str:
        details = self._error().get("details")
        return str(details.get("field") or "") if isinstance(details, dict) else ""

    @property
    def text(self) -> str:
        return aden_message(self.body) if self.body is not None else self.message


def aden_message(data: Any) -> str:
    """Aden's own words: `error.message` plus the field it names."""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        details = err.get("details") if isinstance(err.get("details"), dict) else {}
        where = f" ({details['field']})" if details.get("field") else ""
        return f"{err.get('code', 'ERROR')}: {err.get('message', '')}{where}"
    return "" if data is None else str(data)[:300]


def _total(data: Any) -> Any:
    """The record count of a listing: `pagination.total`, else (has_more false) the records up to this page."""
    paging = data.get("pagination") if isinstance(data, dict) else None
    if not isinstance(paging, dict):
        return None
    if paging.get("total") is not None:
        return paging["total"]
    if paging.get("has_more") is False:
        return int(paging.get("offset") or 0) + len(data.get("data") or [])
    return None


class AdenDialect(Dialect):
    """Aden's way of saying things. `token`: (tenant, refused) -> the tenant's JWT (the vault; after a 401 it runs
    AdenAuth.check); `scale`: the pacing clock."""

    system, title, error = "aden", "Aden", AdenError

    def __init__(self, base_url: str, token: TokenSource, scale: float = 1.0, per_minute: int = PER_TOKEN_MINUTE):
        super().__init__(base_url)
        self.token, self.scale, self.per_minute = token, scale, per_minute

    def auth(self, tenant: str) -> httpx.Auth:
        return VaultTokenAuth(tenant, self.token, scheme="jwt")

    def prepare(self, call: Call) -> Call:
        if not call.idempotency_key:
            return call
        return replace(call, headers={**call.headers, "X-Idempotency-Key": call.idempotency_key})

    def rules(self, tenant: str, limit_key: Any) -> list[Rule]:
        return scaled_rules(f"aden:token:{tenant}", [(self.per_minute, 60)], self.scale)

    def message(self, data: Any) -> str:
        return aden_message(data)


class AdenClient(ApiClient):
    """Aden's calls for every tenant over one ApiCore (with an AdenDialect)."""

    def __init__(self, core: ApiCore):
        super().__init__(core)
        self.page_size = PAGE

    def request(self, tenant_id: str, method: str, url: str, body: Any = None, params: dict | None = None,
                idempotency_key: str | None = None, priority: Priority | None = None) -> tuple[int, Any, bool]:
        """(status, parsed body, replayed). Amounts come back as Decimal (never float). Raises AdenError."""
        answer = self.core.call(tenant_id, method, url, body=body, params=params, idempotency_key=idempotency_key,
                                priority=priority)
        return answer.status, answer.data, answer.headers.get("idempotent-replayed") == "true"

    def pages(self, tenant_id: str, url: str, params: dict | None = None,
              priority: Priority | None = None) -> list[dict]:
        """Every record of a limit/offset listing."""
        return list(records(self.core, tenant_id, url, OffsetPaging(limit=self.page_size, total=_total),
                            items="data", params=params, priority=priority))
