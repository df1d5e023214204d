"""The preflight as two Dagster asset checks, so a month-end never discovers a tenant's problem at posting and never
spends a request per tenant to find out:

- `connections_ready` on `journal_entries` (blocking: its step runs before `postings`): ZERO requests. For every
  tenant with entries in the run's window, from state the close already has: the connection (`integrations`:
  status, company on record, the scope Zoho granted, recorded at connect), the stored home currency
  (connection_health, connections.py) against R2a's, every account the window's journal lines use active in the chart
  the close just refreshed (the operational database's gl_accounts, charts.py), and the period verdict the daily
  check recorded (below).
- `connections_preflight` on `gl_accounts` (runs with the daily charts job, `gl_accounts_job`, background priority):
  for each tenant whose chart that run fetched, the same state checks plus ONE cheap read of its period lock
  (preflight.py `period_locks`: QuickBooks' closing date, Zoho's transaction locks, Jurnal's closing date, Aden's
  periods; Rootfi exposes none and says so), for the month the next close posts (the last complete month while it
  is not posted, and the current month). The verdict is recorded in connection_health (the operator page, `connect
  --status`, and `connections_ready` read it). The close fetches only stale charts, so at month-end this check reads
  only those few tenants' locks (none when the daily job ran).

Both are severity WARN: each tenant not ready is listed with system and fix before anything is posted, and one
tenant's problem never holds every other tenant's month (its posting is refused and reported as before). The full
read-everything preflight stays `ledger-pipeline check` and the operator page.
"""

import datetime as dt
import json

import dagster as dg
import pandas as pd
from sqlalchemy import select

from ledger_pipeline import clock
from ledger_pipeline.assets.ledger import check_window, run_window
from ledger_pipeline.charts import fetched_by, load_charts
from ledger_pipeline.connections import company_currencies
from ledger_pipeline.resources import AccountingResource, R2aDatabase, WarehouseResource
from ledger_pipeline.service.preflight import (
    Check,
    PreflightReport,
    _accounts_check,
    home_currency_check,
    link_fix,
    lock_check,
    next_close_months,
    period_locks,
    record,
    scope_check,
    tenant_currencies,
)
from ledger_pipeline.service.store import ServiceStore, utcnow
from ledger_pipeline.settings import Settings, load_settings
from ledger_pipeline.state.vault import Integration, tenant_systems
from ledger_pipeline.systems import SYSTEMS, ChartAccount


