"""Accounting-system layer (every system alike): GL accounts in, journal entries out (exactly once), reconciliation.

The assets wire resources to the domain: charts.py fetches and diffs charts, posting.py posts a window, reconcile.py
compares; SQL reads live in warehouse/reads.py. Each tenant's system comes from its integration (state/vault.py).
"""

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from ledger_pipeline import clock
from ledger_pipeline.assets.ledger import check_window
from ledger_pipeline.assets.metadata import (
    describe_window,
    lineage,
    preview,
    table_result_metadata,
    table_spec_metadata,
)
from ledger_pipeline.charts import diff_charts, fetch_charts, stale_tenants
from ledger_pipeline.ledger.sink import CanonicalEntry, CanonicalLine, SinkError
from ledger_pipeline.partitions import closed_window, monthly_partitions
from ledger_pipeline.posting import DeleteGuard, Progress, WindowJob, WindowResult
from ledger_pipeline.progress import report_progress
from ledger_pipeline.reconcile import ReconRow, reconcile_from_state, reconcile_tenant
from ledger_pipeline.resources import AccountingResource, R2aDatabase, WarehouseResource
from ledger_pipeline.settings import load_settings
from ledger_pipeline.state.ledger import load_window
from ledger_pipeline.state.postings import SqlPostingStore
from ledger_pipeline.state.vault import tenant_systems
from ledger_pipeline.systems import Connections
from ledger_pipeline.warehouse import reads
from ledger_pipeline.warehouse.store import Warehouse, replace_rows, transaction, window_where

POSTINGS_LINEAGE = lineage({"custom_id": [("journal_entries", "custom_id")],
                            "tenant_id": [("journal_entries", "tenant_id")], "period": [("journal_entries", "period")],
                            "content_hash": [("journal_entries", "content_hash")]})
IN_TENANTS = "tenant_id IN (SELECT unnest(?::VARCHAR[]))"


def utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").tz_localize(None)


def connected_systems(r2a: R2aDatabase) -> dict[str, str]:
    """tenant -> system, for every tenant with an integration (connected or needing re-authorisation)."""
    return {t: system for t, (system, _, _) in tenant_systems(r2a.ops_engine).items()}


