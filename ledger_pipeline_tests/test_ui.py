"""A real browser (Debian's chromium through playwright) against `dagster dev` on loopback with the committed
instance config: what an operator sees must be what the books hold.

Setup: `make test` installs chromium as root when missing (the `browser` target) and playwright is a dev extra; the
system browser is used (`executable_path`), never `playwright install`. Without a browser the test skips, saying why.
Screenshots of every step land in the test's tmp dir (pytest --basetemp to keep them).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from decimal import Decimal
from pathlib import Path

import pytest

from ledger_pipeline.partitions import monthly_partitions
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.warehouse.analyst import open_latest
from ledger_pipeline_tests import dev_server
from ledger_pipeline_tests.dev_server import graphql
from ledger_pipeline_tests.helpers import connect, materialize_gl

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("LEDGER_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TENANTS = 4
BACKFILLS = """
query { partitionBackfillsOrError(limit: 10) { ... on PartitionBackfills { results {
  id status title partitionNames numPartitions runs(limit: 10) { runId status tags { key value } } } } } }"""
CHECKS = """
query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } } } } }"""


def browser_or_skip():  # noqa: ANN201
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: `make test` installs Debian's chromium as root (apt-get); "
                    "set LEDGER_TEST_CHROMIUM to another Chromium binary")
    return sync_playwright


def money(value: Decimal) -> str:
    return f"{value:,.2f}"


@pytest.fixture
def dagster_dev(settings, sandbox, tmp_path):  # noqa: ANN001, ANN201
    """Seeded R2a (12 months ending last month, the partitions' range), connected tenants, GL accounts, then
    `dagster dev` on a free loopback port with the committed dagster.yaml."""
    seeding.seed(make_engine(settings.r2a_database_url), TENANTS, 12, seeding.default_start(12), seed=5)
    connect([f"t{i:05d}" for i in range(1, TENANTS + 1)])
    materialize_gl()
    with dev_server.dagster_dev(tmp_path, startup=90) as url:
        yield url


class Shots:
    def __init__(self, page, folder: Path) -> None:  # noqa: ANN001
        self.page, self.folder, self.n = page, folder, 0

    def __call__(self, name: str) -> None:
        self.n += 1
        self.page.screenshot(path=str(self.folder / f"{self.n:02d}_{name}.png"), full_page=True)


def test_what_an_operator_sees_is_what_the_books_hold(settings, dagster_dev, tmp_path) -> None:  # noqa: ANN001
    sync_playwright = browser_or_skip()
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        except Exception as exc:  # noqa: BLE001 - a browser that cannot start here is a reason to skip
            pytest.skip(f"chromium at {CHROMIUM} does not start: {str(exc)[:300]}")
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        shot = Shots(page, tmp_path)
        try:
            run_ui_checks(page, shot, dagster_dev, settings)
        finally:
            shot("last")
            browser.close()


def run_ui_checks(page, shot, url: str, settings) -> None:  # noqa: ANN001
    keys = monthly_partitions.get_partition_keys()
    first, last = keys[-2], keys[-1]
    # 1. An operator launches a two-month close from the job page, by clicking
    page.goto(f"{url}/jobs", wait_until="networkidle")
    assert "Join the community" not in page.content(), "the first-visit modal is off (dagster.yaml nux)"
    page.get_by_role("link", name="monthly_close_job").first.click()
    page.wait_for_load_state("networkidle")
    shot("job")
    page.get_by_role("button", name=re.compile("Materialize all")).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Partition selection").wait_for()
    box = dialog.locator("input[type=text], textarea").first
    box.fill(f"[{first}...{last}]")
    box.press("Enter")
    dialog.get_by_text("2 partitions").first.wait_for(timeout=10_000)
    shot("backfill_dialog")
    dialog.get_by_role("button", name="Launch backfill").click()
    backfill = wait_for_backfill(url, shot)
    assert sorted(backfill["partitionNames"]) == [first, last], backfill
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    assert backfill["runs"] and all(r["status"] == "SUCCESS" for r in backfill["runs"]), backfill
    print(f"backfill launched by clicking: {len(backfill['runs'])} run(s)", [
        {t["key"]: t["value"] for t in r["tags"] if t["key"] in ("dagster/job_name", "dagster/backfill")}
        for r in backfill["runs"]])

    # 2. journal_entries' latest materialization preview shows DuckDB's amounts exactly
    con = open_latest(settings.warehouse_path)
    try:
        rows = con.execute("SELECT tenant_id, period, total_debit, net_income FROM ledger.journal_entries "
                           "WHERE period >= ? ORDER BY tenant_id, period", [first]).fetchall()
    finally:
        con.close()
    assert len(rows) == TENANTS * 2
    # each month's partition carries its own numbers (a range run): the event shown is one month's, all of it
    page.goto(f"{url}/assets/journal_entries?view=events", wait_until="networkidle")
    page.get_by_text("[Show Markdown]").first.wait_for(timeout=30_000)
    shot("asset_events")
    page.get_by_text("[Show Markdown]").first.click()  # the first markdown entry is `preview`
    preview = page.get_by_role("dialog")
    preview.get_by_text("total_debit").wait_for()
    shot("preview")
    shown = preview.inner_text()
    month = next((p for p in sorted({r[1] for r in rows}) if f"{p:%Y-%m}-01" in shown), None)
    assert month is not None, f"no month of the backfill in the preview: {shown}"
    for _tenant, _period, total_debit, net_income in (r for r in rows if r[1] == month):
        assert money(total_debit) in shown, f"{money(total_debit)} (DuckDB) not shown: {shown}"
        assert money(net_income) in shown, f"{money(net_income)} (DuckDB) not shown: {shown}"
    assert not re.search(r"\d\.\d+e[+-]?\d", shown), f"an amount shown as a float: {shown}"
    assert "00:00:00" not in shown, "dates as dates"
    held = {money(v) for r in rows for v in (r[2], r[3])}  # every amount shown is one DuckDB holds
    amounts = set(re.findall(r"-?\d{1,3}(?:,\d{3})*\.\d{2}", shown))
    assert amounts <= held, amounts - held
    preview.get_by_role("button", name="Close").click()

    # 3. the checks are green
    for asset in ("journal_lines", "journal_entries"):
        page.goto(f"{url}/assets/{asset}?view=checks", wait_until="networkidle")
        page.get_by_text(re.compile("journal_(balances|complete)")).first.wait_for(timeout=30_000)
        shot(f"checks_{asset}")
        node = graphql(url, CHECKS, {"key": {"path": [asset]}})["assetNodeOrError"]
        checks = node["assetChecksOrError"]["checks"]
        assert checks and all(c["executionForLatestMaterialization"]["status"] == "SUCCEEDED" for c in checks), checks


def wait_for_backfill(url: str, shot, timeout: float = 120) -> dict:  # noqa: ANN001
    deadline = time.time() + timeout
    found: dict = {}
    while time.time() < deadline:
        results = graphql(url, BACKFILLS, {})["partitionBackfillsOrError"]["results"]
        found = results[0] if results else {}
        if found and found["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            return found
        time.sleep(1)
    shot("backfill_timeout")
    raise AssertionError(f"the backfill launched from the UI did not finish in {timeout}s: {found}")