def ready_from_state(tenants: dict[str, set[dt.date]], lines: pd.DataFrame | None, chart: pd.DataFrame,
                     ops_engine: object, r2a_currency: dict[str, str | None],
                     connection_for: object | None = None, settings: Settings | None = None
                     ) -> list[PreflightReport]:
    """A PreflightReport per tenant of `tenants` ({tenant: months to post}); `lines`: tenant_id, account_number of
    the window's journal lines (None: skip the accounts check, e.g. before the journal exists); `chart`: system,
    tenant_id, number, archived; with `settings` and no `lines`, the accounts the mapping needs are checked against
    the chart instead. Requests: with `connection_for(system)` one period read per connected tenant;
    without, none (the period verdict the daily check recorded in connection_health is reported instead)."""
    current = tenant_systems(ops_engine)  # type: ignore[arg-type]
    with ops_engine.connect() as conn:  # type: ignore[attr-defined]
        records = {(r.tenant_id, r.source_system): r for r in conn.execute(
            select(Integration.tenant_id, Integration.source_system, Integration.company_id, Integration.extra))}
    stored = company_currencies(ops_engine)  # type: ignore[arg-type]
    health = ServiceStore(ops_engine).health()  # type: ignore[arg-type]
    used = {} if lines is None else lines.groupby("tenant_id")["account_number"].agg(
        lambda s: sorted({n for n in s if n})).to_dict()
    reports = []
    for tenant in sorted(tenants):
        months = sorted(tenants[tenant])
        if tenant not in current:
            report = PreflightReport(tenant, None, months[0] if months else None)
            report.checks.append(Check("connection", "failed", f"tenant {tenant} has no accounting system connected",
                                       "mint a connect link for the tenant's system (`ledger-pipeline connect --link "
                                       f"--tenant {tenant} --system S`) and have them connect"))
            reports.append(report)
            continue
        system, status, detail = current[tenant]
        report = PreflightReport(tenant, system, months[0] if months else None)
        reports.append(report)
        if status != "connected":
            report.checks.append(Check("connection", "failed", f"tenant {tenant}: the {system} connection is "
                                       f"{status} ({(detail or '').strip()[:300]})", link_fix(tenant, system)))
            continue
        record = records.get((tenant, system))
        extra = json.loads(record.extra) if record is not None and record.extra else {}
        report.checks.append(Check("connection", "passed", f"connected to {SYSTEMS[system].title}"))
        report.checks.append(scope_check(tenant, system, extra))
        if record is None or not record.company_id:
            report.checks.append(Check("company", "failed", f"tenant {tenant}: no {system} company is on record "
                                       "for the connection", link_fix(tenant, system)))
        else:
            report.checks.append(Check("company", "passed", f"company {record.company_id} on record"))
        report.checks.append(_currency(tenant, system, stored.get((system, tenant)), r2a_currency.get(tenant)))
        if lines is not None:
            report.checks.append(_accounts(tenant, system, used.get(tenant, []), chart))
        elif settings is not None:  # no journal yet (the daily check): the accounts the mapping needs
            mine = chart[(chart["tenant_id"] == tenant) & (chart["system"] == system)]
            accounts = [ChartAccount(account_id=str(r.number), number=str(r.number), name="",
                                     archived=bool(r.archived) if pd.notna(r.archived) else False)
                        for r in mine.itertuples(index=False) if isinstance(r.number, str) and r.number]
            report.checks.append(_accounts_check(settings, tenant, system, accounts, None))
        if connection_for is not None:
            locks = period_locks(system, connection_for(system), tenant, months)  # type: ignore[operator]
            report.reached = locks.closed is not None
            report.checks.append(lock_check(tenant, system, locks, months))
        else:
            report.checks.append(_recorded_period(tenant, system, health.get((tenant, system), {})))
    return reports


def _recorded_period(tenant: str, system: str, h: dict) -> Check:
    """The period part of the last recorded preflight (the daily check's, or `ledger-pipeline check`'s)."""
    at = h.get("last_check_at")
    if at is None:
        return Check("period", "skipped", "not read yet: the daily charts job's preflight (or `ledger-pipeline "
                     f"check --tenant {tenant} --month M`) reads the period lock")
    if h.get("last_check_failures") is None and h.get("last_check_ok") == 0:  # recorded before revision 0006
        return Check("period", "skipped", "the last preflight failed but was recorded before its checks were kept one "
                     "by one: the next daily preflight (or `ledger-pipeline check --tenant "
                     f"{tenant} --month M`) reads the period lock again")
    for failed in json.loads(h.get("last_check_failures") or "[]"):
        if failed.get("name") == "period":
            return Check("period", "failed", failed.get("detail") or "", failed.get("fix"))
    return Check("period", "passed", f"no closed period found by the last preflight ({at:%Y-%m-%d %H:%M} UTC)")


def _currency(tenant: str, system: str, company: object, expected: str | None) -> Check:
    home = getattr(company, "home", None)
    if not home:
        return Check("home currency", "skipped", f"no {system} home currency stored yet (read at connect and with "
                     "the chart)")
    return home_currency_check(tenant, system, company, expected)  # type: ignore[arg-type]


def _accounts(tenant: str, system: str, numbers: list[str], chart: pd.DataFrame) -> Check:
    mine = chart[(chart["tenant_id"] == tenant) & (chart["system"] == system)]
    if mine.empty:
        return Check("accounts", "failed", f"tenant {tenant}: no {system} chart of accounts has been read",
                     "see accounting.gl_ingest_status for why the chart read failed; fix that (often a connect "
                     f"link: {link_fix(tenant, system)}), then close the month again")
    active = set(mine.loc[~mine["archived"].fillna(False).astype(bool), "number"].dropna())
    known = set(mine["number"].dropna())
    missing = [n for n in numbers if n not in known]
    archived = [n for n in numbers if n in known and n not in active]
    if missing or archived:
        parts = ([f"missing: {', '.join(missing)}"] if missing else []) + (
            [f"archived: {', '.join(archived)}"] if archived else [])
        return Check("accounts", "failed", f"tenant {tenant}: the {system} chart lacks accounts the month's "
                     f"entries use; {'; '.join(parts)}",
                     "create or unarchive these account numbers in the tenant's chart, or map the categories to "
                     "existing accounts (LEDGER_ACCOUNT_MAPPING), then close the month again")
    return Check("accounts", "passed", f"{len(numbers)} account(s) the entries use exist and are active")


