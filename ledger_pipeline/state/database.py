"""The operational database (LEDGER_OPS_DATABASE_URL): opened with its schema brought to Alembic's head.

`make_ops_engine(url)` is the one way in. The first time a process opens a database it runs `alembic upgrade head`
programmatically (ledger_pipeline/state/migrations/), serialised across processes: on Postgres inside one
transaction holding a transaction-level advisory lock (DDL is transactional there, so a second process waits, then
finds the schema at head); on SQLite under a file lock next to the database file. A database already at head costs
one SELECT on alembic_version.

Operators can run the same migrations by hand (`alembic -c ledger_pipeline/state/migrations/alembic.ini upgrade
head`, or `current` / `history`), against LEDGER_OPS_DATABASE_URL.
"""

from __future__ import annotations

import contextlib
import threading
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key shared by every process migrating the operational database ("ledger-o" in ASCII)
ADVISORY_LOCK_KEY = 0x6C65646765722D6F
MIGRATION_LOCK_TIMEOUT = 300.0  # seconds a process waits for another one's migration (SQLite file lock)

_migrated: set[str] = set()  # URLs this process has brought to head
_guard = threading.Lock()


def make_ops_engine(url: str) -> Engine:
    """An engine on the operational database, its schema at Alembic's head (migrated on first open per process).

    SQLite: the parent folder is created, WAL journal and synchronous=NORMAL on every connection. Postgres:
    pre-pinged pool. Raises when the database cannot be migrated
    (e.g. a read-only role): `OpsDatabaseError`, naming the URL (password hidden), the problem and the fix.
    """
    if not url:
        raise OpsDatabaseError("no operational database: set LEDGER_OPS_DATABASE_URL (the production profile has no "
                               "default: every host must share one database, e.g. postgresql+psycopg://...; never "
                               "R2a's)")
    engine = _engine(url)
    key = engine.url.render_as_string(hide_password=False)
    with _guard:
        if key not in _migrated:
            try:
                upgrade(engine)
            except Exception as exc:
                engine.dispose()
                raise OpsDatabaseError(
                    f"operational database {engine.url.render_as_string(hide_password=True)}: bringing its schema "
                    f"to revision {head_revision()} failed ({type(exc).__name__}: {exc}). Fix: point "
                    "LEDGER_OPS_DATABASE_URL at a database whose role may create and alter tables (never R2a's "
                    "read-only one), or run `alembic -c ledger_pipeline/state/migrations/alembic.ini upgrade head` "
                    "as its owner") from exc
            _migrated.add(key)
    return engine


class OpsDatabaseError(RuntimeError):
    """The operational database could not be opened at the schema this code needs (the message names the fix)."""


def upgrade(engine: Engine) -> bool:
    """`alembic upgrade head` on `engine`'s database, once across concurrent processes. True when it migrated."""
    if _at_head(engine):
        return False
    with _migration_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        if _current_heads(conn) == _script_heads():  # another process did it while we waited
            return False
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return True


def alembic_config() -> Config:
    """Alembic's configuration for the operational database, without an ini file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    (head,) = _script_heads()
    return head


@cache
def _script_heads() -> tuple[str, ...]:
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def _current_heads(conn: Connection) -> tuple[str, ...]:
    return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))


def _at_head(engine: Engine) -> bool:
    with engine.connect() as conn:
        return _current_heads(conn) == _script_heads()


def _migration_lock(engine: Engine) -> contextlib.AbstractContextManager:
    """A file lock beside an SQLite database (Postgres serialises with its advisory lock instead)."""
    db = engine.url.database or ""
    if engine.dialect.name == "sqlite" and db not in ("", ":memory:") and not db.startswith("file:"):
        return FileLock(f"{db}.migrate.lock", timeout=MIGRATION_LOCK_TIMEOUT)
    return contextlib.nullcontext()


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    db = parsed.database or ""
    if db not in ("", ":memory:") and not db.startswith("file:"):
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # noqa: ANN001
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine
