"""The accounting systems under test: one sandbox server for all five, a connection to any system in the registry
(ledger_pipeline.systems.SYSTEMS), balanced monthly entries built from a tenant's own chart, the posting engine run
against an in-memory posting state, and the one `assert_exactly_once` over what the sandbox holds.

Used by the contract suite (ledger_pipeline_tests/test_contract.py), the per-system test files and bench/; it
imports only public parts of `ledger_pipeline` and never runs at pipeline run time.

    with sandbox_env(tmp_dir) as (server, box):          # os.environ pointed at a private env and the sandbox
        conn = open_system("zoho")
        connect_tenants(conn, ["t1"])
        out = post(conn, MemoryStore(), "t1", monthly_entries("t1", chart_ids(conn, "t1")))
        assert_exactly_once(box, "zoho", entries)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from ledger_pipeline import clock
from ledger_pipeline.ledger.sink import (
    CUSTOM_ID_PREFIX,
    CanonicalEntry,
    CanonicalLine,
    SinkError,
    custom_id_for,
    memo_for,
)
from ledger_pipeline.money import from_minor, loads_exact
from ledger_pipeline.posting import PostingEngine, PostingRow, TenantOutcome

MONTHS = (dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 3, 1))
WINDOW = (dt.date(2025, 1, 1), dt.date(2025, 4, 1))  # [first month, month after the last)
FAULT_DRILL = {"seed": 1, "error_rate": 0.2, "error_after_commit_rate": 0.05, "drop_after_commit_rate": 0.05,
               "unauthorized_rate": 0.03}  # 5xx before and after the write, lost answers, refused tokens
SANDBOX_SCALE = 1000  # the sandbox's limits time-scaled x1000 (fast, still enforced); the clients pace to match


class Sandbox:
    """The sandbox's /_sandbox inspection and control endpoints (ledger_pipeline/sandboxes/server.py) for one server.
    `system` names the emulator ("jurnal", "quickbooks", ...); entries come back with exact Decimal amounts."""

    def __init__(self, url: str, http: httpx.Client | None = None):
        """`http`: a client with `base_url=url` to share (closed by its owner), else one of its own."""
        self.url = url
        self._own = http is None
        self.http = http or httpx.Client(base_url=url, timeout=10)

    def control(self, system: str, login: str, action: str, body: Mapping[str, Any] | None = None) -> dict:
        """POST /_sandbox/<system>/companies/<login>/<action> (lock_date, revoke, accounts, entries, ...): the
        emulator's answer as plain JSON."""
        resp = self.http.post(f"/_sandbox/{system}/companies/{login}/{action}", json=dict(body or {}))
        assert resp.status_code == 200, f"{system} control {action} for {login}: {resp.status_code} {resp.text}"
        return resp.json()

    def faults(self, **faults: Any) -> None:
        """Replace the injected faults (none when called without arguments); `systems=[...]` limits them."""
        self.http.post("/_sandbox/faults", json=faults).raise_for_status()

    def limits(self, **limits: Any) -> None:
        self.http.post("/_sandbox/limits", json=limits).raise_for_status()

    def entries(self, system: str | None = None, login: str | None = None, *, live: bool = False) -> list[dict]:
        """Entries as the emulators hold them; `live` leaves out reversed/voided ones (Aden keeps them)."""
        params = {k: v for k, v in (("system", system), ("login", login)) if v}
        rows = loads_exact(self.http.get("/_sandbox/journal_entries", params=params).content)["journal_entries"]
        return [e for e in rows if e.get("live", True)] if live else rows

    def stats(self, system: str | None = None) -> dict:
        """Request counts: the whole server's, or one system's totals (api_requests, api_writes, rate_limited)."""
        data = self.http.get("/_sandbox/stats").json()
        return data["by_system"][system] if system else data

    def reset_stats(self) -> None:
        self.http.post("/_sandbox/stats/reset").raise_for_status()

    def count(self, system: str, method: str, endpoint_suffix: str, status: object = None) -> int:
        """Requests to one system's endpoints ending in `endpoint_suffix` (optionally with one status)."""
        return sum(r["count"] for r in self.stats()["requests"] if r["system"] == system and r["method"] == method
                   and r["endpoint"].endswith(endpoint_suffix) and (status is None or r["status"] == status))

    def close(self) -> None:
        if self._own:
            self.http.close()


