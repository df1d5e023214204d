"""The operational state every host shares, in its own database (LEDGER_OPS_DATABASE_URL: `data/ops.sqlite` embedded,
Postgres in production), never R2a's: tokens (`integrations`), OAuth states, the charts of accounts (with their
fetch status and change history), the posting outbox, the window's entries to post, the shard assignments, the
exchange rates and the connection service's links, flows and connection health.

The schema is Alembic's (`ledger_pipeline/state/migrations/`), applied when the database is opened
(`ledger_pipeline.state.database.make_ops_engine`); a change to these models needs a new revision there
(test_migrations.py fails until the models and the migrations agree). DuckDB is the analysts' published copy of
this state, never the state itself.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Column, Date, DateTime, Index, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class OpsBase(DeclarativeBase):
    """The operational database's tables (their own metadata: R2a's are `ledger_pipeline.r2a.models.R2aBase`)."""


class Integration(OpsBase):
    """One tenant's connection to one accounting system: tokens encrypted at rest (state/vault.py). The table keeps
    the name `integrations` it had when it lived in R2a's database (0.2.0)."""

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


class OAuthState(OpsBase):
    """CSRF state of a pending authorization: single use, expires after 10 minutes."""

    __tablename__ = "oauth_states"
    state: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class Posting(OpsBase):
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


class ShardAssignment(OpsBase):
    """Which shard a tenant's posting runs on (stable; rebalanced only on purpose)."""

    __tablename__ = "shard_assignments"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    shard: Mapped[str] = mapped_column(String(20))
    assigned_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class LedgerEntry(OpsBase):
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


class ExchangeRate(OpsBase):
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


# The connection service's tables (ledger_pipeline/service/store.py reads and writes them; revision 0002).
service_link_uses = Table(  # one row per link that completed a connection: a second use is refused
    "service_link_uses", OpsBase.metadata,
    Column("nonce", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("system", String(20), nullable=False),
    Column("used_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
)

service_flows = Table(  # one row per authorisation in progress, keyed by its OAuth state
    "service_flows", OpsBase.metadata,
    Column("state", String(64), primary_key=True),
    Column("system", String(20), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("nonce", String(64), nullable=False),
    Column("flags", String(20), nullable=False, default=""),
    Column("binding_sha256", String(64), nullable=False),
    Column("link_expires_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
)

connection_health = Table(  # per (tenant, system): what we learnt of the connection, never a secret
    "connection_health", OpsBase.metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("system", String(20), primary_key=True),
    Column("company_name", Text),
    Column("home_currency", String(3)),
    Column("multicurrency", Integer),  # 1 on, 0 off, NULL not reported (connections.py, revision 0004)
    Column("currency_checked_at", DateTime),  # when the home currency was last read from the system
    Column("last_ok_at", DateTime),  # the last request that succeeded (connect, preflight)
    Column("last_check_at", DateTime),
    Column("last_check_ok", Integer),  # 1 passed, 0 failed, NULL never checked
    Column("last_check_detail", Text),  # the failed checks in an operator's words
    Column("last_check_failures", Text),  # the same as JSON: [{"name", "detail", "fix"}] (revision 0006)
    Column("connected_at", DateTime),
    Column("connected_via", String(20)),  # serve | cli
)


class RemoteChangeRecord(OpsBase):
    """The latest change a person made in a tenant's system to one of our entries (deleted, edited, moved), and what
    became of it: open, resolved, or accepted by an operator. Read and written by ledger_pipeline/remote_changes.py
    (revision 0003)."""

    __tablename__ = "remote_changes"
    system: Mapped[str] = mapped_column(String(20), primary_key=True)
    custom_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    period: Mapped[dt.date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(20))  # deleted | edited | moved
    status: Mapped[str] = mapped_column(String(20))  # open | resolved | accepted
    action: Mapped[str | None] = mapped_column(String(20))  # reported | held | recreated | overwritten | accepted
    remote_id: Mapped[str | None] = mapped_column(String(120))
    diff: Mapped[str | None] = mapped_column(Text)  # line by line, "; "-separated
    remote_hash: Mapped[str | None] = mapped_column(String(64))  # fingerprint of the system's entry as seen
    content_hash: Mapped[str | None] = mapped_column(String(64))  # our entry's content hash when seen
    locked: Mapped[int] = mapped_column(Integer, default=0)
    found_by: Mapped[str | None] = mapped_column(String(20))  # remote_read | close | repost
    found_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    resolution: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    run_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_remote_changes_period_tenant", "period", "tenant_id"),)


class RemotePolicyRecord(OpsBase):
    """What the close does with a tenant's remote changes (tenant `*`: the default for every tenant without a row)."""

    __tablename__ = "remote_change_policies"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    on_edit: Mapped[str] = mapped_column(String(20))  # hold | overwrite
    on_delete: Mapped[str] = mapped_column(String(20))  # recreate | hold
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class GlAccount(OpsBase):
    """Each tenant's latest chart of accounts, read from its accounting system (ledger_pipeline/charts.py): one row
    per account, inactive ones included (`archived`). Replaced per tenant on each successful read, so a tenant has
    one chart, from its current system. The journal resolves account numbers to ids here; DuckDB's
    accounting.gl_accounts is the analysts' copy (revision 0005)."""

    __tablename__ = "gl_accounts"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(120), primary_key=True)  # the system's id, as it writes it
    system: Mapped[str] = mapped_column(String(20))
    number: Mapped[str] = mapped_column(Text)  # "" when the system has none
    name: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    parent_id: Mapped[str | None] = mapped_column(String(120))
    archived: Mapped[bool] = mapped_column(Boolean, default=False)  # archived or inactive: unusable
    fetched_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    run_id: Mapped[str | None] = mapped_column(String(64))


class GlIngestStatus(OpsBase):
    """The outcome of each tenant's last chart read (ok | failed | needs_reauth | deferred): a tenant whose last read
    is not ok, or older than LEDGER_CHART_MAX_AGE_HOURS, is read again by the close (gl_accounts_fresh). A failed
    read keeps the tenant's previous chart (revision 0005)."""

    __tablename__ = "gl_ingest_status"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    system: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    accounts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    run_id: Mapped[str | None] = mapped_column(String(64))


class GlAccountChange(OpsBase):
    """Chart changes found between two reads of a tenant's chart (added, renamed, renumbered, archived, unarchived,
    removed), append only (revision 0005)."""

    __tablename__ = "gl_account_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    system: Mapped[str] = mapped_column(String(20))
    tenant_id: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str] = mapped_column(String(120))
    change: Mapped[str] = mapped_column(String(20))
    number: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    previous_name: Mapped[str | None] = mapped_column(Text)
    archived: Mapped[bool | None] = mapped_column(Boolean)
    detected_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    run_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_gl_account_changes_tenant", "tenant_id"),)
