"""How a sandbox company learns the currency its books are kept in (issue 21 point 6).

What the vendors do: a company's home (base) currency is chosen when its books are set up, by the company, not by an
app that connects later: QuickBooks Online's Preferences.CurrencyPrefs.HomeCurrency ("the home currency ... cannot
be changed" once set, developer.intuit.com accounting API, Preferences entity; Intuit's "Set up and use
multicurrency"), Zoho Books' organization `currency_code` chosen at sign-up (www.zoho.com/books/api/v3/organizations/),
Jurnal's company currency (Mekari's Swagger, GET /companies/get_currency), Aden's accounts' `currency`
(docs.adenhq.com accounts), Rootfi's accounts' `currency_id` (docs.integrationlabs.co v2 get-all-accounts). An app
only reads it (ledger_pipeline/connections.py).

What the sandbox does: it has no real company behind a login; its emulators create one at the first authorize /
link / JWT for a `login_hint`, kept in IDR (each emulator's DEFAULT_CURRENCY). So that a sandbox connection looks
like the common real one (a tenant whose R2a books are in USD connects a company kept in USD), the sandbox-only
connect paths (`ledger-pipeline connect --auto-approve` / `--all`, `make demo`) set each company's home currency
to the tenant's R2a currency right after the consent and before the currency is read, through the control every
emulator serves: `POST /_sandbox/<system>/companies/<login>/currency {"home_currency": code}` (Jurnal's controls
live at `/_sandbox/companies/<login>/...`). A test (or the demo's one foreign-currency tenant) that wants a company
kept in another currency says so the same way, after connecting. Nothing here runs against a real system: the
control exists only in the sandbox.
"""

from __future__ import annotations

import httpx

CONTROL = "currency"  # every emulator's {"home_currency": code, "multicurrency": bool} control


def currency_control_url(sandbox_url: str, system: str, login: str) -> str:
    """The sandbox's currency control for one company (`login` is the tenant id the connect flow's login_hint
    named)."""
    where = "companies" if system == "jurnal" else f"{system}/companies"
    return f"{sandbox_url.rstrip('/')}/_sandbox/{where}/{login}/{CONTROL}"


def set_home_currency(http: httpx.Client, sandbox_url: str, system: str, login: str, code: str,
                      multicurrency: bool | None = None) -> dict:
    """Keep the sandbox company's books in `code` (an ISO 4217 code; and switch multicurrency when given). Returns
    the control's answer; raises httpx.HTTPStatusError for an unknown company (404) or a refused code (400)."""
    body: dict = {"home_currency": code.upper()}
    if multicurrency is not None:
        body["multicurrency"] = multicurrency
    resp = http.post(currency_control_url(sandbox_url, system, login), json=body)
    resp.raise_for_status()
    return resp.json()
