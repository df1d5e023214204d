"""Charts of accounts, every system alike, kept in the operational database (their one home): `gl_accounts` (each
tenant's latest chart), `gl_ingest_status` (the outcome of its last read) and `gl_account_changes` (what changed
between reads). DuckDB's accounting.gl_accounts, gl_ingest_status and gl_account_changes are the analysts' copy
(`publish_charts`), never read back.

- `ingest_charts`: one read per (system, tenant) through its system's Connection, stored; a failing tenant is
  recorded and keeps its previous chart, the others go on.
- `load_charts`, `chart_checks`: what the journal resolves accounts against, and what the close's stale-chart step
  (gl_accounts_fresh) decides from.
- `rechart_for`: the posting engine's chart retry, the same in the embedded and the production profile (no DuckDB).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Connection, Engine, Table, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from ledger_pipeline.ledger.sink import CanonicalEntry, SinkError
from ledger_pipeline.state.ledger import save_lines
from ledger_pipeline.state.models import GlAccount, GlAccountChange, GlIngestStatus
from ledger_pipeline.systems import title as system_title

ACCOUNT_COLUMNS = ["system", "tenant_id", "account_id", "number", "name", "category", "parent_id", "archived"]
STATUS_COLUMNS = ["system", "tenant_id", "status", "accounts", "error"]
CHANGE_COLUMNS = ["system", "tenant_id", "account_id", "change", "number", "name", "previous_name", "archived"]
_CHUNK = 500  # tenants per IN list (bound parameters stay well under every driver's limit)

# (system, tenant, entries) -> (entries to retry with the chart's current ids | None, why): posting/window.py's hook
Rechart = Callable[[str, str, list[CanonicalEntry]], tuple[list[CanonicalEntry] | None, str]]


@dataclass
class ChartFetch:
    accounts: pd.DataFrame  # ACCOUNT_COLUMNS, for the tenants fetched
    status: pd.DataFrame  # STATUS_COLUMNS; status ok | failed | needs_reauth | deferred


def fetch_charts(tenants: Iterable[tuple[str, str]], connection_for: Callable[[str], object],
                 progress: Callable[[int], None] | None = None) -> ChartFetch:
    """One chart read per (system, tenant). A failing tenant is recorded and keeps its previous chart."""
    rows, status = [], []
    for i, (system, tenant) in enumerate(tenants, 1):
        try:
            chart = connection_for(system).fetch_chart(tenant)
        except SinkError as exc:
            kind = exc.kind if exc.kind in ("needs_reauth", "deferred") else "failed"
            status.append((system, tenant, kind, 0, f"{exc} (kept the previous chart; retried on the next run)"))
        else:
            rows += [(system, tenant, a.account_id, a.number, a.name, a.category, a.parent_id, a.archived)
                     for a in chart]
            status.append((system, tenant, "ok", len(chart), None))
        if progress:
            progress(i)
    frame = pd.DataFrame(rows, columns=ACCOUNT_COLUMNS)
    frame["archived"] = frame["archived"].astype(bool)
    return ChartFetch(frame, pd.DataFrame(status, columns=STATUS_COLUMNS))


def ingest_charts(engine: Engine, connections: Callable[[str], object], todo: list[tuple[str, str]], run_id: str,
                  progress: Callable[[int], None] | None = None) -> ChartFetch:
    """Read the `todo` (system, tenant) charts and store them in the operational database (`save_charts`)."""
    fetched = fetch_charts(todo, connections, progress)
    save_charts(engine, fetched, run_id)
    return fetched


def save_charts(engine: Engine, fetched: ChartFetch, run_id: str, now: dt.datetime | None = None) -> None:
    """In one transaction: each tenant read OK gets its chart replaced and the changes since its stored chart
    appended; every tenant read gets its status (a failed read keeps the previous chart)."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    status = fetched.status
    ok = status.loc[status["status"] == "ok", "tenant_id"].tolist()
    accounts = fetched.accounts.drop_duplicates(["tenant_id", "account_id"], keep="last")  # a page read twice
    with engine.begin() as conn:
        changes = diff_charts(_read(conn, GlAccount.__table__, ACCOUNT_COLUMNS, ok), accounts)
        _replace(conn, GlAccount.__table__, ok, accounts, run_id=run_id, fetched_at=now)
        _replace(conn, GlIngestStatus.__table__, status["tenant_id"].tolist(), status, run_id=run_id, checked_at=now)
        if len(changes):
            conn.execute(insert(GlAccountChange), _records(changes, run_id=run_id, detected_at=now))


