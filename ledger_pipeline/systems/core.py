"""One request core for every accounting system: `ApiCore.call(tenant, method, url, ...) -> Answer`.

What a call does, the same for every system (each rule once, here):

- Shape: the system's `Dialect.prepare` places what every call of that system carries (realm in the URL,
  organization_id or company_id, minorversion, the idempotency key); JSON bodies go out exact (ledger_pipeline.money:
  Decimals as bare numbers) and come back exact (non-integers as Decimal, never float).
- Pace: before every request sent (the re-send after a token refresh included) the host-shared limiter
  (ledger_pipeline.ratelimit) grants one slot per rule list the dialect names for the tenant (`Dialect.slots`), at the
  call's priority (posting before background reads); `Dialect.in_flight` may bound concurrency (QuickBooks' 10 per
  realm).
- Authenticate: `Dialect.auth(tenant)` is an `httpx.Auth`. `VaultTokenAuth` takes the token from the vault and, on a
  401, asks the vault once for a fresh one (`stale=` the refused token: the vault refreshes, or hands over the token
  another worker already refreshed) and re-sends once. A failing token endpoint (`TokenEndpointError`) is retryable;
  a revoked grant (`NeedsReauth`, which the vault records) raises kind="needs_reauth". A token refused again right
  after its refresh is retried with backoff (the sandboxes inject spurious 401s); the `reauth_after`-th such refusal
  in one call raises kind="needs_reauth" (nothing is recorded in the vault: the next run tries again).
- Classify: `Dialect.classify(response, data) -> Resolution`: ok / retry (a transient failure that may have been
  processed: 5xx) / rate_limited (refused before processing: 429; any method may be re-sent) / refresh (401) /
  reject(kind). The base class maps 2xx ok, 401 refresh, 429 rate_limited, 404 not_found, 5xx retry, else rejected.
- Retry (stamina: exponential backoff with jitter, `attempts` in all): `Retry-After` is honoured in both forms
  (delta-seconds and HTTP-date, RFC 9110 section 10.2.3) through the injectable `sleep` and `clock`; a wait longer
  than `retry_after_max` is not slept in the run: the call raises kind="retryable" at once.
- The uncertain-write rule: a write that may have reached the system (a transport error after the connection was
  made, a 5xx, a read timeout) is re-sent only when it is replay-safe (an idempotency key the system honours, or a
  method whose replay lands on the same state); otherwise it raises kind="uncertain" after one send, and the sink
  looks the entry up before anything is written again. A replay-safe write whose retries run out after any attempt
  may have reached the system is also "uncertain". Nothing-reached failures (connect errors, 429, refused tokens)
  are retried for every method and end "retryable".
- Count: `requests` (sent) and `waited` (seconds waited for the limiter and for Retry-After; stamina's backoff sleeps
  are not counted), both under one lock.
- Fail: one exception type, `ApiError(kind, tenant_id, message, status, body)` (kinds as `ledger.sink.ErrorKind`);
  a system's own error class subclasses it without changing the constructor (`Dialect.error`) to add properties
  that read the vendor's body (QuickBooks' Fault code, Aden's field).

`path(*segments)` percent-encodes every segment (RFC 3986, nothing kept: `/ # ? % space`, non-ASCII as UTF-8, a
dot-only segment as %2E) so that an id reaches the server as one segment, and refuses an empty id (which would
address the collection).

How a sixth system plugs in: a `Dialect` subclass (its auth, its limits, its error words), then one `ApiCore` per
connection and an `ApiClient` subclass holding only the endpoint methods (as systems/<name>/client.py do for the
five); paging from ledger_pipeline.systems.paging. For example (about 30 lines)::

    class AcmeError(ApiError):
        @property
        def code(self) -> str | None:  # Acme's error body: {"error": {"code": ..., "message": ...}}
            err = self.body.get("error") if isinstance(self.body, dict) else None
            return err.get("code") if isinstance(err, dict) else None

    class AcmeDialect(Dialect):
        system, title, error = "acme", "Acme Ledger", AcmeError

        def __init__(self, base_url: str, token: TokenSource, scale: float = 1.0):
            super().__init__(base_url)
            self.token, self.scale = token, scale  # token: (tenant, stale) -> live token, e.g. vault.access_token

        def auth(self, tenant: str) -> httpx.Auth:
            return VaultTokenAuth(tenant, self.token, scheme="Bearer")

        def rules(self, tenant: str, limit_key: object) -> list[Rule]:  # Acme: 120 requests/min per tenant
            return scaled_rules(f"acme:{tenant}", [(120, 60)], self.scale)

        def prepare(self, call: Call) -> Call:  # every call names the ledger; writes carry Acme's key header
            headers = {**call.headers, **({"Idempotency-Key": call.idempotency_key} if call.idempotency_key else {})}
            return replace(call, params={**(call.params or {}), "ledger": "main"}, headers=headers)

        def message(self, data: Any) -> str:
            err = data.get("error") if isinstance(data, dict) else None
            return f"{err.get('code')}: {err.get('message')}" if isinstance(err, dict) else super().message(data)

        def classify(self, response: httpx.Response, data: Any) -> Resolution:
            if response.status_code == 409:
                return Resolution.reject("duplicate")
            if response.status_code == 422 and "period closed" in self.message(data):
                return Resolution.reject("locked")
            return super().classify(response, data)

    core = open_core(AcmeDialect(url, token), settings)
    entry = core.call(tenant, "GET", path("entries", entry_id)).data
    core.call(tenant, "POST", "/entries", body=payload, idempotency_key=custom_id)  # re-sent safely on a 5xx

The sink then turns an `ApiError` into the engine's `SinkError` (`err.sink_error()`, or its own mapping of the
rejected kinds).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import math
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
import stamina

from ledger_pipeline.ledger.sink import ErrorKind, SinkError
from ledger_pipeline.money import dumps_exact, loads_exact
from ledger_pipeline.ratelimit import HostLimiter, Priority, Rule, host_limiter_at, state_path
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.vault import NeedsReauth, TokenEndpointError
from ledger_pipeline.systems.http import http_client

__all__ = [
    "SAFE_METHODS", "UNKNOWN", "Action", "Answer", "ApiClient", "ApiCore", "ApiError", "Call", "Dialect", "HeaderAuth",
    "Resolution", "TokenSource", "VaultTokenAuth", "open_core", "path", "retry_after_seconds",
]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# (tenant_id, stale token or None) -> a live access token: what TokenVault.access_token gives, bound to the
# system's refresh function. Raises NeedsReauth (grant gone) or TokenEndpointError (refresh failed).
TokenSource = Callable[[str, "str | None"], str]
Action = Literal["ok", "retry", "rate_limited", "refresh", "reject"]
# how an "uncertain" error ends (the sink looks the entry up before anything is written again)
UNKNOWN = "the outcome is unknown (the write may have been applied): look the entry up before writing again"


# -- errors --------------------------------------------------------------------------------------------------------
class ApiError(Exception):
    """A failed call for one tenant. `kind` says what the engine may do next (ledger.sink.ErrorKind); `status` is the
    HTTP status (None when no answer came); `body` the parsed answer (dict/list with Decimals, or up to 500
    characters of text); `message` the method, path, status and the system's own words; `retry_after` the seconds
    the system asked us to wait, when it did."""

    def __init__(self, kind: ErrorKind, tenant_id: str, message: str, status: int | None = None, body: Any = None,
                 *, system: str = "", retry_after: float | None = None):
        super().__init__(f"tenant {tenant_id}: {message}")
        self.kind, self.tenant_id, self.message = kind, tenant_id, message
        self.status, self.body, self.system, self.retry_after = status, body, system, retry_after

    def __str__(self) -> str:  # `kind`/`message` may be amended after construction (e.g. retryable -> uncertain)
        return f"tenant {self.tenant_id}: {self.message}"

    def __reduce__(self) -> tuple:  # picklable across processes (Dagster, the posting workers), subclasses too
        return (self.__class__, (self.kind, self.tenant_id, self.message, self.status, self.body), self.__dict__)

    def sink_error(self) -> SinkError:
        """The engine's view of this error (same kind, message and status)."""
        return SinkError(self.kind, str(self), self.status, {"system": self.system} if self.system else {})