def ingest_charts(wh: Warehouse, connections: Connections, todo: list[tuple[str, str]], run_id: str,
                  log: dg.DagsterLogManager | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fetch `todo` (system, tenant) charts and store them: accounts replaced per tenant fetched OK, changes
    appended, status per tenant. Returns (accounts fetched, status)."""
    fetched = fetch_charts(todo, connections, lambda i: log and i % 500 == 0 and log.info(f"charts {i}/{len(todo)}"))
    ok = fetched.status.loc[fetched.status["status"] == "ok", "tenant_id"].tolist()
    stamp, run = utc_now(), {"run_id": run_id}
    with wh.connect() as con:
        previous = reads.chart(con, ok)
        changes = diff_charts(previous, fetched.accounts).assign(**run, detected_at=stamp)
        with transaction(con):
            replace_rows(con, "accounting.gl_accounts", fetched.accounts.assign(**run, fetched_at=stamp),
                         IN_TENANTS, [ok])
            replace_rows(con, "accounting.gl_account_changes", changes, "FALSE")  # append only
            replace_rows(con, "accounting.gl_ingest_status", fetched.status.assign(**run, checked_at=stamp),
                         IN_TENANTS, [fetched.status["tenant_id"].tolist()])
    return fetched.accounts, fetched.status


class ChartsConfig(dg.Config):
    refresh: str = "stale"  # "stale": only charts older than max_age_hours (the close); "all": every tenant (daily)
    max_age_hours: float | None = None  # default LEDGER_CHART_MAX_AGE_HOURS (36)


@dg.asset(
    group_name="accounting", kinds={"api", "duckdb"}, pool="duckdb",
    metadata=table_spec_metadata("accounting.gl_accounts"),
    description="Every connected tenant's chart of accounts from its own accounting system (inactive accounts "
                "included): accounting.gl_accounts, changes in accounting.gl_account_changes, per-tenant outcome in "
                "accounting.gl_ingest_status. The daily job refreshes all (background priority); the monthly close "
                "fetches only charts older than the max age, so a fresh month spends no request here.",
)
def jurnal_gl_accounts(context: dg.AssetExecutionContext, config: ChartsConfig, r2a: R2aDatabase,
                       accounting: AccountingResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    s = load_settings()
    systems = connected_systems(r2a)
    wh = warehouse.warehouse
    if config.refresh == "all":
        todo = sorted((system, t) for t, system in systems.items())
    else:
        max_age = dt.timedelta(hours=config.max_age_hours or s.chart_max_age_hours)
        with wh.connect() as con:
            checked = reads.chart_checks(con)
        todo = stale_tenants(systems, checked, max_age, utc_now().to_pydatetime())
    context.log.info(f"charts of accounts: {len(todo)} of {len(systems)} tenants to fetch ({config.refresh})")
    with accounting.connections(r2a.ops_database_url, "background" if config.refresh == "all" else "posting") as c:
        accounts, status = ingest_charts(wh, c, todo, context.run_id, context.log)
        requests = c.requests_by_system()
    with wh.connect() as con:
        total = con.execute("SELECT COUNT(*) FROM accounting.gl_accounts").fetchone()[0]
    wh.publish(run_id=context.run_id)
    failed = status[status["status"] != "ok"]
    for r in failed.head(20).itertuples(index=False):
        context.log.warning(f"tenant {r.tenant_id} ({r.system}): {r.status}: {r.error}")
    return dg.MaterializeResult(metadata=table_result_metadata("accounting.gl_accounts", accounts, {
        "tenants_fetched": int((status["status"] == "ok").sum()), "tenants_failed": len(failed),
        "tenants_fresh_skipped": len(systems) - len(todo), "accounts_total": int(total),
        "api_requests": sum(requests.values()), "api_requests_by_system": dg.MetadataValue.json(requests),
        "failures": preview(failed[["system", "tenant_id", "status", "error"]]),
    }))


class PostingConfig(dg.Config):
    dry_run: bool = False  # write the plan (create/update/delete/skip per entry) to accounting.posting_plan only
    allow_mass_delete: bool = False  # let a run delete more posted entries than the guard allows
    max_deletes: int = 20
    max_delete_fraction: float = 0.05
    progress_every: int = 0  # log progress every N tenants (0: about every 5% of the window's tenants)


def _rechart(wh: Warehouse, connections: Connections, run_id: str):  # noqa: ANN202
    """A tenant whose entry failed on a missing/archived account: refresh its chart alone, re-resolve the accounts
    by number; retry only if every account now resolves to an active one."""
    def rechart(system: str, tenant: str, entries: list[CanonicalEntry]):  # noqa: ANN202
        accounts, status = ingest_charts(wh, connections, [(system, tenant)], run_id)
        if status["status"].iloc[0] != "ok":
            return None, f"could not refresh the chart: {status['error'].iloc[0]}"
        active = {r.number: r.account_id for r in accounts.itertuples(index=False) if not r.archived}
        missing = sorted({ln.account_number for e in entries for ln in e.lines if ln.account_number not in active})
        if missing:
            return None, (f"account(s) {', '.join(missing)} missing or archived in the tenant's {system} chart (just "
                          "refreshed): restore them there or change the account mapping, then re-run the month")
        retry = [CanonicalEntry(e.tenant_id, e.period, e.custom_id, e.transaction_date, e.memo, e.currency,
                                e.content_hash, tuple(CanonicalLine(ln.line_no, active[ln.account_number],
                                                                    ln.account_number, ln.debit_minor,
                                                                    ln.credit_minor, ln.description)
                                                      for ln in e.lines)) for e in entries]
        with wh.connect() as con, transaction(con):  # the ledger lines follow the chart's current ids
            for e in retry:
                for ln in e.lines:
                    con.execute("UPDATE ledger.journal_lines SET account_id = ? WHERE custom_id = ? AND line_no = ?",
                                [ln.account_id, e.custom_id, ln.line_no])
        return retry, "chart refreshed"
    return rechart


@dg.asset(
    deps=["journal_entries", "journal_lines"],
    partitions_def=monthly_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="accounting", kinds={"api", "duckdb"}, pool="duckdb",
    metadata={**table_spec_metadata("accounting.postings"), "dagster/column_lineage": POSTINGS_LINEAGE},
    description="Posts each tenant-month's entry to the tenant's accounting system exactly once: unchanged -> no "
                "request; new -> create (one batch per tenant where the system has one); changed -> update; gone -> "
                "delete (a mass delete is refused unless allowed). State and intent in the operational database "
                "(`postings`), published to accounting.postings. Records every tenant, then fails naming the ones "
                "that failed.",
)
def jurnal_postings(context: dg.AssetExecutionContext, config: PostingConfig, r2a: R2aDatabase,
                    accounting: AccountingResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    start, end = closed_window(context)
    wh = warehouse.warehouse
    posted = post_window(context, config, r2a, accounting, start, end,
                         rechart=lambda connections: _rechart(wh, connections, context.run_id))
    postings = SqlPostingStore(r2a.ops_engine).frame(start, end)
    with wh.connect() as con, transaction(con):
        replace_rows(con, "accounting.posting_plan", posted.plan().assign(run_id=context.run_id, planned_at=utc_now()),
                     window_where(), [start, end])
        replace_rows(con, "accounting.postings", postings, window_where(), [start, end])
    wh.publish(run_id=context.run_id)
    return posting_result(context, posted, postings, config.dry_run)


@dataclass
class PostedWindow:
    """What `post_window` did: the asset turns it into tables, metadata and, on failures, a dg.Failure."""

    start: dt.date
    end: dt.date
    result: WindowResult
    requests: dict[str, int]
    systems: dict[str, str]  # tenant -> system, for the tenants this run covered
    seconds: float

    def plan(self) -> pd.DataFrame:
        return pd.DataFrame([{"system": s, **vars(p)} for s, p in self.result.plan],
                            columns=["system", "tenant_id", "period", "custom_id", "action", "reason"])


def post_window(context: dg.AssetExecutionContext, config: PostingConfig, r2a: R2aDatabase,
                accounting: AccountingResource, start: dt.date, end: dt.date, *, tenants: list[str] | None = None,
                rechart: Callable[[Connections], Callable] | None = None) -> PostedWindow:
    """Post [start, end) exactly once from the operational database (entries, state, tokens): every tenant, or only
    `tenants` (one shard, production profile). Touches no DuckDB, so any host with the database can run it;
    `rechart` (the embedded asset's chart refresh) is the one optional DuckDB writer."""
    store = SqlPostingStore(r2a.ops_engine, context.run_id)
    entries, held = load_window(r2a.ops_engine, start, end, tenants)
    systems = connected_systems(r2a)
    if tenants is not None:
        systems = {t: systems[t] for t in tenants if t in systems}
    t0 = time.monotonic()
    every = config.progress_every or max(1, len(entries) // 20)

    with accounting.connections(r2a.ops_database_url) as connections:
        def progress(done: int, total: int) -> None:
            p = Progress(done, total, connections.requests, time.monotonic() - t0,
                         allowed_per_minute=_allowed_per_minute(accounting))
            report_progress("posting", p)
            if done % every == 0 or done == total:
                context.log.info(f"posting {describe_window(start, end)}: {p.describe()}")

        job = WindowJob(
            (start, end), systems, entries, store.load(start, end, tenants), held, lambda s: connections(s).sink,
            store, dry_run=config.dry_run, backoff=accounting.backoff_initial, progress=progress,
            guard=DeleteGuard(config.allow_mass_delete, config.max_deletes, config.max_delete_fraction),
            rechart=rechart(connections) if rechart else None,
            reload=lambda system, tenant: store.load(start, end, [tenant]).get(system, {}).get(tenant, {}))
        result = job.run()
        requests = connections.requests_by_system()
    return PostedWindow(start, end, result, requests, systems, time.monotonic() - t0)


def posting_result(context: dg.AssetExecutionContext, posted: PostedWindow, postings: pd.DataFrame, dry_run: bool,
                   extra: dict | None = None) -> dg.MaterializeResult:
    """The posting asset's metadata; raises dg.Failure naming the failed tenants (everything else is recorded)."""
    result, requests, systems = posted.result, posted.requests, posted.systems
    plan = posted.plan()
    failures = pd.DataFrame(result.failures(), columns=["system", "tenant_id", "custom_id", "error", "kind"])
    failed_tenants = sorted(set(failures["tenant_id"]))
    metadata = {
        **table_spec_metadata("accounting.postings"),
        "window": describe_window(posted.start, posted.end), "dry_run": dry_run,
        "planned": dg.MetadataValue.json(plan["action"].value_counts().to_dict()),
        "done": dg.MetadataValue.json(result.counts()),
        "api_requests": sum(requests.values()), "api_requests_by_system": dg.MetadataValue.json(requests),
        "seconds": round(posted.seconds, 1),
        "tenants_by_system": dg.MetadataValue.json(pd.Series(list(systems.values())).value_counts().to_dict()
                                                   if systems else {}),
        "failed_tenants": len(failed_tenants),
        "failures": preview(failures[["system", "tenant_id", "custom_id", "kind", "error"]]),
        "dagster/row_count": len(postings),
        "status_counts": dg.MetadataValue.json(postings["status"].value_counts().to_dict()),
        "dagster/column_lineage": POSTINGS_LINEAGE,
        **(extra or {}),
    }
    for r in failures.head(50).itertuples(index=False):
        context.log.error(f"tenant {r.tenant_id} ({r.system}) {r.custom_id}: {r.error}")
    problems = []
    if result.refused_deletes:
        context.log.error(result.refused_deletes)
        problems.append(result.refused_deletes)
    if failed_tenants:
        problems.append(
            f"{len(failed_tenants)} tenant(s) failed to post ({', '.join(failed_tenants[:20])}"
            f"{' ...' if len(failed_tenants) > 20 else ''}); everything else is posted and recorded in "
            "accounting.postings. Fix the cause named per tenant, then re-run: only what is not done is retried.")
    if problems:
        raise dg.Failure(description=" ".join(problems), metadata=metadata)
    return dg.MaterializeResult(metadata=metadata)


def _allowed_per_minute(accounting: AccountingResource) -> float:
    """The binding limit at month-end: Jurnal's 40 requests/min per source address, time-scaled."""
    return 40 * accounting.rate_limit_scale


@dg.asset(
    deps=["jurnal_postings"],
    partitions_def=monthly_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="accounting", kinds={"duckdb"}, pool="duckdb",
    metadata=table_spec_metadata("accounting.reconciliation"),
    description="Reconciles the window from the posting state, without a request: an entry whose create/update "
                "answer was verified line by line is a match; anything not posted is missing_remote with its reason. "
                "Drift made by people in the systems is found by reconciliation_drift (its own hourly job).",
)
def jurnal_reconciliation(context: dg.AssetExecutionContext, r2a: R2aDatabase,
                          warehouse: WarehouseResource) -> dg.MaterializeResult:
    start, end = closed_window(context)
    wh = warehouse.warehouse
    frame = reconciliation_from_state(r2a, start, end, context.run_id)
    with wh.connect() as con, transaction(con):
        replace_rows(con, "accounting.reconciliation", frame, window_where(), [start, end])
    wh.publish(run_id=context.run_id)
    return dg.MaterializeResult(metadata=table_result_metadata("accounting.reconciliation", frame, {
        "window": describe_window(start, end), "api_requests": 0,
        "status_counts": dg.MetadataValue.json(frame["status"].value_counts().to_dict() if len(frame) else {}),
        "not_matching": preview(frame[frame["status"] != "match"][["system", "tenant_id", "period", "status",
                                                                    "detail"]]),
    }))


def reconciliation_from_state(r2a: R2aDatabase, start: dt.date, end: dt.date, run_id: str) -> pd.DataFrame:
    """The window's accounting.reconciliation rows from the operational posting state (no request)."""
    entries, _ = load_window(r2a.ops_engine, start, end)
    rows = reconcile_from_state(entries, SqlPostingStore(r2a.ops_engine).load(start, end), connected_systems(r2a))
    return recon_frame(rows, run_id, "posting_response")


def recon_frame(rows: list[tuple[str, ReconRow]], run_id: str, checked_by: str) -> pd.DataFrame:
    frame = pd.DataFrame([{"system": s, **vars(r)} for s, r in rows],
                         columns=["system", *ReconRow.__dataclass_fields__])
    return frame.assign(checked_by=checked_by, run_id=run_id, checked_at=utc_now())


class DriftConfig(dg.Config):
    months: int = 3  # the rolling window: this month and the previous months-1
    max_requests: int | None = None  # this run's request budget (default LEDGER_DRIFT_REQUESTS_PER_HOUR)


@dg.asset(
    deps=["jurnal_postings"], group_name="accounting", kinds={"api", "duckdb"}, pool="duckdb",
    metadata=table_spec_metadata("accounting.reconciliation"),
    description="Finds drift made by people in the accounting systems (entries edited, deleted or added by hand): "
                "reads each tenant's remote entries over a rolling window, least recently checked tenants first, "
                "within a request budget per run (background priority: posting goes first), and records match, "
                "missing_remote, duplicate_remote, amount_mismatch, unexpected_remote or not_checked.",
)
def reconciliation_drift(context: dg.AssetExecutionContext, config: DriftConfig, r2a: R2aDatabase,
                         accounting: AccountingResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    s = load_settings()
    budget = config.max_requests if config.max_requests is not None else s.drift_requests_per_hour
    current = clock.current_month(s.timezone)  # the window: this month (business timezone) and months-1 before it
    start, end = clock.add_months(current, 1 - config.months), clock.add_months(current, 1)
    wh = warehouse.warehouse
    entries, _ = load_window(r2a.ops_engine, start, end)
    with wh.connect() as con:
        last = dict(con.execute(
            f"SELECT tenant_id, MAX(checked_at) FROM accounting.reconciliation WHERE {window_where()} "
            "AND checked_by = 'remote_read' GROUP BY 1", [start, end]).fetchall())
    state = SqlPostingStore(r2a.ops_engine).load(start, end)
    systems = connected_systems(r2a)
    posted = {t for by_t in state.values() for t in by_t}
    tenants = sorted(set(entries) | posted, key=lambda t: (last.get(t) or pd.Timestamp.min, t))
    rows: list[tuple[str, ReconRow]] = []
    checked: list[str] = []
    with accounting.connections(r2a.ops_database_url, "background") as connections:
        for tenant in tenants:
            system = systems.get(tenant)
            if system is None or connections.requests >= budget:
                continue
            mine = entries.get(tenant, [])
            try:
                remotes = connections(system).sink.list_period(tenant, start, end)
            except SinkError as exc:
                rows += [(system, ReconRow(tenant, e.period, e.custom_id, "not_checked", "", e.total_debit_minor, 0,
                                           f"could not list {system} entries: {exc}")) for e in mine]
            else:
                rows += [(system, r) for r in reconcile_tenant(tenant, mine, remotes)]
            checked.append(tenant)
        requests = connections.requests
    frame = recon_frame(rows, context.run_id, "remote_read")
    with wh.connect() as con, transaction(con):
        replace_rows(con, "accounting.reconciliation", frame, f"{window_where()} AND {IN_TENANTS}",
                     [start, end, checked])
    wh.publish(run_id=context.run_id)
    drift = frame[frame["status"] != "match"]
    for r in drift.head(20).itertuples(index=False):
        context.log.warning(f"drift: tenant {r.tenant_id} ({r.system}) {r.custom_id}: {r.status}: {r.detail}")
    return dg.MaterializeResult(metadata=table_result_metadata("accounting.reconciliation", frame, {
        "window": describe_window(start, end), "api_requests": requests, "request_budget": budget,
        "tenants_checked": len(checked), "tenants_left_for_next_run": len(tenants) - len(checked),
        "status_counts": dg.MetadataValue.json(frame["status"].value_counts().to_dict() if len(frame) else {}),
        "drift": preview(drift[["system", "tenant_id", "period", "status", "detail"]]),
    }))


@dg.asset_check(asset="jurnal_reconciliation", pool="duckdb",
                description="Every entry in the window is in its accounting system exactly once with our amounts "
                            "(status match).")
def reconciliation_all_match(context: dg.AssetCheckExecutionContext,
                             warehouse: WarehouseResource) -> dg.AssetCheckResult:
    return all_match(context, warehouse)


def all_match(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """The check's window in accounting.reconciliation: passes when every entry is a match."""
    where, params = check_window(context)
    with warehouse.warehouse.connect() as con:
        bad = con.execute(f"SELECT system, tenant_id, period, custom_id, status, detail FROM accounting.reconciliation "
                          f"WHERE {where} AND status <> 'match' ORDER BY 2, 3", params).fetchdf()
    return dg.AssetCheckResult(passed=bad.empty, metadata={"not_matching": len(bad), "preview": preview(bad)},
                               description=None if bad.empty else f"{len(bad)} entries do not match their system")

