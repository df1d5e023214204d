"""Jurnal layer: GL accounts in, journal entries out (exactly once), reconciliation back."""

import dagster as dg
import pandas as pd

from ledger_pipeline.assets.ledger import check_window
from ledger_pipeline.assets.metadata import lineage, preview, table_result_metadata, table_spec_metadata
from ledger_pipeline.ledger.sink import CanonicalEntry, SinkError, entries_from_frames
from ledger_pipeline.partitions import monthly_partitions, window_dates
from ledger_pipeline.posting import PostingEngine, TenantOutcome, plan_tenant
from ledger_pipeline.reconcile import ReconRow, reconcile_tenant
from ledger_pipeline.resources import R2aDatabase, WarehouseResource
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.jurnal.client import JurnalError
from ledger_pipeline.systems.jurnal.gl_accounts import diff_charts, fetch_charts
from ledger_pipeline.systems.jurnal.resource import JurnalResource
from ledger_pipeline.systems.jurnal.sink import JurnalSink
from ledger_pipeline.warehouse.postings import DuckDBPostingStore
from ledger_pipeline.warehouse.store import replace_rows, transaction, window_where

ENTRIES_SQL = f"""SELECT tenant_id, period, custom_id, transaction_date, memo, currency, content_hash
                  FROM ledger.journal_entries WHERE {window_where()} ORDER BY tenant_id, period"""
LINES_SQL = f"""SELECT custom_id, line_no, account_id, account_number, CAST(debit * 100 AS BIGINT) AS debit_minor,
                       CAST(credit * 100 AS BIGINT) AS credit_minor, description
                FROM ledger.journal_lines WHERE {window_where()}"""
HELD_SQL = f"SELECT DISTINCT tenant_id, period FROM ledger.rejections WHERE {window_where()}"


def entries_by_tenant(con, start, end) -> dict[str, list[CanonicalEntry]]:  # noqa: ANN001
    """The window's journal entries as canonical entries, per tenant."""
    out: dict[str, list[CanonicalEntry]] = {}
    for e in entries_from_frames(con.execute(ENTRIES_SQL, [start, end]).fetchdf(),
                                 con.execute(LINES_SQL, [start, end]).fetchdf()):
        out.setdefault(e.tenant_id, []).append(e)
    return out


@dg.asset(
    group_name="jurnal", kinds={"jurnal", "duckdb"}, pool="duckdb",
    metadata=table_spec_metadata("jurnal.gl_accounts"),
    description="Every connected tenant's Jurnal chart of accounts (archived included): current state in "
                "jurnal.gl_accounts, changes in jurnal.gl_account_changes, per-tenant outcome in "
                "jurnal.gl_ingest_status. A failing tenant keeps its previous chart; the others go on.",
)
def jurnal_gl_accounts(context: dg.AssetExecutionContext, r2a: R2aDatabase, jurnal: JurnalResource,
                       warehouse: WarehouseResource) -> dg.MaterializeResult:
    session = jurnal.open(r2a.url)
    try:
        statuses = session.vault.statuses()
        tenants = [t for t, (status, _) in statuses.items() if status == "connected"]
        context.log.info(f"fetching charts of accounts for {len(tenants)} connected tenants")
        fetched = fetch_charts(session.client, tenants,
                               lambda i: i % 200 == 0 and context.log.info(f"{i}/{len(tenants)} tenants"))
        requests = session.client.requests
    finally:
        session.close()
    skipped = pd.DataFrame([(t, "needs_reauth", 0, detail) for t, (status, detail) in statuses.items()
                            if status != "connected"], columns=fetched.status.columns)
    status = pd.concat([fetched.status, skipped], ignore_index=True)
    ok = fetched.status.loc[fetched.status["status"] == "ok", "tenant_id"].tolist()
    stamp = pd.Timestamp.now(tz="UTC").tz_localize(None)
    run = {"run_id": context.run_id}
    wh = warehouse.warehouse
    with wh.connect() as con:
        previous = con.execute("SELECT * FROM jurnal.gl_accounts").fetchdf()
        previous = previous[previous["tenant_id"].isin(ok)]
        changes = diff_charts(previous, fetched.accounts).assign(**run, detected_at=stamp)
        in_ok = "tenant_id IN (SELECT unnest(?::VARCHAR[]))"
        with transaction(con):
            replace_rows(con, "jurnal.gl_accounts", fetched.accounts.assign(**run, fetched_at=stamp), in_ok, [ok])
            replace_rows(con, "jurnal.gl_account_changes", changes, "FALSE")  # append only
            replace_rows(con, "jurnal.gl_ingest_status", status.assign(**run, checked_at=stamp), "TRUE")
        total_accounts = con.execute("SELECT COUNT(*) FROM jurnal.gl_accounts").fetchone()[0]
    wh.publish()
    failed = status[status["status"] != "ok"]
    for _, r in failed.head(20).iterrows():
        context.log.warning(f"tenant {r['tenant_id']}: {r['status']}: {r['error']}")
    return dg.MaterializeResult(metadata=table_result_metadata("jurnal.gl_accounts", fetched.accounts, {
        "tenants_fetched": len(ok), "tenants_failed": len(failed), "accounts_total": int(total_accounts),
        "changes": len(changes), "changes_by_kind": dg.MetadataValue.json(
            changes["change"].value_counts().to_dict() if len(changes) else {}),
        "jurnal_requests": requests, "failures": preview(failed[["tenant_id", "status", "error"]]),
    }))


