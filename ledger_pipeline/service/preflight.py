"""Preflight: before a close, prove a tenant's connection will take its postings, without writing anything.

`preflight(settings, tenant_id, month=None)` runs, for the tenant's current system (its newest connection):

- connection: the tenant has a connection not marked needs re-auth/revoked (`integrations`);
- credential: the system answers a read with the stored credential, refreshed if due (the chart read);
- scope: the grant may create journals, where the system says what it granted: Zoho's token reply names the scope
  (recorded at connect; ZohoBooks.fullaccess.all or ZohoBooks.accountants.CREATE needed); QuickBooks has one scope
  for its whole accounting API (com.intuit.quickbooks.accounting, reads and writes alike), so the chart read proves
  it; Jurnal's (Mekari) token reply names none, Aden's administrator-issued JWT carries no documented permission
  claim, and Rootfi's api_key is organization-wide: the check says so (skipped) instead of pretending;
- company: the company the credential opens is the one on record: the chart read on the stored realm /
  organization / company (QuickBooks, Zoho, Rootfi), the grant's organization list (Zoho), Jurnal's
  `GET /companies/active` (the token's company), the JWT issued for the company (Aden);
- home currency: the company's home currency is the tenant's R2a currency (Zoho's organization, Aden's accounts,
  QuickBooks' Preferences, Jurnal's get_currency; skipped where the system exposes none);
- accounts: every account number the mapping needs exists in the chart and is active (LEDGER_ACCOUNT_MAPPING; with
  a month, only the categories the month's R2a rows use);
- period: the month's entry (dated its last day) falls after the system's lock: QuickBooks Preferences
  AccountingInfoPrefs.BookCloseDate, Zoho's transaction locks (GET /transactionlocks), Jurnal's company
  last_closing_the_book_date, Aden's accounting periods (`is_closed`); Rootfi exposes no lock or closing date
  (skipped, saying so: a locked period is then reported by the posting itself).

Every failure names the tenant, the system, the problem and the fix. `ledger-pipeline check --tenant T [--month M]`
prints the report (exit 1 on a failure); the operator page runs it per tenant. The Dagster asset check before
posting (service/preflight_check.py `connections_ready`) computes the same verdicts from what the close already has
(the refreshed chart, the connection record, the stored home currency) plus `period_locks`: one cheap read per
tenant.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import select

from ledger_pipeline import clock
from ledger_pipeline.connections import company_currencies
from ledger_pipeline.ledger.currency import CompanyCurrency, foreign_refusal
from ledger_pipeline.ledger.mapping import CLEARING, load_mapping, resolve_numbers
from ledger_pipeline.ledger.sink import SinkError
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.vault import NeedsReauth, tenant_systems
from ledger_pipeline.systems import SYSTEMS, ChartAccount
from ledger_pipeline.systems import title as system_title


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
                           report.home_currency, [{"name": c.name, "detail": c.detail, "fix": c.fix}
                                                  for c in report.failures])


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
    report.checks.append(scope_check(tenant, system, connection.vault.details(tenant)[1]))  # type: ignore[attr-defined]
    report.checks.append(_company_check(tenant, system, connection, facts))
    report.checks.append(_currency_check(settings, tenant, system, facts))
    report.checks.append(_accounts_check(settings, tenant, system, chart, report.month))
    report.checks.append(period_check(tenant, system, connection, report.month))


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
        if system == "jurnal":
            return _jurnal_facts(connection, tenant_id)
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


def _jurnal_facts(connection: object, tenant_id: str) -> Facts:
    """The token's company (Mekari Swagger "Get Current Active Company", GET /companies/active: company.id, .name)
    and its currency ("Get Company Currency", GET /companies/get_currency: company_currency.code)."""
    client = connection.client  # type: ignore[attr-defined]
    company = (_body(client.request(tenant_id, "GET", "/companies/active")) or {}).get("company") or {}
    facts = Facts([str(company["id"])] if company.get("id") is not None else None, company.get("name"))
    try:
        currency = _body(client.request(tenant_id, "GET", "/companies/get_currency")) or {}
        facts.home_currency = (currency.get("company_currency") or {}).get("code")
    except Exception:  # noqa: BLE001, S110 - not exposed
        pass
    return facts


# Zoho Books scopes that may create a journal (zoho.com/books/api/v3/oauth: ZohoBooks.<module>.<operation>, the
# journal API under "accountants"; fullaccess.all covers everything); compared case-insensitively
ZOHO_JOURNAL_SCOPES = {"zohobooks.fullaccess.all", "zohobooks.accountants.create", "zohobooks.accountants.all"}
NO_SCOPE_READ = {
    "jurnal": "Jurnal (Mekari) token replies name no scope (account.mekari.com OAuth2: access_token, token_type, "
              "expires_in, refresh_token); the grant covers the company's API as the user approved it",
    "aden": "Aden's JWT is issued by the company's administrator (docs.adenhq.com/development) and carries no "
            "documented permission claim",
    "rootfi": "Rootfi's api_key is organization-wide (docs.integrationlabs.co): no per-company scope to read",
}


def scope_check(tenant: str, system: str, extra: dict) -> Check:
    """May the grant create journals? Read where the system says what it granted (see the module doc); `extra`: the
    connection's non-secret details (vault `details`), where Zoho's granted scope is recorded at connect."""
    if system == "quickbooks":
        return Check("scope", "passed", "com.intuit.quickbooks.accounting: the accounting API answered, and this one "
                     "scope covers its reads and writes (developer.intuit.com OAuth scopes)")
    if system != "zoho":
        return Check("scope", "skipped", NO_SCOPE_READ.get(system, f"{system} exposes no scope to read"))
    granted = str(extra.get("scope") or "").strip()
    if not granted:
        return Check("scope", "skipped", "the scope Zoho granted was not recorded (a connection made before 0.3.0); "
                     "connecting again records it")
    scopes = {s.strip().lower() for s in granted.replace(",", " ").split() if s.strip()}
    if scopes & ZOHO_JOURNAL_SCOPES:
        return Check("scope", "passed", f"granted {granted}")
    return Check("scope", "failed", f"tenant {tenant}: the zoho grant's scope is {granted}, which cannot create "
                 "journals (needs ZohoBooks.accountants.CREATE or ZohoBooks.fullaccess.all)",
                 link_fix(tenant, system) + ", approving every permission the consent page asks for")


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
    from ledger_pipeline.service.store import ops_engine

    stored = company_currencies(ops_engine(settings.ops_database_url)).get((system, tenant))
    company = CompanyCurrency(facts.home_currency, stored.multicurrency if stored else None)
    return home_currency_check(tenant, system, company, expected)


def home_currency_check(tenant: str, system: str, company: CompanyCurrency, expected: str | None) -> Check:
    """The company's home currency against the tenant's R2a currency: the same currency passes; another one passes
    only where the system takes foreign-currency journals into this company (ledger.currency.foreign_refusal: the
    same rule posting applies; the rate for each entry date is checked when the entry is planned)."""
    home = (company.home or "").upper()
    if not expected or home == expected.upper():
        return Check("home currency", "passed", home + ("" if expected else " (R2a has none)"))
    refused = foreign_refusal(system, expected.upper(), company)
    if refused:
        problem, fix = refused
        return Check("home currency", "failed", f"tenant {tenant}: the {system} company keeps its books in {home} "
                     f"and R2a records the tenant's amounts in {expected}: {problem}",
                     f"{fix} (a link with --new-company), or fix the tenant's currency in R2a")
    return Check("home currency", "passed", f"{home}; entries in {expected} are posted with the loaded {expected}->"
                 f"{home} rate (multicurrency)")


def _accounts_check(settings: Settings, tenant: str, system: str, chart: list[ChartAccount],
                    month: dt.date | None) -> Check:
    try:
        rules = load_mapping(settings.account_mapping_path)
    except (OSError, ValueError) as exc:
        return Check("accounts", "failed", f"the account mapping cannot be read ({exc})",
                     "fix LEDGER_ACCOUNT_MAPPING (columns tenant_id, category, subcategory, account_number)")
    keys = None
    if month:
        try:
            keys = _month_keys(settings, tenant, month)
        except Exception:  # noqa: BLE001 - R2a unreadable: every category the mapping names is checked instead
            keys = None
    needed = needed_accounts(rules, tenant, keys)
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

    end = clock.add_months(month, 1)
    rows = _r2a_rows(settings, select(R2aTransaction.category, R2aTransaction.subcategory).distinct().where(
        R2aTransaction.tenant_id == tenant, R2aTransaction.txn_date >= month, R2aTransaction.txn_date < end))
    return [(c or "", s or "") for c, s in rows if c]


def _r2a_rows(settings: Settings, statement) -> list:  # noqa: ANN001 - a SQLAlchemy select
    """Rows of one SELECT on R2a, opened read only as the pipeline always reads it (r2a.models.make_engine)."""
    from ledger_pipeline.r2a.models import make_engine

    engine = make_engine(settings.r2a_database_url, read_only=True)
    try:
        with engine.connect() as conn:
            return list(conn.execute(statement).all())
    finally:
        engine.dispose()


def tenant_currencies(settings: Settings, tenants: Iterable[str]) -> dict[str, str | None]:
    """{tenant: R2a currency} for these tenants, in one query ({} when R2a cannot be read)."""
    from ledger_pipeline.r2a.models import Tenant

    wanted = sorted(set(tenants))
    if not wanted:
        return {}
    try:
        return dict(_r2a_rows(settings, select(Tenant.tenant_id, Tenant.currency).where(Tenant.tenant_id.in_(wanted))))
    except Exception:  # noqa: BLE001 - R2a unreadable: the currency check compares with nothing
        return {}


def _tenant_currency(settings: Settings, tenant: str) -> str | None:
    return tenant_currencies(settings, [tenant]).get(tenant)


def next_close_months(ops_engine: object, tenants: list[str], current: dt.date | None = None) -> dict[str, dt.date]:
    """Per tenant, the month its next close posts: the last complete month while nothing is posted for it, else the
    current month (a posted month may well be locked: that is the accountant closing it). `current`: the business
    month in progress (default: ledger_pipeline.clock). One query for all the tenants."""
    from ledger_pipeline.state.models import Posting

    current = current or clock.current_month()
    previous = clock.add_months(current, -1)
    with ops_engine.connect() as conn:  # type: ignore[attr-defined]
        posted = set(conn.execute(select(Posting.tenant_id).distinct().where(  # no IN list: any number of tenants
            Posting.period == previous, Posting.status == "posted")).scalars())
    return {t: current if t in posted else previous for t in tenants}


def next_close_month(ops_engine: object, tenant: str, current: dt.date | None = None) -> dt.date:
    """`next_close_months` for one tenant."""
    return next_close_months(ops_engine, [tenant], current)[tenant]


month_end = clock.month_end  # the last day of a month: the date every journal entry of the month carries


@dataclass
class PeriodLocks:
    """What one read says about which months are closed: `closed[month]` is the reason the month cannot take its
    entry (None: open); `closed is None` when the system exposes no such read (`note` says so) or the read
    failed."""

    closed: dict[dt.date, str | None] | None
    note: str = ""
    source: str = ""  # where the answer came from, for the passed check's detail


LOCK_FIX = {
    "quickbooks": "ask the tenant's accountant to move QuickBooks' closing date (Settings > Advanced > Close the "
                  "books) before {end}, then close the month again",
    "zoho": "ask the tenant's accountant to move or remove Zoho Books' transaction lock (Accountant > Transaction "
            "Locking) before {end}, then close the month again",
    "jurnal": "ask the tenant's accountant to reopen the closed books (Tutup Buku / Kunci Periode) in Jurnal before "
              "{end}, then close the month again",
    "aden": "ask the tenant's accountant to create or reopen the {month} period in Aden, then close the month again",
}


def _parse_day(value: object) -> dt.date | None:
    """A date as the systems write it: yyyy-mm-dd (QuickBooks, Zoho, Aden) or dd/mm/yyyy (Jurnal)."""
    text = str(value or "").strip()[:10]
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


def _closed_through(lock: dt.date | None, months: Iterable[dt.date], what: str) -> dict[dt.date, str | None]:
    return {m: (f"{what} is {lock:%Y-%m-%d}: the {m:%Y-%m} entry, dated {month_end(m):%Y-%m-%d}, would be refused"
                if lock is not None and lock >= month_end(m) else None) for m in months}


def period_locks(system: str, connection: object, tenant: str, months: list[dt.date]) -> PeriodLocks:
    """Which of `months` are closed in the tenant's system, from ONE read (never a write):
    - QuickBooks: GET /preferences -> AccountingInfoPrefs.BookCloseDate ("Closing date": no transaction on or
      before it; developer.intuit.com Preferences entity);
    - Zoho: GET /transactionlocks (www.zoho.com/books/api/v3/transaction-locking/ "List transaction locks"): an
      enabled lock for all modules (lock_scope 0) or the accountant module locks journals dated on or before
      transaction_lock_date;
    - Jurnal: GET /companies/active -> company.last_closing_the_book_date (Mekari Swagger "Get Current Active
      Company"; dd/mm/yyyy, "" when never closed; help-center.jurnal.id 29551046998553: nothing dated before it);
    - Aden: GET /accounting-periods filtered to the months (docs.adenhq.com accounting-periods: `is_closed`; D3: a
      period must exist and be open);
    - Rootfi: none (its company info has name, base_currency and fiscal_start_at, no lock date: docs.integrationlabs.co
      company-info), so `closed` is None with a note."""
    months = sorted(set(months))
    if not months:
        return PeriodLocks({}, source="no month")
    client = getattr(connection, "client", None)
    try:
        if system == "quickbooks":
            prefs = _body(client.request(tenant, "GET", "/preferences")) or {}  # type: ignore[union-attr]
            lock = _parse_day(((prefs.get("Preferences") or {}).get("AccountingInfoPrefs") or {}).get("BookCloseDate"))
            return PeriodLocks(_closed_through(lock, months, "QuickBooks' closing date (BookCloseDate)"),
                               source=f"closing date {lock or 'none'}")
        if system == "zoho":
            data = _body(client.request(tenant, "GET", "/transactionlocks")) or {}  # type: ignore[union-attr]
            dates = [_parse_day(lk.get("transaction_lock_date")) for lk in data.get("transaction_locks") or []
                     if str(lk.get("transaction_lock_status", "enabled")).startswith("enabled")
                     and (lk.get("lock_scope") in (0, "0", None)
                          or "accountant" in str(lk.get("lock_scope_formatted", "")).lower())]
            lock = max((d for d in dates if d), default=None)
            return PeriodLocks(_closed_through(lock, months, "Zoho Books' transaction lock date"),
                               source=f"transaction lock {lock or 'none'}")
        if system == "jurnal":
            company = (_body(client.request(tenant, "GET", "/companies/active")) or {}).get(  # type: ignore[union-attr]
                "company") or {}
            lock = _parse_day(company.get("last_closing_the_book_date"))
            return PeriodLocks(_closed_through(lock, months, "Jurnal's last closing-the-books date"),
                               source=f"books closed through {lock or 'never'}")
        if system == "aden":
            rows = client.pages(tenant, "/accounting-periods", params={  # type: ignore[union-attr]
                "start_date": months[0].isoformat(), "end_date": month_end(months[-1]).isoformat()})
            periods = [(_parse_day(p.get("start_date")), _parse_day(p.get("end_date")),
                        bool(p["is_closed"]) if "is_closed" in p else str(p.get("status", "")).lower() != "open")
                       for p in rows if not p.get("is_adjustment_period")]
            closed: dict[dt.date, str | None] = {}
            for m in months:
                inside = [p for p in periods if p[0] and p[1] and p[0] <= month_end(m) <= p[1]]
                closed[m] = (f"Aden has no accounting period for {m:%Y-%m}" if not inside else
                             f"Aden's period for {m:%Y-%m} is closed" if any(p[2] for p in inside) else None)
            return PeriodLocks(closed, source="accounting periods")
    except Exception as exc:  # noqa: BLE001 - the read failed: say so, never guess open or closed
        return PeriodLocks(None, note=f"the period could not be read ({type(exc).__name__}: {str(exc)[:200]})")
    return PeriodLocks(None, note=f"{system_title(system)} exposes no period, "
                       "lock or closing date to read; a locked period is reported by the posting itself")


def lock_check(tenant: str, system: str, locks: PeriodLocks, months: list[dt.date]) -> Check:
    """One `period` check from a PeriodLocks reading."""
    if locks.closed is None:
        return Check("period", "skipped", locks.note)
    bad = [(m, locks.closed.get(m)) for m in sorted(months) if locks.closed.get(m)]
    if bad:
        m = bad[0][0]
        fix = LOCK_FIX.get(system, "reopen the period in the tenant's system, then close the month again").format(
            end=f"{month_end(m):%Y-%m-%d}", month=f"{m:%Y-%m}")
        return Check("period", "failed", f"tenant {tenant}: {system} " + "; ".join(str(r) for _, r in bad), fix)
    return Check("period", "passed", ", ".join(f"{m:%Y-%m}" for m in sorted(months)) + f" open ({locks.source})")


def period_check(tenant: str, system: str, connection: object, month: dt.date | None) -> Check:
    if month is None:
        return Check("period", "skipped", "no month given (--month YYYY-MM checks that its period is open)")
    return lock_check(tenant, system, period_locks(system, connection, tenant, [month]), [month])


# The Dagster asset check before posting: service/preflight_check.py `connections_ready` (from the close's state plus
# one period read per tenant; this module's full preflight reads too much for thousands of tenants at month-end).
