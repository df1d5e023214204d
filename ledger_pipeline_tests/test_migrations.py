"""The operational database's schema comes from Alembic: applied when the database is opened, once across concurrent
processes, idempotent, in agreement with the models, and adopting a database 0.2.0 created without Alembic."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    inspect,
    text,
)

from ledger_pipeline.settings import PROJECT_ROOT
from ledger_pipeline.state import database
from ledger_pipeline.state.database import alembic_config, head_revision, make_ops_engine, upgrade
from ledger_pipeline.state.models import OpsBase, Posting
from ledger_pipeline.state.postings import SqlPostingStore

CHART_TABLES = {"gl_accounts", "gl_ingest_status", "gl_account_changes"}  # revision 0005
OPS_TABLES = {"integrations", "oauth_states", "postings", "shard_assignments", "ledger_entries", "exchange_rates",
              "service_link_uses", "service_flows", "connection_health", "remote_changes", "remote_change_policies",
              *CHART_TABLES}


@pytest.fixture(params=["sqlite", "postgres"])
def ops_url(request, tmp_path: Path) -> str:  # noqa: ANN001
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ops' / 'ops.sqlite'}"
    return request.getfixturevalue("pg_url")


def versions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()


def test_opening_creates_the_schema_at_head_matching_the_models(ops_url: str) -> None:
    engine = make_ops_engine(ops_url)
    assert set(inspect(engine).get_table_names()) == OPS_TABLES | {"alembic_version"}
    assert versions(ops_url) == [head_revision()]
    with engine.connect() as conn:  # a model changed without a revision shows up here
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), OpsBase.metadata)
    assert diff == [], f"models and migrations disagree: add an Alembic revision for {diff}"
    assert {ix["name"] for ix in inspect(engine).get_indexes("postings")} == {"ix_postings_period_tenant"}
    engine.dispose()


def test_reopening_is_idempotent_and_keeps_the_data(ops_url: str) -> None:
    engine = make_ops_engine(ops_url)
    store = SqlPostingStore(engine)
    from ledger_pipeline.posting import PostingRow

    row = PostingRow("jurnal", "t1", dt.date(2025, 1, 1), "R2A-t1-2025-01", "h", "posted", "create", "9", (), {},
                     1, None, None, None)
    store.save([row])
    assert upgrade(engine) is False, "already at head: nothing to do"
    database._migrated.clear()  # as a new process would: the check runs again, finds head, changes nothing
    again = make_ops_engine(ops_url)
    assert SqlPostingStore(again).load(dt.date(2025, 1, 1), dt.date(2025, 2, 1))["jurnal"]["t1"]["R2A-t1-2025-01"]
    assert versions(ops_url) == [head_revision()]
    # down to nothing and back up: the revision is reversible
    with again.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(again).get_table_names()) <= {"alembic_version"}
    assert upgrade(again) is True and set(inspect(again).get_table_names()) == OPS_TABLES | {"alembic_version"}
    engine.dispose()
    again.dispose()


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ledger_pipeline.state.database import _engine, upgrade
    url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    engine = _engine(url)
    ready.touch()
    while not go.exists():
        time.sleep(0.005)
    print("migrated" if upgrade(engine) else "found-head")
""")


