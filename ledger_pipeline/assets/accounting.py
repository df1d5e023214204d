"""Accounting-system layer (every system alike): GL accounts in, journal entries out (exactly once), reconciliation.

The assets wire resources to the domain: charts.py fetches, stores (operational database) and diffs charts and
retries a posting on a refreshed chart, posting/ posts a window, reconcile.py compares; SQL reads live in
warehouse/sql.py. Each tenant's system comes from its integration (state/vault.py).
"""

import datetime as dt
import re
from dataclasses import dataclass, replace

import dagster as dg
import pandas as pd
from sqlalchemy import Engine

from ledger_pipeline import clock
from ledger_pipeline.assets.ledger import check_window
from ledger_pipeline.assets.metadata import (
    add_month_metadata,
    counts_by_system,
    describe_window,
    full_table,
    lineage,
    month_keys,
    month_slice,
    preview,
    table_result_metadata,
    table_spec_metadata,
)
from ledger_pipeline.assets.publishing import publish_after_failure, publish_if_last
from ledger_pipeline.charts import (
    account_count,
    chart_checks,
    ingest_charts,
    publish_charts,
    rechart_for,
    stale_tenants,
)
from ledger_pipeline.connections import (
    connections_frame,
    currency_due,
    entries_as_posted,
    plan_stored,
    refresh_company_currencies,
)
from ledger_pipeline.dispatch import PostedWindow, PostingOptions
from ledger_pipeline.ledger.sink import SinkError, custom_id_for
from ledger_pipeline.partitions import closed_window, monthly_partitions
from ledger_pipeline.posting import (
    PostingEngine,
    PostingRow,
)
from ledger_pipeline.reconcile import (
    FINGERPRINT_KEY,
    ReconRow,
    RemoteChange,
    change_detail,
    diff_entry,
    month_of,
    read_tenant,
    reconcile_from_state,
    remote_fingerprint,
    sink_hint,
)
from ledger_pipeline.remote_changes import RemoteChangeStore
from ledger_pipeline.resources import AccountingResource, PostingWorkers, R2aDatabase, WarehouseResource
from ledger_pipeline.settings import load_settings
from ledger_pipeline.state.ledger import load_window
from ledger_pipeline.state.postings import SqlPostingStore
from ledger_pipeline.state.vault import connected_systems
from ledger_pipeline.systems import SYSTEMS
from ledger_pipeline.systems import title as system_title
from ledger_pipeline.systems import titles as system_titles
from ledger_pipeline.warehouse.store import Warehouse, replace_rows, transaction, window_where

POSTINGS_LINEAGE = lineage({"custom_id": [("journal_entries", "custom_id")],
                            "tenant_id": [("journal_entries", "tenant_id")], "period": [("journal_entries", "period")],
                            "content_hash": [("journal_entries", "content_hash")]})
IN_TENANTS = "tenant_id IN (SELECT unnest(?::VARCHAR[]))"
# In a dg.Failure's metadata: the run completed, and what it could not do is recorded per tenant-month (rejections,
# failed postings, a refused mass delete). `ledger-pipeline run` exits 3 for it, 1 for anything else.
OUTCOME_KEY = "ledger/outcome"
COMPLETED_WITH_PROBLEMS = "completed_with_problems"
POSTINGS_CHECK = "postings_complete"

# -- the retry policy: which posting failures a later attempt can put right by itself -----------------------------
# Run retries (dagster_home/dagster.yaml run_retries) re-execute a failed run. Only two failure kinds (ErrorKind in
# ledger/sink.py) can heal on their own: `retryable` (nothing reached the system) and `uncertain` (a write may have
# been applied: the retry looks the entry up first). Everything else needs a person: a revoked grant (needs_reauth:
# reconnect), a closed period (locked), a refused entry or an approver's no (rejected), an account missing after the
# chart refresh (account), a spent daily quota (deferred: the next day's run), our id taken (duplicate), an entry gone
# (not_found); a refused mass delete and changes held for a decision too. Retrying those only repeats the red run.
TRANSIENT_KINDS = frozenset({"retryable", "uncertain"})
# The run tag Dagster 1.13's run-retry logic reads (dagster._core.execution.retries.auto_reexecution_should_retry_run,
# evaluated when the run-failure event is stored, from the run's tags as stored then): "false" -> a step failure is
# not retried. dg.Failure(allow_retries=False) only stops op-level RetryPolicy, not run retries (execution/plan/utils).
RETRY_ON_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"


def is_transient(kind: str) -> bool:
    """True when a posting failure of this kind may heal on a later attempt without anyone acting."""
    return kind in TRANSIENT_KINDS


def worth_retrying(kinds: list[str] | set[str] | tuple[str, ...]) -> bool:
    """True when at least one failure is transient: a run retry may post it. False for permanent causes only."""
    return any(is_transient(k) for k in kinds)


def own_words(tenant: str, text: str | None) -> str:
    """`text` without the `tenant X: ` prefixes its inner layers added: the message naming the tenant adds it once,
    so an operator never reads "tenant X: tenant X: ..."."""
    return re.sub(rf"\btenant {re.escape(tenant)}: ", "", text or "").strip()


_COMMAND = re.compile(r"`(ledger-pipeline [^`]+)`")
FIX_BY_PROBLEM = {
    "rejected upstream": "fix the source rows named in the reason (ledger.rejections), then close the month again",
    "needs_reauth": "reconnect the tenant (`ledger-pipeline connect --tenant <tenant> --system <system>`), then re-run "
                    "the month",
    "locked": "the period is closed in the tenant's system: reopen it there (or accept as is), then re-run the month",
    "rejected": "correct what the system refused (reason), then re-run the month; an approver's no: ask them or "
                "`ledger-pipeline repost`",
    "account": "restore the account in the tenant's chart or change the account mapping, then re-run the month",
    "deferred": "the system's daily quota is spent: the next run posts it",
    "retryable": "nothing reached the system: a run retry or the next run posts it",
    "uncertain": "a write may have reached the system: the next run looks it up first, then posts only if absent",
    "held": "decide with `ledger-pipeline decisions` (keep ours or accept theirs)",
    "pending": "the next run finishes it",
    "failed": "see the reason; the next run retries it",
}


