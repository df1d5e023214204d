"""Paginators over `ApiCore.call`: offset/limit, page number, cursor (shape after dlt's rest_client paginators:
the paginator says what the next request carries and when to stop; the loop lives here, once).

    rows = records(core, tenant, "/accounts", OffsetPaging(limit=100, total=lambda d: d["pagination"]["total"]),
                   items="data")

- `OffsetPaging`: `limit`/`offset` (Aden: `limit`/`offset` with `pagination.total`; Rootfi: `take`/`skip` in a POST
  body with `total_count`; QuickBooks: `STARTPOSITION` (1-based) / `MAXRESULTS` inside the query text, placed by a
  `where` callable). Stops on an empty or short page, or once `total` records were read.
- `PageNumberPaging`: `page` (+ `per_page`/`page_size`) (Zoho: `page_context.has_more_page`; Jurnal:
  `total_pages`). Stops when `has_more` says no, at `total_pages`, on an empty page, or (neither given) a short page.
- `CursorPaging`: the answer names the next cursor; stops when it is absent or empty.

Every paginator refuses to loop: a state seen twice (a cursor that repeats) or more than `max_pages` pages raises
ApiError(kind="rejected") naming the tenant and the endpoint, instead of reading forever.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ledger_pipeline.systems.core import Answer, ApiCore

# where a page's fields go: the query string, the JSON body, or a function (params, body, fields) -> (params, body)
Where = Literal["params", "body"] | Callable[[dict | None, Any, dict], tuple[dict | None, Any]]
Items = str | Callable[[Any], list | None]


class Paging(Protocol):
    """A paginator: a first state, the request fields for a state, the state after a page (None: no more)."""

    def first(self) -> Hashable: ...

    def fields(self, state: Any) -> dict: ...

    def next(self, state: Any, data: Any, items: list) -> Hashable | None: ...


def _get(data: Any, key: str) -> Any:
    """`data[a][b]` for key "a.b"; None when a level is missing."""
    for part in key.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


@dataclass(frozen=True)
class OffsetPaging:
    """`limit` records from `offset`; the next offset is the last one plus the records read. `start` is the first
    offset (QuickBooks' STARTPOSITION is 1). `total(data)` (or a dotted key) names the record count when the system
    gives one."""

    limit: int = 100
    limit_param: str = "limit"
    offset_param: str = "offset"
    start: int = 0
    total: str | Callable[[Any], Any] | None = None

    def first(self) -> int:
        return self.start

    def fields(self, state: int) -> dict:
        return {self.limit_param: self.limit, self.offset_param: state}

    def next(self, state: int, data: Any, items: list) -> int | None:
        if not items or len(items) < self.limit:
            return None
        after = state + len(items)
        total = _read(self.total, data)
        if total is not None and after - self.start >= int(total):
            return None
        return after


@dataclass(frozen=True)
class PageNumberPaging:
    """Page `first_page`, then the next; `size` per page under `size_param` (None: the system's default).
    `has_more(data)` (Zoho: "page_context.has_more_page") or `total_pages(data)` (Jurnal: "total_pages") decide
    when given; else a short page is the last."""

    size: int | None = 100
    page_param: str = "page"
    size_param: str = "per_page"
    first_page: int = 1
    has_more: str | Callable[[Any], Any] | None = None
    total_pages: str | Callable[[Any], Any] | None = None

    def first(self) -> int:
        return self.first_page

    def fields(self, state: int) -> dict:
        return {self.page_param: state, **({self.size_param: self.size} if self.size else {})}

    def next(self, state: int, data: Any, items: list) -> int | None:
        if not items:
            return None
        if self.has_more is not None:
            return state + 1 if _read(self.has_more, data) else None
        if self.total_pages is not None:
            pages = _read(self.total_pages, data)
            return state + 1 if pages is not None and state - self.first_page + 1 < int(pages) else None
        return state + 1 if self.size and len(items) >= self.size else None


@dataclass(frozen=True)
class CursorPaging:
    """The first page without a cursor, then `cursor_param=<next_cursor(data)>` until there is none."""

    next_cursor: str | Callable[[Any], Any] = "next_cursor"
    cursor_param: str = "cursor"
    size: int | None = None
    size_param: str = "limit"

    def first(self) -> str | None:
        return None

    def fields(self, state: str | None) -> dict:
        return {**({self.cursor_param: state} if state else {}), **({self.size_param: self.size} if self.size else {})}

    def next(self, state: str | None, data: Any, items: list) -> str | None:
        cursor = _read(self.next_cursor, data)
        return str(cursor) if cursor not in (None, "") else None


def _read(how: str | Callable[[Any], Any] | None, data: Any) -> Any:
    if how is None:
        return None
    return how(data) if callable(how) else _get(data, how)


@dataclass(frozen=True)
class Page:
    """One page: its records, the full answer, its number from 0."""

    items: list
    answer: Answer
    number: int


def pages(core: ApiCore, tenant: str, url: str, paging: Paging, *, items: Items, method: str = "GET",
          params: dict | None = None, body: Any = None, where: Where = "params", max_pages: int = 10_000,
          **call: Any) -> Iterator[Page]:
    """Every page of a listing, lazily (one `core.call` per page, so the limiter and retries apply per page).
    `items`: the records of a page (a dotted key of the answer, or a function). `call`: more `ApiCore.call`
    arguments (priority, limit_key, replay_safe). Raises ApiError (the core's, or rejected for a paging loop)."""
    state = paging.first()
    seen = {state}
    for number in range(max_pages):
        fields = paging.fields(state)
        if callable(where):
            p, b = where(params, body, fields)
        elif where == "body":
            p, b = params, {**(body or {}), **fields}
        else:
            p, b = {**(params or {}), **fields}, body
        answer = core.call(tenant, method, url, params=p, body=b, **call)
        got = list(_read(items, answer.data) or [])
        yield Page(got, answer, number)
        state = paging.next(state, answer.data, got)
        if state is None:
            return
        if state in seen:
            raise core.error("rejected", tenant, f"{core.dialect.title} {method} {url}: page {number + 1} points "
                                                 f"back to an earlier page ({state!r}); stopped reading")
        seen.add(state)
    raise core.error("rejected", tenant, f"{core.dialect.title} {method} {url}: more than {max_pages} pages; "
                                         "stopped reading (raise max_pages if the listing is really that long)")


def records(core: ApiCore, tenant: str, url: str, paging: Paging, *, items: Items, **kwargs: Any) -> Iterator[Any]:
    """Every record of a listing, page after page (see `pages`)."""
    for page in pages(core, tenant, url, paging, items=items, **kwargs):
        yield from page.items