class _Retry(Exception):
    """Internal: this attempt failed in a way worth another one (after `wait` seconds, when the system said so)."""

    def __init__(self, error: ApiError, wait: float | None = None):
        super().__init__(str(error))
        self.error, self.wait = error, wait


# -- what a dialect says about an answer ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolution:
    """What to do with an answer (shape after Airbyte CDK's ErrorResolution / ResponseAction).

    - ok: done, the answer is the result.
    - retry: a transient failure that may have been processed (5xx): re-sent when the call is replay-safe, else the
      call raises kind="uncertain". `unprocessed=True` says the system did nothing (any method may be re-sent).
    - rate_limited: refused before processing (429): re-sent for every method, after `retry_after` (else the
      response's Retry-After header, else the backoff).
    - refresh: the token was refused (401) although the auth already refreshed it once in this attempt.
    - reject: the system said no; `kind` is the engine's error kind (rejected, not_found, duplicate, locked, account,
      deferred, needs_reauth).
    `message` replaces the dialect's parsed message in the error when given.
    """

    action: Action
    kind: ErrorKind | None = None
    message: str | None = None
    retry_after: float | None = None
    unprocessed: bool = False

    @classmethod
    def ok(cls) -> Resolution:
        return cls("ok")

    @classmethod
    def retry(cls, message: str | None = None, *, unprocessed: bool = False,
              retry_after: float | None = None) -> Resolution:
        return cls("retry", message=message, unprocessed=unprocessed, retry_after=retry_after)

    @classmethod
    def rate_limited(cls, message: str | None = None, retry_after: float | None = None) -> Resolution:
        return cls("rate_limited", message=message, retry_after=retry_after)

    @classmethod
    def refresh(cls) -> Resolution:
        return cls("refresh")

    @classmethod
    def reject(cls, kind: ErrorKind = "rejected", message: str | None = None) -> Resolution:
        return cls("reject", kind=kind, message=message)