def load_charts(engine: Engine, tenants: list[str] | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """The stored charts (every tenant's, or these tenants'): `columns` (default ACCOUNT_COLUMNS, fetched_at,
    run_id)."""
    with engine.connect() as conn:
        return _read(conn, GlAccount.__table__, columns or [*ACCOUNT_COLUMNS, "fetched_at", "run_id"], tenants)


def account_count(engine: Engine) -> int:
    """Accounts stored, every tenant's chart."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(GlAccount)).scalar_one()


def chart_checks(engine: Engine) -> pd.DataFrame:
    """system, tenant_id, checked_at of each tenant whose last chart read succeeded (stale_tenants' `checked`)."""
    table = GlIngestStatus.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.system, table.c.tenant_id, table.c.checked_at)
                            .where(table.c.status == "ok")).all()
    return pd.DataFrame(rows, columns=["system", "tenant_id", "checked_at"])


def fetched_by(engine: Engine, run_id: str) -> list[str]:
    """Tenants whose chart run `run_id` read OK (their last read)."""
    table = GlIngestStatus.__table__
    with engine.connect() as conn:
        return sorted(conn.execute(select(table.c.tenant_id).where(table.c.run_id == run_id,
                                                                   table.c.status == "ok")).scalars())


def stale_tenants(tenants: dict[str, str], checked: pd.DataFrame, max_age: dt.timedelta,
                  now: dt.datetime) -> list[tuple[str, str]]:
    """(system, tenant) whose chart was not fetched OK from its current system within max_age (pure).
    `checked`: system, tenant_id, checked_at of the last OK fetch per tenant."""
    fresh = {(r.system, r.tenant_id) for r in checked.itertuples(index=False)
             if pd.notna(r.checked_at) and now - pd.Timestamp(r.checked_at).to_pydatetime() <= max_age}
    return sorted((system, t) for t, system in tenants.items() if (system, t) not in fresh)


