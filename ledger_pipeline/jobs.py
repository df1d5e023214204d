"""Jobs: the monthly close (stale charts, extract, journal, post, reconcile), the GL-accounts refresh, the drift read,
and the operator's repost of one tenant-month (run config, from the UI's launchpad or `ledger-pipeline repost`)."""

import dagster as dg

from ledger_pipeline import clock
from ledger_pipeline.assets.accounting import COMPLETED_WITH_PROBLEMS, OUTCOME_KEY, RepostRefused, repost_tenant_month
from ledger_pipeline.resources import AccountingResource, R2aDatabase, WarehouseResource

# Every run writes the DuckDB work file: the instance limits runs with this tag to one at a time.
DUCKDB_WRITER_TAG = {"ledger/duckdb_writer": "1"}

# Only monthly-partitioned assets, all with BackfillPolicy.single_run(): the UI's "Materialize all" backfill of this
# job previews every asset with the chosen months and launches one run per range. The unpartitioned `gl_accounts`
# (one table of current charts) stays outside: its close-time refresh of stale charts is the partitioned
# `gl_accounts_fresh` step, upstream of the journal; gl_accounts_job refreshes every chart daily.
# No partitions_def on the job: it takes its assets' partitions when the definitions resolve, the settings' months
# (partitions.py), which an explicit one (declared at import) could not be.
CLOSE_ASSETS = ("gl_accounts_fresh", "r2a_pl_monthly", "journal_entries", "journal_lines", "postings", "reconciliation")

monthly_close_job = dg.define_asset_job(
    "monthly_close_job",
    selection=dg.AssetSelection.assets(*CLOSE_ASSETS),
    tags=DUCKDB_WRITER_TAG,
    description="Close a month (or a range, as one run): refresh stale charts of accounts (gl_accounts_fresh), "
                "extract R2a's P&L, build and validate journal entries, post them to each tenant's own accounting "
                "system (the one its connection names, any system of the registry) exactly once, reconcile. "
                "Backfill from the UI: Materialize all > Show all partitions > a range such as "
                "[2026-05-01...2026-07-01] > Launch backfill (one run per range).",
)

gl_accounts_job = dg.define_asset_job(
    "gl_accounts_job", selection=dg.AssetSelection.assets("gl_accounts"), tags=DUCKDB_WRITER_TAG,
    config={"ops": {"gl_accounts": {"config": {"refresh": "all"}}}},
    description="Refresh every connected tenant's chart of accounts from its accounting system (background "
                "priority: a close running at the same time goes first on the shared request budget).",
)

reconciliation_drift_job = dg.define_asset_job(
    "reconciliation_drift_job", selection=dg.AssetSelection.assets("reconciliation_drift"), tags=DUCKDB_WRITER_TAG,
    description="Read the accounting systems' entries over a rolling window to find drift made by people (edited, "
                "deleted, moved or added entries), within a request budget per run, least recently checked tenants "
                "first. Changes to entries we posted go to remote_changes (see `ledger-pipeline decisions`).",
)


class RepostConfig(dg.Config):
    """One tenant-month to re-read and put right (or whose system version to accept)."""

    tenant: str  # the tenant_id, exactly as R2a has it
    month: str  # YYYY-MM (a closed month: its entry is in our ledger)
    accept_remote: bool = False  # accept the system's version (edited by hand) as the new truth instead


@dg.op(name="repost", pool="duckdb", description=(
    "Re-read one tenant-month's entry in the tenant's own system, then re-create it if it is gone, update it if it is "
    "ours and differs, or leave it if it matches; with accept_remote, accept the system's version (an accountant's "
    "edit) as the new truth so the next close leaves it. Publishes accounting.postings and the entry's "
    "reconciliation row (checked_by repost)."))
def repost_op(context: dg.OpExecutionContext, config: RepostConfig, r2a: R2aDatabase, accounting: AccountingResource,
              warehouse: WarehouseResource) -> dict:
    try:
        month = clock.parse_month(config.month, "month")
    except clock.MonthError as exc:
        raise dg.Failure(description=str(exc)) from exc
    try:
        done = repost_tenant_month(context.log, context.run_id, r2a, accounting, warehouse.warehouse, config.tenant,
                                   month, config.accept_remote)
    except RepostRefused as exc:
        raise dg.Failure(description=str(exc), metadata={OUTCOME_KEY: COMPLETED_WITH_PROBLEMS}) from exc
    metadata = {"tenant": done.tenant_id, "month": f"{done.period:%Y-%m}", "system": done.system,
                "result": done.done, "api_requests": done.requests}
    if not done.ok:
        raise dg.Failure(description=f"tenant {done.tenant_id} {done.period:%Y-%m}: {done.done}",
                         metadata={**metadata, OUTCOME_KEY: COMPLETED_WITH_PROBLEMS})
    context.add_output_metadata(metadata)
    return metadata


@dg.job(name="repost_job", tags=DUCKDB_WRITER_TAG, description=(
    "An operator's lever for one tenant-month: re-read its entry in the tenant's system and put it right (re-create "
    "if deleted by hand, update if edited), or accept the system's version (accept_remote: true). Run config: "
    "ops: {repost: {config: {tenant: t00001, month: '2026-05', accept_remote: false}}}. The same as `ledger-pipeline "
    "repost --tenant T --month M [--accept-remote]`."))
def repost_job() -> None:
    repost_op()