@dataclass(frozen=True)
class Call:
    """One intended request, as the caller asked and the dialect prepared it. `url` is a path under the dialect's
    base URL (made with `path(...)`) or an absolute URL; `body` is JSON (None: no body); `limit_key` is the dialect's
    own (e.g. QuickBooks' batch size); `replay_safe` None lets the dialect decide."""

    tenant: str
    method: str
    url: str
    params: dict | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    limit_key: Any = None
    idempotency_key: str | None = None
    replay_safe: bool | None = None
    priority: Priority = "posting"


@dataclass(frozen=True)
class Answer:
    """A successful call: HTTP status, the parsed body (exact: non-integers are Decimal), the headers, and how many
    requests the call sent (retries and the re-send after a token refresh included)."""

    status: int
    data: Any
    headers: httpx.Headers
    sent: int = 1


# -- auth ----------------------------------------------------------------------------------------------------------
class VaultTokenAuth(httpx.Auth):
    """`<header>: <scheme> <token>` from the vault; on a 401 asks the vault once more with `stale=` the refused token
    (the vault refreshes it, or returns the one another worker refreshed meanwhile, or for a non-expiring token
    introspects it) and re-sends once. NeedsReauth / TokenEndpointError from the vault propagate to the core."""

    def __init__(self, tenant: str, token: TokenSource, scheme: str = "Bearer", header: str = "Authorization"):
        self.tenant, self._token, self.scheme, self.header = tenant, token, scheme, header
        self.refreshed = False

    def _apply(self, request: httpx.Request, token: str) -> None:
        request.headers[self.header] = f"{self.scheme} {token}" if self.scheme else token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._token(self.tenant, None)
        self._apply(request, token)
        response = yield request
        if response.status_code == 401:
            self.refreshed = True
            self._apply(request, self._token(self.tenant, token))
            yield request

    def __repr__(self) -> str:  # never show a token
        return f"VaultTokenAuth(tenant={self.tenant!r}, scheme={self.scheme!r})"