@contextlib.contextmanager
def sandbox_server(state_path: Path, *, scale: float = SANDBOX_SCALE, **kwargs: Any) -> Iterator[tuple[Any, Sandbox]]:
    """A SandboxServer (every system, limits time-scaled by `scale`) with os.environ pointed at it (every system's
    client finds it there, LEDGER_RATE_LIMIT_SCALE matching) for the duration; restores the environment on exit."""
    import os

    from ledger_pipeline.sandboxes.base import SandboxLimits
    from ledger_pipeline.sandboxes.server import SandboxServer

    kwargs.setdefault("limits", SandboxLimits(scale=scale))
    with SandboxServer(state_path, **kwargs) as server:
        values = {**server.env(), "LEDGER_RATE_LIMIT_SCALE": f"{scale:g}"}
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        box = Sandbox(server.url)
        try:
            yield server, box
        finally:
            box.close()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def open_system(system: str, *, rate_limit_scale: float = SANDBOX_SCALE, backoff_initial: float = 0.01,
                timeout: float = 5, **options: Any) -> Any:
    """A Connection to `system` (ledger_pipeline.systems.open_connection) from the current environment, with short
    retries for loopback; its operational state in the environment's ops database. Close it after use."""
    from ledger_pipeline.settings import load_settings
    from ledger_pipeline.systems import OpenOptions, open_connection

    s = load_settings()
    return open_connection(system, s, OpenOptions(s.ops_database_url, rate_limit_scale, backoff_initial, timeout,
                                                  **options))


def connect_tenants(conn: Any, tenants: Iterable[str]) -> None:
    """Each tenant through the system's own authorisation flow against the sandbox (which approves at once)."""
    from ledger_pipeline.systems.authflow import follow_redirects

    with httpx.Client(timeout=10) as http:
        for t in tenants:
            conn.connect_tenant(t, follow_redirects(http))


def chart_ids(conn: Any, tenant: str) -> dict[str, str]:
    """Account number -> the system's account id, active accounts of the tenant's chart (one chart read)."""
    return {a.number: a.account_id for a in conn.fetch_chart(tenant) if not a.archived}


def pl_entry(tenant: str, period: dt.date, ids: Mapping[str, str], revenue: int, cogs: int, expense: int, *,
             currency: str = "IDR", clearing: str = "3-30100") -> CanonicalEntry:
    """A balanced monthly P&L entry in minor units: revenue credited (4-40000), COGS (5-50000) and salaries
    (6-60101) debited, the net to `clearing`; accounts by number through `ids` (chart_ids)."""
    net = revenue - cogs - expense
    raw = [("4-40000", 0, revenue, "Revenue"), ("5-50000", cogs, 0, "COGS"), ("6-60101", expense, 0, "Salaries"),
           (clearing, max(net, 0), max(-net, 0), "Net income")]
    lines = tuple(CanonicalLine(i, ids[n], n, d, c, desc) for i, (n, d, c, desc) in enumerate(raw, 1))
    last = clock.month_end(period)
    digest = hashlib.sha256(repr((last, [(ln.account_id, ln.debit_minor, ln.credit_minor) for ln in lines]))
                            .encode()).hexdigest()[:16]
    return CanonicalEntry(tenant, period, custom_id_for(tenant, period), last, memo_for(period), currency, digest,
                          lines)


