"""Shards without the services: assignment and rebalance, the `shards` command, run routing, one graph for both
profiles, and a shard worker's task in-process (only its tenants, JSON answer, no DuckDB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ledger_pipeline import clock
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.shards import assign_new, assignments, counts, plan_rebalance, rebalance, shard_keys
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline_tests.helpers import (
    connect,
    materialize,
    materialize_gl,
    reset_stats,
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


def test_runs_go_to_the_default_queue_unless_a_run_names_another() -> None:
    workers = pytest.importorskip("ledger_pipeline.workers", reason="needs the production extra (dagster-celery)")
    assert workers.queue_of({"dagster/partition": "2025-01-01"}, "ledger-default") == "ledger-default"
    assert workers.queue_of({"dagster-celery/queue": "other"}, "ledger-default") == "other"


def test_both_profiles_have_one_graph_and_differ_only_in_where_posting_runs() -> None:
    """The environment swaps resources, not graphs: the same assets, checks, jobs and schedules; production posts on
    LEDGER_SHARDS shard workers, the embedded profile in its own process (one shard). Loaded in fresh processes."""
    code = ("import json; from ledger_pipeline.definitions import defs; d = defs(); g = d.resolve_asset_graph(); "
            "print(json.dumps({'assets': sorted(k.to_user_string() for k in g.get_all_asset_keys()), "
            "'checks': sorted(k.to_user_string() for k in g.asset_check_keys), "
            "'jobs': sorted(j.name for j in d.resolve_all_job_defs()), "
            "'schedules': sorted(s.name for s in d.schedules), 'shards': d.resources['posting'].shards}))")
    env = {k: v for k, v in os.environ.items() if k not in ("LEDGER_PROFILE", "LEDGER_SHARDS")}

    def load(extra: dict) -> dict:
        return json.loads(subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True,
                                         text=True, check=True).stdout)

    embedded = load({})
    production = load({"LEDGER_PROFILE": "production", "LEDGER_SHARDS": "3",
                       "LEDGER_OPS_DATABASE_URL": "postgresql+psycopg://ledger@db.invalid/ops"})
    assert embedded.pop("shards") == 0 and production.pop("shards") == 3
    assert embedded == production
    assert {"postings", "reconciliation", "reconciliation_drift", "gl_accounts_fresh"} <= set(embedded["assets"])
    assert {"monthly_close_job", "reconciliation_drift_job", "repost_job", "gl_accounts_job"} <= set(
        embedded["jobs"])


def month_assigned_to_shards(settings, tenants: int, seed: int):  # noqa: ANN001, ANN201
    """Last month seeded for `tenants` tenants, all connected, charts read, journal built and every tenant given a
    shard (as the production `postings` step does first): (operational engine, the month's first day)."""
    from ledger_pipeline.dispatch import window_tenants

    seeding.seed(make_engine(settings.r2a_database_url), tenants, 1, seeding.default_start(1), seed=seed)
    engine = make_ops_engine(settings.ops_database_url)
    connect([f"t{i:05d}" for i in range(1, tenants + 1)])
    materialize_gl()
    month = seeding.default_start(1)
    materialize(["r2a_pl_monthly", "journal_entries", "journal_lines"], month.isoformat())
    assign_new(engine, window_tenants(engine, month, clock.add_months(month, 1)), KEYS)
    return engine, month


def post_shard(settings, monkeypatch, month, shard: str) -> dict:  # noqa: ANN001
    """A shard worker's task, called in this process as the worker calls it, on a host without DuckDB (its warehouse
    path points at a directory that does not exist): the JSON answer."""
    workers = pytest.importorskip("ledger_pipeline.workers", reason="needs the production extra (dagster-celery)")
    nowhere = settings.data_dir / "no-such-dir" / "warehouse.duckdb"
    monkeypatch.setenv("LEDGER_OPS_DATABASE_URL", settings.ops_database_url)
    monkeypatch.setenv("LEDGER_WAREHOUSE", str(nowhere))
    answer = workers.post_shard("run-1", shard, month.isoformat(), clock.add_months(month, 1).isoformat(), {},
                                {"rate_limit_scale": settings.rate_limit_scale, "backoff": 0.01, "timeout": 5})
    assert not nowhere.parent.exists(), "a shard worker never touches DuckDB"
    json.dumps(answer)  # JSON between hosts, never pickle
    return answer


def test_a_shard_task_posts_only_its_tenants_and_answers_in_json(settings, sandbox, monkeypatch) -> None:  # noqa: ANN001
    from ledger_pipeline.dispatch import from_wire, merge, to_wire

    engine, month = month_assigned_to_shards(settings, tenants=8, seed=3)
    mine = sorted(t for t, s in assignments(engine).items() if s == "shard-1")
    answer = post_shard(settings, monkeypatch, month, "shard-1")
    posted = {e["company_login"] for e in sandbox_entries(sandbox.url) if e["custom_id"]}
    assert posted and posted <= set(mine) and len(mine) == 2
    window = from_wire(answer)
    assert to_wire(window) == answer, "the wire format reads back exactly"
    assert window.shards["shard-1"]["tenants"] == 2 and window.shards["shard-1"]["source_address"] == "default"
    assert window.result.counts() == {"create": len(posted)} and sum(window.requests.values()) >= len(posted)
    other = from_wire(post_shard(settings, monkeypatch, month, "shard-2"))
    both = merge(month, clock.add_months(month, 1), {"shard-1": window, "shard-2": other}, 1.0)
    assert set(both.shards) == {"shard-1", "shard-2"} and set(both.systems) == set(window.systems) | set(other.systems)
    assert sum(both.requests.values()) == sum(window.requests.values()) + sum(other.requests.values())


def test_a_shard_task_refreshes_a_stale_chart_for_that_tenant_alone_and_retries(settings, sandbox,  # noqa: ANN001
                                                                                monkeypatch) -> None:
    """The chart retry on a shard worker: an entry built against an account id the system no longer has (the account
    was re-created there) fails on the account, the worker reads that tenant's chart again, re-resolves the accounts
    by number, stores the chart and the new ids in the operational database (gl_accounts, ledger_entries), posts, and
    names the tenant in its answer (the default host copies that chart to DuckDB); no DuckDB on that host."""
    from sqlalchemy import select, update

    from ledger_pipeline.charts import load_charts
    from ledger_pipeline.dispatch import from_wire
    from ledger_pipeline.state.models import LedgerEntry

    engine, month = month_assigned_to_shards(settings, tenants=4, seed=5)
    victim = sorted(t for t, s in assignments(engine).items() if s == "shard-0")[0]
    with engine.begin() as conn:  # the entry names an account id the tenant's system re-created since
        cid, lines = conn.execute(select(LedgerEntry.custom_id, LedgerEntry.lines).where(
            LedgerEntry.tenant_id == victim, LedgerEntry.rejected == 0)).one()
        stale = [[n, "999999" if num == "4-40000" else a, num, d, c, t] for n, a, num, d, c, t in json.loads(lines)]
        assert any(a == "999999" for _, a, *_ in stale), "the fixture's entry uses account 4-40000"
        conn.execute(update(LedgerEntry).where(LedgerEntry.custom_id == cid).values(lines=json.dumps(stale)))
    reset_stats(sandbox.url)
    window = from_wire(post_shard(settings, monkeypatch, month, "shard-0"))
    assert not window.result.failures()
    assert victim in {e["company_login"] for e in sandbox_entries(sandbox.url) if e["custom_id"] == cid}
    charts = sum(r["count"] for r in sandbox_stats(sandbox.url)["requests"] if r["endpoint"].endswith("/accounts"))
    assert charts == 1, "only the failing tenant's chart was read again"
    with engine.connect() as conn:
        fixed = json.loads(conn.execute(select(LedgerEntry.lines).where(LedgerEntry.custom_id == cid)).scalar_one())
    assert "999999" not in {a for _, a, *_ in fixed}, "the stored entry follows the chart's current ids"
    chart = load_charts(engine, [victim])  # the chart read again is stored where every host reads it
    assert set(chart["run_id"]) == {"run-1"}
    assert {a for _, a, num, *_ in fixed if num == "4-40000"} == set(chart.loc[chart["number"] == "4-40000",
                                                                                "account_id"])
    assert window.recharted == [victim]


def test_a_shard_no_worker_takes_fails_its_tenants_as_retryable_naming_the_queue(settings, sandbox,  # noqa: ANN001
                                                                                 monkeypatch) -> None:
    """The production `postings` step when a shard's worker is missing: it says which shards wait (queued, no worker
    has taken the task), gives up after its timeout, and fails that shard's entries as retryable naming the queue to
    check; nothing is posted. Celery's in-memory broker stands in for RabbitMQ (no worker ever consumes there)."""
    import types

    from ledger_pipeline.dispatch import PostingOptions

    workers = pytest.importorskip("ledger_pipeline.workers", reason="needs the production extra (dagster-celery)")
    engine, month = month_assigned_to_shards(settings, tenants=4, seed=3)
    monkeypatch.setenv("LEDGER_CELERY_BROKER", "memory://")
    monkeypatch.setenv("LEDGER_CELERY_BACKEND", "cache+memory://")
    lines: list[str] = []
    log = types.SimpleNamespace(info=lines.append, warning=lines.append)
    posted = workers.post_on_shards(log, "run-1", PostingOptions(), engine,
                                    {"rate_limit_scale": 1000, "backoff": 0.01, "timeout": 5}, month,
                                    clock.add_months(month, 1), 4, timeout=0.6, poll=0.05, every=0.2)
    failures = posted.result.failures()
    assert {t for _, t, *_ in failures} == set(assignments(engine)), "every tenant of the month, none posted"
    assert {kind for *_, kind in failures} == {"retryable"}, "a run retry or a re-run posts them"
    assert all(f"ledger-{assignments(engine)[t]}" in error for _, t, _, error, _ in failures)
    assert {s for s, *_ in failures} == {"jurnal"}, "each failure names the tenant's own system"
    assert any("queued: no worker has taken it yet" in line for line in lines), lines
    assert not [e for e in sandbox_entries(sandbox.url) if e["custom_id"]]