class HeaderAuth(httpx.Auth):
    """A fixed secret header (an account-wide API key). Never shown by repr; no refresh."""

    def __init__(self, header: str, value: str):
        self.header, self._value = header, value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self.header] = self._value
        yield request

    def __repr__(self) -> str:
        return f"HeaderAuth({self.header!r}, ***)"


class _Metered(httpx.Auth):
    """Wraps the dialect's auth: `before_send` (the limiter, the counters) runs before every request the auth flow
    sends, the re-send after a refresh included."""

    def __init__(self, inner: httpx.Auth | None, before_send: Callable[[], None]):
        self.inner, self.before_send = inner or httpx.Auth(), before_send

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self.inner.sync_auth_flow(request)
        try:
            outgoing = next(flow)
            while True:
                self.before_send()
                response = yield outgoing
                try:
                    outgoing = flow.send(response)
                except StopIteration:
                    return
        finally:
            flow.close()

    async def async_auth_flow(self, request: httpx.Request):  # noqa: ANN201
        raise NotImplementedError("ApiCore is synchronous")
        yield request  # pragma: no cover


# -- the dialect ---------------------------------------------------------------------------------------------------
class Dialect:
    """What one system says differently. Override what differs; every method has a working default."""

    system: ClassVar[str] = "api"  # the registry name (`ledger-pipeline connect --system <system>`)
    title: ClassVar[str] = "the API"  # how errors name the system
    error: ClassVar[type[ApiError]] = ApiError  # the system's error class (ApiError's constructor)

    def __init__(self, base_url: str = ""):
        self.base = base_url.rstrip("/")

    def base_url(self, tenant: str) -> str:
        """Where the tenant's API lives (Zoho: per data centre)."""
        return self.base

    def auth(self, tenant: str) -> httpx.Auth | None:
        """The tenant's credentials as an httpx.Auth (VaultTokenAuth, HeaderAuth, a signing auth); None: none."""
        return None

    def prepare(self, call: Call) -> Call:
        """Add what every call carries (realm, organization_id, the idempotency key's header or parameter).
        May raise ApiError (Zoho: the daily cap is spent) or NeedsReauth (Rootfi: the company is not linked)."""
        return call

    def is_write(self, call: Call) -> bool:
        """Whether the call may change remote state (Rootfi: `POST .../all` is a read)."""
        return call.method.upper() not in SAFE_METHODS

    def replay_safe(self, call: Call) -> bool:
        """Whether sending the call twice lands on the same state: reads, and writes with an idempotency key."""
        return not self.is_write(call) or call.idempotency_key is not None

    def rules(self, tenant: str, limit_key: Any) -> list[Rule]:
        """The limiter rules one request of this tenant counts against ([]: not paced)."""
        return []

    def slots(self, call: Call) -> list[list[Rule]]:
        """The limiter grants one request needs (QuickBooks: one per batch item); each is a list of rules."""
        rules = self.rules(call.tenant, call.limit_key)
        return [rules] if rules else []

    def in_flight(self, call: Call) -> contextlib.AbstractContextManager:
        """Held around each attempt's send (QuickBooks: a semaphore of 10 per realm)."""
        return contextlib.nullcontext()

    def parse(self, response: httpx.Response) -> Any:
        """The answer's body: exact JSON (Decimal, never float), else up to 500 characters of text, else None."""
        if not response.content:
            return None
        try:
            return loads_exact(response.content)
        except ValueError:
            return response.text[:500]

    def message(self, data: Any) -> str:
        """The system's own words from an error body."""
        if isinstance(data, dict):
            for key in ("message", "error", "errors", "detail"):
                if key in data and not isinstance(data[key], dict | list):
                    return str(data[key])[:500]
        return ("" if data is None else str(data))[:500]

    def classify(self, response: httpx.Response, data: Any) -> Resolution:
        status = response.status_code
        if 200 <= status < 300:
            return Resolution.ok()
        if status == 401:
            return Resolution.refresh()
        if status == 429:
            return Resolution.rate_limited()
        if status == 404:
            return Resolution.reject("not_found")
        if status >= 500:
            return Resolution.retry()
        return Resolution.reject("rejected")


