"""The operational state every host shares (SQLite embedded, Postgres in production): the posting outbox, the
shard assignments and the exchange rates. Tokens and OAuth states are R2a's `integrations` and `oauth_states` tables
(r2a/models.py).

DuckDB is the analysts' published copy of this state, never the state itself.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ledger_pipeline.r2a.models import Base


class Posting(Base):
    """One row per (system, tenant-month): intent before every write, outcome after; the engine decides from it."""

    __tablename__ = "postings"
    system: Mapped[str] = mapped_column(String(20), primary_key=True)
    custom_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    period: Mapped[dt.date] = mapped_column(Date)
    remote_id: Mapped[str | None] = mapped_column(String(120))
    remote_line_ids: Mapped[str | None] = mapped_column(Text)
    remote_state: Mapped[str | None] = mapped_column(Text)  # JSON the sink needs next time (sync token, job id)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(20))
    # pending | posted | failed | deleted | awaiting_approval | rejected | submitted
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    posted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    verified_at: Mapped[dt.datetime | None] = mapped_column(DateTime)  # the system's answer matched what we sent
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    run_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_postings_period_tenant", "period", "tenant_id"),)


class ShardAssignment(Base):
    """Which shard a tenant's posting runs on (stable; rebalanced only on purpose)."""

    __tablename__ = "shard_assignments"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    shard: Mapped[str] = mapped_column(String(20))
    assigned_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class LedgerEntry(Base):
    """The window's journal entries (and rejected tenant-months) as posting needs them, so a posting worker on any
    host reads them from SQL, not from another host's DuckDB file. Written by the journal asset with the window."""

    __tablename__ = "ledger_entries"
    custom_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    period: Mapped[dt.date] = mapped_column(Date)
    rejected: Mapped[int] = mapped_column(Integer, default=0)  # 1: the month was rejected upstream (held remotely)
    transaction_date: Mapped[dt.date | None] = mapped_column(Date)
    memo: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str | None] = mapped_column(String(3))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    lines: Mapped[str | None] = mapped_column(Text)  # JSON [[line_no, account_id, number, debit, credit, text], ...]
    run_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_ledger_entries_period_tenant", "period", "tenant_id"),)


class ExchangeRate(Base):
    """One exchange rate per (date, from_currency, to_currency): 1 from_currency = rate to_currency on rate_date.
    Loaded by `ledger-pipeline rates load FILE.csv` (a re-load replaces the pair's rate for that date); `rate` is the
    exact decimal text (SQLite has no exact decimal type), read back as a Decimal. See ledger_pipeline/rates.py."""

    __tablename__ = "exchange_rates"
    rate_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    from_currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    to_currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    rate: Mapped[str] = mapped_column(String(48))
    source: Mapped[str | None] = mapped_column(Text)  # the file it was loaded from
    loaded_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