class PostingConfig(dg.Config):
    dry_run: bool = False  # write the plan (create/update/delete/skip per entry) to jurnal.posting_plan only


@dg.asset(
    deps=["journal_entries", "journal_lines"],
    partitions_def=monthly_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="jurnal", kinds={"jurnal", "duckdb"}, pool="duckdb",
    metadata=table_spec_metadata("jurnal.postings"),
    description="Posts each tenant-month's entry to Jurnal exactly once: unchanged -> no request; new -> create "
                "(batch_create for several months); changed -> update in place; gone -> delete. State and "
                "intent in jurnal.postings. Records every tenant, then fails naming the ones that failed.",
)
def jurnal_postings(context: dg.AssetExecutionContext, config: PostingConfig, r2a: R2aDatabase,
                    jurnal: JurnalResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    start, end = window_dates(*context.partition_time_window)
    wh = warehouse.warehouse
    session = jurnal.open(r2a.url)
    outcomes, plan = [], []
    try:
        with wh.connect() as con:
            by_tenant = entries_by_tenant(con, start, end)
            held_rows = con.execute(HELD_SQL, [start, end]).fetchall()
            store = DuckDBPostingStore(con, context.run_id)
            state = store.load(start, end)
            held: dict[str, set] = {}
            for tenant, period in held_rows:
                held.setdefault(tenant, set()).add(period)
            tenants = sorted(set(by_tenant) | set(state))
            engine = PostingEngine(JurnalSink(session.client), store, backoff=jurnal.backoff_initial)
            for i, tenant in enumerate(tenants, 1):
                items = plan_tenant(tenant, by_tenant.get(tenant, []), state.get(tenant, {}),
                                    held.get(tenant, set()))
                plan += items
                if config.dry_run or all(it.action in ("skip", "hold") for it in items):
                    continue
                try:
                    outcomes.append(engine.post_tenant(tenant, by_tenant.get(tenant, []), state.get(tenant, {}),
                                                       (start, end), held.get(tenant, set())))
                except SinkError as exc:  # an unexpected classification: record it, keep going
                    context.log.error(f"tenant {tenant}: {exc}")
                    outcomes.append(TenantOutcome(tenant, failures=[("*", str(exc))]))
                if i % 100 == 0:
                    context.log.info(f"posting: {i}/{len(tenants)} tenants, {session.client.requests} requests")
            stamp = pd.Timestamp.now(tz="UTC").tz_localize(None)
            plan_frame = pd.DataFrame([vars(p) for p in plan], columns=["tenant_id", "period", "custom_id",
                                                                        "action", "reason"])
            with transaction(con):
                replace_rows(con, "jurnal.posting_plan", plan_frame.assign(run_id=context.run_id, planned_at=stamp),
                             window_where(), [start, end])
            postings = con.execute(f"SELECT * FROM jurnal.postings WHERE {window_where()}", [start, end]).fetchdf()
        requests = session.client.requests
        waited = session.client.limiter.waited
    finally:
        session.close()
    wh.publish()
    counts: dict[str, int] = {}
    for o in outcomes:
        for k, v in o.counts.items():
            counts[k] = counts.get(k, 0) + v
    planned = pd.Series([p.action for p in plan]).value_counts().to_dict() if plan else {}
    failures = [(o.tenant_id, cid, err) for o in outcomes for cid, err in o.failures]
    failed_tenants = sorted({t for t, _, _ in failures})
    metadata = {
        **table_spec_metadata("jurnal.postings"),
        "window": f"{start} .. {end}", "dry_run": config.dry_run,
        "planned": dg.MetadataValue.json(planned), "done": dg.MetadataValue.json(counts),
        "jurnal_requests": requests, "rate_limiter_wait_seconds": round(waited, 2),
        "failed_tenants": len(failed_tenants),
        "failures": preview(pd.DataFrame(failures, columns=["tenant_id", "custom_id", "error"])),
        "dagster/row_count": len(postings),
        "status_counts": dg.MetadataValue.json(postings["status"].value_counts().to_dict()),
        "dagster/column_lineage": lineage({"custom_id": [("journal_entries", "custom_id")],
                                           "content_hash": [("journal_entries", "content_hash")]}),
    }
    for tenant, cid, err in failures[:50]:
        context.log.error(f"tenant {tenant} {cid}: {err}")
    if failed_tenants:
        raise dg.Failure(
            description=f"{len(failed_tenants)} tenant(s) failed to post ({', '.join(failed_tenants[:20])}"
                        f"{' ...' if len(failed_tenants) > 20 else ''}); everything else is posted and recorded in "
                        "jurnal.postings. Fix the cause named per tenant, then re-run: only what is not done is "
                        "retried.",
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    deps=["jurnal_postings"],
    partitions_def=monthly_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="jurnal", kinds={"jurnal", "duckdb"}, pool="duckdb",
    metadata=table_spec_metadata("jurnal.reconciliation"),
    description="Lists each tenant's Jurnal entries for the window and compares them with ledger.journal_entries: "
                "match, missing_remote, duplicate_remote, amount_mismatch, unexpected_remote.",
)
def jurnal_reconciliation(context: dg.AssetExecutionContext, r2a: R2aDatabase, jurnal: JurnalResource,
                          warehouse: WarehouseResource) -> dg.MaterializeResult:
    start, end = window_dates(*context.partition_time_window)
    wh = warehouse.warehouse
    with wh.connect() as con:
        by_tenant = entries_by_tenant(con, start, end)
        posted_tenants = {r[0] for r in con.execute(
            f"SELECT DISTINCT tenant_id FROM jurnal.postings WHERE {window_where()} AND status <> 'deleted'",
            [start, end]).fetchall()}
    rows: list[ReconRow] = []
    session = jurnal.open(r2a.url)
    try:
        sink = JurnalSink(session.client)
        for tenant in sorted(set(by_tenant) | posted_tenants):
            try:
                remotes = sink.list_period(tenant, start, end)
            except (SinkError, JurnalError, NeedsReauth) as exc:
                rows += [ReconRow(tenant, e.period, e.custom_id, "not_checked", "", e.total_debit_minor, 0,
                                  f"could not list Jurnal entries: {exc}") for e in by_tenant.get(tenant, [])]
                continue
            rows += reconcile_tenant(tenant, by_tenant.get(tenant, []), remotes)
        requests = session.client.requests
    finally:
        session.close()
    frame = pd.DataFrame([vars(r) for r in rows], columns=list(ReconRow.__dataclass_fields__))
    stamp = pd.Timestamp.now(tz="UTC").tz_localize(None)
    with wh.connect() as con, transaction(con):
        replace_rows(con, "jurnal.reconciliation", frame.assign(run_id=context.run_id, checked_at=stamp),
                     window_where(), [start, end])
    wh.publish()
    return dg.MaterializeResult(metadata=table_result_metadata("jurnal.reconciliation", frame, {
        "window": f"{start} .. {end}", "jurnal_requests": requests,
        "status_counts": dg.MetadataValue.json(frame["status"].value_counts().to_dict() if len(frame) else {}),
        "not_matching": preview(frame[frame["status"] != "match"][["tenant_id", "period", "status", "detail"]]),
    }))


@dg.asset_check(asset="jurnal_reconciliation", pool="duckdb",
                description="Every entry in the window is in Jurnal exactly once with our amounts (status match).")
def reconciliation_all_match(context: dg.AssetCheckExecutionContext,
                             warehouse: WarehouseResource) -> dg.AssetCheckResult:
    where, params = check_window(context)
    with warehouse.warehouse.connect() as con:
        bad = con.execute(f"SELECT tenant_id, period, custom_id, status, detail FROM jurnal.reconciliation "
                          f"WHERE {where} AND status <> 'match' ORDER BY 1, 2", params).fetchdf()
    return dg.AssetCheckResult(passed=bad.empty, metadata={"not_matching": len(bad), "preview": preview(bad)},
                               description=None if bad.empty else f"{len(bad)} entries do not match Jurnal")
