"""The posting ETA knows each system's cost (issue 25.6): requests per entry from the system's batching, corrected by
what the run observed for that system, and seconds per request from the system's own shared limit and its own
measured latency; never Jurnal's 40/min for every system."""

from __future__ import annotations

import pytest

from ledger_pipeline.progress import COSTS, PostingEta, SystemCost, listen, report_progress


def naive_eta(elapsed: float, done: int, total: int) -> float:
    """The ETA the progress line gave before 0.3.0: the mean time per tenant so far, for every tenant left."""
    return elapsed / done * (total - done)


def test_requests_follow_each_systems_batching() -> None:
    assert COSTS["jurnal"].requests(1) == 1 and COSTS["jurnal"].requests(12) == 1
    assert COSTS["jurnal"].requests(101) == 2
    assert COSTS["quickbooks"].requests(30) == 1 and COSTS["quickbooks"].requests(31) == 2
    assert COSTS["zoho"].requests(12) == 12
    assert COSTS["aden"].requests(1) == 3 and COSTS["aden"].requests(4) == 12
    assert COSTS["rootfi"].requests(1) == 2 and COSTS["rootfi"].requests(12) == 2  # upload + its job poll
    assert COSTS["zoho"].requests(0) == 0


def test_systems_posted_last_are_estimated_from_their_own_cost_not_the_first_ones() -> None:
    """60 Jurnal tenants (1 request each, paced by 40/min per address at x100) then 40 Aden tenants (3 requests
    per entry, no shared limit, 0.2 s a request): after the Jurnal part the mean-per-tenant ETA is far too low."""
    scale = 100.0
    eta = PostingEta([("jurnal", 1)] * 60 + [("aden", 1)] * 40, scale=scale)
    pace = 60 / (40 * scale * 0.95)  # the limiter's pace under Jurnal's limit, real seconds
    elapsed = 0.0
    for _ in range(60):
        eta.tenant_done("jurnal", 1, pace)
        elapsed += pace
    for _ in range(2):  # the first Aden tenants: 3 requests of 0.2 s each
        eta.tenant_done("aden", 3, 0.6)
        elapsed += 0.6
    truth = 38 * 3 * 0.2
    assert eta.remaining_seconds() == pytest.approx(truth)
    assert naive_eta(elapsed, 62, 100) < truth / 2  # what the old line said
    line = eta.progress(elapsed).describe()
    assert "62/100 tenants" in line and f"ETA {truth:,.0f}s" in line
    assert "jurnal 60/60 " in line and "of 4,000 allowed per source address" in line
    aden = line.split("aden ")[1].split(";")[0]
    # Aden is set against its own limit per company token (x100), never against Jurnal's per source address
    assert "of 100,000 allowed per company token" in aden and "source address" not in aden
    assert "3.00 req/entry" in aden


def test_unseen_system_uses_its_prior_requests_and_the_latency_seen_so_far() -> None:
    eta = PostingEta([("quickbooks", 1)] * 10 + [("aden", 2)] * 5, scale=1.0)
    for _ in range(10):
        eta.tenant_done("quickbooks", 1, 0.1)  # no shared limit: 0.1 s is its latency
    assert eta.requests_for("aden", 2) == 6  # the prior: 3 per entry
    assert eta.remaining_seconds() == pytest.approx(5 * 6 * 0.1)


def test_the_run_corrects_a_systems_prior_from_what_it_observed() -> None:
    """Aden at 2 requests per entry once the periods look-up is cached: the ETA follows the run, not the prior."""
    eta = PostingEta([("aden", 1)] * 10, scale=1.0)
    for _ in range(4):
        eta.tenant_done("aden", 2, 0.5)  # 0.25 s a request
    assert eta.requests_for("aden", 1) == pytest.approx(2.0)
    assert eta.remaining_seconds() == pytest.approx(6 * 2 * 0.25)


def test_a_burst_under_a_fresh_window_does_not_shorten_the_eta_below_the_limits_pace() -> None:
    """The sliding window lets the first requests through at once; the rest go at the limit's pace."""
    scale = 1.0
    eta = PostingEta([("jurnal", 1)] * 100, scale=scale)
    for _ in range(30):
        eta.tenant_done("jurnal", 1, 0.02)  # 30 requests in 0.6 s: the window was empty
    assert eta.seconds_per_request("jurnal") == pytest.approx(60 / (40 * 0.95))
    assert eta.remaining_seconds() == pytest.approx(70 * 60 / 38)
    assert "of 40 allowed per source address" in eta.progress(0.6).describe()


def test_a_shared_limit_binds_across_tenants_of_that_system_only() -> None:
    """Rootfi's 600/min per API key paces Rootfi tenants; Zoho's tenants are paced by their latency."""
    eta = PostingEta([("rootfi", 1)] * 10 + [("zoho", 1)] * 10, scale=1.0)
    assert eta.seconds_per_request("rootfi") == pytest.approx(60 / (600 * 0.95))
    assert eta.seconds_per_request("zoho") == pytest.approx(0.05)  # nothing measured yet: the default latency
    assert eta.tenant_seconds("rootfi", 1) == pytest.approx(2 * 60 / 570)


def test_a_tenant_with_more_requests_than_its_own_limit_waits_for_the_next_windows() -> None:
    eta = PostingEta([("zoho", 250)], scale=2.0)
    per_window = 100 * 0.95
    assert eta.tenant_seconds("zoho", 250) == pytest.approx((250 - per_window) / per_window * 60 / 2)
    assert eta.tenant_seconds("zoho", 50) == pytest.approx(50 * 0.05)  # within one window: its latency