def test_concurrent_processes_migrate_once(ops_url: str, tmp_path: Path) -> None:
    """Several processes open the same fresh database at the same moment: exactly one migrates, the others wait
    for it and find the schema at head; none fails (no 'table already exists', no duplicate alembic_version)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    go = tmp_path / "go"
    procs = []
    for i in range(3):
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD, ops_url, str(tmp_path / f"ready{i}"), str(go)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(3)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            [p.communicate() for p in procs if p.poll() is not None]
        time.sleep(0.01)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(out.strip())
    assert sorted(results) == ["found-head", "found-head", "migrated"]
    assert versions(ops_url) == [head_revision()]


def test_a_database_created_by_0_2_0_is_adopted(ops_url: str) -> None:
    """0.2.0 created these tables itself (create_all plus ALTER TABLE ADD COLUMN) with no alembic_version: the first
    open keeps their rows, adds what is missing and records the revision (no `alembic stamp` needed)."""
    engine = create_engine(ops_url)
    if engine.dialect.name == "sqlite":
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    old = MetaData()  # as 0.2.0's create_all made them: an older postings (no verified_at, run_id, index)
    Table("postings", old, Column("system", String(20), primary_key=True),
          Column("custom_id", String(120), primary_key=True), Column("tenant_id", String(64), nullable=False),
          Column("period", Date, nullable=False), Column("remote_id", String(120)), Column("remote_line_ids", Text),
          Column("remote_state", Text), Column("content_hash", String(64)),
          Column("action", String(20), nullable=False), Column("status", String(20), nullable=False),
          Column("attempts", Integer, nullable=False),
          Column("error", Text), Column("posted_at", DateTime), Column("updated_at", DateTime))
    Table("integrations", old, *[Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                                 for c in OpsBase.metadata.tables["integrations"].columns])
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO postings (system, custom_id, tenant_id, period, remote_id, action, status, attempts) "
            "VALUES ('jurnal', 'R2A-t1-2025-01', 't1', '2025-01-01', '77', 'create', 'posted', 1)"))
        conn.execute(text("INSERT INTO integrations (tenant_id, source_system, status, token_version) "
                          "VALUES ('t1', 'jurnal', 'connected', 3)"))
    engine.dispose()
    ops = make_ops_engine(ops_url)
    assert versions(ops_url) == [head_revision()]
    assert set(inspect(ops).get_table_names()) == OPS_TABLES | {"alembic_version"}
    with ops.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), OpsBase.metadata)
        assert diff == [], diff
        row = conn.execute(Posting.__table__.select()).mappings().one()
        assert (row["remote_id"], row["verified_at"], row["run_id"]) == ("77", None, None)
        assert conn.execute(text("SELECT token_version FROM integrations")).scalar_one() == 3
    ops.dispose()


def test_revision_0005_adds_the_charts_and_keeps_the_data(ops_url: str) -> None:
    """A database at 0004 (as 0.3.0's first releases left it) gains the charts' tables, empty (the first refresh
    reads every chart: none is fresh), its rows kept; down to 0004 again drops only those tables."""
    engine = create_engine(ops_url)
    if engine.dialect.name == "sqlite":
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)

    def migrate(step: str, target: str) -> None:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            getattr(command, step)(cfg, target)

    migrate("upgrade", "0004")
    assert not CHART_TABLES & set(inspect(engine).get_table_names())
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO integrations (tenant_id, source_system, status, token_version) "
                          "VALUES ('t1', 'aden', 'connected', 1)"))
    engine.dispose()
    ops = make_ops_engine(ops_url)  # opening brings it to head
    assert versions(ops_url) == [head_revision()] and set(inspect(ops).get_table_names()) >= CHART_TABLES
    from ledger_pipeline.charts import chart_checks, load_charts

    assert load_charts(ops).empty and chart_checks(ops).empty
    with ops.connect() as conn:
        assert conn.execute(text("SELECT source_system FROM integrations")).scalar_one() == "aden"
    ops.dispose()
    migrate("downgrade", "0004")
    assert set(inspect(engine).get_table_names()) == OPS_TABLES - CHART_TABLES | {"alembic_version"}
    engine.dispose()


def test_the_alembic_command_line_sees_the_same_migrations(tmp_path: Path) -> None:
    """Operators can inspect or run the migrations by hand (`alembic -c .../alembic.ini ...`)."""
    url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    make_ops_engine(url).dispose()
    ini = PROJECT_ROOT / "ledger_pipeline" / "state" / "migrations" / "alembic.ini"
    env = {**os.environ, "LEDGER_OPS_DATABASE_URL": url,
           "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "alembic", "-c", str(ini), "current"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{head_revision()} (head)" in out.stdout
