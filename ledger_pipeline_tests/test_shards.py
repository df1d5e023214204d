"""Shards without the services: assignment and rebalance, the `shards` command, run routing, the production
definitions, and one shard's posting run in-process (only its tenants, no DuckDB resource at all)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg
import pytest
from click.testing import CliRunner

from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.shards import assign_new, assignments, counts, plan_rebalance, rebalance, shard_keys
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline_tests.helpers import (
    connect,
    materialize,
    materialize_gl,
    reset_stats,
    resources,
    sandbox_entries,
    sandbox_stats,
)

KEYS = shard_keys(4)


def test_new_tenants_go_to_the_least_loaded_shard_and_stay_there(settings) -> None:  # noqa: ANN001
    engine = make_ops_engine(settings.ops_database_url)
    assert assign_new(engine, [f"t{i}" for i in range(10)], KEYS) == {
        "t0": "shard-0", "t1": "shard-1", "t2": "shard-2", "t3": "shard-3", "t4": "shard-0", "t5": "shard-1",
        "t6": "shard-2", "t7": "shard-3", "t8": "shard-0", "t9": "shard-1"}
    before = assignments(engine)
    new = assign_new(engine, [f"t{i}" for i in range(12)], KEYS)  # two newcomers: the emptiest shards
    assert new == {"t10": "shard-2", "t11": "shard-3"}
    assert {t: s for t, s in assignments(engine).items() if t in before} == before, "stable"
    assert counts(engine, KEYS) == {k: 3 for k in KEYS}
    assert assign_new(engine, ["t1"], shard_keys(2)) == {}, "a shard count change never moves anyone by itself"


def test_rebalance_moves_the_fewest_tenants(settings) -> None:  # noqa: ANN001
    engine = make_ops_engine(settings.ops_database_url)
    assign_new(engine, [f"t{i:02d}" for i in range(12)], KEYS)
    moves = rebalance(engine, shard_keys(2), dry_run=True)
    assert len(moves) == 6 and assignments(engine)["t02"] == "shard-2", "a dry run changes nothing"
    rebalance(engine, shard_keys(2))
    assert counts(engine, shard_keys(2)) == {"shard-0": 6, "shard-1": 6}
    grown = plan_rebalance(assignments(engine), KEYS)
    assert len(grown) == 6 and {m.target for m in grown} == {"shard-2", "shard-3"}
    assert plan_rebalance({"a": "shard-0", "b": "shard-0", "c": "shard-1"}, shard_keys(2)) == []


def test_shards_command(settings) -> None:  # noqa: ANN001
    from ledger_pipeline.cli import main
    from ledger_pipeline.state.vault import TokenSet, TokenVault, load_key

    engine = make_ops_engine(settings.ops_database_url)
    vault = TokenVault(engine, load_key(settings), settings.lock_dir)
    for i in range(6):
        vault.store(f"t{i}", TokenSet("access", "refresh", 3600, f"c{i}"))
    runner = CliRunner()
    out = runner.invoke(main, ["shards", "--assign"])
    assert out.exit_code == 0, out.output
    assert "assigned 6 new tenant(s)" in out.output and "shard-3          1 tenant(s)" in out.output
    out = runner.invoke(main, ["shards", "--rebalance", "--count", "2", "--force"])
    assert out.exit_code == 0 and "2 tenant(s) moved" in out.output, out.output
    assert counts(engine, shard_keys(2)) == {"shard-0": 3, "shard-1": 3}
    refused = runner.invoke(main, ["shards", "--rebalance"], env={"DAGSTER_HOME": str(settings.data_dir / "none")})
    assert refused.exit_code == 2 and "--force" in refused.output


def test_runs_are_routed_by_their_shard_partition() -> None:
    workers = pytest.importorskip("ledger_pipeline.workers", reason="needs the production extra (dagster-celery)")
    assert workers.queue_of({"dagster/partition/shard": "shard-2"}, "ledger-default") == "ledger-shard-2"
    # a UI backfill run carries the partition key (dimension tags may be missing on older paths)
    assert workers.queue_of({"dagster/partition": "2025-01-01|shard-3"}, "ledger-default") == "ledger-shard-3"
    assert workers.queue_of({"dagster/partition": "2025-01-01"}, "ledger-default") == "ledger-default"
    assert workers.queue_of({"dagster-celery/queue": "other"}, "ledger-default") == "other"
    assert workers.queue_of({"dagster-celery/queue": "other", "dagster/partition/shard": "shard-0"},
                            "ledger-default") == "ledger-shard-0", "a shard's run never leaves its queue"


def test_production_definitions_load_and_the_embedded_ones_are_unchanged() -> None:
    code = ("import json; from ledger_pipeline.definitions import defs; defs = defs(); g = defs.resolve_asset_graph(); "
            "print(json.dumps({'assets': sorted(k.to_user_string() for k in g.get_all_asset_keys()), "
            "'jobs': sorted(j.name for j in defs.resolve_all_job_defs()), "
            "'shard_keys': len(defs.resolve_job_def('shard_posting_job').partitions_def.get_partition_keys()) "
            "if 'shard_postings' in str(g.get_all_asset_keys()) else 0}))")
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_PROFILE"}
    embedded = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                         check=True).stdout)
    production = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                           env={**env, "LEDGER_PROFILE": "production", "LEDGER_SHARDS": "3"}).stdout)
    assert "postings" in embedded["assets"] and "shard_postings" not in embedded["assets"]
    assert "monthly_close_job" in embedded["jobs"]
    assert {"prepare_month_job", "shard_posting_job", "publish_month_job"} <= set(production["jobs"])
    assert "postings" not in production["assets"], "production posts through the shards only"
    # the same drift reconciliation and operator's repost as the embedded profile
    assert "reconciliation_drift" in production["assets"] and "reconciliation_drift" in embedded["assets"]
    assert {"reconciliation_drift_job", "repost_job", "gl_accounts_job"} <= set(production["jobs"]) & set(
        embedded["jobs"])
    from ledger_pipeline.partitions import monthly_partitions

    assert production["shard_keys"] == 3 * len(monthly_partitions.get_partition_keys())


def month_assigned_to_shards(settings, tenants: int, seed: int):  # noqa: ANN001, ANN201
    """Last month seeded for `tenants` tenants, all connected, charts read, journal built and every tenant given a
    shard (tenant_shards): (operational engine, the month's partition key, the resources)."""
    from ledger_pipeline.assets.shards import tenant_shards

    seeding.seed(make_engine(settings.r2a_database_url), tenants, 1, seeding.default_start(1), seed=seed)
    engine = make_ops_engine(settings.ops_database_url)
    connect([f"t{i:05d}" for i in range(1, tenants + 1)])
    materialize_gl()
    month = seeding.default_start(1).strftime("%Y-%m-01")
    materialize(["r2a_pl_monthly", "journal_entries", "journal_lines"], month)
    res = resources(settings)
    dg.materialize([tenant_shards], resources={"r2a": res["r2a"]}, partition_key=month,
                   instance=dg.DagsterInstance.ephemeral())
    return engine, month, res


def test_a_shard_run_posts_only_its_tenants_and_needs_no_duckdb(settings, sandbox) -> None:  # noqa: ANN001
    from ledger_pipeline.assets.shards import shard_postings

    engine, month, res = month_assigned_to_shards(settings, tenants=8, seed=3)
    mine = sorted(t for t, s in assignments(engine).items() if s == "shard-1")
    result = dg.materialize(  # no warehouse resource: the shard step cannot touch DuckDB
        [shard_postings], resources={"r2a": res["r2a"], "accounting": res["accounting"]},
        partition_key=dg.MultiPartitionKey({"month": month, "shard": "shard-1"}),
        instance=dg.DagsterInstance.ephemeral())
    posted = {e["company_login"] for e in sandbox_entries(sandbox.url) if e["custom_id"]}
    assert posted and posted <= set(mine) and len(mine) == 2
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["shard"].value == "shard-1" and meta["tenants"].value == 2
    assert meta["worker"].value["source_address"] == "default" and meta["api_requests"].value >= len(posted)


def test_a_shard_run_refreshes_a_stale_chart_for_that_tenant_alone_and_retries(settings, sandbox) -> None:  # noqa: ANN001
    """The production profile's chart retry: an entry built against an account id the system no longer has (the
    account was re-created there) fails on the account, the shard worker reads that tenant's chart again, re-resolves
    the accounts by number, stores the chart and the new ids in the operational database (gl_accounts,
    ledger_entries) and posts; no DuckDB resource is given."""
    import json as json_

    from sqlalchemy import select, update

    from ledger_pipeline.assets.shards import shard_postings
    from ledger_pipeline.charts import load_charts
    from ledger_pipeline.state.models import LedgerEntry

    engine, month, res = month_assigned_to_shards(settings, tenants=4, seed=5)
    victim = sorted(t for t, s in assignments(engine).items() if s == "shard-0")[0]
    with engine.begin() as conn:  # the entry names an account id the tenant's system re-created since
        cid, lines = conn.execute(select(LedgerEntry.custom_id, LedgerEntry.lines).where(
            LedgerEntry.tenant_id == victim, LedgerEntry.rejected == 0)).one()
        stale = [[n, "999999" if num == "4-40000" else a, num, d, c, t] for n, a, num, d, c, t in json_.loads(lines)]
        assert any(a == "999999" for _, a, *_ in stale), "the fixture's entry uses account 4-40000"
        conn.execute(update(LedgerEntry).where(LedgerEntry.custom_id == cid).values(lines=json_.dumps(stale)))
    reset_stats(sandbox.url)
    result = dg.materialize(
        [shard_postings], resources={"r2a": res["r2a"], "accounting": res["accounting"]},
        partition_key=dg.MultiPartitionKey({"month": month, "shard": "shard-0"}),
        instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert victim in {e["company_login"] for e in sandbox_entries(sandbox.url) if e["custom_id"] == cid}
    charts = sum(r["count"] for r in sandbox_stats(sandbox.url)["requests"] if r["endpoint"].endswith("/accounts"))
    assert charts == 1, "only the failing tenant's chart was read again"
    with engine.connect() as conn:
        fixed = json_.loads(conn.execute(select(LedgerEntry.lines).where(LedgerEntry.custom_id == cid)).scalar_one())
    assert "999999" not in {a for _, a, *_ in fixed}, "the stored entry follows the chart's current ids"
    chart = load_charts(engine, [victim])  # the chart read again is stored where every host reads it
    assert set(chart["run_id"]) == {result.run_id}
    assert {a for _, a, num, *_ in fixed if num == "4-40000"} == set(chart.loc[chart["number"] == "4-40000",
                                                                                "account_id"])
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("postings_complete", True)]


def test_production_drift_read_is_kept_by_the_published_copy(settings, sandbox) -> None:  # noqa: ANN001
    """The production graph's drift reconciliation: after the shards post, an entry deleted by hand is found by
    reconciliation_drift (recorded in remote_changes), and published_postings keeps that newer read rather than
    the older posting answer (as reconciliation does)."""
    import httpx

    from ledger_pipeline import clock
    from ledger_pipeline.assets.shards import SHARDS, published_postings, shard_postings, tenant_shards
    from ledger_pipeline.production import production_drift
    from ledger_pipeline.remote_changes import RemoteChangeStore
    from ledger_pipeline_tests.helpers import query

    last = clock.last_complete_month()  # the drift window is computed by the same clock
    seeding.seed(make_engine(settings.r2a_database_url), 3, 1, last, seed=5)
    engine = make_ops_engine(settings.ops_database_url)
    tenants = [f"t{i:05d}" for i in range(1, 4)]
    connect(tenants)
    materialize_gl()
    month = last.isoformat()
    materialize(["r2a_pl_monthly", "journal_entries", "journal_lines"], month)
    res = resources(settings)
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([tenant_shards], resources={"r2a": res["r2a"]}, partition_key=month, instance=instance)
    for shard in SHARDS:
        dg.materialize([shard_postings], resources={"r2a": res["r2a"], "accounting": res["accounting"]},
                       partition_key=dg.MultiPartitionKey({"month": month, "shard": shard}), instance=instance)
    victim = tenants[1]
    cid = f"r2a-pl-{victim}-{last:%Y%m}"
    httpx.post(f"{sandbox.url}/_sandbox/companies/{victim}/entries", json={"custom_id": cid, "delete": True})
    assert dg.materialize([production_drift], resources=res, instance=instance,
                          selection=["reconciliation_drift"]).success
    changes = RemoteChangeStore(engine).load(last, clock.add_months(last, 1))
    assert changes[victim][cid].kind == "deleted", "the drift read recorded the deletion"
    dg.materialize([published_postings], resources=res, partition_key=month, instance=instance)
    rows = query(settings, "SELECT status, checked_by FROM accounting.reconciliation WHERE custom_id = ?", [cid])
    assert rows == [("missing_remote", "remote_read")], "the newer drift read is kept, not the posting answer"