def diff_charts(previous: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Changes between two states of the same tenants' charts: added, renamed, renumbered, archived,
    unarchived, removed. Columns: CHANGE_COLUMNS."""
    key = ["system", "tenant_id", "account_id"]
    merged = previous[ACCOUNT_COLUMNS].merge(current[ACCOUNT_COLUMNS], on=key, how="outer",
                                             suffixes=("_old", "_new"), indicator=True)
    changes = []

    def emit(mask: pd.Series, change: str, side: str = "_new") -> None:
        part = merged[mask]
        changes.append(pd.DataFrame({
            "system": part["system"], "tenant_id": part["tenant_id"], "account_id": part["account_id"],
            "change": change, "number": part["number" + side], "name": part["name" + side],
            "previous_name": part["name_old"], "archived": part["archived" + side],
        }))

    both = merged["_merge"] == "both"
    emit(merged["_merge"] == "right_only", "added")
    emit(merged["_merge"] == "left_only", "removed", "_old")
    emit(both & (merged["name_old"] != merged["name_new"]), "renamed")
    emit(both & (merged["number_old"] != merged["number_new"]), "renumbered")
    emit(both & ~merged["archived_old"].astype(bool) & merged["archived_new"].astype(bool), "archived")
    emit(both & merged["archived_old"].astype(bool) & ~merged["archived_new"].astype(bool), "unarchived")
    out = pd.concat(changes, ignore_index=True)
    out["archived"] = out["archived"].astype(bool)
    return out.sort_values(["system", "tenant_id", "account_id", "change"], ignore_index=True)


def rechart_for(engine: Engine, connections: Callable[[str], object], run_id: str,
                recharted: set[str] | None = None) -> Rechart:
    """The posting engine's chart retry (the `postings` step here or a shard worker alike; it needs only the
    operational database): a tenant whose entry failed on a missing or archived account gets its chart read again
    from its own system and stored (`ingest_charts`), its accounts re-resolved by number, and its entries retried
    once, only if every account now resolves to an active one. The entries to post (`ledger_entries`) take the
    chart's current ids. Each tenant whose chart it read is added to `recharted`, so the caller can bring the DuckDB
    copy along (`publish_charts`, ledger.journal_lines)."""
    def rechart(system: str, tenant: str, entries: list[CanonicalEntry]) -> tuple[list[CanonicalEntry] | None, str]:
        title = system_title(system)
        fetched = ingest_charts(engine, connections, [(system, tenant)], run_id)
        if recharted is not None:
            recharted.add(tenant)
        status = fetched.status.iloc[0]
        if status["status"] != "ok":
            return None, f"could not refresh the tenant's {title} chart: {status['error']}"
        active = {a.number: a.account_id for a in fetched.accounts.itertuples(index=False) if not a.archived}
        missing = sorted({ln.account_number for e in entries for ln in e.lines if ln.account_number not in active})
        if missing:
            return None, (f"account(s) {', '.join(missing)} missing or archived in the tenant's {title} chart (just "
                          "refreshed): restore them there or change the account mapping, then re-run the month")
        # dataclasses.replace keeps the currency plan (exchange_rate and its planned content hash)
        retry = [dataclasses.replace(e, lines=tuple(dataclasses.replace(ln, account_id=active[ln.account_number])
                                                    for ln in e.lines)) for e in entries]
        save_lines(engine, retry)  # the stored entries follow the chart's current ids
        return retry, "chart refreshed"
    return rechart


def publish_charts(con, engine: Engine, tenants: list[str] | None = None) -> int:  # noqa: ANN001 (duckdb)
    """The analysts' copy: accounting.gl_accounts, gl_ingest_status and gl_account_changes in the DuckDB work file,
    replaced from the operational database for `tenants` (every tenant when None); returns the accounts copied.
    Call inside `transaction(con)` and publish the warehouse after."""
    from ledger_pipeline.warehouse.store import replace_rows

    where, params = ("TRUE", []) if tenants is None else ("tenant_id IN (SELECT unnest(?::VARCHAR[]))", [tenants])
    with engine.connect() as conn:
        accounts = _read(conn, GlAccount.__table__, [*ACCOUNT_COLUMNS, "fetched_at", "run_id"], tenants)
        status = _read(conn, GlIngestStatus.__table__, [*STATUS_COLUMNS, "checked_at", "run_id"], tenants)
        changes = _read(conn, GlAccountChange.__table__, [*CHANGE_COLUMNS, "detected_at", "run_id"], tenants, "id")
    replace_rows(con, "accounting.gl_accounts", accounts, where, params)
    replace_rows(con, "accounting.gl_ingest_status", status, where, params)
    replace_rows(con, "accounting.gl_account_changes", changes, where, params)
    return len(accounts)


def _chunks(tenants: list[str] | None) -> Iterator[list[str] | None]:
    if tenants is None:
        yield None
        return
    for i in range(0, len(tenants), _CHUNK):
        yield tenants[i:i + _CHUNK]


def _read(conn: Connection, table: Table, columns: list[str], tenants: list[str] | None,
          order: str | None = None) -> pd.DataFrame:
    """`columns` of `table`'s rows (every tenant's, or these tenants'), as a frame; archived as bool."""
    rows = []
    for part in _chunks(tenants):
        stmt = select(*(table.c[c] for c in columns))
        if part is not None:
            stmt = stmt.where(table.c.tenant_id.in_(part))
        rows += conn.execute(stmt.order_by(table.c[order]) if order else stmt).all()
    frame = pd.DataFrame(rows, columns=columns)
    if "archived" in frame:
        frame["archived"] = frame["archived"].astype(bool)
    return frame


def _replace(conn: Connection, table: Table, tenants: list[str], frame: pd.DataFrame, **same: object) -> None:
    """Delete `tenants`' rows of `table` and insert `frame`'s (with `same` in every row). An upsert: on Postgres a
    concurrent refresh of the same tenant (a shard's chart retry during the daily job) may have inserted a row since
    our DELETE; the later write wins."""
    for part in _chunks(tenants):
        conn.execute(delete(table).where(table.c.tenant_id.in_(part)))
    if len(frame):
        stmt = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)
        key = [c.name for c in table.primary_key]
        stmt = stmt.on_conflict_do_update(index_elements=key, set_={c.name: stmt.excluded[c.name]
                                                                    for c in table.columns if c.name not in key})
        conn.execute(stmt, _records(frame[[c.name for c in table.columns if c.name not in same]], **same))


def _records(frame: pd.DataFrame, **same: object) -> list[dict]:
    """Rows as plain Python values for an INSERT (None for missing, no numpy scalars), with `same` in every row."""
    columns = {c: frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in frame.columns}
    return [{**same, **dict(zip(columns, row, strict=True))} for row in zip(*columns.values(), strict=True)]
