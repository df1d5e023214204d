"""Each connection's company currency: read from the system (at connect and on every chart refresh), kept in the
operational database (`connection_health.home_currency`, `.multicurrency`), published to DuckDB
(`accounting.connections`), and used to plan each entry's currency before posting (ledger/currency.py).

Where each system says it:
- QuickBooks: GET /preferences -> Preferences.CurrencyPrefs.HomeCurrency.value and .MultiCurrencyEnabled
  (developer.intuit.com accounting API, Preferences entity).
- Zoho Books: GET /organizations -> the connected organization's `currency_code` (its base currency,
  www.zoho.com/books/api/v3/organizations/); a journal takes any currency the organization has added
  (currency_id + exchange_rate), so multicurrency is on (the sink refuses a currency not added).
- Jurnal: GET /companies/get_currency -> company_currency.code (Mekari's Swagger, "Get Company Currency"); journal
  entries take no currency (ledger/currency.py FOREIGN_JOURNALS), so multicurrency is off for posting.
- Aden: the accounts' `currency` (docs.adenhq.com accounts; every account of a company is in its currency); journal
  entries carry currency + exchange_rate, so multicurrency is on.
- Rootfi: the accounts' `currency_id` (docs.integrationlabs.co v2 accounts/get-all-accounts [AC-ALL]), else the
  currency of its entries booked at `currency_rate` 1 (journal-entries/get-all-journal-entries [JE-ALL]: each
  entry's currency_id and currency_rate), else unknown; foreign entries are refused (no rate on create).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

import pandas as pd
from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from ledger_pipeline.ledger.currency import CompanyCurrency, CurrencyRejection, plan_currency
from ledger_pipeline.ledger.rates import RateTable
from ledger_pipeline.ledger.sink import CanonicalEntry
from ledger_pipeline.money import currency_problem
from ledger_pipeline.state.models import connection_health

CONNECTION_COLUMNS = ["system", "tenant_id", "company", "home_currency", "multicurrency", "checked_at"]


def _body(result: Any) -> Any:
    """A client's `request` answer: (status, body) / (status, body, replayed) tuples, or the body itself."""
    return result[1] if isinstance(result, tuple) else result


def _code(value: object) -> str | None:
    code = str(value).strip().upper() if value else None
    return code if code and currency_problem(code) is None else None


def _at_par(rate: object) -> bool:
    """A Rootfi entry's currency_rate says it is in the base currency (1, or none reported)."""
    try:
        return rate is None or Decimal(str(rate)) == 1
    except InvalidOperation:
        return False


def read_company_currency(system: str, connection: Any, tenant_id: str) -> CompanyCurrency:
    """The company's home currency and multicurrency setting as the system reports them (see the module doc).
    Raises whatever the client raises (the caller records the failure); a field the system does not expose is
    None."""
    client = connection.client
    if system == "quickbooks":
        prefs = _body(client.request(tenant_id, "GET", "/preferences")) or {}
        cp = (prefs.get("Preferences") or {}).get("CurrencyPrefs") or {}
        multi = cp.get("MultiCurrencyEnabled")
        return CompanyCurrency(_code((cp.get("HomeCurrency") or {}).get("value")),
                               None if multi is None else str(multi).lower() == "true")
    if system == "zoho":
        data = _body(client.request(tenant_id, "GET", "/organizations")) or {}
        _, extra = connection.vault.details(tenant_id)
        orgs = data.get("organizations") or []
        mine = next((o for o in orgs if str(o.get("organization_id")) == str(extra.get("organization_id"))), None)
        mine = mine or (orgs[0] if len(orgs) == 1 else {})
        return CompanyCurrency(_code(mine.get("currency_code")), True)
    if system == "jurnal":
        data = _body(client.request(tenant_id, "GET", "/companies/get_currency")) or {}
        return CompanyCurrency(_code((data.get("company_currency") or {}).get("code")), False)
    if system == "aden":
        codes = {_code(a.get("currency")) for a in client.pages(tenant_id, "/accounts")} - {None}
        return CompanyCurrency(codes.pop() if len(codes) == 1 else None, True)
    if system == "rootfi":
        from ledger_pipeline.systems.rootfi.client import list_page
        from ledger_pipeline.systems.rootfi.sink import currency_of

        # [AC-ALL]: every account's currency_id (a company's accounts are in its base currency)
        codes = {_code(currency_of(a)) for a in client.accounts(tenant_id)} - {None}
        if len(codes) != 1:
            # [JE-ALL]: entries carry currency_id and currency_rate; one at rate 1 is in the base currency (one
            # page of the newest entries: a company whose accounts do not say)
            url = "/accounting/journal_entries/all"
            page, _ = list_page(tenant_id, url, _body(client.request(
                tenant_id, "POST", url, body={"take": 50, "skip": 0, "orderBy": {"rootfi_id": "desc"}})))
            codes = {_code(currency_of(e)) for e in page if _at_par(e.get("currency_rate"))} - {None}
        return CompanyCurrency(codes.pop() if len(codes) == 1 else None, False)
    return CompanyCurrency(None, None)