def path(*segments: str | int) -> str:
    """`/seg1/seg2...`, every segment percent-encoded (RFC 3986, safe=""), so an id holding `/ # ? %`, a space or
    non-ASCII text is one segment on the server; a dot-only segment becomes %2E... (clients would drop `.`/`..`).
    Raises ValueError for an empty or None segment (it would address the collection, not the entry)."""
    out = []
    for seg in segments:
        text = "" if seg is None else str(seg)
        if not text:
            raise ValueError(f"empty path segment in {segments!r}: an id is missing")
        out.append("%2E" * len(text) if set(text) == {"."} else quote(text, safe=""))
    return "/" + "/".join(out)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (RFC 9110 section 10.2.3): delta-seconds, or an HTTP-date measured
    from `now` (epoch seconds); never negative; None when absent or unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)


# -- the core ------------------------------------------------------------------------------------------------------
@dataclass
class _State:
    """One call's memory across attempts."""

    sent: int = 0
    reached: bool = False  # a write may have reached the system in some attempt
    refused: int = 0  # attempts whose token was refused again after its refresh
    wait_next: float = 0.0  # Retry-After to honour before the next attempt


class ApiCore:
    """One system connection's requests: pooled httpx, the host-shared limiter, the dialect. Thread-safe.

    `attempts`, `backoff_initial`, `backoff_max`: stamina's retry budget (seconds). `retry_after_max`: the longest
    Retry-After slept within a call (seconds). `reauth_after`: refusals after a refresh before needs_reauth.
    `sleep`/`clock` (seconds, epoch): for Retry-After only (the limiter has its own)."""

    def __init__(self, dialect: Dialect, *, http: httpx.Client | None = None, limiter: HostLimiter | None = None,
                 priority: Priority = "posting", attempts: int = 6, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, retry_after_max: float = 120.0, reauth_after: int = 2,
                 timeout: float = 30.0, source_address: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time):
        if attempts < 1 or reauth_after < 1:
            raise ValueError("attempts and reauth_after must be at least 1")
        self.dialect = dialect
        self.http = http or http_client(source_address, timeout)
        self.limiter = limiter
        self.priority: Priority = priority
        self.attempts, self.backoff_initial, self.backoff_max = attempts, backoff_initial, backoff_max
        self.retry_after_max, self.reauth_after = retry_after_max, reauth_after
        self._sleep, self._clock = sleep, clock
        self._lock = threading.Lock()
        self._requests = 0
        self._waited = 0.0

    @property
    def requests(self) -> int:
        """Requests sent so far (every attempt and re-send)."""
        return self._requests

    @property
    def waited(self) -> float:
        """Seconds waited so far for the limiter and for Retry-After."""
        return self._waited

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiCore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def error(self, kind: ErrorKind, tenant: str, message: str, status: int | None = None, body: Any = None,
              retry_after: float | None = None) -> ApiError:
        """An error of the dialect's class (for paginators and clients on top of the core)."""
        return self.dialect.error(kind, tenant, message, status, body, system=self.dialect.system,
                                  retry_after=retry_after)

    # -- the call ---------------------------------------------------------------------------------------------------
    def call(self, tenant: str, method: str, url: str, *, body: Any = None, params: dict | None = None,
             headers: dict[str, str] | None = None, limit_key: Any = None, replay_safe: bool | None = None,
             idempotency_key: str | None = None, priority: Priority | None = None) -> Answer:
        """Send one request (retried as the module docstring says) and return the answer. `idempotency_key` (placed
        by the dialect) makes a write replay-safe; `replay_safe` overrides the dialect's judgement. Raises ApiError."""
        call = Call(tenant, method.upper(), url, params, body, dict(headers or {}), limit_key, idempotency_key,
                    replay_safe, priority or self.priority)
        try:
            call = self.dialect.prepare(call)
        except NeedsReauth as exc:
            raise self._reauth(call, exc) from exc
        write = self.dialect.is_write(call)
        safe = call.replay_safe if call.replay_safe is not None else self.dialect.replay_safe(call)
        state = _State()
        try:
            for attempt in stamina.retry_context(on=_backoff, attempts=self.attempts,
                                                 wait_initial=self.backoff_initial, wait_max=self.backoff_max,
                                                 wait_jitter=self.backoff_initial, timeout=None):
                with attempt:
                    return self._attempt(call, write, safe, state)
        except _Retry as exc:
            err = exc.error
            if write and state.reached and err.kind == "retryable":
                err.kind = "uncertain"
                err.message += f"; {UNKNOWN} (an earlier attempt may have reached the system)"
            raise err from exc.__cause__
        raise AssertionError("stamina ended without a result or an error")  # pragma: no cover

    def _attempt(self, call: Call, write: bool, safe: bool, state: _State) -> Answer:
        if state.wait_next > 0:
            self._wait(state.wait_next)
        state.wait_next = 0.0
        url = call.url
        if not url.startswith(("http://", "https://")):
            url = self.dialect.base_url(call.tenant) + url
        content = dumps_exact(call.body).encode() if call.body is not None else None
        headers = {"Accept": "application/json",
                   **({"Content-Type": "application/json"} if content is not None else {}), **call.headers}
        where = f"{self.dialect.title} {call.method} {call.url.split('?', 1)[0]}"
        auth = self.dialect.auth(call.tenant)
        try:
            with self.dialect.in_flight(call):
                response = self.http.request(call.method, url, params=call.params, content=content, headers=headers,
                                             auth=_Metered(auth, lambda: self._before_send(call, state)))
        except NeedsReauth as exc:
            raise self._reauth(call, exc) from exc
        except TokenEndpointError as exc:  # nothing was processed: the request was refused or never sent
            raise _Retry(self.error("retryable", call.tenant, _untenanted(exc, call.tenant))) from exc
        except httpx.UnsupportedProtocol as exc:  # a configuration error: no retry helps
            raise self.error("rejected", call.tenant, f"{where}: {exc} (check the system's base URL)") from exc
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError) as exc:
            # no connection: nothing reached the system, every method may be sent again
            raise _Retry(self.error("retryable", call.tenant,
                                    f"{where}: cannot connect ({type(exc).__name__}: {exc}); retried on the next run"
                                    )) from exc
        except httpx.TransportError as exc:  # sent, no answer: a write may have been applied
            state.reached = state.reached or write
            if safe:
                raise _Retry(self.error("retryable", call.tenant,
                                        f"{where}: no answer ({type(exc).__name__}); retried on the next run")) from exc
            raise self.error("uncertain", call.tenant,
                             f"{where}: no answer ({type(exc).__name__}: {exc}); {UNKNOWN}") from exc
        return self._resolve(call, write, safe, state, response, where)

    def _resolve(self, call: Call, write: bool, safe: bool, state: _State, response: httpx.Response,
                 where: str) -> Answer:
        status = response.status_code
        data = self.dialect.parse(response)
        res = self.dialect.classify(response, data)
        if res.action == "ok":
            return Answer(status, data, response.headers, state.sent)
        what = f"{where} -> {status}: {res.message if res.message is not None else self.dialect.message(data)}"
        reconnect = f"run `ledger-pipeline connect --tenant {call.tenant} --system {self.dialect.system}`"
        if res.action == "reject":
            if res.kind == "needs_reauth":  # the system says the tenant's grant is gone: name the fix
                what += f"; the {self.dialect.system} connection needs re-authorisation: {reconnect}"
            raise self.error(res.kind or "rejected", call.tenant, what, status, data)
        if res.action == "refresh":
            state.refused += 1
            if state.refused >= self.reauth_after:
                raise self.error("needs_reauth", call.tenant,
                                 f"{what}; the credentials were refused {state.refused}x, each time after a "
                                 f"token refresh where the system has one: {reconnect}", status, data)
            raise _Retry(self.error("retryable", call.tenant, what + " (after a token refresh)", status, data))
        wait = res.retry_after
        if wait is None:
            wait = retry_after_seconds(response.headers.get("retry-after"), self._clock())
        if wait is not None and wait > self.retry_after_max:
            state.reached = state.reached or (write and res.action == "retry" and not res.unprocessed)
            uncertain = write and state.reached
            raise self.error("uncertain" if uncertain else "retryable", call.tenant,
                             f"{what}; {self.dialect.title} asks to wait {wait:.0f} s (more than the "
                             f"{self.retry_after_max:.0f} s waited within a run): retried on the next run"
                             + (f"; {UNKNOWN}" if uncertain else ""),
                             status, data, retry_after=wait)
        err = self.error("retryable", call.tenant, what, status, data, retry_after=wait)
        if res.action == "rate_limited" or res.unprocessed:
            state.wait_next = wait or 0.0
            raise _Retry(err, wait)
        state.reached = state.reached or write  # retry: the system may have processed it
        if not safe:
            err.kind = "uncertain"
            err.message += f"; {UNKNOWN}"
            raise err
        state.wait_next = wait or 0.0
        raise _Retry(err, wait)

    # -- bookkeeping ------------------------------------------------------------------------------------------------
    def _before_send(self, call: Call, state: _State) -> None:
        """The limiter's grants for one request, then the counters (every request sent passes here)."""
        waited = 0.0
        if self.limiter is not None:
            for rules in self.dialect.slots(call):
                waited += self.limiter.acquire(rules, call.priority)
        state.sent += 1
        with self._lock:
            self._requests += 1
            self._waited += waited

    def _wait(self, seconds: float) -> None:
        self._sleep(seconds)
        with self._lock:
            self._waited += seconds

    def _reauth(self, call: Call, exc: NeedsReauth) -> ApiError:
        return self.error("needs_reauth", call.tenant, _untenanted(exc, call.tenant))


