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
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from ledger_pipeline.jobs import CLOSE_ASSETS
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.runs import ui_tags
from ledger_pipeline.warehouse.analyst import open_latest
from ledger_pipeline_tests import dev_server
from ledger_pipeline_tests.dev_server import graphql, partition_keys
from ledger_pipeline_tests.helpers import connect, materialize_gl, query

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("LEDGER_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TENANTS = 4
REVOKED = "t00003"
BACKFILLS = """
query { partitionBackfillsOrError(limit: 10) { ... on PartitionBackfills { results {
  id status title partitionNames numPartitions runs(limit: 10) { runId status tags { key value } } } } } }"""
JOB_RUNS = """query JobRuns($filter: RunsFilter) { runsOrError(filter: $filter) { __typename
  ... on Runs { results { runId jobName status tags { key value } } } } }"""
PARTITION_STATUS = """
query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetPartitionStatuses { ... on TimePartitionStatuses { ranges { status startKey endKey } } } } } }"""
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


@dataclass(frozen=True)
class Ready:
    url: str  # the running `dagster dev`
    cli_run_id: str  # the run `ledger-pipeline run --month <last month>` made before the UI started
    cli_month: str  # its partition key
    revoked: str  # a tenant whose grant was revoked after that run (every later close fails it, permanently)


@pytest.fixture
def dagster_dev(settings, sandbox, tmp_path) -> Iterator[Ready]:  # noqa: ANN001
    """Seeded R2a (12 months ending last month, the partitions' range), connected tenants, GL accounts; last month
    closed by `ledger-pipeline run` (a CLI run); then one tenant's grant revoked and `dagster dev` started on a
    free loopback port with the committed dagster.yaml."""
    seeding.seed(make_engine(settings.r2a_database_url), TENANTS, 12, seeding.default_start(12), seed=5)
    connect([f"t{i:05d}" for i in range(1, TENANTS + 1)])
    materialize_gl()
    month = partition_keys()[-1]
    out = subprocess.run([sys.executable, "-m", "ledger_pipeline.cli", "run", "--month", month[:7]],
                         env={**os.environ}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_id = re.search(r"^run ([0-9a-f-]{36}) succeeded", out.stdout, re.M)
    assert run_id, out.stdout
    httpx.post(f"{sandbox.url}/_sandbox/companies/{REVOKED}/revoke").raise_for_status()
    with dev_server.dagster_dev(tmp_path, startup=90) as url:
        yield Ready(url, run_id.group(1), month, REVOKED)


class Shots:
    def __init__(self, page, folder: Path) -> None:  # noqa: ANN001
        self.page, self.folder, self.n = page, folder, 0

    def __call__(self, name: str) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}_{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


# One `dagster dev` for every UI check (a CLI run, a backfill, five pages): about 3 minutes alone, more on a busy
# machine, so above the suite's 300 s default.
@pytest.mark.timeout(600)
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


def run_ui_checks(page, shot, ready: Ready, settings) -> None:  # noqa: ANN001
    url = ready.url
    keys = partition_keys()
    # two months older than the dialog's default window (the last 90 days): "Show all partitions" is needed
    first, last = keys[-6], keys[-5]
    open_job(page, url)
    shot("job")

    # 1. A CLI run is a job run: on the job's Runs tab and in its partition status, like a UI run
    job_tab(page, "Runs")
    page.get_by_text(ready.cli_run_id[:8]).first.wait_for(timeout=30_000)
    shot("job_runs_cli_run")
    runs = job_runs(url)
    assert [r["runId"] for r in runs] == [ready.cli_run_id], runs
    assert {t["key"]: t["value"] for t in runs[0]["tags"]}["dagster/partition"] == ready.cli_month
    job_tab(page, "Partitions")
    total, missing = partition_counts(page)
    shot("job_partitions_cli_run")
    assert missing == total - 1, (total, missing, "the CLI run's month shows materialized")

    # 2. The README's backfill, click by click (README "Backfilling a range of months")
    job_tab(page, "Overview")
    page.get_by_role("button", name=re.compile("Materialize all")).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Showing the last 90 days").wait_for(timeout=30_000)
    shot("backfill_dialog_default_window")
    dialog.get_by_text("Show all partitions").click()
    dialog.get_by_text("Showing the last 90 days").wait_for(state="detached")
    box = dialog.get_by_placeholder(re.compile(r"^ex: "))  # the partition box (its example: keys and a range)
    box.fill(f"[{first}...{last}]")
    box.press("Enter")
    dialog.get_by_text("2 partitions").first.wait_for(timeout=10_000)
    # The notice's "varying backfill policies" is Dagster 1.13's reference comparison of the assets' policy objects
    # (LaunchAssetChoosePartitionsDialog: `a.backfillPolicy !== assets[0].backfillPolicy`); the preview lists each
    # asset's own policy and months.
    dialog.get_by_role("button", name="Preview").click()
    preview = page.get_by_role("dialog").filter(has_text="Partitions to launch")
    ranges = preview.get_by_text(f"{first}...{last}", exact=True)
    ranges.first.wait_for(timeout=30_000)
    shot("backfill_preview")
    links = preview.locator("a[href*='/assets/']")
    shown_assets = {links.nth(i).get_attribute("href").rstrip("/").split("/assets/")[1].split("?")[0]
                    for i in range(links.count())}
    assert shown_assets == set(CLOSE_ASSETS), shown_assets
    assert ranges.count() == len(CLOSE_ASSETS), "every asset of the job backfills the chosen months"
    shown = preview.inner_text()
    assert "No partitions available to materialize" not in shown, shown
    assert shown.count("Backfills all partitions in a single run") == len(CLOSE_ASSETS), shown
    preview.get_by_role("button", name="OK").click()
    shot("backfill_dialog")
    dialog.get_by_role("button", name="Launch backfill").click()
    backfill = wait_for_backfill(url, shot)
    assert sorted(backfill["partitionNames"]) == [first, last], backfill
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    assert len(backfill["runs"]) == 1, ("one run for the range (single-run policy)", backfill)
    [run] = backfill["runs"]
    assert run["status"] == "SUCCESS", ("a revoked grant is permanent: reported, the run goes on", backfill)
    open_job(page, url)
    job_tab(page, "Partitions")
    total_after, missing_after = partition_counts(page)
    page.get_by_role("button", name="Show per-asset status").click()
    shot("job_partitions_after_backfill")
    assert (total_after, missing_after) == (total, total - 3), (total_after, missing_after)
    for asset in CLOSE_ASSETS:
        done = materialized(url, asset)
        assert {first, last, ready.cli_month} <= done, (asset, sorted(done))
    job_tab(page, "Runs")
    page.get_by_text(run["runId"][:8]).first.wait_for(timeout=30_000)
    ids = [r["runId"] for r in job_runs(url)]
    assert sorted(ids) == sorted([ready.cli_run_id, run["runId"]]), ("no retry of a permanent failure", ids)

    # 3. journal_entries' latest materialization preview shows DuckDB's amounts exactly
    con = open_latest(settings.warehouse_path)
    try:
        rows = con.execute("SELECT tenant_id, period, total_debit, net_income FROM ledger.journal_entries "
                           "WHERE period BETWEEN ? AND ? ORDER BY tenant_id, period", [first, last]).fetchall()
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

    # 4. the checks are green
    for asset in ("journal_lines", "journal_entries"):
        page.goto(f"{url}/assets/{asset}?view=checks", wait_until="networkidle")
        page.get_by_text(re.compile("journal_(balances|complete)")).first.wait_for(timeout=30_000)
        shot(f"checks_{asset}")
        node = graphql(url, CHECKS, {"key": {"path": [asset]}})["assetNodeOrError"]
        checks = node["assetChecksOrError"]["checks"]
        assert checks and all(c["executionForLatestMaterialization"]["status"] == "SUCCEEDED" for c in checks), checks

    # 5. every tenant findable: the revoked tenant's row (state, reason, fix) and a posted one's (remote id) on the
    # posting asset's page, in the full tenant_months table of the month's materialization
    page.goto(f"{url}/assets/postings?view=events", wait_until="networkidle")
    revoked_row = tenant_row(page, "tenant_months", ready.revoked)
    revoked_row.wait_for(timeout=30_000)
    revoked_row.scroll_into_view_if_needed()
    shot("tenant_row")
    cells = revoked_row.inner_text()
    # its state (pending: nothing reached the system), the reason in its own words and the fix
    assert re.search(r"\t(pending|failed)\t", cells) and "needs re-authorisation" in cells, cells
    assert f"ledger-pipeline connect --tenant {ready.revoked} --system jurnal" in cells, cells
    assert f"tenant {ready.revoked}:" not in cells, ("never nested", cells)
    failure = tenant_row(page, "failures", ready.revoked).inner_text()
    assert "needs_reauth" in failure and f"connect --tenant {ready.revoked}" in failure, failure
    posted = tenant_row(page, "tenant_months", "t00001").inner_text()
    remote = {str(r[0]) for r in query(settings, "SELECT remote_id FROM accounting.postings WHERE tenant_id = "
                                                 "'t00001' AND period IN (?, ?)", [first, last])}
    assert "\tposted\t" in posted and any(f"\t{r}\t" in posted for r in remote), (posted, remote)

    # 6. the revoked grant's run page: one clear message naming the tenant, its entries, the cause and the fix
    # (Runs > the run; Levels: error only; Filter… the tenant's id)
    page.goto(f"{url}/runs/{run['runId']}", wait_until="networkidle")
    logs = page.get_by_placeholder("Filter…")
    logs.wait_for(timeout=30_000)
    page.get_by_text(re.compile(r"^Levels \(\d")).click()
    page.locator("#menu-check-ERROR").wait_for(state="attached")
    for level in ("INFO", "WARNING", "CRITICAL", "EVENT", "DEBUG"):
        box = page.locator(f"#menu-check-{level}")
        if box.is_checked():
            page.locator("label", has=box).click()
    page.get_by_text("Levels (1/6)").wait_for()
    page.keyboard.press("Escape")
    logs.fill(ready.revoked)
    page.get_by_text("needs re-authorisation").first.wait_for(timeout=30_000)
    shot("revoked_run_page")
    messages = page.get_by_text(re.compile("needs re-authorisation"))
    assert messages.count() == 1, [messages.nth(i).inner_text() for i in range(messages.count())]
    message = messages.first.inner_text()
    assert f"tenant {ready.revoked} (" in message and f"tenant {ready.revoked}: " not in message, message
    assert f"2 entries (r2a-pl-{ready.revoked}-{first[:4]}{first[5:7]}" in message, message
    assert f"ledger-pipeline connect --tenant {ready.revoked} --system jurnal" in message, message


def open_job(page, url: str) -> None:  # noqa: ANN001
    page.goto(f"{url}/jobs", wait_until="networkidle")
    assert "Join the community" not in page.content(), "the first-visit modal is off (dagster.yaml nux)"
    page.get_by_role("link", name="monthly_close_job").first.click()
    page.wait_for_load_state("networkidle")


def job_tab(page, name: str) -> None:  # noqa: ANN001
    page.get_by_role("tab", name=name).click()
    page.wait_for_load_state("networkidle")


def partition_counts(page) -> tuple[int, int]:  # noqa: ANN001
    """(total, missing) as the job's Partitions tab shows them (once loaded: the total is never 0 here)."""
    from playwright.sync_api import expect

    def count(label: str):  # noqa: ANN202
        return page.locator(f"div:has(> div:text-is('{label}')) strong").first

    expect(count("Total partitions")).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=30_000)
    return int(count("Total partitions").inner_text()), int(count("Missing partitions").inner_text())


def tenant_row(page, entry: str, tenant: str):  # noqa: ANN001, ANN201
    """The row of `tenant` in the table metadata entry `entry` of the materialization shown (the table's own row,
    inside the metadata table's row for `entry`)."""
    label = page.locator("td", has_text=re.compile(rf"^{entry}$"))
    table = page.locator("tr", has=label).last.locator("table")
    return table.locator("tr", has=page.locator("td", has_text=re.compile(rf"^{tenant}$"))).first


def job_runs(url: str) -> list[dict]:
    """monthly_close_job's runs as its Runs tab asks for them (dagster-webserver 1.13: runsFilter {pipelineName,
    tags: [{key: RepositoryLabelTag, value: repoAddress}]})."""
    runs = graphql(url, JOB_RUNS, {"filter": {"pipelineName": "monthly_close_job", "tags": [ui_tag()]}})["runsOrError"]
    assert runs["__typename"] == "Runs", runs
    return runs["results"]


def ui_tag() -> dict:
    [(key, value)] = ui_tags().items()
    return {"key": key, "value": value}


def materialized(url: str, asset: str) -> set[str]:
    """The asset's months the UI shows materialized (its partition status)."""
    node = graphql(url, PARTITION_STATUS, {"key": {"path": [asset]}})["assetNodeOrError"]
    keys = partition_keys()
    done: set[str] = set()
    for r in node["assetPartitionStatuses"]["ranges"]:
        if r["status"] == "MATERIALIZED":
            done |= set(keys[keys.index(r["startKey"]):keys.index(r["endKey"]) + 1])
    return done


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
