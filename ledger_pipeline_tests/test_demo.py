"""The demo's wiring (ledger_pipeline/demo.py) as `ledger-pipeline demo` runs it, up to the close: seed once, the
sandbox in process, every seeded tenant connected to its system of the demo's mix through that system's own flow,
one tenant keeping its books in USD with the month-end rates loaded. The close itself is stubbed here (the other
tests close through Dagster); the clock is frozen at a known instant (it decides the months)."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter

import click
import time_machine
from sqlalchemy import text

from ledger_pipeline import cli, demo
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.vault import tenant_systems
from ledger_pipeline.systems import SYSTEMS

NOW = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)  # February 2026 is the last complete month


def test_demo_seeds_connects_the_five_systems_and_loads_the_usd_rates(settings) -> None:  # noqa: ANN001
    closes, lines = [], []
    hooks = demo.DemoHooks(progress=lambda label: lambda done, total: None,
                           record_first_month=lambda s, month: None,
                           connect=lambda s, tenants, system: cli._connect(s, tenants, auto=True, system=system),
                           close=lambda first, last: closes.append((first, last)) or cli.EXIT_OK, echo=lines.append)
    saved = dict(os.environ)
    try:
        with time_machine.travel(NOW, tick=True):
            code = demo.run_demo(20, 2, 1000.0, hooks)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert code == cli.EXIT_OK and closes == [("2026-01", "2026-02")]
    systems = tenant_systems(make_ops_engine(settings.ops_database_url))
    assert Counter(system for system, _, _ in systems.values()) == Counter(demo.DEMO_MIX)
    assert {system for system, status, _ in systems.values() if status == "connected"} == set(SYSTEMS)
    with make_engine(settings.r2a_database_url).connect() as conn:
        usd = conn.execute(text("SELECT tenant_id FROM tenants WHERE currency = 'USD'")).scalars().all()
    assert len(usd) == 1 and systems[usd[0]][0] == demo.DEMO_FOREIGN[0]
    with make_ops_engine(settings.ops_database_url).connect() as conn:
        rates = conn.execute(text("SELECT rate_date, rate FROM exchange_rates WHERE from_currency = 'USD' "
                                  "ORDER BY rate_date")).all()
    assert [(str(d)[:10], str(r)) for d, r in rates] == [("2026-01-31", demo.DEMO_RATE), ("2026-02-28", demo.DEMO_RATE)]
    assert any("newly connected: 10 to jurnal, 3 to quickbooks, 3 to zoho, 2 to aden, 2 to rootfi" in x for x in lines)
    # every sandbox company keeps its books in its tenant's currency, but the USD tenant's Aden company (IDR)
    with make_ops_engine(settings.ops_database_url).connect() as conn:
        homes = dict(conn.execute(text("SELECT tenant_id, home_currency FROM connection_health")).all())
    assert homes[usd[0]] == "IDR" and set(homes) == set(systems) and set(homes.values()) == {"IDR"}


def test_the_cli_lists_the_systems_of_the_registry() -> None:
    options = {p.name: p for p in cli.connect.params}
    assert isinstance(options["system"].type, click.Choice) and list(options["system"].type.choices) == list(SYSTEMS)
