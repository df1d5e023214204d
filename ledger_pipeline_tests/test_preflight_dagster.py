"""The preflight through Dagster, against the sandbox's five systems: the daily charts job's `connections_preflight`
reads each tenant's period lock once (none for Rootfi, which exposes none) and records the verdict; the close's
`connections_ready` (blocking, before posting) then lists every tenant not ready, with system and fix, without a
single request to any accounting system."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import httpx

from ledger_pipeline.definitions import ASSETS, CHECKS
from ledger_pipeline.service import preflight_check
from ledger_pipeline.service.store import ServiceStore, ops_engine
from ledger_pipeline.settings import load_settings
from ledger_pipeline_tests.helpers import committed_instance, materialize, resources
from ledger_pipeline_tests.test_preflight import control, tenants  # noqa: F401 - the fixture

JOURNAL = ["r2a_pl_monthly", "journal_entries", "journal_lines"]


def daily_charts() -> dg.ExecuteInProcessResult:
    """gl_accounts_job as the daily schedule runs it: every chart, with the asset's checks."""
    with committed_instance() as inst:
        return dg.materialize([*ASSETS, *CHECKS], selection=dg.AssetSelection.assets("gl_accounts"),
                              resources=resources(load_settings()), instance=inst,
                              run_config={"ops": {"gl_accounts": {"config": {"refresh": "all"}}}})


def evaluation(result: dg.ExecuteInProcessResult, name: str):  # noqa: ANN201
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == name)


def api_requests(sandbox) -> int:  # noqa: ANN001
    return httpx.get(f"{sandbox.url}/_sandbox/stats").json()["api_requests"]


def test_the_daily_check_reads_each_lock_once_and_the_close_reports_without_a_request(
        tenants, sandbox, monkeypatch) -> None:  # noqa: ANN001, F811
    monkeypatch.setattr(preflight_check.clock, "current_month", lambda *a, **k: dt.date(2024, 2, 1))
    qb, zoho = tenants["quickbooks"], tenants["zoho"]
    control(sandbox, "quickbooks", qb, "lock_date", {"lock_date": "2024-01-31"})  # January closed, not posted
    control(sandbox, "zoho", zoho, "scope", {"scope": "ZohoBooks.accountants.READ"})
    control(sandbox, "aden", tenants["aden"], "accounts", {"number": "6-60101", "archived": True})
    from ledger_pipeline_tests.helpers import connect_to
    connect_to("zoho", [zoho])  # the user approved a grant that cannot create journals

    daily = daily_charts()
    check = evaluation(daily, "connections_preflight")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["tenants_checked"].value == 5 and check.metadata["tenants_not_ready"].value == 3
    # one lock read per tenant whose system exposes one (Rootfi exposes none): the month-end budget holds
    assert check.metadata["api_requests"].value == 4
    spent = {k: v for k, v in check.metadata["api_requests_by_system"].value.items() if v}
    assert spent == {"jurnal": 1, "quickbooks": 1, "zoho": 1, "aden": 1}
    text = check.metadata["not_ready"].value
    assert f"tenant {qb} (quickbooks) period: tenant {qb}: quickbooks QuickBooks' closing date" in text
    assert "Close the books" in text and f"tenant {zoho} (zoho) scope:" in text
    assert f"tenant {tenants['aden']} (aden) accounts:" in text and "archived: 6-60101 (for expense/salaries)" in text
    health = ServiceStore(ops_engine(load_settings().ops_database_url)).health()
    assert health[(qb, "quickbooks")]["last_check_ok"] == 0 and health[(tenants["jurnal"], "jurnal")][
        "last_check_ok"] == 1
    control(sandbox, "aden", tenants["aden"], "accounts", {"number": "6-60101", "archived": False})

    before = api_requests(sandbox)
    close = materialize(JOURNAL, "2024-01-01")
    assert close.success, "a WARN check lists the tenants; it never stops the others' month"
    ready = evaluation(close, "connections_ready")
    assert api_requests(sandbox) == before, "the check before posting spends no request"
    assert not ready.passed and ready.metadata["tenants_not_ready"].value == 2
    text = ready.metadata["not_ready"].value
    assert f"tenant {qb} (quickbooks) period: tenant {qb}: quickbooks QuickBooks' closing date" in text
    assert f"connect --link --tenant {zoho} --system zoho" in text
    assert tenants["aden"] not in text and tenants["jurnal"] not in text and tenants["rootfi"] not in text


def test_the_check_before_posting_names_a_revoked_connection_and_a_foreign_currency(tenants, sandbox) -> None:  # noqa: ANN001, F811
    from ledger_pipeline.connections import record_company_currency
    from ledger_pipeline.ledger.currency import CompanyCurrency
    from ledger_pipeline.service.preflight import tenant_currencies

    daily_charts()  # every chart read while every grant works
    control(sandbox, "aden", tenants["aden"], "revoke")
    daily_charts()  # the next day's read meets the revoked grant: needs re-auth (the previous chart is kept)
    engine = ops_engine(load_settings().ops_database_url)
    r2a = tenant_currencies(load_settings(), [tenants["jurnal"]])[tenants["jurnal"]]
    record_company_currency(engine, tenants["jurnal"], "jurnal", CompanyCurrency("JPY", False))  # as read
    ready = evaluation(materialize(JOURNAL, "2024-01-01"), "connections_ready")
    text = ready.metadata["not_ready"].value
    assert f"tenant {tenants['aden']} (aden) connection: tenant {tenants['aden']}: the aden connection is " \
           "needs_reauth" in text
    assert f"connect --link --tenant {tenants['aden']} --system aden" in text
    assert f"tenant {tenants['jurnal']} (jurnal) home currency: tenant {tenants['jurnal']}: the jurnal company " \
           f"keeps its books in JPY and R2a records the tenant's amounts in {r2a}: jurnal takes no " \
           "foreign-currency journal" in text
    assert ready.metadata["tenants_not_ready"].value == 2