def test_custom_costs_and_unknown_systems() -> None:
    costs = {"acme": SystemCost("acme", per_entry=2, shared_per_minute=120, shared_scope="account")}
    eta = PostingEta([("acme", 3), ("other", 1)], scale=1.0, costs=costs)
    assert eta.requests_for("acme", 3) == 6 and eta.requests_for("other", 1) == 1
    assert eta.tenant_seconds("acme", 3) == pytest.approx(6 * 60 / (120 * 0.95))


def test_tenant_done_in_order_and_not_past_the_end() -> None:
    eta = PostingEta([("jurnal", 1), ("aden", 1)])
    with pytest.raises(ValueError, match="jurnal tenant, not aden"):
        eta.tenant_done("aden", 3, 1.0)
    eta.tenant_done("jurnal", 1, 1.0)
    eta.tenant_done("aden", 3, 1.0)
    with pytest.raises(IndexError):
        eta.tenant_done("aden", 3, 1.0)
    p = eta.progress(2.0)
    assert p.eta_seconds == 0.0 and p.done == p.total == 2 and p.requests == 4


def test_nothing_done_yet_gives_an_estimate_from_the_priors() -> None:
    eta = PostingEta([("jurnal", 1)] * 40, scale=1.0)
    p = eta.progress(0.0)
    assert p.eta_seconds == pytest.approx(40 * 60 / 38)
    assert "not started" in p.describe()


def test_listeners_receive_the_per_system_progress() -> None:
    got = []
    stop = listen(lambda stage, p: got.append((stage, p.done, p.total, p.describe())))
    try:
        eta = PostingEta([("jurnal", 1)])
        eta.tenant_done("jurnal", 1, 1.5)
        report_progress("posting", eta.progress(1.5))
    finally:
        stop()
    report_progress("posting", eta.progress(1.5))  # unregistered: not received
    assert len(got) == 1 and got[0][:3] == ("posting", 1, 1) and "jurnal 1/1 40/min" in got[0][3]


def test_costs_come_from_each_systems_own_limiter_configuration() -> None:
    """The allowed rates are the clients' own limits (systems/*/client.py), not one system's 40/min for all."""
    from ledger_pipeline.systems.jurnal.client import JurnalLimits
    from ledger_pipeline.systems.quickbooks.client import QuickBooksLimits
    from ledger_pipeline.systems.rootfi.client import PER_KEY_MINUTE

    assert COSTS["jurnal"].shared_per_minute == JurnalLimits().per_ip_minute
    assert COSTS["quickbooks"].tenant_per_minute == QuickBooksLimits().batch_per_realm_minute
    assert COSTS["rootfi"].shared_per_minute == PER_KEY_MINUTE
    assert [s for s, c in COSTS.items() if c.shared_per_minute] == ["jurnal", "rootfi"]
    # a line sets each system against the limit that binds it: shared across tenants, else the tenant's own
    assert COSTS["jurnal"].allowed(2.0) == (80, "source address")
    assert COSTS["zoho"].allowed(2.0) == (200, "organization")
    assert COSTS["rootfi"].allowed(1.0) == (PER_KEY_MINUTE, "API key")


def test_a_window_job_reports_each_systems_requests_allowed_rate_and_eta() -> None:
    """Through the engine: three Jurnal tenants, then two Aden tenants whose create costs three requests. The lines
    set Jurnal's requests against Jurnal's limit only, and the ETA after the Jurnal part prices Aden at its own
    3 requests per entry (the mean-per-tenant ETA would say a third of that)."""
    import datetime as dt

    from ledger_pipeline.posting import WindowJob
    from ledger_pipeline_tests.helpers import MemoryStore
    from ledger_pipeline_tests.test_posting_engine import JAN, MemorySink, entry

    now = [0.0]

    class TimedSink(MemorySink):
        def __init__(self, name: str, per_create: int) -> None:
            super().__init__()
            self.name, self.per_create = name, per_create

        def create(self, tenant_id, entries):  # noqa: ANN001, ANN202
            self.calls += ["create"] * (self.per_create - 1)
            now[0] += 0.5 * self.per_create  # 0.5 s a request
            return super().create(tenant_id, entries)

    sinks = {"jurnal": TimedSink("jurnal", 1), "aden": TimedSink("aden", 3)}
    tenants = {"t1": "jurnal", "t2": "jurnal", "t3": "jurnal", "t4": "aden", "t5": "aden"}
    lines = []
    job = WindowJob((JAN, dt.date(2025, 2, 1)), tenants, {t: [entry(t, JAN, 100)] for t in tenants},
                    {}, {}, sinks.__getitem__, MemoryStore(), backoff=0,
                    on_progress=lambda p: lines.append((p.done, p.eta_seconds, p.describe())),
                    requests=lambda: {s: len(k.calls) for s, k in sinks.items()}, rate_limit_scale=1.0,
                    clock=lambda: now[0])
    job.run()
    assert [d for d, _, _ in lines] == [1, 2, 3, 4, 5]
    done, eta, line = lines[2]
    assert eta == pytest.approx(2 * 3 * 0.5)  # two Aden tenants x 3 requests x the latency seen so far
    assert naive_eta(1.5, 3, 5) == pytest.approx(1.0)
    assert "jurnal 3/3 120/min of 40 allowed per source address, 1.00 req/entry" in line
    assert "aden 0/2 not started" in line
    last = lines[-1][2]
    assert "aden 2/2 120/min of 1,000 allowed per company token, 3.00 req/entry" in last
    assert "5/5 tenants, 9 requests, ETA 0s" in last