def fix_for(problem: str, detail: str) -> str:
    """What to do about one tenant-month's problem: the command its message names, else the fix for its kind."""
    found = _COMMAND.findall(detail or "")
    if found:
        return "; ".join(f"`{c}`" for c in dict.fromkeys(found))
    for key, fix in FIX_BY_PROBLEM.items():
        if key in problem:
            return fix
    return FIX_BY_PROBLEM["failed"]


def utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").tz_localize(None)


class ChartsConfig(dg.Config):
    refresh: str = "stale"  # "stale": only charts older than max_age_hours; "all": every tenant (gl_accounts_job)
    max_age_hours: float | None = None  # default LEDGER_CHART_MAX_AGE_HOURS (36)


class FreshChartsConfig(dg.Config):
    max_age_hours: float | None = None  # a chart older than this is fetched again (default LEDGER_CHART_MAX_AGE_HOURS)


def refresh_charts(context: dg.AssetExecutionContext, r2a: R2aDatabase, accounting: AccountingResource,
                   warehouse: WarehouseResource, refresh: str, max_age_hours: float | None) -> dict:
    """Fetch charts of accounts into the operational database (their one home: gl_accounts, gl_ingest_status,
    gl_account_changes; charts.py), with each fetched company's home currency when due, then copy them to DuckDB
    (accounting.gl_accounts, gl_account_changes, gl_ingest_status, and accounting.connections). `refresh` "all":
    every connected tenant, at background priority (the daily job); "stale": only tenants whose last OK fetch from
    their current system is older than `max_age_hours` (default LEDGER_CHART_MAX_AGE_HOURS), at posting priority
    (the close). Returns the materialization's metadata; a tenant whose fetch fails keeps its previous chart and is
    named in it."""
    s = load_settings()
    systems = connected_systems(r2a.ops_engine)
    ops = r2a.ops_engine
    max_age = dt.timedelta(hours=max_age_hours or s.chart_max_age_hours)
    checked = chart_checks(ops)
    if refresh == "all":
        todo = sorted((system, t) for t, system in systems.items())
    else:
        todo = stale_tenants(systems, checked, max_age, utc_now().to_pydatetime())
    context.log.info(f"charts of accounts: {len(todo)} of {len(systems)} tenants to fetch ({refresh}"
                     f"{'' if refresh == 'all' else f', older than {max_age.total_seconds() / 3600:g} h'})")
    with accounting.connections(r2a.ops_database_url, "background" if refresh == "all" else "posting") as c:
        fetched = ingest_charts(ops, c, todo, context.run_id,
                                lambda i: i % 500 == 0 and context.log.info(f"charts {i}/{len(todo)}"))
        accounts, status = fetched.accounts, fetched.status
        # the company's home currency, re-read with its chart when never read or older than a week (connections.py)
        refreshed = [(r.system, r.tenant_id) for r in status.itertuples(index=False) if r.status == "ok"]
        refresh_company_currencies(ops, currency_due(ops, refreshed), c, context.log.warning)
        requests = c.requests_by_system()
    wh = warehouse.warehouse
    with wh.connect() as con, transaction(con):  # the analysts' copy: every chart daily, the ones fetched otherwise
        publish_charts(con, ops, None if refresh == "all" else [t for _, t in todo])
        replace_rows(con, "accounting.connections", connections_frame(ops, systems), "TRUE")
    publish_if_last(context, wh)
    failed = status[status["status"] != "ok"]
    for r in failed.head(20).itertuples(index=False):
        context.log.warning(f"tenant {r.tenant_id} ({system_title(r.system)}): chart not refreshed ({r.status}): "
                            f"{own_words(r.tenant_id, r.error)}")
    return table_result_metadata("accounting.gl_accounts", accounts, {
        "refresh": refresh if refresh == "all" else f"stale (older than {max_age.total_seconds() / 3600:g} h)",
        "tenants_fetched": int((status["status"] == "ok").sum()), "tenants_failed": len(failed),
        "tenants_fresh_skipped": len(systems) - len(todo), "accounts_total": account_count(ops),
        "api_requests": sum(requests.values()), "api_requests_by_system": dg.MetadataValue.json(requests),
        "failures": full_table(chart_status(failed)),
        "tenants": full_table(chart_status(status, systems, checked)),
    })