def record_company_currency(engine: Engine, tenant_id: str, system: str, company: CompanyCurrency,
                            now: dt.datetime | None = None) -> None:
    """Store what was read (a None home leaves the stored one: a failed read never forgets a known currency)."""
    values: dict = {"multicurrency": None if company.multicurrency is None else int(company.multicurrency),
                    "currency_checked_at": now or dt.datetime.now(dt.UTC).replace(tzinfo=None)}
    if company.home:
        values["home_currency"] = company.home
    upsert_connection_health(engine, tenant_id, system, values)


def upsert_connection_health(engine: Engine, tenant_id: str, system: str, values: dict) -> None:
    """Set these columns of the tenant's `connection_health` row for `system`, creating the row when missing (safe
    against a concurrent insert by another process). The one writer of that table: connections (currency) and the
    connection service (health)."""
    key = and_(connection_health.c.tenant_id == tenant_id, connection_health.c.system == system)
    with engine.begin() as conn:
        if conn.execute(update(connection_health).where(key).values(**values)).rowcount == 0:
            try:
                with conn.begin_nested():
                    conn.execute(insert(connection_health).values(tenant_id=tenant_id, system=system, **values))
            except IntegrityError:  # another process inserted it meanwhile
                conn.execute(update(connection_health).where(key).values(**values))


def refresh_company_currencies(engine: Engine, pairs: Iterable[tuple[str, str]], connection_for: Callable[[str], Any],
                               log: Callable[[str], None] | None = None) -> dict[tuple[str, str], str]:
    """Read and record each (system, tenant)'s company currency; {(system, tenant): error} for those that failed
    (their stored currency is kept)."""
    failed = {}
    for system, tenant in pairs:
        try:
            record_company_currency(engine, tenant, system, read_company_currency(system, connection_for(system),
                                                                                  tenant))
        except Exception as exc:  # noqa: BLE001 - a failed read keeps the stored currency; the run goes on
            failed[(system, tenant)] = f"{type(exc).__name__}: {str(exc)[:200]}"
            if log:
                log(f"tenant {tenant} ({system}): could not read the company's home currency "
                    f"({failed[(system, tenant)]}); the stored one is kept")
    return failed


CURRENCY_MAX_AGE = dt.timedelta(days=7)  # a company's home currency rarely changes: re-read weekly, not per refresh


def currency_due(engine: Engine, pairs: Iterable[tuple[str, str]], now: dt.datetime | None = None,
                 max_age: dt.timedelta = CURRENCY_MAX_AGE) -> list[tuple[str, str]]:
    """The (system, tenant) pairs whose home currency was never read or was read longer than `max_age` ago: a chart
    refresh re-reads only those (one request each saved on every other refresh)."""
    c = connection_health.c
    with engine.connect() as conn:
        checked = {(s, t): at for s, t, at in conn.execute(select(c.system, c.tenant_id, c.currency_checked_at))}
    cutoff = (now or dt.datetime.now(dt.UTC).replace(tzinfo=None)) - max_age
    return [p for p in pairs if checked.get(p) is None or checked[p] < cutoff]


