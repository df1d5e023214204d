"""Zoho Books' own behaviour over HTTP against its sandbox: OAuth with api_domain and organization_id, an uncertain
create adopted by reference_number (no idempotency key), the daily cap (deferred, never looped), the per-minute
limit, non-rotating refresh, chart paging with inactive accounts. What every system does alike (post, re-run, late
data in place, fault drill, revoked grant, locked period) is in test_contract.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import text

from ledger_pipeline.ledger.sink import CanonicalEntry, CanonicalLine, SinkError, custom_id_for, memo_for
from ledger_pipeline.money import to_minor
from ledger_pipeline.ratelimit import Rule
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.systems.zoho import ZohoConnection
from ledger_pipeline.testing.systems import MemoryStore as MemStore
from ledger_pipeline.testing.systems import Sandbox, connect_tenants, open_system, post, sandbox_server
from ledger_pipeline.testing.systems import assert_exactly_once as shared_assert_exactly_once

JAN, FEB, MAR, APR = (dt.date(2025, m, 1) for m in (1, 2, 3, 4))


@dataclass
class Env:
    server: SandboxServer
    open: Callable[..., ZohoConnection]
    conn: ZohoConnection
    box: Sandbox

    @property
    def url(self) -> str:
        return self.server.url

    def control(self, login: str, action: str, body: dict) -> dict:
        return self.box.control("zoho", login, action, body)

    def faults(self, **faults: object) -> None:
        self.box.faults(systems=["zoho"], **faults)

    def entries(self) -> list[dict]:
        return self.box.entries("zoho")

    def stats(self) -> dict:
        return self.box.stats()

    def count(self, method: str, endpoint_suffix: str, status: object = None) -> int:
        return self.box.count("zoho", method, endpoint_suffix, status)

    def connect(self, tenants: list[str], conn: ZohoConnection | None = None) -> None:
        connect_tenants(conn or self.conn, tenants)


@contextmanager
def _make_env(tmp_path, monkeypatch, access_ttl: float = 3600) -> Iterator[Env]:  # noqa: ANN001
    """The sandbox (limits x1000) and Zoho connections to it (`open(scale, backoff)` opens more: a new process);
    the environment is restored on exit (`monkeypatch` is accepted for the callers that pass it)."""
    opened: list[ZohoConnection] = []

    def _open(scale: float = 1000, backoff: float = 0.01) -> ZohoConnection:
        opened.append(open_system("zoho", rate_limit_scale=scale, backoff_initial=backoff, timeout=30))
        return opened[-1]

    with sandbox_server(tmp_path / "sb.sqlite", access_ttl=access_ttl) as (server, box):
        try:
            yield Env(server, _open, _open(), box)
        finally:
            for c in opened:
                c.close()


@pytest.fixture
def zoho(settings, tmp_path, monkeypatch) -> Iterator[Env]:  # noqa: ANN001
    with _make_env(tmp_path, monkeypatch) as env:
        yield env


def chart_ids(conn: ZohoConnection, tenant: str) -> dict[str, str]:
    return {a.number: a.account_id for a in conn.fetch_chart(tenant)}


def entry(tenant: str, period: dt.date, ids: dict[str, str], revenue: str, cogs: str, expense: str,
          extra_expense: str | None = None) -> CanonicalEntry:
    """A balanced monthly P&L entry: revenue credit, COGS and expenses debit, net income to retained earnings."""
    lines = [("4-40000", 0, to_minor(revenue)), ("5-50000", to_minor(cogs), 0), ("6-60100", to_minor(expense), 0)]
    if extra_expense:
        lines.append(("6-60217", to_minor(extra_expense), 0))
    net = sum(c for _, _, c in lines) - sum(d for _, d, _ in lines)
    lines.append(("3-30100", net, 0) if net > 0 else ("3-30100", 0, -net))
    canon = tuple(CanonicalLine(i, ids[num], num, d, c, f"line {i}") for i, (num, d, c) in enumerate(lines, 1))
    last_day = (period + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    digest = hashlib.sha256(repr([(ln.account_id, ln.debit_minor, ln.credit_minor) for ln in canon]).encode())
    return CanonicalEntry(tenant, period, custom_id_for(tenant, period), last_day, memo_for(period), "IDR",
                          digest.hexdigest()[:16], canon)


def months(tenant: str, ids: dict[str, str], periods: list[dt.date], bump: int = 0) -> list[CanonicalEntry]:
    return [entry(tenant, p, ids, f"{1000 + 17 * i + bump}.55", f"{400 + i}.10", f"{150 + 3 * i}.05")
            for i, p in enumerate(periods)]


def assert_exactly_once(env: Env, expected: list[CanonicalEntry]) -> None:
    """The shared check (ledger_pipeline.testing.systems), and every entry of ours is published (not a draft)."""
    shared_assert_exactly_once(env.box, "zoho", expected)
    assert {e["status"] for e in env.entries() if (e["custom_id"] or "").startswith("r2a-pl-")} <= {"published"}


def test_connect_stores_api_domain_and_organization_id(zoho: Env) -> None:
    zoho.connect(["t1"])
    company_id, extra = zoho.conn.vault.details("t1")
    assert extra["api_domain"] == zoho.url + "/zoho" and extra["organization_id"] == company_id
    with zoho.conn.vault.engine.connect() as db:
        row = db.execute(text("SELECT access_token, refresh_token FROM integrations WHERE source_system = 'zoho'"
                              )).one()
    assert row.access_token.startswith("gAAAA") and row.refresh_token.startswith("gAAAA"), "encrypted at rest"
    token = zoho.conn.vault.access_token("t1", lambda rt: zoho.conn.oauth.refresh("t1", rt))
    base = extra["api_domain"] + "/books/v3"
    no_org = httpx.get(f"{base}/chartofaccounts", headers={"Authorization": f"Zoho-oauthtoken {token}"})
    assert no_org.status_code == 400 and no_org.json()["code"] == 6041, "organization_id is required"
    bearer = httpx.get(f"{base}/chartofaccounts", params={"organization_id": company_id},
                       headers={"Authorization": f"Bearer {token}"})
    assert bearer.status_code == 401 and bearer.json()["code"] == 57
    ok = httpx.get(f"{base}/chartofaccounts", params={"organization_id": company_id},
                   headers={"Authorization": f"Zoho-oauthtoken {token}"}).json()
    assert ok["code"] == 0 and ok["page_context"]["has_more_page"] is False


def test_uncertain_create_is_adopted_by_reference_number(zoho: Env) -> None:
    zoho.connect(["u1"])
    ids = chart_ids(zoho.conn, "u1")
    store, e = MemStore(), months("u1", ids, [JAN])
    zoho.faults(drop_after_commit_rate=1.0, writes_only=True)
    out = post(zoho.conn, store, "u1", e, (JAN, FEB), max_rounds=1)
    assert out.failed("uncertain") == [e[0].custom_id] and store.rows[e[0].custom_id].status == "pending"
    zoho.faults()
    out = post(zoho.conn, store, "u1", e, (JAN, FEB))
    assert out.counts == {"adopted": 1} and not out.failures
    assert zoho.count("POST", "/journals") == 1, "no second create: found by reference_number"
    assert zoho.count("GET", "/journals", 200) == 1 and zoho.count("GET", "/journals/{journal_id}", 200) == 1
    assert_exactly_once(zoho, e)


def test_daily_cap_defers_the_tenant_reports_it_and_never_loops(zoho: Env) -> None:
    tenants = ["cap", "ok1", "ok2"]
    zoho.connect(tenants)
    ids = {t: chart_ids(zoho.conn, t) for t in tenants}
    plan = zoho.control("cap", "plan", {"plan": "free"})
    assert plan["daily_cap"] == 1000
    plan = zoho.control("cap", "plan", {"daily_cap": plan["used_today"] + 2})  # two more requests today
    store, window = MemStore(), (JAN, APR)
    entries = {t: months(t, ids[t], [JAN, FEB, MAR]) for t in tenants}

    sent = zoho.conn.requests
    outcomes = {t: post(zoho.conn, store, t, entries[t], window) for t in tenants}
    assert outcomes["ok1"].counts == outcomes["ok2"].counts == {"create": 3}
    cap = outcomes["cap"]
    assert [store.rows[e.custom_id].status for e in entries["cap"]] == ["posted", "posted", "pending"]
    assert cap.counts == {"create": 2} and len(cap.failures) == 1
    [(cid, message, kind)] = cap.failures
    assert cid == custom_id_for("cap", MAR) and kind == "deferred"
    assert "Zoho's daily API limit for this organization is spent: deferred to the next run" in message
    assert zoho.conn.requests - sent == 3 + 3 + 3, "the capped tenant stopped at its first refusal"
    assert zoho.count("POST", "/journals", 429) == 1

    # the same process again (e.g. reconciliation): nothing is sent for the spent organization
    sent = zoho.conn.requests
    with pytest.raises(SinkError) as exc:
        zoho.conn.sink.list_period("cap", JAN, APR)
    assert exc.value.kind == "deferred" and zoho.conn.requests == sent

    # the next run (a new process), still the same day: one refused request, no loop
    run2 = zoho.open()
    out = post(run2, store, "cap", entries["cap"], window)
    assert out.counts == {"skip": 2} and [k for _, _, k in out.failures] == ["deferred"]
    assert store.rows[entries["cap"][2].custom_id].status == "pending"
    assert run2.requests == 1 and zoho.stats()["by_system"]["zoho"]["rate_limited"] == 2

    # the next day: the deferred month is looked up first (not there), then created once
    zoho.control("cap", "plan", {"reset_usage": True})
    out = post(zoho.open(), store, "cap", entries["cap"], window)
    assert out.counts == {"skip": 2, "create": 1} and not out.failures
    assert_exactly_once(zoho, [e for es in entries.values() for e in es])


def test_refresh_tokens_do_not_rotate_with_one_second_access_tokens(settings, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    with _make_env(tmp_path, monkeypatch, access_ttl=1) as env:
        env.connect(["r1"])
        vault = env.conn.vault

        def stored_refresh() -> str:
            with vault.engine.connect() as db:
                row = db.execute(text("SELECT refresh_token FROM integrations WHERE tenant_id = 'r1'")).one()
            return vault._dec(row.refresh_token, "r1")

        first = stored_refresh()
        ids = chart_ids(env.conn, "r1")
        store, expected = MemStore(), []
        for period in (JAN, FEB, MAR):
            time.sleep(1.05)  # the access token expired
            expected += months("r1", ids, [period])
            out = post(env.conn, store, "r1", expected, (JAN, APR))
            assert out.counts.get("create") == 1 and not out.failures
        assert env.count("POST", "/oauth/v2/token", "refresh_token") >= 3
        assert stored_refresh() == first, "Zoho's refresh token is kept as it is"
        assert vault.statuses()["r1"][0] == "connected"
        assert vault.details("r1")[1]["organization_id"], "refresh keeps the stored organization"
        assert_exactly_once(env, expected)


def test_chart_paging_includes_inactive_and_inactive_account_is_classified(zoho: Env) -> None:
    zoho.connect(["c1"])
    zoho.control("c1", "accounts", {"number": "6-60219", "archived": True})
    zoho.control("c1", "accounts", {"number": "6-60999", "name": "Sandbox Extra", "parent_number": "6-60100"})
    zoho.conn.chart_per_page = 5
    chart = zoho.conn.fetch_chart("c1")
    truth = zoho.server.emulators["zoho"].chart("c1")
    assert len(chart) == len(truth) == 39
    assert {(a.account_id, a.number, a.name, a.category, a.parent_id, a.archived) for a in chart} == {
        (a["account_id"], a["account_code"], a["account_name"], a["account_type"], a["parent_account_id"] or None,
         not a["is_active"]) for a in truth}
    assert zoho.count("GET", "/chartofaccounts", 200) == math.ceil(39 / 5)
    by_number = {a.number: a for a in chart}
    assert by_number["6-60219"].archived and by_number["6-60999"].parent_id == by_number["6-60100"].account_id

    ids = {a.number: a.account_id for a in chart}
    ids_inactive = {**ids, "6-60217": ids["6-60219"]}
    bad = entry("c1", JAN, ids_inactive, "100.00", "10.00", "5.00", extra_expense="1.00")
    [res] = zoho.conn.sink.create("c1", [bad])
    assert res.error is not None and res.error.kind == "account" and "inactive" in res.error.message
    unknown = entry("c1", JAN, {**ids, "6-60217": "460999999999999"}, "100.00", "10.00", "5.00", "1.00")
    [res] = zoho.conn.sink.create("c1", [unknown])
    assert res.error is not None and res.error.kind == "account"


def test_per_minute_429_is_paced_retried_and_not_deferred(zoho: Env) -> None:
    zoho.connect(["m1"])
    org = zoho.conn.vault.details("m1")[0]
    assert zoho.conn.client.dialect.rules("m1", None) == [Rule(f"zoho-org:{org}", 95, 60 / 1000)], "95/min per org"
    httpx.post(f"{zoho.url}/_sandbox/limits", json={"scale": 1}).raise_for_status()  # 100 per real minute
    unpaced = zoho.open(scale=1e6, backoff=0.1)  # a client that ignores the window meets Zoho's 429 (code 45)
    stop = threading.Event()

    def open_the_window() -> None:  # once Zoho said 429, let the minute pass (time-scaled)
        while not stop.is_set() and zoho.stats()["by_system"]["zoho"]["rate_limited"] == 0:
            time.sleep(0.05)
        httpx.post(f"{zoho.url}/_sandbox/limits", json={"scale": 1000}).raise_for_status()

    watcher = threading.Thread(target=open_the_window, daemon=True)
    watcher.start()
    try:
        for _ in range(250):
            unpaced.client.list_journals("m1", {"date_start": "2025-01-01"})  # never raises: 429 is retried
            if not watcher.is_alive():
                break
    finally:
        stop.set()
        watcher.join()
    assert zoho.count("GET", "/journals", 429) >= 1, "the unpaced client met the per-minute limit"
    assert not unpaced.client.dialect.spent, "per-minute: retried, not deferred"
