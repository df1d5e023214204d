"""Preflight: before a close, prove a tenant's connection will take its postings, without writing anything.

`preflight(settings, tenant_id, month=None)` runs, for the tenant's current system (its newest connection):

- connection: the tenant has a connection not marked needs re-auth/revoked (`integrations`);
- credential: the system answers a read with the stored credential, refreshed if due (the chart read);
- company: the company the credential opens is the one on record: the chart read on the stored realm /
  organization / company (QuickBooks, Zoho, Rootfi), the grant's organization list (Zoho), the JWT issued for the
  company (Aden); Jurnal binds each token to one company;
- home currency: the company's home currency is the tenant's R2a currency (Zoho's organization, Aden's accounts,
  QuickBooks' Preferences where answered; skipped where the system exposes none);
- accounts: every account number the mapping needs exists in the chart and is active (LEDGER_ACCOUNT_MAPPING; with
  a month, only the categories the month's R2a rows use);
- period: the month is open for posting (Aden's accounting periods; skipped where the system exposes no period or
  lock date to read).

Every failure names the tenant, the system, the problem and the fix. `ledger-pipeline check --tenant T [--month M]`
prints the report (exit 1 on a failure); the operator page runs it per tenant; `preflight_asset_check()` makes it a
Dagster asset check (blocking) the definitions can attach before posting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import create_engine, select

from ledger_pipeline.ledger.mapping import CLEARING, load_mapping, resolve_numbers
from ledger_pipeline.ledger.sink import SinkError
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.vault import NeedsReauth, tenant_systems
from ledger_pipeline.systems import SYSTEMS, ChartAccount


@dataclass(frozen=True)
class Check:
    name: str
    outcome: str  # passed | failed | skipped
    detail: str
    fix: str | None = None


@dataclass
class PreflightReport:
    tenant_id: str
    system: str | None
    month: dt.date | None
    checks: list[Check] = field(default_factory=list)
    company_name: str | None = None
    home_currency: str | None = None
    reached: bool = False  # a request to the system succeeded

    @property
    def ok(self) -> bool:
        return all(c.outcome != "failed" for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.outcome == "failed"]

    def summary(self) -> str:
        if self.ok:
            return f"tenant {self.tenant_id} ({self.system}): ready"
        return "; ".join(f"tenant {self.tenant_id} ({self.system or 'no system'}) {c.name}: {c.detail} -> fix: "
                         f"{c.fix}" for c in self.failures)


def link_fix(tenant_id: str, system: str) -> str:
    return (f"send the tenant a new connect link (`ledger-pipeline connect --link --tenant {tenant_id} --system "
            f"{system}`, or the operator page) and have them connect again")


def preflight(settings: Settings, tenant_id: str, month: dt.date | None = None, *,
              connection_for: Callable[[str], object] | None = None) -> PreflightReport:
    """The report for one tenant (never raises for the tenant's own problems: they are failed checks)."""
    from ledger_pipeline.service.store import ops_engine

    engine = ops_engine(settings.ops_database_url)
    current = tenant_systems(engine).get(tenant_id)
    if current is None:
        report = PreflightReport(tenant_id, None, month)
        report.checks.append(Check("connection", "failed", f"tenant {tenant_id} has no accounting system connected",
                                   "mint a connect link for the tenant's system (`ledger-pipeline connect --link "
                                   f"--tenant {tenant_id} --system S`) and have them connect"))
        return report
    system, status, detail = current
    report = PreflightReport(tenant_id, system, month)
    if status != "connected":
        report.checks.append(Check("connection", "failed", f"tenant {tenant_id}: the {system} connection is "
                                   f"{status} ({(detail or '').strip()[:300]})", link_fix(tenant_id, system)))
        return report
    report.checks.append(Check("connection", "passed", f"connected to {SYSTEMS[system].title}"))
    own = None
    if connection_for is None:
        from ledger_pipeline.systems import OpenOptions, open_connection

        own = open_connection(system, settings, OpenOptions(settings.ops_database_url, settings.rate_limit_scale,
                                                            priority="background"))
        connection_for = lambda _system: own  # noqa: E731
    try:
        _run(settings, report, connection_for(system))
    finally:
        if own is not None:
            own.close()
    return report


def preflight_many(settings: Settings, tenants: Iterable[str], month: dt.date | None = None) -> list[PreflightReport]:
    """Reports for many tenants, one connection per system shared between them."""
    from ledger_pipeline.systems import Connections, OpenOptions

    with Connections(settings, OpenOptions(settings.ops_database_url, settings.rate_limit_scale,
                                           priority="background")) as connections:
        return [preflight(settings, t, month, connection_for=connections) for t in tenants]


def record(report: PreflightReport, store: object, now: dt.datetime) -> None:
    """Keep the verdict in connection_health (service/store.py) for the operator page and `connect --status`."""
    if report.system:
        store.record_check(report.tenant_id, report.system, now, report.ok,  # type: ignore[attr-defined]
                           None if report.ok else report.summary()[:2000], report.reached, report.company_name,
                           report.home_currency)


# -- the checks -----------------------------------------------------------------------------------------------
def _run(settings: Settings, report: PreflightReport, connection: object) -> None:
    tenant, system = report.tenant_id, report.system or ""
    try:
        chart: list[ChartAccount] = connection.fetch_chart(tenant)  # type: ignore[attr-defined]
    except (SinkError, NeedsReauth) as exc:
        reauth = isinstance(exc, NeedsReauth) or exc.kind == "needs_reauth"
        fix = link_fix(tenant, system) if reauth else (
            "retry later; if it persists, check the system's status page and our credentials for it "
            f"({system.upper()}_* settings)")
        report.checks.append(Check("credential", "failed", f"tenant {tenant}: {system} refused or failed the read "
                                   f"({exc})", fix))
        return
    report.reached = True
    report.checks.append(Check("credential", "passed", f"the stored credential reads the chart ({len(chart)} "
                               "accounts)"))
    facts = describe(system, connection, tenant)
    report.company_name, report.home_currency = facts.company_name, facts.home_currency
    report.checks.append(_company_check(tenant, system, connection, facts))
    report.checks.append(_currency_check(settings, tenant, system, facts))
    report.checks.append(_accounts_check(settings, tenant, system, chart, report.month))
    report.checks.append(_period_check(tenant, system, connection, report.month))


@dataclass
class Facts:
    """What the system says about the company, where it says it (None: not exposed to us)."""

    company_ids: list[str] | None = None  # the companies the credential opens
    company_name: str | None = None
    home_currency: str | None = None
    note: str | None = None


def describe(system: str, connection: object, tenant_id: str) -> Facts:
    """Read-only facts about the tenant's company (best effort: a failed probe leaves a field None)."""
    try:
        if system == "zoho":
            data = _body(connection.client.request(tenant_id, "GET", "/organizations"))  # type: ignore[attr-defined]
            orgs = data.get("organizations") or [] if isinstance(data, dict) else []
            _, extra = connection.vault.details(tenant_id)  # type: ignore[attr-defined]
            mine = next((o for o in orgs if str(o.get("organization_id")) == str(extra.get("organization_id"))), None)
            return Facts([str(o.get("organization_id")) for o in orgs], (mine or {}).get("name"),
                         (mine or {}).get("currency_code"))
        if system == "aden":
            return _aden_facts(connection, tenant_id)
        if system == "quickbooks":
            return _quickbooks_facts(connection, tenant_id)
    except Exception as exc:  # noqa: BLE001 - a probe that fails is reported as "not exposed", never as a crash
        return Facts(note=f"{type(exc).__name__}: {str(exc)[:200]}")
    return Facts()


def _body(result: object) -> object:
    """A client's `request` answer: (status, body) or (status, body, replayed) tuples, or the body itself."""
    return result[1] if isinstance(result, tuple) else result


def _aden_facts(connection: object, tenant_id: str) -> Facts:
    """Aden's accounts carry their currency (docs.adenhq.com accounts); the company is the one the JWT was issued
    for (its claims, read when it was connected)."""
    accounts = connection.client.pages(tenant_id, "/accounts")  # type: ignore[attr-defined]
    currencies = {str(a.get("currency")).upper() for a in accounts if a.get("currency")}
    return Facts(None, None, currencies.pop() if len(currencies) == 1 else None)


def _quickbooks_facts(connection: object, tenant_id: str) -> Facts:
    """CompanyInfo (CompanyName) and Preferences (CurrencyPrefs.HomeCurrency), where the API answers them
    (developer.intuit.com: accounting API entities CompanyInfo and Preferences)."""
    client = connection.client  # type: ignore[attr-defined]
    realm = client.realm(tenant_id)
    facts = Facts([realm])
    try:
        info = _body(client.request(tenant_id, "GET", f"/companyinfo/{realm}"))
        facts.company_name = ((info or {}).get("CompanyInfo") or {}).get("CompanyName")
    except Exception:  # noqa: BLE001, S110 - not exposed
        pass
    try:
        prefs = _body(client.request(tenant_id, "GET", "/preferences"))
        home = (((prefs or {}).get("Preferences") or {}).get("CurrencyPrefs") or {}).get("HomeCurrency") or {}
        facts.home_currency = home.get("value")
    except Exception:  # noqa: BLE001, S110 - not exposed
        pass
    return facts


def _company_check(tenant: str, system: str, connection: object, facts: Facts) -> Check:
    on_record, _ = connection.vault.details(tenant)  # type: ignore[attr-defined]
    if not on_record:
        return Check("company", "failed", f"tenant {tenant}: no {system} company is on record for the connection",
                     link_fix(tenant, system))
    if facts.company_ids is not None and str(on_record) not in facts.company_ids:
        return Check("company", "failed", f"tenant {tenant}: the {system} credential opens company "
                     f"{', '.join(facts.company_ids) or 'none'}, not {on_record} on record",
                     f"have the tenant connect company {on_record} again, or (a deliberate move) mint a link with "
                     "--new-company")
    name = f" ({facts.company_name})" if facts.company_name else ""
    how = {"jurnal": "Jurnal binds each token to one company", "quickbooks": "the chart was read in this realm",
           "zoho": "the grant lists this organization", "rootfi": "the chart was read for this company",
           "aden": "the JWT was issued for this company"}.get(system, "")
    return Check("company", "passed", f"company {on_record}{name} on record ({how})")


def _currency_check(settings: Settings, tenant: str, system: str, facts: Facts) -> Check:
    expected = _tenant_currency(settings, tenant)
    if not facts.home_currency:
        return Check("home currency", "skipped", f"{SYSTEMS[system].title} exposes no home currency to this client"
                     + (f" ({facts.note})" if facts.note else ""))
    if expected and facts.home_currency.upper() != expected.upper():
        return Check("home currency", "failed", f"tenant {tenant}: the {system} company's home currency is "
                     f"{facts.home_currency}, but R2a records the tenant's amounts in {expected}",
                     "connect the company kept in the tenant's currency (a link with --new-company), or fix the "
                     "tenant's currency in R2a")
    return Check("home currency", "passed", f"{facts.home_currency}" + ("" if expected else " (R2a has none)"))


def _accounts_check(settings: Settings, tenant: str, system: str, chart: list[ChartAccount],
                    month: dt.date | None) -> Check:
    try:
        rules = load_mapping(settings.account_mapping_path)
    except (OSError, ValueError) as exc:
        return Check("accounts", "failed", f"the account mapping cannot be read ({exc})",
                     "fix LEDGER_ACCOUNT_MAPPING (columns tenant_id, category, subcategory, account_number)")
    needed = needed_accounts(rules, tenant, _month_keys(settings, tenant, month) if month else None)
    by_number = {}
    for a in chart:
        if a.number:
            by_number.setdefault(a.number, []).append(a)
    missing = sorted(n for n in needed if n not in by_number)
    archived = sorted(n for n in needed if n in by_number and all(a.archived for a in by_number[n]))
    if missing or archived:
        parts = []
        if missing:
            parts.append("missing: " + ", ".join(f"{n} (for {', '.join(needed[n])})" for n in missing))
        if archived:
            parts.append("archived: " + ", ".join(f"{n} (for {', '.join(needed[n])})" for n in archived))
        return Check("accounts", "failed", f"tenant {tenant}: the {system} chart lacks accounts the mapping needs; "
                     + "; ".join(parts),
                     "create or unarchive these account numbers in the tenant's chart, or map the categories to "
                     f"existing accounts with tenant rules in {settings.account_mapping_path.name}")
    return Check("accounts", "passed", f"{len(needed)} mapped account(s) exist and are active: "
                 + ", ".join(sorted(needed)))


def needed_accounts(rules: pd.DataFrame, tenant: str,
                    keys: list[tuple[str, str]] | None = None) -> dict[str, list[str]]:
    """{account number: ['category/subcategory', ...]} the mapping needs for `tenant`: for the given (category,
    subcategory) keys, else for every key the rules name; always the clearing account."""
    if keys is None:
        applicable = rules[(rules["tenant_id"] == "") | (rules["tenant_id"] == tenant)]
        keys = sorted({(c, s) for c, s in zip(applicable["category"], applicable["subcategory"], strict=True)})
    keys = sorted(set(keys) | {(CLEARING, "*")})
    frame = pd.DataFrame([(tenant, c, s) for c, s in keys], columns=["tenant_id", "category", "subcategory"])
    numbers = resolve_numbers(frame, rules)
    out: dict[str, list[str]] = {}
    for (c, s), n in zip(keys, numbers, strict=True):
        if isinstance(n, str) and n:
            out.setdefault(n, []).append(f"{c}/{s}")
    return out


def _month_keys(settings: Settings, tenant: str, month: dt.date) -> list[tuple[str, str]]:
    from ledger_pipeline.r2a.models import R2aTransaction

    end = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    engine = create_engine(settings.r2a_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(R2aTransaction.category, R2aTransaction.subcategory).distinct().where(
                R2aTransaction.tenant_id == tenant, R2aTransaction.txn_date >= month,
                R2aTransaction.txn_date < end)).all()
    finally:
        engine.dispose()
    return [(c or "", s or "") for c, s in rows if c]


def _tenant_currency(settings: Settings, tenant: str) -> str | None:
    from ledger_pipeline.r2a.models import Tenant

    engine = create_engine(settings.r2a_database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(Tenant.currency).where(Tenant.tenant_id == tenant)).scalar_one_or_none()
    except Exception:  # noqa: BLE001 - R2a unreadable: the currency check compares with nothing
        return None
    finally:
        engine.dispose()


def _period_check(tenant: str, system: str, connection: object, month: dt.date | None) -> Check:
    if month is None:
        return Check("period", "skipped", "no month given (--month YYYY-MM checks that its period is open)")
    if system != "aden":
        return Check("period", "skipped", f"{SYSTEMS[system].title} exposes no period or lock date to read; a "
                     "locked period is reported by the posting itself")
    periods = _aden_periods(connection, tenant)
    if periods is None:
        return Check("period", "skipped", "Aden's accounting periods could not be read")
    last = month.replace(day=28) + dt.timedelta(days=4)
    last = last - dt.timedelta(days=last.day)
    inside = [p for p in periods if p[0] <= month.isoformat() <= p[1] or p[0] <= last.isoformat() <= p[1]]
    if not inside:
        return Check("period", "failed", f"tenant {tenant}: Aden has no accounting period for {month:%Y-%m}",
                     f"ask the tenant's accountant to create the {month:%Y-%m} period in Aden")
    closed = [p for p in inside if p[2]]
    if closed:
        return Check("period", "failed", f"tenant {tenant}: Aden's period for {month:%Y-%m} is closed",
                     f"ask the tenant's accountant to reopen {month:%Y-%m} in Aden before the close posts it")
    return Check("period", "passed", f"{month:%Y-%m} is open in Aden")


def _aden_periods(connection: object, tenant: str) -> list[tuple[str, str, bool]] | None:
    """[(start, end, closed)]: docs.adenhq.com accounting-periods (`is_closed`), or 0.2.0's emulated
    `/posting-periods` (`status`)."""
    client = connection.client  # type: ignore[attr-defined]
    for path in ("/accounting-periods", "/posting-periods"):
        try:
            rows = client.pages(tenant, path)
        except Exception:  # noqa: BLE001 - try the other reading
            continue
        out = []
        for p in rows:
            closed = bool(p["is_closed"]) if "is_closed" in p else str(p.get("status", "")).lower() != "open"
            out.append((str(p.get("start_date"))[:10], str(p.get("end_date"))[:10], closed))
        return out
    return None


# -- Dagster ----------------------------------------------------------------------------------------------------
def check_result(reports: list[PreflightReport]):  # noqa: ANN201 - dg.AssetCheckResult (dagster imported lazily)
    """The reports as one Dagster asset check result: failed when any tenant failed, each failure in metadata."""
    import dagster as dg

    failed = [r for r in reports if not r.ok]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"tenants_checked": len(reports), "tenants_failed": len(failed),
                  "failures": dg.MetadataValue.md("\n".join(f"- {r.summary()}" for r in failed[:200]) or "none")},
        description=None if not failed else f"{len(failed)} tenant(s) not ready: " + failed[0].summary()[:500])


def preflight_asset_check(asset: str = "gl_accounts", name: str = "connections_ready", blocking: bool = True):  # noqa: ANN201
    """A Dagster asset check running the preflight for every connected tenant (month: the run's partition when the
    asset is partitioned, else none). Attach it to the asset posting depends on, e.g.
    `defs = dg.Definitions(asset_checks=[preflight_asset_check("gl_accounts")], ...)`."""
    import dagster as dg

    @dg.asset_check(asset=asset, name=name, blocking=blocking,
                    description="Every connected tenant's credential, company, home currency, mapped accounts and "
                                "(Aden) period are ready for posting (ledger_pipeline/service/preflight.py).")
    def _check(context):  # noqa: ANN001, ANN202 - unannotated: dagster resolves annotations at definition time
        from ledger_pipeline import clock
        from ledger_pipeline.service.store import ops_engine
        from ledger_pipeline.settings import load_settings

        settings = load_settings()
        month = None
        if context.has_partition_key:
            month = clock.parse_month(context.partition_key)
        tenants = sorted(t for t, (_, status, _) in tenant_systems(ops_engine(settings.ops_database_url)).items()
                         if status == "connected")
        return check_result(preflight_many(settings, tenants, month))

    return _check