def monthly_entries(tenant: str, ids: Mapping[str, str], months: Iterable[dt.date] = MONTHS,
                    bump: Mapping[dt.date, int] | None = None) -> list[CanonicalEntry]:
    """One pl_entry a month with amounts that differ by tenant and month; `bump` adds minor units to a month's
    revenue (late data)."""
    seed = int(hashlib.sha256(tenant.encode()).hexdigest()[:6], 16)
    out = []
    for m in months:
        revenue = 1_000_000_00 + seed % 5_000_000 + m.month * 1_001 + (bump or {}).get(m, 0)
        out.append(pl_entry(tenant, m, ids, revenue, revenue * 2 // 5 + 7, 250_037_00 + m.month))
    return out


class MemoryStore:
    """An in-memory PostingStore, to drive the posting engine directly against a sink."""

    def __init__(self) -> None:
        self.rows: dict[str, PostingRow] = {}
        self.saves = 0

    def save(self, rows: list[PostingRow]) -> None:
        self.saves += 1
        for r in rows:
            self.rows[r.custom_id] = r

    def state(self, tenant_id: str) -> dict[str, PostingRow]:
        return {cid: r for cid, r in self.rows.items() if r.tenant_id == tenant_id}

    def unposted(self, entries: Iterable[CanonicalEntry]) -> set[str]:
        """Tenants with an entry not (yet) posted: what the next run would work on."""
        return {e.tenant_id for e in entries if e.custom_id not in self.rows
                or self.rows[e.custom_id].status != "posted"}


def post(conn: Any, store: MemoryStore, tenant: str, entries: list[CanonicalEntry],
         window: tuple[dt.date, dt.date] = WINDOW, max_rounds: int = 6) -> TenantOutcome:
    """One engine run for a tenant (the postings asset's per-tenant step), its state in `store`; a whole-tenant
    SinkError (e.g. Zoho's deferred) is recorded as a failure of "*", as the asset does."""
    engine = PostingEngine(conn.sink, store, max_rounds=max_rounds, backoff=0.01)
    try:
        return engine.post_tenant(tenant, entries, store.state(tenant), window)
    except SinkError as err:
        return TenantOutcome(tenant, failures=[("*", err.message, err.kind)])


_REVISION = re.compile(r"(~.*|\.r\d+)$")  # QuickBooks/Zoho shortened keys (~hash), Aden revisions (.rN)


def base_custom_id(remote: Mapping[str, Any]) -> str:
    """Our custom_id behind a remote entry's key (QuickBooks' DocNumber and Zoho's reference_number may be shortened
    with a '~hash' tail; Aden's revisions of a posted entry are '<custom_id>.rN')."""
    return _REVISION.sub("", remote.get("custom_id") or "")


def _date(text: str) -> dt.date:
    """An entry's date as an emulator shows it: ISO, or Jurnal's dd/mm/yyyy."""
    return dt.datetime.strptime(text, "%d/%m/%Y").date() if "/" in text else dt.date.fromisoformat(text[:10])


def assert_exactly_once(box: Sandbox | str, system: str, expected: Iterable[CanonicalEntry], *,
                        tenants: Iterable[str] | None = None) -> None:
    """Each expected entry is live in `system` exactly once, with our date, totals and lines (account id, debit,
    credit as exact Decimals); no other entry of ours is live there (only among `tenants` when given)."""
    box = Sandbox(box) if isinstance(box, str) else box
    expected = list(expected)
    logins = set(tenants) if tenants is not None else None
    remote = [e for e in box.entries(system, live=True) if base_custom_id(e).startswith(CUSTOM_ID_PREFIX)
              and (logins is None or e.get("company_login") in logins)]
    counts = Counter(base_custom_id(e) for e in remote)
    assert counts == Counter(e.custom_id for e in expected), f"{system}: {counts.most_common(3)}"
    by_id = {base_custom_id(e): e for e in remote}
    for e in expected:
        got = by_id[e.custom_id]
        total = from_minor(e.total_debit_minor, e.currency)
        assert Decimal(str(got["total_debit"])) == total == Decimal(str(got["total_credit"])), (system, e.custom_id)
        assert _date(got["transaction_date"]) == e.transaction_date, (system, e.custom_id)
        lines = Counter((str(ln["account"]["id"]), Decimal(str(ln["debit"])), Decimal(str(ln["credit"])))
                        for ln in got["transaction_account_lines"])
        assert lines == Counter((str(ln.account_id), from_minor(ln.debit_minor, e.currency),
                                 from_minor(ln.credit_minor, e.currency)) for ln in e.lines), (system, e.custom_id)
