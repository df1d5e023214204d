"""R2a is another team's production database, read with a read-only role: a whole close never writes to it nor runs
DDL there (Postgres: a role with SELECT only; SQLite: the file is byte-for-byte unchanged), and the operational
state lives in a database of its own (LEDGER_OPS_DATABASE_URL, default data/ops.sqlite)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.extract import extract
from ledger_pipeline.r2a.models import R2aBase, make_engine
from ledger_pipeline.settings import load_settings, resolve_rate_limit_scale
from ledger_pipeline.state.database import OpsDatabaseError, make_ops_engine
from ledger_pipeline.state.models import OpsBase
from ledger_pipeline_tests.conftest import PG_ENV
from ledger_pipeline_tests.helpers import CLOSE, connect, materialize, materialize_gl, query
from ledger_pipeline_tests.test_posting import assert_exactly_once

R2A_TABLES = {"tenants", "r2a_transactions"}
from ledger_pipeline_tests.test_migrations import OPS_TABLES as _MIGRATED  # noqa: E402 - one list of ops tables

OPS_TABLES = _MIGRATED | {"alembic_version"}
MONTH = dt.date(2025, 1, 1)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_r2a_and_ops_models_have_separate_metadata_and_no_import_circle() -> None:
    assert set(R2aBase.metadata.tables) == R2A_TABLES
    assert set(OpsBase.metadata.tables) == OPS_TABLES - {"alembic_version"}
    code = ("import sys, ledger_pipeline.{0}.models; "
            "assert not [m for m in sys.modules if m.startswith('ledger_pipeline.{1}')], 'import circle'")
    for this, other in (("r2a", "state"), ("state", "r2a")):
        out = subprocess.run([sys.executable, "-c", code.format(this, other)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        assert out.returncode == 0, out.stderr


def test_opening_r2a_runs_no_ddl(tmp_path: Path) -> None:
    """make_engine creates nothing: not the file (read-only), not a table (read-write, as the seed opens it)."""
    url = f"sqlite:///{tmp_path / 'r2a.sqlite'}"
    with pytest.raises(sqlalchemy.exc.OperationalError), make_engine(url, read_only=True).connect():
        pass
    assert not (tmp_path / "r2a.sqlite").exists(), "a read-only open never creates R2a's file"
    engine = make_engine(url)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert inspect(engine).get_table_names() == []
    seeding.create_tables(engine)  # only the dev/demo seed creates R2a's tables, explicitly
    assert set(inspect(engine).get_table_names()) == R2A_TABLES
    engine.dispose()


def test_the_ops_database_defaults_to_its_own_file_never_r2a(settings, monkeypatch) -> None:  # noqa: ANN001
    assert settings.ops_database_url == f"sqlite:///{settings.data_dir / 'ops.sqlite'}"
    assert settings.ops_database_url != settings.r2a_database_url
    monkeypatch.setenv("LEDGER_PROFILE", "production")  # hosts share one database: no per-host file by default
    assert load_settings().ops_database_url == ""
    with pytest.raises(OpsDatabaseError, match="set LEDGER_OPS_DATABASE_URL"):
        make_ops_engine(load_settings().ops_database_url)
    monkeypatch.setenv("LEDGER_OPS_DATABASE_URL", "postgresql+psycopg://ops@db/ops")
    assert load_settings().ops_database_url == "postgresql+psycopg://ops@db/ops"


def test_rate_limit_scale_reads_ledger_then_the_deprecated_jurnal_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import ledger_pipeline.settings as settings_module

    assert resolve_rate_limit_scale({}) == 1.0
    assert resolve_rate_limit_scale({"LEDGER_RATE_LIMIT_SCALE": "50", "JURNAL_RATE_LIMIT_SCALE": "7"}) == 50.0
    monkeypatch.setattr(settings_module, "_warned_deprecated_scale", False)
    with pytest.warns(FutureWarning, match="JURNAL_RATE_LIMIT_SCALE is deprecated.*LEDGER_RATE_LIMIT_SCALE"):
        assert resolve_rate_limit_scale({"JURNAL_RATE_LIMIT_SCALE": "7"}) == 7.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_rate_limit_scale({"JURNAL_RATE_LIMIT_SCALE": "8"}) == 8.0, "warned once per process"
    monkeypatch.setenv("LEDGER_RATE_LIMIT_SCALE", "25")
    monkeypatch.setenv("JURNAL_RATE_LIMIT_SCALE", "1000")
    assert load_settings().rate_limit_scale == 25.0
    with pytest.raises(ValueError, match="LEDGER_RATE_LIMIT_SCALE='fast' is not a positive number"):
        resolve_rate_limit_scale({"LEDGER_RATE_LIMIT_SCALE": "fast"})
    with pytest.raises(ValueError, match="JURNAL_RATE_LIMIT_SCALE='0'"):
        resolve_rate_limit_scale({"JURNAL_RATE_LIMIT_SCALE": "0"})


def test_a_close_leaves_the_sqlite_r2a_file_unchanged(settings, sandbox) -> None:  # noqa: ANN001
    """The whole close through the CLI (`ledger-pipeline run`): R2a's file is byte-for-byte what the seed wrote,
    with its two tables only; the operational state is in ops.sqlite."""
    r2a_file = settings.data_dir / "r2a.sqlite"
    writer = make_engine(settings.r2a_database_url)
    seeding.seed(writer, 6, 1, MONTH, seed=4)
    with writer.connect() as conn:
        tenants = list(conn.execute(text("SELECT tenant_id FROM tenants ORDER BY 1")).scalars())
    writer.dispose()  # the last connection checkpoints the WAL into the file
    wal = Path(f"{r2a_file}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    before = sha256(r2a_file)

    connect(tenants)
    materialize_gl()
    out = subprocess.run([sys.executable, "-m", "ledger_pipeline.cli", "run", "--month", f"{MONTH:%Y-%m}"],
                         capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert_exactly_once(settings, sandbox.url)
    assert query(settings, "SELECT COUNT(*) FROM ledger.journal_entries")[0][0] == len(tenants)

    assert sha256(r2a_file) == before, "a close wrote to R2a's database"
    assert not wal.exists() or wal.stat().st_size == 0, "a close left writes in R2a's WAL"
    assert tables(settings.r2a_database_url) == R2A_TABLES
    assert tables(settings.ops_database_url) == OPS_TABLES
    pipeline_handle = make_engine(settings.r2a_database_url, read_only=True)  # what the r2a resource opens
    with pytest.raises(sqlalchemy.exc.OperationalError, match="readonly database"), pipeline_handle.begin() as conn:
        conn.execute(text("DELETE FROM tenants"))


@pytest.fixture
def pg_reader(pg_url: str) -> Iterator[tuple[str, str]]:
    """(R2a's URL as a role with SELECT only on R2a's tables, admin URL of a second schema for the ops state).

    R2a's tables are seeded in pg_url's schema by the admin; the role gets USAGE on that schema and SELECT on its
    tables, nothing else (since Postgres 15 PUBLIC may not CREATE in `public` either)."""
    seeding.seed(make_engine(pg_url), 8, 1, MONTH, seed=6)
    schema = make_url(pg_url).query["options"].split("=", 1)[1]
    role, ops_schema = f"r2a_reader_{uuid.uuid4().hex[:8]}", f"ops_{uuid.uuid4().hex[:10]}"
    admin = create_engine(os.environ[PG_ENV])
    with admin.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN NOINHERIT"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
        conn.execute(text(f"GRANT SELECT ON {schema}.tenants, {schema}.r2a_transactions TO {role}"))
        conn.execute(text(f"CREATE SCHEMA {ops_schema}"))
    reader = make_url(pg_url).set(username=role, password=None).render_as_string(hide_password=False)
    ops = pg_url.replace(f"search_path%3D{schema}", f"search_path%3D{ops_schema}")
    yield reader, ops
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {ops_schema} CASCADE"))
        conn.execute(text(f"DROP OWNED BY {role}"))
        conn.execute(text(f"DROP ROLE {role}"))
    admin.dispose()


@pytest.mark.postgres
def test_a_close_runs_on_a_select_only_postgres_role(settings, sandbox, pg_reader, monkeypatch) -> None:  # noqa: ANN001
    reader, ops = pg_reader
    # the role really is read-only: any DDL or DML from it is refused
    probe = make_engine(reader)
    for statement in ("CREATE TABLE probe (a int)", "INSERT INTO tenants (tenant_id, name) VALUES ('x', 'x')",
                      "UPDATE r2a_transactions SET amount = 0", "DELETE FROM tenants"):
        with pytest.raises(sqlalchemy.exc.ProgrammingError, match="permission denied"), probe.begin() as conn:
            conn.execute(text(statement))
    with pytest.raises(OpsDatabaseError, match="LEDGER_OPS_DATABASE_URL.*never R2a's read-only one"):
        make_ops_engine(reader)  # R2a's role cannot hold the operational state: said so, with the fix
    probe.dispose()

    monkeypatch.setenv("R2A_DATABASE_URL", reader)
    monkeypatch.setenv("LEDGER_OPS_DATABASE_URL", ops)
    s = load_settings()
    x = extract(make_engine(s.r2a_database_url, read_only=True), MONTH, dt.date(2025, 2, 1))
    assert len(x.monthly) == 8 and x.rejections.empty

    connect([f"t{i:05d}" for i in range(1, 9)])  # tokens go to the ops schema
    materialize_gl()
    assert materialize(CLOSE, f"{MONTH:%Y-%m-%d}").success
    assert_exactly_once(settings, sandbox.url)
    assert query(settings, "SELECT COUNT(*) FROM accounting.postings WHERE status = 'posted'")[0][0] == 8
    assert set(query(settings, "SELECT status FROM accounting.reconciliation")) == {("match",)}
    assert tables(reader) == R2A_TABLES, "nothing was created in R2a's schema"
    assert tables(ops) == OPS_TABLES
