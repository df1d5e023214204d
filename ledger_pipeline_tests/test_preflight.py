"""Preflight (`ledger-pipeline check`) against the sandbox, every system: a ready tenant passes; a revoked grant, a
missing or archived mapped account, a tenant never connected, a closed period (every system that exposes a lock:
QuickBooks' closing date, Zoho's transaction lock, Jurnal's closing-the-books date, Aden's periods; Rootfi says it
cannot read one), a grant without the scope to create journals (Zoho, the one system whose token names it), another
company than the one on record (Zoho, Jurnal) and a foreign home currency each fail, naming tenant, system and fix,
and nothing is written to the accounting system."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import text, update

from ledger_pipeline.cli import main
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.service.preflight import preflight, preflight_many
from ledger_pipeline.service.store import ServiceStore, ops_engine
from ledger_pipeline.settings import load_settings
from ledger_pipeline.state.vault import Integration
from ledger_pipeline_tests.helpers import connect_to

SYSTEMS = ["jurnal", "quickbooks", "zoho", "aden", "rootfi"]
MONTH = dt.date(2024, 1, 1)


@pytest.fixture
def tenants(settings, sandbox):  # noqa: ANN001, ANN201
    """t00001..t00005 seeded for 2024-01, each connected to one system (t00006 never connected)."""
    seeding.seed(make_engine(load_settings().r2a_database_url), 6, 1, MONTH)
    plan = dict(zip([f"t{i:05d}" for i in range(1, 6)], SYSTEMS, strict=True))
    for tenant, system in plan.items():
        connect_to(system, [tenant])
    return {system: tenant for tenant, system in plan.items()}


def writes(sandbox) -> int:  # noqa: ANN001
    return httpx.get(f"{sandbox.url}/_sandbox/stats").json()["api_writes"]


def checks(report) -> dict[str, str]:  # noqa: ANN001
    return {c.name: c.outcome for c in report.checks}


def failure(report, name: str):  # noqa: ANN001, ANN201
    found = [c for c in report.failures if c.name == name]
    assert found, f"{name} did not fail: {report.checks}"
    return found[0]


def control(sandbox, system: str, login: str, action: str, body: dict | None = None) -> None:  # noqa: ANN001
    prefix = "" if system == "jurnal" else f"/{system}"
    httpx.post(f"{sandbox.url}/_sandbox{prefix}/companies/{login}/{action}", json=body or {}).raise_for_status()


def test_ready_tenants_pass_on_every_system_without_writing(tenants, sandbox) -> None:  # noqa: ANN001
    before = writes(sandbox)
    reports = preflight_many(load_settings(), [tenants[s] for s in SYSTEMS], MONTH)
    for report in reports:
        assert report.ok, report.summary()
        assert checks(report)["credential"] == checks(report)["company"] == checks(report)["accounts"] == "passed"
    by_system = {r.system: r for r in reports}
    assert checks(by_system["zoho"])["home currency"] == "passed" and by_system["zoho"].home_currency == "IDR"
    assert all(checks(r)["period"] == "passed" for r in reports if r.system != "rootfi")
    assert checks(by_system["rootfi"])["period"] == "skipped"
    assert "exposes no period, lock or closing date" in next(
        c.detail for c in by_system["rootfi"].checks if c.name == "period")
    assert {s: checks(by_system[s])["scope"] for s in SYSTEMS} == {
        "quickbooks": "passed", "zoho": "passed", "jurnal": "skipped", "aden": "skipped", "rootfi": "skipped"}
    assert by_system["jurnal"].company_name and by_system["jurnal"].home_currency == "IDR"
    assert writes(sandbox) == before
    out = CliRunner().invoke(main, ["check", "--all", "--month", "2024-01"])
    assert out.exit_code == 0, out.output
    assert "5 ready, 0 not ready" in out.output
    health = ServiceStore(ops_engine(load_settings().ops_database_url)).health()
    assert health[(tenants["zoho"], "zoho")]["last_check_ok"] == 1
    assert health[(tenants["zoho"], "zoho")]["last_ok_at"] is not None


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_revoked_grant_fails_with_a_link_to_reconnect(tenants, sandbox, system) -> None:  # noqa: ANN001
    tenant = tenants[system]
    control(sandbox, system, tenant, "revoke")
    report = preflight(load_settings(), tenant, MONTH)
    problem = failure(report, "credential")
    assert tenant in problem.detail and system in problem.detail
    assert f"connect --link --tenant {tenant} --system {system}" in problem.fix
    again = preflight(load_settings(), tenant, MONTH)  # the vault now knows: no request needed to say so
    assert failure(again, "connection").fix == problem.fix
    out = CliRunner().invoke(main, ["check", "--tenant", tenant])
    assert out.exit_code == 1 and "NOT READY" in out.output and "fix:" in out.output


@pytest.mark.parametrize("system", SYSTEMS)
def test_an_archived_or_missing_mapped_account_fails(tenants, sandbox, system, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    tenant = tenants[system]
    control(sandbox, system, tenant, "accounts", {"number": "6-60101", "archived": True})
    report = preflight(load_settings(), tenant, MONTH)
    problem = failure(report, "accounts")
    assert "archived: 6-60101 (for expense/salaries)" in problem.detail and tenant in problem.detail
    assert "account_mapping" in problem.fix
    mapping = tmp_path / "mapping.csv"
    mapping.write_text(load_settings().account_mapping_path.read_text()
                       + f"{tenant},revenue,*,4-49999\n")
    monkeypatch.setenv("LEDGER_ACCOUNT_MAPPING", str(mapping))
    control(sandbox, system, tenant, "accounts", {"number": "6-60101", "archived": False})
    report = preflight(load_settings(), tenant, MONTH)
    assert "missing: 4-49999 (for revenue/" in failure(report, "accounts").detail
    assert checks(preflight(load_settings(), tenants[SYSTEMS[SYSTEMS.index(system) - 1]], MONTH))["accounts"] == \
        "passed"  # another tenant's rules are not this tenant's


def test_a_tenant_never_connected_fails(tenants) -> None:  # noqa: ANN001
    report = preflight(load_settings(), "t00006", MONTH)
    assert failure(report, "connection").detail == "tenant t00006 has no accounting system connected"


@pytest.mark.parametrize("system", ["jurnal", "quickbooks", "zoho", "aden"])
def test_a_closed_period_fails_on_every_system_that_exposes_one(tenants, sandbox, system) -> None:  # noqa: ANN001
    tenant = tenants[system]
    control(sandbox, system, tenant, "lock_date", {"lock_date": "2024-01-31"})
    before = writes(sandbox)
    problem = failure(preflight(load_settings(), tenant, MONTH), "period")
    assert problem.detail.startswith(f"tenant {tenant}: {system} ") and "2024-01" in problem.detail
    assert "close the month again" in problem.fix
    assert checks(preflight(load_settings(), tenant, dt.date(2024, 2, 1)))["period"] == "passed"
    out = CliRunner().invoke(main, ["check", "--tenant", tenant, "--month", "2024-01"])
    assert out.exit_code == 1 and "period" in out.output and "2024-01" in out.output
    assert writes(sandbox) == before


def test_a_lock_inside_the_month_leaves_its_month_end_entry_open(tenants, sandbox) -> None:  # noqa: ANN001
    for system in ("jurnal", "quickbooks", "zoho"):
        control(sandbox, system, tenants[system], "lock_date", {"lock_date": "2024-01-15"})
        assert checks(preflight(load_settings(), tenants[system], MONTH))["period"] == "passed"


def test_a_zoho_grant_without_the_scope_to_create_journals_fails(tenants, sandbox) -> None:  # noqa: ANN001
    tenant = tenants["zoho"]
    control(sandbox, "zoho", tenant, "scope", {"scope": "ZohoBooks.accountants.READ"})
    connect_to("zoho", [tenant])  # the user approved a narrower grant this time
    problem = failure(preflight(load_settings(), tenant, MONTH), "scope")
    assert "ZohoBooks.accountants.READ" in problem.detail and tenant in problem.detail
    assert f"connect --link --tenant {tenant} --system zoho" in problem.fix
    control(sandbox, "zoho", tenant, "scope", {"scope": None})
    connect_to("zoho", [tenant])
    assert checks(preflight(load_settings(), tenant, MONTH))["scope"] == "passed"


@pytest.mark.parametrize("system", ["zoho", "jurnal"])
def test_another_company_than_on_record_fails(tenants, system) -> None:  # noqa: ANN001
    tenant = tenants[system]
    s = load_settings()
    with ops_engine(s.ops_database_url).begin() as conn:
        conn.execute(update(Integration).where(Integration.tenant_id == tenant).values(company_id="700009999"))
    problem = failure(preflight(s, tenant), "company")
    assert "not 700009999 on record" in problem.detail and "--new-company" in problem.fix
    assert problem.detail.startswith(f"tenant {tenant}: the {system} credential")


@pytest.mark.parametrize("system", ["zoho", "quickbooks", "jurnal", "aden"])
def test_a_home_currency_other_than_the_tenants_fails_unless_the_system_takes_it(tenants, system) -> None:  # noqa: ANN001
    """A USD tenant on an IDR company: refused without multicurrency (and always on Jurnal, whose journals carry no
    currency); with multicurrency on a system that takes foreign journals it is ready (the rate is per entry)."""
    from ledger_pipeline.connections import record_company_currency
    from ledger_pipeline.ledger.currency import CompanyCurrency

    tenant = tenants[system]
    s = load_settings()
    with make_engine(s.r2a_database_url).begin() as conn:
        conn.execute(text("UPDATE tenants SET currency = 'USD' WHERE tenant_id = :t"), {"t": tenant})
    engine = ops_engine(s.ops_database_url)
    record_company_currency(engine, tenant, system, CompanyCurrency("IDR", False))
    problem = failure(preflight(s, tenant), "home currency")
    assert f"tenant {tenant}: the {system} company keeps its books in IDR" in problem.detail
    assert "amounts in USD" in problem.detail
    assert ("takes no foreign-currency journal" if system == "jurnal" else "multicurrency is not turned on") \
        in problem.detail
    record_company_currency(engine, tenant, system, CompanyCurrency("IDR", True))
    checks = {c.name: c for c in preflight(s, tenant).checks}
    if system == "jurnal":
        assert checks["home currency"].outcome == "failed"
    else:
        assert checks["home currency"].outcome == "passed", checks["home currency"]
        assert "USD->IDR rate" in checks["home currency"].detail


def test_the_recorded_period_verdict_is_read_as_data() -> None:
    """The close's readiness check reads the daily preflight's period verdict from its recorded checks (revision
    0006), never from the operator's text; a failure recorded before that says it must be read again."""
    import datetime as dt
    import json

    from ledger_pipeline.service.preflight_check import _recorded_period

    at = dt.datetime(2026, 11, 2, 3, 0)
    failed = {"last_check_at": at, "last_check_ok": 0, "last_check_detail": "anything at all",
              "last_check_failures": json.dumps([{"name": "period", "detail": "books closed to 2026-10-31",
                                                  "fix": "ask the accountant to reopen October"}])}
    check = _recorded_period("t1", "quickbooks", failed)
    assert (check.outcome, check.detail, check.fix) == ("failed", "books closed to 2026-10-31",
                                                        "ask the accountant to reopen October")
    other = {**failed, "last_check_failures": json.dumps([{"name": "scope", "detail": "read only", "fix": "x"}])}
    assert _recorded_period("t1", "zoho", other).outcome == "passed", "another check failed, not the period"
    old = {**failed, "last_check_failures": None}
    assert _recorded_period("t1", "quickbooks", old).outcome == "skipped"
    assert "ledger-pipeline check --tenant t1" in _recorded_period("t1", "quickbooks", old).detail
    assert _recorded_period("t1", "jurnal", {"last_check_at": None}).outcome == "skipped"
