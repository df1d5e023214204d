"""R2a's tables (SQLAlchemy 2.0). The same models run on SQLite (embedded default) and Postgres."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

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
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CATEGORIES = ("revenue", "cogs", "expense")


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3), default="IDR")
    profile: Mapped[str | None] = mapped_column(String(40))
    joined_on: Mapped[dt.date | None] = mapped_column(Date)
    left_on: Mapped[dt.date | None] = mapped_column(Date)


class R2aTransaction(Base):
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


class Integration(Base):
    __tablename__ = "integrations"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_system: Mapped[str] = mapped_column(String(20), primary_key=True, default="jurnal")
    company_id: Mapped[str | None] = mapped_column(String(64))
    access_token: Mapped[str | None] = mapped_column(Text)  # Fernet ciphertext, never plaintext
    refresh_token: Mapped[str | None] = mapped_column(Text)  # Fernet ciphertext, never plaintext
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(20), default="connected")  # connected | needs_reauth
    status_detail: Mapped[str | None] = mapped_column(Text)
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    extra: Mapped[str | None] = mapped_column(Text)  # non-secret JSON: realm/organization id, api_domain, ...


class OAuthState(Base):
    """CSRF state of a pending authorization: single use, expires after 10 minutes."""

    __tablename__ = "oauth_states"
    state: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


def make_engine(url: str) -> Engine:
    """An engine with the tables (R2a's and the operational state's) created or extended on demand."""
    import ledger_pipeline.state.models  # noqa: F401  (registers the operational tables on Base)

    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def _add_missing_columns(engine: Engine) -> None:
    """Columns added to a model since a database was created (nullable ones only): ALTER TABLE ADD COLUMN."""
    from sqlalchemy import inspect

    inspector = inspect(engine)
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for col in table.columns:
                if col.name not in have and col.nullable:
                    conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {col.name} "
                                         f"{col.type.compile(engine.dialect)}")