@dg.asset_check(
    asset="journal_entries", name="connections_ready", blocking=True, pool="duckdb",
    description="Before posting: every tenant with entries in the window is connected, its grant may create "
                "journals (where the system says), its company and home currency are the ones on record, every "
                "account its entries use is active in the refreshed chart, and the daily preflight found its period "
                "open. No request. WARN, listing each tenant not ready with system and fix; the others post.")
def connections_ready(context: dg.AssetCheckExecutionContext, r2a: R2aDatabase,
                      warehouse: WarehouseResource) -> dg.AssetCheckResult:
    where, params = check_window(context, "e.period")
    with warehouse.warehouse.connect() as con:
        entries = con.execute(f"SELECT DISTINCT e.tenant_id, e.period FROM ledger.journal_entries e WHERE {where}",
                              params).fetchdf()
        lines = con.execute(f"SELECT DISTINCT e.tenant_id, e.account_number FROM ledger.journal_lines e "
                            f"WHERE {where}", params).fetchdf()
    chart = load_charts(r2a.ops_engine, sorted(set(entries["tenant_id"])))
    tenants: dict[str, set[dt.date]] = {}
    for t, p in entries.itertuples(index=False):
        tenants.setdefault(t, set()).add(pd.Timestamp(p).date().replace(day=1))
    settings = load_settings()
    reports = ready_from_state(tenants, lines, chart, r2a.ops_engine, tenant_currencies(settings, tenants))
    window = run_window(context)
    return _result(reports, {}, f"tenants with entries {window[0]} to {window[1]}" if window else
                   "tenants with entries (all months)")

def months_to_check(ops_engine: object, tenants: list[str], today_month: dt.date) -> dict[str, set[dt.date]]:
    """The months the next close posts, per tenant: the current month, and the last complete month while the
    tenant has nothing posted for it (preflight.next_close_months)."""
    return {t: {today_month, month} for t, month in next_close_months(ops_engine, tenants, today_month).items()}


@dg.asset_check(
    asset="gl_accounts", name="connections_preflight",
    description="The daily preflight (with the charts job): for each tenant whose chart this run fetched, its "
                "connection, scope, company, home currency, and ONE read of its period lock for the months the next "
                "close posts; the verdict is recorded for the operator page, `connect --status` and the close's "
                "connections_ready check. WARN, each tenant not ready listed with system and fix.")
def connections_preflight(context: dg.AssetCheckExecutionContext, r2a: R2aDatabase,
                          accounting: AccountingResource) -> dg.AssetCheckResult:
    fetched = fetched_by(r2a.ops_engine, context.run.run_id)
    chart = load_charts(r2a.ops_engine, fetched)
    settings = load_settings()
    tenants = months_to_check(r2a.ops_engine, fetched, clock.current_month())
    with accounting.connections(r2a.ops_database_url, "background") as connections:
        reports = ready_from_state(tenants, None, chart, r2a.ops_engine, tenant_currencies(settings, tenants),
                                   connections, settings)
        requests = connections.requests_by_system()
    store, now = ServiceStore(r2a.ops_engine), utcnow()
    for report in reports:
        record(report, store, now)
    return _result(reports, requests, f"tenants whose chart this run fetched ({len(fetched)})")


def _result(reports: list[PreflightReport], requests: dict[str, int], scope: str) -> dg.AssetCheckResult:
    failed = [r for r in reports if not r.ok]
    return dg.AssetCheckResult(
        passed=not failed, severity=dg.AssetCheckSeverity.WARN,
        metadata={"tenants_checked": len(reports), "tenants_not_ready": len(failed), "checked": scope,
                  "api_requests": sum(requests.values()), "api_requests_by_system": dg.MetadataValue.json(requests),
                  "not_ready": dg.MetadataValue.md("\n".join(f"- {r.summary()}" for r in failed[:200]) or "none")},
        description=None if not failed else f"{len(failed)} tenant(s) not ready: " + failed[0].summary()[:500])