def chart_status(status: pd.DataFrame, systems: dict[str, str] | None = None,
                 checked: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per tenant for the UI: system, tenant_id, chart (fetched | kept fresh | the failure kind), accounts
    fetched, last OK fetch before this run, reason in its own words and fix. With `systems`, every connected tenant
    (those not fetched: `kept (fresh)`); else only the rows of `status`."""
    cols = ["system", "tenant_id", "chart", "accounts", "last_ok_fetch", "reason", "fix"]
    last = ({(r.system, r.tenant_id): r.checked_at for r in checked.itertuples(index=False)}
            if checked is not None and len(checked) else {})
    rows = {(r.system, r.tenant_id): r for r in status.itertuples(index=False)}
    keys = sorted({(s, t) for t, s in (systems or {}).items()} | set(rows), key=lambda k: (k[1], k[0]))
    out = []
    for system, tenant in keys:
        r = rows.get((system, tenant))
        kind = "kept (fresh)" if r is None else ("fetched" if r.status == "ok" else r.status)
        reason = "" if r is None or r.status == "ok" else own_words(tenant, r.error)
        fix = ("" if r is None or r.status == "ok" else
               f"`ledger-pipeline connect --tenant {tenant} --system {system}`" if r.status == "needs_reauth" else
               fix_for(r.status, reason))
        out.append({"system": system, "tenant_id": tenant, "chart": kind,
                    "accounts": "" if r is None else str(r.accounts), "last_ok_fetch": last.get((system, tenant)),
                    "reason": reason, "fix": fix})
    return pd.DataFrame(out, columns=cols)


@dg.asset(
    group_name="accounting", kinds={"api", "duckdb"}, pool="duckdb", hooks={publish_after_failure},
    metadata=table_spec_metadata("accounting.gl_accounts"),
    description="Every connected tenant's chart of accounts from its own accounting system (inactive accounts "
                "included), kept in the operational database (gl_accounts, changes in gl_account_changes, "
                "per-tenant outcome in gl_ingest_status), where the journal reads it; the analysts' copy is "
                "accounting.gl_accounts, gl_account_changes and gl_ingest_status. Not partitioned: one table of "
                "current charts. gl_accounts_job (daily) refreshes all at background priority; each month's close "
                "refreshes only the stale ones first (gl_accounts_fresh).",
)
def gl_accounts(context: dg.AssetExecutionContext, config: ChartsConfig, r2a: R2aDatabase,
                accounting: AccountingResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata=refresh_charts(context, r2a, accounting, warehouse, config.refresh,
                                                        config.max_age_hours))


@dg.asset(
    deps=["gl_accounts"], partitions_def=monthly_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="accounting", kinds={"api", "duckdb"}, pool="duckdb", hooks={publish_after_failure},
    description="The close's first step, per month: the charts of accounts the month's journal resolves accounts "
                "against are fresh. Fetches again only the connected tenants whose chart (gl_accounts) is older than "
                "LEDGER_CHART_MAX_AGE_HOURS (36 h) in the operational database, at posting priority, into the same "
                "tables as gl_accounts; a month closed the day after the daily refresh spends no request here. "
                "Partitioned like the close "
                "(one backfill policy, single run) so a backfill of monthly_close_job selects only monthly assets; "
                "a range run refreshes once. Metadata: every connected tenant's chart status with reason and fix.",
)
def gl_accounts_fresh(context: dg.AssetExecutionContext, config: FreshChartsConfig, r2a: R2aDatabase,
                      accounting: AccountingResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    start, end = closed_window(context)  # an open month is refused before any request
    metadata = {**refresh_charts(context, r2a, accounting, warehouse, "stale", config.max_age_hours),
                "run_window": describe_window(start, end)}
    metadata.pop("dagster/table_name")  # the table is gl_accounts' (this step refreshes some of its rows)
    add_month_metadata(context, {key: {"window": key[:7]} for key in month_keys(context)})
    return dg.MaterializeResult(metadata=metadata)


class PostingConfig(dg.Config):
    dry_run: bool = False  # write the plan (create/update/delete/skip per entry) to accounting.posting_plan only
    allow_mass_delete: bool = False  # let a run delete more posted entries than the guard allows
    max_deletes: int = 20
    max_delete_fraction: float = 0.05
    progress_every: int = 0  # log progress every N tenants (0: about every 5% of the window's tenants)


def publish_line_accounts(con, ops_engine: Engine, start: dt.date, end: dt.date,  # noqa: ANN001 (duckdb)
                          tenants: list[str]) -> None:
    """ledger.journal_lines' account ids as these tenants' entries to post hold them now in the operational database
    (the chart retry re-resolves them). Call inside `transaction(con)`."""
    entries, _ = load_window(ops_engine, start, end, tenants)
    ids = pd.DataFrame([(e.custom_id, ln.line_no, ln.account_id) for mine in entries.values() for e in mine
                        for ln in e.lines], columns=["custom_id", "line_no", "account_id"])
    if len(ids):
        con.register("ids", ids)
        try:
            con.execute("UPDATE ledger.journal_lines l SET account_id = ids.account_id FROM ids "
                        "WHERE l.custom_id = ids.custom_id AND l.line_no = ids.line_no")
        finally:
            con.unregister("ids")


@dg.asset(
    deps=["journal_entries", "journal_lines"],
    partitions_def=monthly_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="accounting", kinds={"api", "duckdb"}, pool="duckdb", hooks={publish_after_failure},
    metadata={**table_spec_metadata("accounting.postings"), "dagster/column_lineage": POSTINGS_LINEAGE},
    check_specs=[dg.AssetCheckSpec(
        POSTINGS_CHECK, asset="postings",
        description="Every tenant-month of the window is posted as our ledger says. Fails (WARN: the rest is posted) "
                    "naming each tenant-month that is not: rejected upstream (ledger.rejections), failed, pending, "
                    "rejected by an approver, or held for a decision on a change made by hand in the tenant's "
                    "system (`ledger-pipeline decisions`).")],
    description="Posts each tenant-month's entry to the tenant's accounting system exactly once: unchanged -> no "
                "request; new -> create (one batch per tenant where the system has one); changed -> re-read, then "
                "update; gone -> delete (a mass delete is refused unless allowed). Entries changed by hand in the "
                "system (found by reconciliation_drift or this asset's own reads) follow the tenant's policy: a "
                "deleted one is re-created, an edited one held with its diff (or overwritten). State and intent in "
                "the operational database (`postings`, `remote_changes`), published to accounting.postings. An entry "
                "refused for a missing or archived account gets its tenant's chart read again (charts.rechart_for) "
                "and is retried once; that tenant's chart and journal line account ids are copied to DuckDB. "
                "Records every tenant, then fails naming the ones that failed.",
)
def postings(context: dg.AssetExecutionContext, config: PostingConfig, r2a: R2aDatabase,
             accounting: AccountingResource, warehouse: WarehouseResource,
             posting: PostingWorkers):  # noqa: ANN201 (a generator)
    start, end = closed_window(context)
    wh = warehouse.warehouse
    recharted: set[str] = set()  # tenants whose chart the retry read again here (a shard worker reports its own)
    posted = posting.post(context.log, context.run_id, PostingOptions(**config.model_dump()), r2a, accounting,
                          start, end, rechart=lambda connections: rechart_for(r2a.ops_engine, connections,
                                                                              context.run_id, recharted))
    recharted |= set(posted.recharted)
    postings = SqlPostingStore(r2a.ops_engine).frame(start, end)
    with wh.connect() as con, transaction(con):
        if recharted:  # the copy follows: their charts, and their journal lines' account ids
            publish_charts(con, r2a.ops_engine, sorted(recharted))
            publish_line_accounts(con, r2a.ops_engine, start, end, sorted(recharted))
        replace_rows(con, "accounting.posting_plan", posted.plan().assign(run_id=context.run_id, planned_at=utc_now()),
                     window_where(), [start, end])
        replace_rows(con, "accounting.postings", postings, window_where(), [start, end])
        if not config.dry_run:  # this run's currency refusals replace the window's earlier ones
            replace_rows(con, "ledger.rejections", posted.currency_rejections(context.run_id),
                         window_where() + " AND stage = 'currency'", [start, end])
        rejections = con.execute(f"SELECT tenant_id, period, stage, detail FROM ledger.rejections WHERE "
                                 f"{window_where()}", [start, end]).fetchall()
    publish_if_last(context, wh)
    checked = dg.AssetCheckKey(dg.AssetKey("postings"), POSTINGS_CHECK) in context.selected_asset_check_keys
    if checked:
        yield postings_check(r2a, posted, {(t, pd.Timestamp(p).date()): f"[{stage}] {detail}"
                                           for t, p, stage, detail in rejections})
    add_month_metadata(context, posting_months(context, posted, postings))
    yield posting_result(context, posted, postings, config.dry_run, reported_by_check=checked)


def posting_months(context: dg.AssetExecutionContext, posted: "PostedWindow",
                   postings: pd.DataFrame) -> dict[str, dict]:
    """Per partition key: that month's own posting numbers (rows, plan, what this run wrote (`done`) and states by
    system, failures with their fix, months rejected upstream, every tenant-month's status). Requests stay the
    run's (`api_requests`), like `done_in_run`: one batch request per tenant spans the months of a range, so they
    have no honest per-month split."""
    plan = posted.plan()
    failures = pd.DataFrame(posted.result.failures(), columns=["system", "tenant_id", "custom_id", "error", "kind"])
    period_of = dict(zip(postings["custom_id"], postings["period"], strict=True)) if len(postings) else {}
    failures["period"] = failures["custom_id"].map(period_of)
    failures["error"] = [own_words(t, e) for t, e in zip(failures["tenant_id"], failures["error"], strict=True)]
    failures = failures.dropna(subset=["period"])
    out = {}
    for key in month_keys(context):
        month = dt.date.fromisoformat(key[:10])
        rows, planned, failed = month_slice(postings, key), month_slice(plan, key), month_slice(failures, key)
        held = sorted(t for t, months in (posted.held or {}).items() if month in months)
        posted_rows = rows[rows["status"] == "posted"] if len(rows) else rows
        # what this run wrote for this month's entries (a failed write is in `failures`)
        done_rows = rows[(rows["run_id"] == context.run_id) & (rows["status"] != "failed")] if len(rows) else rows
        out[key] = {
            "window": describe_window(month, clock.add_months(month, 1)),
            "run_window": describe_window(posted.start, posted.end),
            "api_requests_scope": "the whole run (api_requests, api_requests_by_system)",
            "dagster/row_count": len(rows),
            "planned": dg.MetadataValue.json(planned["action"].value_counts().to_dict() if len(planned) else {}),
            "planned_by_system": counts_by_system(planned, "action"),
            "status_counts": dg.MetadataValue.json(rows["status"].value_counts().to_dict() if len(rows) else {}),
            "status_counts_by_system": counts_by_system(rows),
            "posted_by_system": dg.MetadataValue.json(
                posted_rows["system"].value_counts().to_dict() if len(posted_rows) else {}),
            "tenants_by_system": dg.MetadataValue.json(rows["system"].value_counts().to_dict() if len(rows) else {}),
            "rejected_upstream": len(held),
            "failed_tenants": int(failed["tenant_id"].nunique()) if len(failed) else 0,
            "done": dg.MetadataValue.json(done_rows["action"].value_counts().to_dict() if len(done_rows) else {}),
            "done_in_run": dg.MetadataValue.json(posted.result.counts()),
            "failures": full_table(failed[["system", "tenant_id", "custom_id", "kind", "error"]].assign(
                fix=[fix_for(k, e) for k, e in zip(failed["kind"], failed["error"], strict=True)])),
            "tenant_months": full_table(tenant_month_status(rows)),
        }
    return out


def posting_problems(r2a: R2aDatabase, posted: PostedWindow,
                     rejections: dict[tuple[str, dt.date], str] | None = None) -> pd.DataFrame:
    """Every tenant-month of the window that is not posted as our ledger says, with why: this run's failures, rows
    left failed/pending/rejected by an approver, months rejected upstream, changes held for a decision."""
    start, end = posted.start, posted.end
    state = SqlPostingStore(r2a.ops_engine).load(start, end)
    rows: dict[tuple[str, str], dict] = {}
    period_of = {cid: r.period for by_t in state.values() for rs in by_t.values() for cid, r in rs.items()}

    def add(system: str, tenant: str, period: dt.date | None, cid: str, problem: str, detail: str) -> None:
        rows.setdefault((tenant, cid), {"system": system, "tenant_id": tenant, "period": period, "custom_id": cid,
                                        "problem": problem, "detail": detail})

    for system, tenant, cid, error, kind in posted.result.failures():
        add(system, tenant, period_of.get(cid), cid, f"failed ({kind})", error)
    for system, by_t in state.items():
        for tenant, rs in by_t.items():
            if posted.systems and tenant not in posted.systems:
                continue
            for cid, r in rs.items():
                if r.status in ("failed", "pending", "rejected"):
                    add(system, tenant, r.period, cid, r.status, r.error or "")
    for tenant, months in (posted.held or {}).items():
        for m in sorted(months):
            add(posted.systems.get(tenant, ""), tenant, m, custom_id_for(tenant, m), "rejected upstream",
                (rejections or {}).get((tenant, m), "see ledger.rejections"))
    store = RemoteChangeStore(r2a.ops_engine)
    for change, policy in store.decisions():
        if start <= change.period < end and (not posted.systems or change.tenant_id in posted.systems):
            title = system_title(change.system)
            add(change.system, change.tenant_id, change.period, change.custom_id, f"{change.kind} by hand, held",
                change_detail(change, title, policy))
    frame = pd.DataFrame(list(rows.values()), columns=["system", "tenant_id", "period", "custom_id", "problem",
                                                       "detail"])
    frame["detail"] = [own_words(t, d) for t, d in zip(frame["tenant_id"], frame["detail"], strict=True)]
    frame["fix"] = [fix_for(p, d) for p, d in zip(frame["problem"], frame["detail"], strict=True)]
    return frame.sort_values(["tenant_id", "period"], na_position="first", kind="stable").reset_index(drop=True)


def postings_check(r2a: R2aDatabase, posted: PostedWindow,
                   rejections: dict[tuple[str, dt.date], str] | None = None) -> dg.AssetCheckResult:
    """The WARN check naming every tenant-month that is not posted as our ledger says (see `posting_problems`)."""
    problems = posting_problems(r2a, posted, rejections)
    names = [f"{r.tenant_id} {r.period:%Y-%m} ({r.problem})" if isinstance(r.period, dt.date) else
             f"{r.tenant_id} ({r.problem})" for r in problems.itertuples(index=False)]
    shown = ", ".join(names[:30]) + (f" ... and {len(names) - 30} more (see tenant_months)" if len(names) > 30 else "")
    return dg.AssetCheckResult(
        check_name=POSTINGS_CHECK, passed=problems.empty, severity=dg.AssetCheckSeverity.WARN,
        description=None if problems.empty else f"{len(names)} tenant-month(s) not posted as our ledger says: {shown}",
        metadata={"tenant_months_not_posted": len(names),
                  "by_problem": dg.MetadataValue.json(problems["problem"].value_counts().to_dict()),
                  "tenant_months": dg.MetadataValue.text("\n".join(names)),
                  "problems": full_table(problems),
                  "problems_by_system": counts_by_system(problems, "problem")})


def posting_result(context: dg.AssetExecutionContext, posted: PostedWindow, postings: pd.DataFrame, dry_run: bool,
                   *, reported_by_check: bool = False) -> dg.MaterializeResult:
    """The posting asset's metadata. Failures with a transient cause (TRANSIENT_KINDS) raise dg.Failure naming the
    failed tenants (everything else is recorded), with `OUTCOME_KEY: completed_with_problems` in its metadata
    (`ledger-pipeline run` exits 3 for it, not 1): a run retry posts what is left. Failures with permanent causes
    only: with `reported_by_check` (the postings_complete WARN check names them in this run) the asset
    materializes, so the month's reconciliation runs for every tenant and nothing is retried; without it (or with a
    refused mass delete, a safety stop the check does not cover), the same dg.Failure, but the run is tagged
    RETRY_ON_FAILURE_TAG=false first so the run-retry daemon leaves it."""
    result, requests, systems = posted.result, posted.requests, posted.systems
    plan = posted.plan()
    failures = pd.DataFrame(result.failures(), columns=["system", "tenant_id", "custom_id", "error", "kind"])
    failures["error"] = [own_words(t, e) for t, e in zip(failures["tenant_id"], failures["error"], strict=True)]
    failed_tenants = sorted(set(failures["tenant_id"]))
    changes = result.changes()
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
        "failures": full_table(failures[["system", "tenant_id", "custom_id", "kind", "error"]].assign(
            fix=[fix_for(k, e) for k, e in zip(failures["kind"], failures["error"], strict=True)])),
        "failures_by_system": counts_by_system(failures, "kind"),
        "tenant_months": full_table(tenant_month_status(postings)),
        "status_counts_by_system": counts_by_system(postings),
        "remote_changes_seen": len(changes),
        "remote_changes": preview(pd.DataFrame(
            [{"system": c.system, "tenant_id": c.tenant_id, "period": c.period, "kind": c.kind, "action": c.action,
              "diff": c.diff} for c in changes], columns=["system", "tenant_id", "period", "kind", "action", "diff"])),
        "dagster/row_count": len(postings),
        "status_counts": dg.MetadataValue.json(postings["status"].value_counts().to_dict()),
        "dagster/column_lineage": POSTINGS_LINEAGE,
        # production profile: each shard's worker (Celery node, queue, source address), tenants, requests, seconds
        **({"shards": dg.MetadataValue.json(posted.shards)} if posted.shards else {}),
    }
    for line in failure_lines(failures)[:50]:
        context.log.error(line)
    problems = []
    transient = worth_retrying(set(failures["kind"]))
    if result.refused_deletes:
        context.log.error(result.refused_deletes)
        problems.append(result.refused_deletes)
    if failed_tenants:
        problems.append(
            f"{len(failed_tenants)} tenant(s) failed to post ({', '.join(failed_tenants[:20])}"
            f"{' ...' if len(failed_tenants) > 20 else ''}); everything else is posted and recorded in "
            "accounting.postings. Fix the cause named per tenant, then re-run: only what is not done is retried.")
    if problems and not transient and reported_by_check and not result.refused_deletes:
        context.log.error(" ".join(problems) + " Permanent causes only: reported by the postings_complete check, "
                          "not retried; reconciliation runs for every tenant.")
        return dg.MaterializeResult(metadata={**metadata, "retry": "no: permanent causes only"})
    if problems:
        if not transient:
            context.instance.add_run_tags(context.run_id, {RETRY_ON_FAILURE_TAG: "false"})
        raise dg.Failure(description=" ".join(problems), metadata={
            **metadata, OUTCOME_KEY: COMPLETED_WITH_PROBLEMS,
            "retry": "yes: a transient cause" if transient else "no: permanent causes only"})
    return dg.MaterializeResult(metadata=metadata)


def failure_lines(failures: pd.DataFrame) -> list[str]:
    """One log line per tenant and cause (system, tenant_id, custom_id, error columns): a revoked grant that failed
    every month of a range is one message naming its entries, not one per month; the error in its own words."""
    if not len(failures):
        return []
    lines = []
    for (tenant, system, error), group in failures.groupby(["tenant_id", "system", "error"], sort=True):
        ids = list(dict.fromkeys(group["custom_id"]))
        shown = ", ".join(ids[:12]) + (" ..." if len(ids) > 12 else "")
        what = ids[0] if len(ids) == 1 else f"{len(ids)} entries ({shown})"
        lines.append(f"tenant {tenant} ({system_title(system)}) {what}: {own_words(tenant, error)}")
    return lines


def tenant_month_status(postings: pd.DataFrame) -> pd.DataFrame:
    """One row per tenant-month posting: system, tenant_id, period, status, remote_id, reason (the error in its own
    words) and fix (empty when posted)."""
    cols = ["system", "tenant_id", "period", "custom_id", "status", "remote_id", "reason", "fix"]
    if not len(postings):
        return pd.DataFrame(columns=cols)
    frame = postings.sort_values(["tenant_id", "period"], kind="stable")
    reason = [own_words(t, e) if isinstance(e, str) else "" for t, e in zip(frame["tenant_id"], frame["error"],
                                                                            strict=True)]
    fix = ["" if st in ("posted", "deleted") else fix_for(st, r) for st, r in zip(frame["status"], reason,
                                                                                   strict=True)]
    return frame.assign(reason=reason, fix=fix)[cols].reset_index(drop=True)


@dg.asset(
    deps=["postings"],
    partitions_def=monthly_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="accounting", kinds={"duckdb"}, pool="duckdb", hooks={publish_after_failure},
    metadata=table_spec_metadata("accounting.reconciliation"),
    description="Reconciles the window from the posting state, without a request: an entry whose create/update "
                "answer was verified line by line is a match as of that answer (checked_by posting_response); an "
                "entry changed by hand in its system since (deleted, edited, moved: see remote_changes) shows that "
                "finding, and a newer read by reconciliation_drift (checked_by remote_read) is kept, never "
                "overwritten by an older answer; anything not posted is missing_remote with its reason.",
)
def reconciliation(context: dg.AssetExecutionContext, r2a: R2aDatabase,
                          warehouse: WarehouseResource) -> dg.MaterializeResult:
    start, end = closed_window(context)
    wh = warehouse.warehouse
    with wh.connect() as con:
        reads = remote_reads(con, start, end)
    frame = reconciliation_from_state(r2a, start, end, context.run_id, reads)
    with wh.connect() as con, transaction(con):
        replace_rows(con, "accounting.reconciliation", frame, window_where(), [start, end])
    publish_if_last(context, wh)
    postings = SqlPostingStore(r2a.ops_engine).frame(start, end)
    state = dict(zip(postings["custom_id"], postings["status"], strict=True)) if len(postings) else {}

    def numbers(rows: pd.DataFrame) -> dict:
        return {
            "status_counts": dg.MetadataValue.json(rows["status"].value_counts().to_dict() if len(rows) else {}),
            "checked_by": dg.MetadataValue.json(rows["checked_by"].value_counts().to_dict() if len(rows) else {}),
            "status_counts_by_system": counts_by_system(rows),
            "not_matching": full_table(recon_status(rows[rows["status"] != "match"], state)),
            "tenant_months": full_table(recon_status(rows, state)),
        }

    add_month_metadata(context, {key: {  # each month's own rows on its partition (a range run)
        "window": key[:7], "run_window": describe_window(start, end),
        "dagster/row_count": len(own := month_slice(frame, key)), **numbers(own)} for key in month_keys(context)})
    return dg.MaterializeResult(metadata=table_result_metadata("accounting.reconciliation", frame, {
        "window": describe_window(start, end), "api_requests": 0, **numbers(frame)}))


def recon_status(frame: pd.DataFrame, posting: dict[str, str] | None = None) -> pd.DataFrame:
    """Reconciliation rows for the UI, one per tenant-month: system, tenant, month, status, remote ids, who checked,
    reason in its own words and fix. With `posting` (custom_id -> posting state), the tenant-month's posting state
    too, and the reconciliation status is named `reconciliation`."""
    cols = ["system", "tenant_id", "period", "status", "remote_ids", "checked_by", "reason", "fix"]
    if posting is not None:
        cols = ["system", "tenant_id", "period", "posting", "reconciliation", *cols[4:]]
    if not len(frame):
        return pd.DataFrame(columns=cols)
    reason = [own_words(t, d) for t, d in zip(frame["tenant_id"], frame["detail"], strict=True)]
    fix = ["" if st in AGREED else fix_for(st, r) for st, r in zip(frame["status"], reason, strict=True)]
    out = frame.assign(reason=reason, fix=fix)
    if posting is not None:
        out = out.assign(posting=[posting.get(c, "not posted") for c in out["custom_id"]], reconciliation=out["status"])
    return out.sort_values(["tenant_id", "period"], kind="stable")[cols]


def remote_reads(con, start: dt.date, end: dt.date) -> dict[str, ReconRow]:  # noqa: ANN001  (duckdb)
    """The window's rows written by the drift read (checked_by remote_read), by custom_id. A read that failed
    (not_checked, e.g. `needs re-authorisation` before a reconnect) is no finding: it is not kept, so the state's
    row replaces it once the tenant is reconnected and posted."""
    frame = con.execute(f"SELECT * FROM accounting.reconciliation WHERE {window_where()} AND checked_by = "
                        "'remote_read' AND status <> 'not_checked'", [start, end]).fetchdf()
    out = {}
    for r in frame.itertuples(index=False):
        out[r.custom_id] = (r.system, ReconRow(
            r.tenant_id, pd.Timestamp(r.period).date(), r.custom_id, r.status, r.remote_ids,
            _minor(r.local_total, r.currency), _minor(r.remote_total, r.currency), r.detail, "remote_read",
            pd.Timestamp(r.checked_at).to_pydatetime() if pd.notna(r.checked_at) else None,
            r.currency if isinstance(r.currency, str) else None))
    return {cid: row for cid, (_, row) in out.items()}


def _minor(value: object, currency: object = None) -> int:
    """A DuckDB MONEY value back in minor units of the row's currency (its own decimals: JPY 0, KWD 3; none: the
    legacy 2), exactly."""
    from decimal import Decimal

    from ledger_pipeline.money import to_minor

    if value is None or (isinstance(value, float) and pd.isna(value)):
        return 0
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    return to_minor(amount, currency if isinstance(currency, str) else None)


def reconciliation_from_state(r2a: R2aDatabase, start: dt.date, end: dt.date, run_id: str,
                              reads: dict[str, ReconRow] | None = None) -> pd.DataFrame:
    """The window's accounting.reconciliation rows from the operational posting state and remote changes (no
    request); `reads`: newer drift rows to keep (see reconcile.reconcile_from_state)."""
    entries, _ = load_window(r2a.ops_engine, start, end)
    systems = connected_systems(r2a.ops_engine)
    # compared as posted: a foreign-currency entry with its rate and planned hash (connections.py)
    entries = entries_as_posted(r2a.ops_engine, entries, systems, start, end)
    changes = RemoteChangeStore(r2a.ops_engine)
    known = changes.load(start, end)
    rows = reconcile_from_state(entries, SqlPostingStore(r2a.ops_engine).load(start, end), systems,
                                titles=system_titles(), known=known,
                                policies=changes.policies(sorted(set(entries) | set(known))), remote_reads=reads)
    return recon_frame(rows, run_id, "posting_response")


def recon_frame(rows: list[tuple[str, ReconRow]], run_id: str, checked_by: str) -> pd.DataFrame:
    """accounting.reconciliation rows: each row's own checked_by/checked_at where it has them, else these."""
    now = utc_now()
    fields = [f for f in ReconRow.__dataclass_fields__ if f not in ("checked_by", "checked_at")]
    frame = pd.DataFrame([{"system": s, **{f: getattr(r, f) for f in fields},
                           "checked_by": r.checked_by or checked_by,
                           "checked_at": pd.Timestamp(r.checked_at) if r.checked_at is not None else now}
                          for s, r in rows], columns=["system", *fields, "checked_by", "checked_at"])
    frame["checked_at"] = pd.to_datetime(frame["checked_at"])
    return frame.assign(run_id=run_id)


