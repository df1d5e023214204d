"""The posting outbox in the operational database: the engine's durable state (each save its own transaction).

Every host reads and writes it through SQL, so a worker never needs another host's disk; DuckDB's
`accounting.postings` is a published copy (warehouse/), never the state itself.
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from ledger_pipeline.posting import PostingRow
from ledger_pipeline.state.models import Posting

COLUMNS = ["system", "tenant_id", "period", "custom_id", "remote_id", "remote_line_ids", "remote_state",
           "content_hash", "action", "status", "attempts", "error", "posted_at", "verified_at", "updated_at",
           "run_id"]


class SqlPostingStore:
    def __init__(self, engine: Engine, run_id: str | None = None):
        self.engine, self.run_id = engine, run_id
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert

    def load(self, start: dt.date, end: dt.date, tenants: list[str] | None = None
             ) -> dict[str, dict[str, dict[str, PostingRow]]]:
        """{system: {tenant_id: {custom_id: row}}} for the periods in [start, end)."""
        table = Posting.__table__
        stmt = select(table).where(table.c.period >= start, table.c.period < end)
        if tenants is not None:
            stmt = stmt.where(table.c.tenant_id.in_(tenants))
        out: dict[str, dict[str, dict[str, PostingRow]]] = {}
        with self.engine.connect() as conn:
            for p in conn.execute(stmt).mappings():
                out.setdefault(p["system"], {}).setdefault(p["tenant_id"], {})[p["custom_id"]] = _row(p)
        return out

    def save(self, rows: list[PostingRow]) -> None:
        if not rows:
            return
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        values = [{
            "system": r.system, "custom_id": r.custom_id, "tenant_id": r.tenant_id, "period": r.period,
            "remote_id": r.remote_id, "remote_line_ids": ",".join(r.remote_line_ids),
            "remote_state": json.dumps(r.remote_state, sort_keys=True) if r.remote_state else None,
            "content_hash": r.content_hash, "action": r.action, "status": r.status, "attempts": r.attempts,
            "error": r.error, "posted_at": r.posted_at, "verified_at": r.verified_at, "updated_at": now,
            "run_id": self.run_id,
        } for r in rows]
        stmt = self._insert(Posting).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["system", "custom_id"],
            set_={c: stmt.excluded[c] for c in COLUMNS if c not in ("system", "custom_id")})
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def frame(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        """The window's rows as a frame for the warehouse copy (accounting.postings)."""
        with self.engine.connect() as conn:
            frame = pd.read_sql_query(select(*[getattr(Posting, c) for c in COLUMNS])
                                      .where(Posting.period >= start, Posting.period < end), conn)
        return frame.reindex(columns=COLUMNS)


def _row(p: dict) -> PostingRow:
    return PostingRow(
        p["system"], p["tenant_id"], p["period"], p["custom_id"], p["content_hash"], p["status"], p["action"],
        p["remote_id"], tuple(i for i in (p["remote_line_ids"] or "").split(",") if i),
        json.loads(p["remote_state"]) if p["remote_state"] else {}, p["attempts"] or 0, p["error"], p["posted_at"],
        p["verified_at"])