def company_currencies(engine: Engine) -> dict[tuple[str, str], CompanyCurrency]:
    """{(system, tenant): CompanyCurrency} as stored."""
    c = connection_health.c
    with engine.connect() as conn:
        rows = conn.execute(select(c.system, c.tenant_id, c.home_currency, c.multicurrency)).all()
    return {(s, t): CompanyCurrency(h, None if m is None else bool(m)) for s, t, h, m in rows}


def connections_frame(engine: Engine, systems: dict[str, str]) -> pd.DataFrame:
    """accounting.connections: one row per connected tenant (CONNECTION_COLUMNS)."""
    c = connection_health.c
    with engine.connect() as conn:
        rows = {(r.system, r.tenant_id): r for r in conn.execute(select(
            c.system, c.tenant_id, c.company_name, c.home_currency, c.multicurrency, c.currency_checked_at))}
    out = []
    for tenant, system in sorted(systems.items()):
        r = rows.get((system, tenant))
        out.append((system, tenant, r.company_name if r else None, r.home_currency if r else None,
                    None if r is None or r.multicurrency is None else bool(r.multicurrency),
                    r.currency_checked_at if r else None))
    frame = pd.DataFrame(out, columns=CONNECTION_COLUMNS)
    frame["multicurrency"] = frame["multicurrency"].astype("boolean")
    frame["checked_at"] = pd.to_datetime(frame["checked_at"])
    return frame


def plan_window(entries: dict[str, list[CanonicalEntry]], systems: dict[str, str],
                companies: dict[tuple[str, str], CompanyCurrency], rates: RateTable
                ) -> tuple[dict[str, list[CanonicalEntry]], dict[str, set[dt.date]], list[CurrencyRejection]]:
    """Each tenant's entries as they are posted (ledger/currency.py plan_currency), the refused entries left out and
    their months held (nothing sent, nothing deleted remotely), and the refusals. A tenant whose company currency
    was never read is posted as before, its currency sent (the systems that take a currency refuse one they do not
    keep)."""
    planned: dict[str, list[CanonicalEntry]] = {}
    held: dict[str, set[dt.date]] = {}
    refused: list[CurrencyRejection] = []
    for tenant, items in entries.items():
        system = systems.get(tenant)
        company = companies.get((system, tenant)) if system else None
        if company is None or company.home is None:
            planned[tenant] = list(items)
            continue
        keep = []
        for e in items:
            try:
                keep.append(plan_currency(e, system, company, rates))
            except CurrencyRejection as exc:
                refused.append(exc)
                # left out of the window and its month held: nothing is sent, and an entry posted before is kept
                # as it is (a held month's posting rows are never deleted: posting.plan_tenant)
                held.setdefault(tenant, set()).add(e.period)
        planned[tenant] = keep
    return planned, held, refused


def plan_stored(engine: Engine, entries: dict[str, list[CanonicalEntry]], systems: dict[str, str], start: dt.date,
                end: dt.date) -> tuple[dict[str, list[CanonicalEntry]], dict[str, set[dt.date]],
                                       list[CurrencyRejection]]:
    """`plan_window` with the stored company currencies and the rates loaded for [start, end): what the close,
    a re-post and reconciliation each see of an entry (its `exchange_rate` and planned content hash)."""
    from ledger_pipeline.rates import rate_table

    return plan_window(entries, systems, company_currencies(engine), rate_table(engine, start, end))


def entries_as_posted(engine: Engine, entries: dict[str, list[CanonicalEntry]], systems: dict[str, str],
                      start: dt.date, end: dt.date) -> dict[str, list[CanonicalEntry]]:
    """For comparison with what a system holds (reconciliation from the posting state, the drift read): each entry
    as the close posts it (rate and planned hash for a foreign currency), and one the plan refuses as the journal
    has it (never posted with that content: reconciliation shows it missing or mismatched, never dropped)."""
    planned, _, refused = plan_stored(engine, entries, systems, start, end)
    out_ids = {(r.tenant_id, r.period) for r in refused}
    return {t: list(planned.get(t, [])) + [e for e in items if (t, e.period) in out_ids]
            for t, items in entries.items()}

