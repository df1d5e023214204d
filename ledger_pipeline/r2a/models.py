"""R2a's tables (SQLAlchemy 2.0), as we read them. The same models run on SQLite (embedded default) and Postgres.

R2a is another team's production database, reached with a read-only role: these models describe its tables for
reading, on their own metadata (`R2aBase`), apart from our operational state (`ledger_pipeline.state.models`).
`make_engine` never runs DDL on R2a; only the dev/demo seed (`ledger_pipeline.r2a.seed.create_tables`) creates
these tables, explicitly, in its own code path.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Engine,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    create_engine,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CATEGORIES = ("revenue", "cogs", "expense")


class R2aBase(DeclarativeBase):
    """R2a's tables only: never created nor altered by the pipeline (see the module docstring)."""


class Tenant(R2aBase):
    __tablename__ = "tenants"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3), default="IDR")
    profile: Mapped[str | None] = mapped_column(String(40))
    joined_on: Mapped[dt.date | None] = mapped_column(Date)
    left_on: Mapped[dt.date | None] = mapped_column(Date)


class R2aTransaction(R2aBase):
    __tablename__ = "r2a_transactions"
    # No FK on tenant_id on purpose: R2a's real data has orphans, and the extractor must report them.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    txn_date: Mapped[dt.date] = mapped_column(Date)
    category: Mapped[str | None] = mapped_column(String(20))
    subcategory: Mapped[str | None] = mapped_column(String(60))
    # scale 3: every ISO 4217 currency books are kept in (KWD has 3 decimals; NUMERIC(18,2) would round them)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(21, 3, asdecimal=True))
    currency: Mapped[str | None] = mapped_column(String(3))
    description: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_r2a_transactions_date_tenant", "txn_date", "tenant_id"),)


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine on R2a's database (R2A_DATABASE_URL). It never runs DDL: no table is created or altered here.

    read_only=True is how the pipeline reads R2a: on SQLite the file is opened with `mode=ro` (any write raises
    `sqlite3.OperationalError: attempt to write a readonly database`; the file must exist), on Postgres every
    transaction is READ ONLY (a write raises `ReadOnlySqlTransaction`), on top of the read-only role production
    uses. read_only=False is for what plays R2a's own team: the dev/demo seed and tests that add source rows.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if read_only:
            parsed = _sqlite_read_only(parsed)
        return create_engine(parsed, connect_args={"timeout": 60})
    if read_only and parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, pool_pre_ping=True, execution_options={"postgresql_readonly": True})
    return create_engine(parsed, pool_pre_ping=True)


def sqlite_path(url: str | URL) -> Path | None:
    """The file an SQLite URL names (None: in memory, or not SQLite)."""
    parsed = make_url(url) if isinstance(url, str) else url
    db = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or db in ("", ":memory:") or db.startswith("file:"):
        return None
    return Path(db)


def _sqlite_read_only(url: URL) -> URL:
    """The same SQLite database as a `file:` URI opened with mode=ro (https://www.sqlite.org/uri.html)."""
    query = {**url.query, "mode": "ro", "uri": "true"}
    path = sqlite_path(url)
    if path is None:  # already a file: URI, or in memory (nothing to protect)
        return url.set(query=query) if (url.database or "").startswith("file:") else url
    return url.set(database="file:" + quote(str(path.resolve())), query=query)
