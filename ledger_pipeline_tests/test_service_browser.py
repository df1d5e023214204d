"""The hosted connection in a real browser (Debian's chromium through playwright, as test_ui.py): a tenant's user
opens a minted link, presses Continue, approves on the provider's (emulated) consent page and lands on our page
naming the tenant and the company; Aden's user pastes the administrator's token. The tokens are then in the vault,
encrypted, and on no page the browser saw. An operator signs in through the form and sees the connections.

Without chromium or playwright the test skips, saying why (`make test` installs chromium as root)."""

from __future__ import annotations

import pytest

from ledger_pipeline.service.testing import aden_token
from ledger_pipeline_tests.test_service import (  # noqa: F401 - `service` is a fixture
    OPERATOR,
    integration,
    mint,
    service,
    tokens_of,
)
from ledger_pipeline_tests.test_ui import CHROMIUM, browser_or_skip

pytestmark = pytest.mark.slow


@pytest.fixture
def browser():  # noqa: ANN201
    sync_playwright = browser_or_skip()
    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        except Exception as exc:  # noqa: BLE001 - a browser that cannot start on this machine: say so
            pytest.skip(f"chromium at {CHROMIUM} did not start: {str(exc).splitlines()[0][:200]}")
        yield chromium
        chromium.close()


def test_every_system_connects_in_a_browser(service, sandbox, browser, tmp_path) -> None:  # noqa: ANN001, F811
    seen: list[str] = []
    for system in ["jurnal", "quickbooks", "zoho", "rootfi", "aden"]:
        tenant = f"t-browser-{system}"
        context = browser.new_context()
        page = context.new_page()
        page.goto(mint(service, tenant, system))
        assert page.inner_text("#title") == f"Connect {tenant} to " + page.inner_text("#title").split(" to ", 1)[1]
        assert page.inner_text("#tenant") == tenant
        if system == "aden":
            page.fill("#token", aden_token(sandbox.url, tenant))
            page.click("#continue")
        else:
            page.click("#continue")
            page.wait_for_selector("#approve")  # the provider's consent page, on the provider's host
            assert page.url.startswith(sandbox.url), page.url
            assert page.inner_text("#company") == tenant
            seen.append(page.content())
            page.click("#approve")
        page.wait_for_selector("#result")
        page.screenshot(path=str(tmp_path / f"{system}.png"), full_page=True)
        assert page.url.startswith(service.url)
        assert page.inner_text("#title") == "Connected", page.content()
        assert page.inner_text("#tenant") == tenant
        row = integration(tenant, system)
        assert row is not None and row.status == "connected"
        assert row.company_id in page.content()
        seen.append(page.content())
        access, refresh = tokens_of(row)
        if system != "rootfi":
            assert access and row.access_token != access  # encrypted at rest
            assert all(access not in html and refresh not in html for html in seen)
        cookies = {c["name"]: c for c in context.cookies()}
        assert not [n for n in cookies if n.startswith("lp_flow_") and cookies[n]["value"]]  # cleared after use
        context.close()


def test_a_declined_consent_then_an_approval_in_a_browser(service, browser) -> None:  # noqa: ANN001, F811
    page = browser.new_page()
    link = mint(service, "t-browser-deny", "quickbooks")
    page.goto(link)
    page.click("#continue")
    page.click("#deny")
    page.wait_for_selector("#result")
    assert page.inner_text("#title") == "Access was declined"
    assert "Nothing was changed" in page.inner_text("#changed")
    assert integration("t-browser-deny", "quickbooks") is None
    page.goto(link)  # the same link, approved this time
    page.click("#continue")
    page.click("#approve")
    page.wait_for_selector("#result")
    assert page.inner_text("#title") == "Connected"
    page.goto(link)
    assert page.inner_text("#title") == "This link was already used"
    page.close()


def test_the_operator_signs_in_and_sees_connections(service, browser) -> None:  # noqa: ANN001, F811
    page = browser.new_page()
    page.goto(mint(service, "t-browser-op", "zoho"))
    page.click("#continue")
    page.click("#approve")
    page.wait_for_selector("#result")
    page.goto(f"{service.url}/operator")
    assert page.url.endswith("/operator/login")
    page.fill("#token", "wrong-token")
    page.click("#signin")
    assert page.inner_text("#problem") == "That operator token is not right."
    page.fill("#token", OPERATOR)
    page.click("#signin")
    page.wait_for_selector("#connections")
    row = page.locator('tr[data-tenant="t-browser-op"]')
    assert row.get_attribute("data-status") == "connected"
    assert "zoho" in row.inner_text() and "IDR" in row.inner_text()
    row.locator("button", has_text="Check").click()
    page.wait_for_selector("#verdict")
    assert page.inner_text("#verdict") == "all checks passed", page.content()
    page.goto(f"{service.url}/operator")
    page.locator('tr[data-tenant="t-browser-op"]').locator("button", has_text="Disconnect").click()
    page.wait_for_selector("#connections")
    row = page.locator('tr[data-tenant="t-browser-op"]')
    assert row.get_attribute("data-status") == "revoked"
    link = row.locator(".link").inner_text()
    page.goto(link)  # the link next to a revoked connection reconnects it
    page.click("#continue")
    page.click("#approve")
    page.wait_for_selector("#result")
    page.goto(f"{service.url}/operator")
    assert page.locator('tr[data-tenant="t-browser-op"]').get_attribute("data-status") == "connected"
    page.close()