class DriftConfig(dg.Config):
    months: int = 3  # the rolling window: this month and the previous months-1
    max_requests: int | None = None  # this run's request budget (default LEDGER_DRIFT_REQUESTS_PER_HOUR)


@dg.asset(
    deps=["postings"], group_name="accounting", kinds={"api", "duckdb"}, pool="duckdb", hooks={publish_after_failure},
    metadata=table_spec_metadata("accounting.reconciliation"),
    description="Finds drift made by people in the accounting systems (entries edited, deleted, moved or added by "
                "hand): reads each tenant's remote entries over a rolling window, least recently checked tenants "
                "first, within a request budget per run (background priority: posting goes first), and records "
                "match, missing_remote, duplicate_remote, amount_mismatch, moved_remote, accepted_remote, "
                "unexpected_remote or not_checked. A change to an entry we posted (deleted, edited with its diff "
                "line by line, moved) is recorded in remote_changes: the next close acts on it under the tenant's "
                "policy, and `ledger-pipeline decisions` lists the ones held for a decision.",
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
    store = RemoteChangeStore(r2a.ops_engine, context.run_id)
    known = store.load(start, end)
    systems = connected_systems(r2a.ops_engine)
    entries = entries_as_posted(r2a.ops_engine, entries, systems, start, end)  # with rate and planned hash
    posted = {t for by_t in state.values() for t in by_t}
    tenants = sorted(set(entries) | posted, key=lambda t: (last.get(t) or pd.Timestamp.min, t))
    policies = store.policies(tenants)
    rows: list[tuple[str, ReconRow]] = []
    seen: list[RemoteChange] = []
    matched: dict[str, list[str]] = {}
    checked: list[str] = []
    with accounting.connections(r2a.ops_database_url, "background") as connections:
        for tenant in tenants:
            system = systems.get(tenant)
            if system is None or connections.requests >= budget:
                continue
            mine, title = entries.get(tenant, []), system_title(system)
            mine_rows = state.get(system, {}).get(tenant, {})
            try:
                remotes = connections(system).sink.list_period(tenant, start, end)
            except SinkError as exc:
                rows += [(system, ReconRow(tenant, e.period, e.custom_id, "not_checked", "", e.total_debit_minor, 0,
                                           f"could not read {title} entries: {exc}", currency=e.currency))
                         for e in mine]
            else:
                recon, changes = read_tenant(tenant, mine, remotes, title, system=system, rows=mine_rows,
                                             known=known.get(tenant), policy=policies[tenant],
                                             now=utc_now().to_pydatetime(), window=(start, end))
                rows += [(system, r) for r in recon]
                seen += [replace(c, action="reported") for c in changes]
                matched.setdefault(system, []).extend(r.custom_id for r in recon if r.status == "match")
            checked.append(tenant)
        requests = connections.requests
    store.record(seen)
    for system, cids in matched.items():
        store.resolve(system, cids, "seen matching our entry by the drift read")
    frame = recon_frame(rows, context.run_id, "remote_read")
    with wh.connect() as con, transaction(con):
        replace_rows(con, "accounting.reconciliation", frame, f"{window_where()} AND {IN_TENANTS}",
                     [start, end, checked])
    publish_if_last(context, wh)
    drift = frame[frame["status"] != "match"]
    for r in drift.head(20).itertuples(index=False):
        context.log.warning(f"drift: tenant {r.tenant_id} ({system_title(r.system)}) {r.custom_id}: {r.status}: "
                            f"{r.detail}")
    return dg.MaterializeResult(metadata=table_result_metadata("accounting.reconciliation", frame, {
        "window": describe_window(start, end), "api_requests": requests, "request_budget": budget,
        "tenants_checked": len(checked), "tenants_left_for_next_run": len(tenants) - len(checked),
        "status_counts": dg.MetadataValue.json(frame["status"].value_counts().to_dict() if len(frame) else {}),
        "remote_changes": len(seen),
        "status_counts_by_system": counts_by_system(frame),
        "drift": full_table(recon_status(drift)),
    }))


# Statuses that are not a failure of the check: what the system holds is what we mean it to hold.
AGREED = ("match", "accepted_remote")


@dg.asset_check(asset="reconciliation", pool="duckdb",
                description="Every entry in the window is in its accounting system exactly once with our amounts "
                            "(status match), or with a version changed by hand that an operator accepted "
                            "(accepted_remote).")
def reconciliation_all_match(context: dg.AssetCheckExecutionContext,
                             warehouse: WarehouseResource) -> dg.AssetCheckResult:
    return all_match(context, warehouse)


def all_match(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """The check's window in accounting.reconciliation: passes when every entry is a match (or accepted)."""
    where, params = check_window(context)
    with warehouse.warehouse.connect() as con:
        bad = con.execute(f"SELECT system, tenant_id, period, custom_id, status, checked_by, detail FROM "
                          f"accounting.reconciliation WHERE {where} AND status NOT IN {AGREED} ORDER BY 2, 3",
                          params).fetchdf()
    return dg.AssetCheckResult(passed=bad.empty, metadata={"not_matching": len(bad), "preview": preview(bad)},
                               description=None if bad.empty else f"{len(bad)} entries do not match their system")


# -- operator levers: re-post, re-read or accept one tenant-month --------------------------------------------------
class RepostRefused(Exception):
    """A repost that cannot be done as asked (nothing to accept, no entry, not connected): the message says why."""


@dataclass
class Reposted:
    tenant_id: str
    period: dt.date
    system: str
    done: str  # what happened, in words naming the tenant's system
    ok: bool
    requests: int


def repost_tenant_month(log: dg.DagsterLogManager, run_id: str, r2a: R2aDatabase, accounting: AccountingResource,
                        wh: Warehouse | None, tenant: str, month: dt.date, accept_remote: bool = False) -> Reposted:
    """Re-read one tenant-month's entry in its system first, then: re-create it if it is gone, update it if it is
    ours (our id) and differs, leave it if it matches; or (`accept_remote`) accept the system's version as the new
    truth, recording its fingerprint so the next close leaves it. Publishes the month's accounting.postings and the
    entry's reconciliation row (checked_by repost) when `wh` is given. Raises RepostRefused with the reason."""
    start, end = month, clock.add_months(month, 1)
    entries, held = load_window(r2a.ops_engine, start, end, [tenant])
    system = connected_systems(r2a.ops_engine).get(tenant)
    if system is None:
        raise RepostRefused(f"tenant {tenant} is not connected to an accounting system: run `ledger-pipeline connect "
                            f"--tenant {tenant} --system <{'|'.join(SYSTEMS)}>`")
    title = system_title(system)
    mine = entries.get(tenant, [])
    if not mine:
        why = ("the month was rejected upstream (see ledger.rejections): fix the source rows, then close it again "
               f"(`ledger-pipeline run --month {month:%Y-%m}`)" if month in held.get(tenant, set()) else
               f"our ledger has no entry for it: close the month first (`ledger-pipeline run --month {month:%Y-%m}`)")
        raise RepostRefused(f"nothing to re-post for tenant {tenant} {month:%Y-%m} ({title}): {why}")
    planned, _, refused = plan_stored(r2a.ops_engine, {tenant: mine}, {tenant: system}, start, end)
    if refused:  # the currency plan refuses it (no rate, no multicurrency...): nothing is sent
        raise RepostRefused(str(refused[0]))
    e = planned[tenant][0]
    store, changes = SqlPostingStore(r2a.ops_engine, run_id), RemoteChangeStore(r2a.ops_engine, run_id)
    rows = store.load(start, end, [tenant]).get(system, {}).get(tenant, {})
    row = rows.get(e.custom_id)
    known = changes.load(start, end, [tenant]).get(tenant, {})
    t0 = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with accounting.connections(r2a.ops_database_url) as connections:
        sink = connections(system).sink
        if accept_remote:
            done = _accept(sink, store, changes, e, row, system, title)
            ok = True
        else:
            engine = PostingEngine(sink, store, backoff=accounting.backoff_initial, title=title)
            outcome = engine.post_tenant(tenant, [e], rows, (start, end), set(), known,
                                         changes.policy(tenant), reread={e.custom_id})
            changes.record(outcome.changes)
            state = store.load(start, end, [tenant])
            changes.resolve_verified(state, f"repost run {run_id}")
            ok = not outcome.failures
            done = _reposted_words(outcome.counts, outcome.failures, title)
        requests = connections.requests
    log.info(f"repost {tenant} {month:%Y-%m} ({title}): {done}")
    if wh is not None:
        _publish_repost(wh, r2a, run_id, start, end, e.custom_id, t0)
    return Reposted(tenant, month, system, done, ok, requests)


def _accept(sink, store: SqlPostingStore, changes: RemoteChangeStore, e, row: PostingRow | None,  # noqa: ANN001
            system: str, title: str) -> str:
    remote = sink.find(e.tenant_id, e.custom_id, sink_hint(row.remote_state) if row else None)
    if remote is None:
        raise RepostRefused(f"nothing to accept for tenant {e.tenant_id} {e.period:%Y-%m}: {title} has no entry "
                            f"with our id {e.custom_id} (deleted?). Re-create it with `ledger-pipeline repost "
                            f"--tenant {e.tenant_id} --month {e.period:%Y-%m}`")
    if remote.matches(e):
        changes.resolve(system, [e.custom_id], "seen matching our entry by a repost --accept-remote")
        return f"{title} holds exactly our entry: nothing to accept"
    fp = remote_fingerprint(remote)
    kind = "moved" if month_of(remote.transaction_date) != e.period else "edited"
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    diff = "; ".join(diff_entry(e, remote, title)) or "the lines differ"
    changes.record([RemoteChange(system, e.tenant_id, e.period, e.custom_id, kind, str(remote.remote_id), diff, fp,
                                 e.content_hash, "accepted", "accepted", "repost", now, bool(remote.locked))])
    base = row or PostingRow(system, e.tenant_id, e.period, e.custom_id, e.content_hash, "posted", "accept")
    store.save([replace(base, status="posted", action="accept", error=None, content_hash=e.content_hash,
                        remote_id=str(remote.remote_id), remote_line_ids=tuple(remote.line_ids),
                        remote_state={**(dict(remote.extra) or sink_hint(base.remote_state)), FINGERPRINT_KEY: fp},
                        posted_at=base.posted_at or now)])
    return (f"{title}'s version accepted as the new truth ({kind} by hand: {diff}); the close leaves it while "
            "neither our ledger nor the entry in the system changes")


def _reposted_words(counts: dict[str, int], failures: list[tuple[str, str, str]], title: str) -> str:
    if failures:
        return f"not done: {failures[0][1]}"
    words = {"create": f"re-created in {title} (it was gone)", "update": f"updated in {title} to our entry",
             "adopted": f"{title} holds exactly our entry: nothing to change",
             "refresh": f"{title} holds exactly our entry: nothing to change",
             "awaiting_approval": f"in {title}, awaiting approval", "submitted": f"submitted to {title}, processing",
             "hold": "held", "skip": "left as it is"}
    return "; ".join(words.get(k, k) for k in counts) or "nothing to do"


def _publish_repost(wh: Warehouse, r2a: R2aDatabase, run_id: str, start: dt.date, end: dt.date, custom_id: str,
                    since: dt.datetime) -> None:
    """The month's accounting.postings and this entry's reconciliation row, after a repost (a real read)."""
    postings = SqlPostingStore(r2a.ops_engine).frame(start, end)
    frame = reconciliation_from_state(r2a, start, end, run_id)
    frame = frame[frame["custom_id"] == custom_id].copy()
    fresh = frame["checked_at"] >= pd.Timestamp(since)
    frame.loc[fresh | frame["status"].isin(AGREED), "checked_by"] = "repost"
    with wh.connect() as con, transaction(con):
        replace_rows(con, "accounting.postings", postings, window_where(), [start, end])
        replace_rows(con, "accounting.reconciliation", frame, "custom_id = ?", [custom_id])
    wh.publish(run_id=run_id)
