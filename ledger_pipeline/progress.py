"""Progress of long steps, for whoever shows it: the CLI's progress bar listens in the same process (runs execute
in-process), the Dagster UI gets log lines from the asset itself.

Posting's ETA knows what each system costs (`PostingEta`): tenants are posted one after another, each to its own
system, so the time left is the sum over the tenants not yet posted of (requests the tenant needs) x (seconds per
request of its system). Both factors are per system:

- requests: `SystemCost.requests(writes)` from the system's batching (Jurnal 100 entries per `batch_create`,
  QuickBooks 30 per `/batch`, Rootfi 100 per upload job plus its poll, Zoho and Aden one entry at a time, Aden
  with more than one request per entry), then corrected by what this run has seen for that system (observed /
  predicted requests of its finished tenants), so a system that needs fewer (or more) requests than its prior says
  is estimated from its own behaviour;
- seconds per request: at least the pace of the limit the run's tenants share for that system (Jurnal's 40/min per
  source address, Rootfi's 600/min per API key), time-scaled and with the limiter's headroom, and at least what
  this run has measured for the system (latency, per-tenant limits, retries). A system with no shared limit (limits
  per tenant: QuickBooks, Zoho, Aden) is paced by its measured latency, and a tenant needing more requests than its
  own per-minute limit waits for the next window.

Tenants of a system not yet seen are estimated from the prior and the mean latency seen so far, so the ETA does not
assume that the systems posted last cost what the first ones did (issue 25.6: "ETA 41 s" where posting took 76 s
more, and "4,945/min of 2,000 allowed" when every system's requests were set against Jurnal's limit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

_LISTENERS: list[Callable[[str, PostingProgress], None]] = []


def listen(callback: Callable[[str, PostingProgress], None]) -> Callable[[], None]:
    """Register a listener of (stage, progress); `progress` has done, total, requests, elapsed, eta_seconds and
    describe() (a PostingProgress). Returns the function that unregisters it."""
    _LISTENERS.append(callback)
    return lambda: _LISTENERS.remove(callback) if callback in _LISTENERS else None


def report_progress(stage: str, progress: PostingProgress) -> None:
    for callback in list(_LISTENERS):
        callback(stage, progress)


# ---- what a posting request costs, per system ----------------------------------------------------------------

@dataclass(frozen=True)
class SystemCost:
    """What posting a tenant's fresh entries costs on one system, in requests and in the limits that pace them.

    Limits are per real minute at the vendor's clock (the run's `rate_limit_scale` multiplies them).
    """

    system: str
    per_entry: float = 1.0  # requests per entry written one at a time (batch == 1)
    batch: int = 1  # entries per write request when the system batches (1: none)
    per_batch: float = 1.0  # requests per batch (Rootfi: the upload plus one poll of its job)
    shared_per_minute: float | None = None  # the limit every tenant of the run shares (None: none)
    shared_scope: str = ""  # what shares it ("source address", "API key")
    tenant_per_minute: float | None = None  # the limit on one tenant's own requests
    tenant_scope: str = "tenant"  # what the tenant's own limit is counted on ("realm", "organization", ...)
    source: str = ""  # the vendor's documentation (or the emulation) the numbers come from

    def requests(self, writes: int) -> float:
        """Requests to write `writes` fresh entries for one tenant (0 when there is nothing to write)."""
        if writes <= 0:
            return 0.0
        if self.batch > 1:
            return math.ceil(writes / self.batch) * self.per_batch
        return writes * self.per_entry

    def shared_allowed(self, scale: float = 1.0, headroom: float = 1.0) -> float | None:
        """Requests per real minute the shared limit allows (None when there is none)."""
        return self.shared_per_minute * scale * headroom if self.shared_per_minute else None

    def allowed(self, scale: float = 1.0) -> tuple[float | None, str]:
        """The limit a progress line sets the system's rate against, per real minute, and what it is counted on: the
        shared limit where there is one (it binds across tenants), else the tenant's own (tenants are posted one
        after another, so one tenant's limit bounds the system's rate)."""
        if self.shared_per_minute:
            return self.shared_per_minute * scale, self.shared_scope
        if self.tenant_per_minute:
            return self.tenant_per_minute * scale, self.tenant_scope
        return None, ""


def system_costs() -> dict[str, SystemCost]:
    """Each registered system's posting cost, read from its own client's rate-limiter configuration and its sink's
    batch size (systems/<name>/client.py and sink.py), so a changed limit changes the ETA and the progress lines too.

    Priors only: a run corrects the request counts from what it observes (see PostingEta)."""
    from ledger_pipeline.systems.aden.client import PER_TOKEN_MINUTE as ADEN_PER_TOKEN_MINUTE
    from ledger_pipeline.systems.jurnal.client import JurnalLimits
    from ledger_pipeline.systems.jurnal.sink import MAX_BATCH as JURNAL_BATCH
    from ledger_pipeline.systems.quickbooks.client import QuickBooksLimits
    from ledger_pipeline.systems.quickbooks.sink import MAX_BATCH as QUICKBOOKS_BATCH
    from ledger_pipeline.systems.rootfi.client import PER_COMPANY_MINUTE, PER_KEY_MINUTE
    from ledger_pipeline.systems.rootfi.sink import MAX_BATCH as ROOTFI_BATCH
    from ledger_pipeline.systems.zoho.client import PER_MINUTE as ZOHO_PER_MINUTE

    jurnal, quickbooks = JurnalLimits(), QuickBooksLimits()
    return {c.system: c for c in [
        # per source IP (shared by every tenant of the host) and per token (one token per tenant); batch_create
        SystemCost("jurnal", batch=JURNAL_BATCH, shared_per_minute=jurnal.per_ip_minute,
                   shared_scope="source address", tenant_per_minute=jurnal.per_token_minute,
                   source="Mekari Jurnal API rate limits (per IP and per token), systems/jurnal/client.py"),
        # per realm (one realm per tenant): batch requests/min bind the batched writes; /batch of 30 items
        SystemCost("quickbooks", batch=QUICKBOOKS_BATCH, tenant_per_minute=quickbooks.batch_per_realm_minute,
                   tenant_scope="realm (batch requests)",
                   source="Intuit QuickBooks Online API rate limits and throttles, systems/quickbooks/client.py"),
        # per organization (one per tenant); no batch endpoint for journals
        SystemCost("zoho", per_entry=1, tenant_per_minute=ZOHO_PER_MINUTE, tenant_scope="organization",
                   source="Zoho Books API v3 limits, systems/zoho/client.py"),
        # per company token; create the Draft, submit it for approval, and the accounting-periods look-up
        SystemCost("aden", per_entry=3, tenant_per_minute=ADEN_PER_TOKEN_MINUTE, tenant_scope="company token",
                   source="docs.adenhq.com/development: create + submit-for-approval + periods look-up"),
        # per API key (every tenant) and per company; one upload job per tenant, then its job polled
        SystemCost("rootfi", batch=ROOTFI_BATCH, per_batch=2, shared_per_minute=PER_KEY_MINUTE,
                   shared_scope="API key", tenant_per_minute=PER_COMPANY_MINUTE,
                   source="the Rootfi emulation (Rootfi publishes no limits), systems/rootfi/client.py"),
    ]}


COSTS: dict[str, SystemCost] = system_costs()
DEFAULT_COST = SystemCost("other", per_entry=1)
DEFAULT_LATENCY = 0.05  # seconds per request before anything was measured in the run (loopback-ish)


# ---- the posting ETA ------------------------------------------------------------------------------------------

@dataclass
class SystemTally:
    """What one system has cost so far in this run."""

    tenants: int = 0
    total_tenants: int = 0
    writes: int = 0
    requests: int = 0
    predicted: float = 0.0  # what the prior said the finished tenants would need
    seconds: float = 0.0  # time spent posting this system's tenants

    @property
    def per_minute(self) -> float:
        return 60 * self.requests / self.seconds if self.seconds > 0 else 0.0


@dataclass
class PostingProgress:
    """Posting progress: done/total tenants, requests, elapsed seconds, the ETA, and per system its tally, the limit
    its rate is set against (requests per real minute) and what that limit is counted on."""

    done: int
    total: int
    requests: int
    elapsed: float  # seconds
    eta: float | None
    systems: dict[str, SystemTally] = field(default_factory=dict)
    allowed: dict[str, float | None] = field(default_factory=dict)  # requests/min per system (SystemCost.allowed)
    scopes: dict[str, str] = field(default_factory=dict)

    @property
    def rate_per_minute(self) -> float:
        return 60 * self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        return 0.0 if self.done >= self.total else self.eta

    def describe(self) -> str:
        eta = self.eta_seconds
        parts = []
        for system, t in self.systems.items():
            if not t.total_tenants:
                continue
            rate = f"{t.per_minute:,.0f}/min" if t.requests else "not started"
            limit = self.allowed.get(system)
            of = f" of {limit:,.0f} allowed per {self.scopes.get(system) or 'run'}" if limit and t.requests else ""
            per = f", {t.requests / t.writes:.2f} req/entry" if t.writes and t.requests else ""
            parts.append(f"{system} {t.tenants:,}/{t.total_tenants:,} {rate}{of}{per}")
        return (f"{self.done:,}/{self.total:,} tenants, {self.requests:,} requests, "
                f"ETA {'?' if eta is None else f'{eta:,.0f}s'}" + (f" ({'; '.join(parts)})" if parts else ""))


class PostingEta:
    """ETA of a posting run whose tenants are posted one after another, each to its own system.

    work: (system, entries to write) per tenant with work, in posting order. Call `tenant_done` after each tenant
    (in that order) with the requests it used and the seconds it took; `progress(elapsed)` gives the line to show.
    `scale` is the run's rate-limit time scale; `headroom` the limiter's margin under each limit (0.95).
    """

    def __init__(self, work: Iterable[tuple[str, int]], scale: float = 1.0,
                 costs: Mapping[str, SystemCost] | None = None, headroom: float = 0.95):
        self.work = list(work)
        self.scale, self.headroom = scale, headroom
        self.costs = dict(COSTS if costs is None else costs)
        self.done = 0
        self.tally: dict[str, SystemTally] = {}
        for system, _ in self.work:
            self.tally.setdefault(system, SystemTally()).total_tenants += 1

    def cost(self, system: str) -> SystemCost:
        return self.costs.get(system, DEFAULT_COST)

    def tenant_done(self, system: str, requests: int, seconds: float) -> None:
        """Record the next tenant of the work list as posted."""
        if self.done >= len(self.work):
            raise IndexError(f"all {len(self.work)} tenants of the posting work were already recorded")
        planned, writes = self.work[self.done]
        if planned != system:
            raise ValueError(f"tenant {self.done + 1} of the posting work is a {planned} tenant, not {system}: "
                             "call tenant_done in the order of the work list")
        t = self.tally[system]
        t.tenants += 1
        t.writes += writes
        t.requests += requests
        t.predicted += self.cost(system).requests(writes)
        t.seconds += max(seconds, 0.0)
        self.done += 1

    def seconds_per_request(self, system: str) -> float:
        """At least the shared limit's pace, at least what this run measured for the system (else the mean latency
        measured over every system so far, else DEFAULT_LATENCY)."""
        t, cost = self.tally.get(system, SystemTally()), self.cost(system)
        allowed = cost.shared_allowed(self.scale, self.headroom)
        pace = 60 / allowed if allowed else 0.0
        if t.requests:
            measured = t.seconds / t.requests
        else:
            seen = [x for x in self.tally.values() if x.requests]
            own = [x for s, x in self.tally.items() if x.requests and not self.cost(s).shared_per_minute]
            pool = own or seen  # latency: prefer systems not paced by a shared limit
            measured = (sum(x.seconds for x in pool) / sum(x.requests for x in pool)) if pool else DEFAULT_LATENCY
        return max(pace, measured)

    def requests_for(self, system: str, writes: int) -> float:
        """Requests a tenant of `system` with `writes` entries to write is expected to need."""
        t, prior = self.tally.get(system, SystemTally()), self.cost(system).requests(writes)
        if t.predicted > 0 and t.tenants:
            return prior * t.requests / t.predicted
        return prior

    def tenant_seconds(self, system: str, writes: int) -> float:
        requests = self.requests_for(system, writes)
        seconds = requests * self.seconds_per_request(system)
        limit = self.cost(system).tenant_per_minute
        if limit:  # more requests than one window of the tenant's own limit: the rest waits for the next windows
            per_window = limit * self.headroom
            if requests > per_window:
                seconds = max(seconds, (requests - per_window) / per_window * 60 / self.scale)
        return seconds

    def remaining_seconds(self) -> float:
        return sum(self.tenant_seconds(system, writes) for system, writes in self.work[self.done:])

    def progress(self, elapsed: float) -> PostingProgress:
        systems = {s: self.tally[s] for s in sorted(self.tally)}
        return PostingProgress(
            self.done, len(self.work), sum(t.requests for t in systems.values()), elapsed,
            self.remaining_seconds(), systems,
            {s: self.cost(s).allowed(self.scale)[0] for s in systems},
            {s: self.cost(s).allowed(self.scale)[1] for s in systems})
