"""The demo's wiring (`ledger-pipeline demo`, `make demo`): seed a synthetic R2a, serve every system's sandbox in
process, connect a mix of tenants to the five systems through their own flows, make one tenant keep its books in USD
with rates loaded, close the recent months through Dagster and show what it cost. The CLI only wires the command:
its connect and close steps come in as `DemoHooks`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import Engine

from ledger_pipeline.settings import SANDBOX_PORT, Settings, load_settings, safe_url


@dataclass(frozen=True)
class DemoHooks:
    """What the demo borrows from the CLI: a progress line maker (label -> (done, total) callback), the embedded
    first month's recording, connecting tenants to a system (settings, tenants, system -> count), the supervised
    close of a month range ('YYYY-MM', 'YYYY-MM' -> exit code) and where to print."""

    progress: Callable[[str], Callable[[int, int], None]]
    record_first_month: Callable[[Settings, dt.date], None]
    connect: Callable[[Settings, list[str], str], int]
    close: Callable[[str, str], int]
    echo: Callable[[str], None] = print


@contextlib.contextmanager
def sandbox_for_demo(s: Settings, scale: float) -> Iterator[str]:
    """The sandbox (every system) in-process on 8765 (or a free port when 8765 is taken), env pointed at it."""
    from ledger_pipeline.sandboxes.base import SandboxLimits
    from ledger_pipeline.sandboxes.server import SandboxServer

    port = SANDBOX_PORT
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            port = 0
    with SandboxServer(s.data_dir / "sandbox.sqlite", port=port, limits=SandboxLimits(scale=scale)) as server:
        os.environ.update(server.env())
        os.environ["LEDGER_RATE_LIMIT_SCALE"] = str(scale)
        yield server.url


# The demo's tenants, by system: half on Jurnal, the rest spread over the other systems of the source documents.
DEMO_MIX = ["jurnal"] * 10 + ["quickbooks"] * 3 + ["zoho"] * 3 + ["aden"] * 2 + ["rootfi"] * 2


def connect_demo_tenants(s: Settings, connect: Callable[[Settings, list[str], str], int]) -> dict[str, int]:
    """Connect every seeded tenant not connected yet, each to its system in DEMO_MIX (by tenant number)."""
    from sqlalchemy import select

    from ledger_pipeline.r2a.models import Tenant, make_engine
    from ledger_pipeline.state.database import make_ops_engine
    from ledger_pipeline.state.vault import tenant_systems

    with make_engine(s.r2a_database_url, read_only=True).connect() as conn:
        seeded = list(conn.execute(select(Tenant.tenant_id).order_by(Tenant.tenant_id)).scalars())
    done = tenant_systems(make_ops_engine(s.ops_database_url))
    plan: dict[str, list[str]] = {}
    for i, tenant in enumerate(seeded):
        if tenant not in done:
            plan.setdefault(DEMO_MIX[i % len(DEMO_MIX)], []).append(tenant)
    counts = {system: connect(s, tenants, system) for system, tenants in plan.items()}
    keep_foreign_company_at_home(s, plan.get(DEMO_FOREIGN[0], []))
    return counts


def keep_foreign_company_at_home(s: Settings, tenants: list[str]) -> None:
    """The sandbox keeps each company's books in its tenant's currency (set at connect, sandboxes/currency.py); the
    demo says otherwise for its USD tenant: its Aden company keeps its books in IDR (multicurrency on), so the close
    posts it in USD with the loaded rate. The home currency is read again from the system afterwards."""
    import httpx
    from sqlalchemy import text

    from ledger_pipeline.connections import refresh_company_currencies
    from ledger_pipeline.r2a.models import make_engine
    from ledger_pipeline.sandboxes.currency import set_home_currency
    from ledger_pipeline.state.database import make_ops_engine
    from ledger_pipeline.systems import OpenOptions, open_connection

    with make_engine(s.r2a_database_url, read_only=True).connect() as conn:
        foreign = set(conn.execute(text("SELECT tenant_id FROM tenants WHERE currency = :c"),
                                   {"c": DEMO_FOREIGN[1]}).scalars()) & set(tenants)
    if not foreign:
        return
    system = DEMO_FOREIGN[0]
    connection = open_connection(system, s, OpenOptions(s.ops_database_url, s.rate_limit_scale))
    try:
        with httpx.Client(timeout=30) as http:
            for tenant in sorted(foreign):
                set_home_currency(http, s.sandbox_url, system, tenant, "IDR", multicurrency=True)
        refresh_company_currencies(make_ops_engine(s.ops_database_url), [(system, t) for t in sorted(foreign)],
                                   lambda _s: connection)
    finally:
        connection.close()


DEMO_FOREIGN = ("aden", "USD")  # one tenant keeps its books in USD, on an Aden company kept in IDR (set at connect)
DEMO_RATE = "16312.5"  # 1 USD in IDR, the demo's month-end rate (a made-up but plausible figure)


def make_foreign_tenant(engine: Engine) -> str | None:
    """The demo plays R2a's team: its first Aden tenant records its amounts in USD (tenant and rows), so the close
    shows one foreign-currency tenant posted with a loaded rate."""
    from sqlalchemy import text

    with engine.begin() as conn:
        seeded = list(conn.execute(text("SELECT tenant_id FROM tenants ORDER BY tenant_id")).scalars())
        tenant = next((t for i, t in enumerate(seeded) if DEMO_MIX[i % len(DEMO_MIX)] == DEMO_FOREIGN[0]), None)
        if tenant is not None:
            conn.execute(text("UPDATE tenants SET currency = :c WHERE tenant_id = :t"),
                         {"c": DEMO_FOREIGN[1], "t": tenant})
            conn.execute(text("UPDATE r2a_transactions SET currency = :c WHERE tenant_id = :t AND currency = 'IDR'"),
                         {"c": DEMO_FOREIGN[1], "t": tenant})
    return tenant


def load_demo_rates(s: Settings, engine: Engine, first: dt.date, last: dt.date,
                    echo: Callable[[str], None]) -> None:
    """Write data/demo_rates.csv (USD -> IDR at every closed month's end) and load it, as an operator would with
    `ledger-pipeline rates load`, when a demo tenant keeps its books in USD."""
    import calendar

    from sqlalchemy import text

    from ledger_pipeline.rates import load_rates, read_rates_file
    from ledger_pipeline.state.database import make_ops_engine

    with engine.connect() as conn:
        foreign = conn.execute(text("SELECT tenant_id FROM tenants WHERE currency = :c ORDER BY tenant_id"),
                               {"c": DEMO_FOREIGN[1]}).scalars().first()
    if foreign is None:
        return
    lines, month = ["date,from_currency,to_currency,rate"], first
    while month <= last:
        end = month.replace(day=calendar.monthrange(month.year, month.month)[1])
        lines.append(f"{end.isoformat()},{DEMO_FOREIGN[1]},IDR,{DEMO_RATE}")
        month = (end + dt.timedelta(days=1))
    path = s.data_dir / "demo_rates.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    load_rates(make_ops_engine(s.ops_database_url), read_rates_file(path), str(path))
    echo(f"  tenant {foreign} keeps its books in {DEMO_FOREIGN[1]} on an IDR company: rates loaded from {path} "
               f"(`ledger-pipeline rates load {path}`), 1 {DEMO_FOREIGN[1]} = {DEMO_RATE} IDR")


def run_demo(tenants: int, months: int, rate_limit_scale: float, hooks: DemoHooks) -> int:
    """Seed (once), sandbox, connect, close the last `months` months; returns the close's exit code."""
    import httpx
    from sqlalchemy import func, select

    from ledger_pipeline.r2a import seed as seeding
    from ledger_pipeline.r2a.models import Tenant, make_engine

    s = load_settings()
    hooks.echo("1/5 R2a database")
    engine = make_engine(s.r2a_database_url)
    seeding.create_tables(engine)  # the demo plays R2a's team: its synthetic R2a database is its own to create
    with engine.connect() as conn:
        have = conn.execute(select(func.count()).select_from(Tenant)).scalar_one()
    if have == 0:
        result = seeding.seed(engine, tenants, 12, None, 7, hooks.progress("rows"))
        hooks.record_first_month(s, result.start)
        seeding.add_bad_rows(engine, seeding.default_start(months), ["t00001", "t00002", "t00003"])
        make_foreign_tenant(engine)
        hooks.echo(f"  seeded {result.tenants} tenants x 12 months ({result.rows:,} rows) plus a few bad rows")
    else:
        hooks.echo(f"  {have} tenants already seeded ({safe_url(s.r2a_database_url)})")
    hooks.echo("2/5 accounting sandbox (Jurnal, QuickBooks Online, Zoho Books, Aden, Rootfi)")
    with sandbox_for_demo(s, rate_limit_scale) as url:
        hooks.echo(f"  running on {url} (limits time-scaled x{rate_limit_scale:g})")
        hooks.echo("3/5 connecting tenants, each through its system's own flow (credentials encrypted at rest)")
        s = load_settings()
        counts = connect_demo_tenants(s, hooks.connect)
        hooks.echo("  newly connected: " + (", ".join(f"{n} to {system}" for system, n in counts.items()) or "none"))
        last = seeding.default_start(1)
        first = seeding.default_start(months)
        load_demo_rates(s, engine, first, last, hooks.echo)
        hooks.echo(f"4/5 closing {first:%Y-%m} .. {last:%Y-%m} (GL accounts, extract, journal, post, reconcile)")
        httpx.post(f"{url}/_sandbox/stats/reset")
        code = hooks.close(first.strftime("%Y-%m"), last.strftime("%Y-%m"))
        stats = httpx.get(f"{url}/_sandbox/stats").json()
        hooks.echo(f"  API requests this run: {stats['api_requests']} ({stats['api_writes']} writes, "
                   f"{stats['rate_limited']} rate-limited)")
        for system, st in stats["by_system"].items():
            hooks.echo(f"    {system:<10}: {st['api_requests']} requests, {st['api_writes']} writes")
    return code