def _backoff(exc: Exception) -> bool | float:
    """stamina's hook: retry `_Retry` only; after a Retry-After (slept by the core) no extra backoff."""
    if not isinstance(exc, _Retry):
        return False
    return 0.0 if exc.wait else True


def _untenanted(exc: Exception, tenant: str) -> str:
    """An exception's text without its own `tenant X: ` prefix (ApiError adds it once)."""
    return str(exc).removeprefix(f"tenant {tenant}: ")


def open_core(dialect: Dialect, settings: Settings, *, timeout: float = 30.0, backoff_initial: float = 0.5,
              priority: Priority = "posting", **kwargs: Any) -> ApiCore:
    """An ApiCore on this host's shared budget (`settings.lock_dir`, per LEDGER_SOURCE_ADDRESS) with a pooled client
    leaving from `settings.source_address`; backoff capped at 60x its start (at least 1 s), as the clients do today."""
    limiter = host_limiter_at(state_path(settings.lock_dir, settings.source_address))
    kwargs.setdefault("backoff_max", max(backoff_initial * 60, 1.0))
    return ApiCore(dialect, http=http_client(settings.source_address, timeout), limiter=limiter, priority=priority,
                   backoff_initial=backoff_initial, **kwargs)


class ApiClient:
    """The plumbing every system's client shares over its ApiCore: the counters, the pooled HTTP client (for event
    hooks), the default priority, close. A client subclasses it and adds only its endpoint methods."""

    def __init__(self, core: ApiCore):
        self.core = core

    @property
    def dialect(self) -> Dialect:
        return self.core.dialect

    @property
    def requests(self) -> int:
        """Requests sent so far (every attempt and re-send)."""
        return self.core.requests

    @property
    def http(self) -> httpx.Client:
        return self.core.http

    @property
    def priority(self) -> Priority:
        """"posting" goes first on this host; chart and drift reads set "background" (or pass priority= per call)."""
        return self.core.priority

    @priority.setter
    def priority(self, value: Priority) -> None:
        self.core.priority = value

    def close(self) -> None:
        self.core.close()
