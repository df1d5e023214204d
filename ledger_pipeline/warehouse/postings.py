"""jurnal.postings as the posting engine's durable state (each save is its own committed transaction)."""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd

from ledger_pipeline.posting import PostingRow
from ledger_pipeline.warehouse.store import replace_rows, transaction, window_where


class DuckDBPostingStore:
    def __init__(self, con: duckdb.DuckDBPyConnection, run_id: str):
        self.con, self.run_id = con, run_id

    def load(self, start: dt.date, end: dt.date) -> dict[str, dict[str, PostingRow]]:
        """{tenant_id: {custom_id: row}} for the window."""
        frame = self.con.execute(
            f"SELECT * FROM jurnal.postings WHERE {window_where()}", [start, end]).fetchdf()
        out: dict[str, dict[str, PostingRow]] = {}
        for r in frame.itertuples(index=False):
            ids = tuple(int(i) for i in (r.remote_line_ids or "").split(",") if i)
            out.setdefault(r.tenant_id, {})[r.custom_id] = PostingRow(
                r.tenant_id, pd.Timestamp(r.period).date(), r.custom_id, r.content_hash, r.status, r.action,
                None if pd.isna(r.remote_id) else int(r.remote_id), ids, int(r.attempts), r.error,
                None if pd.isna(r.posted_at) else pd.Timestamp(r.posted_at).to_pydatetime())
        return out

    def save(self, rows: list[PostingRow]) -> None:
        if not rows:
            return
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        frame = pd.DataFrame({
            "tenant_id": [r.tenant_id for r in rows], "period": [r.period for r in rows],
            "custom_id": [r.custom_id for r in rows],
            "remote_id": pd.array([r.remote_id for r in rows], dtype="Int64"),
            "remote_line_ids": [",".join(map(str, r.remote_line_ids)) for r in rows],
            "content_hash": [r.content_hash for r in rows], "action": [r.action for r in rows],
            "status": [r.status for r in rows], "attempts": [r.attempts for r in rows],
            "error": [r.error for r in rows], "posted_at": [r.posted_at for r in rows],
            "updated_at": now, "run_id": self.run_id,
        })
        ids = [r.custom_id for r in rows]
        with transaction(self.con):
            replace_rows(self.con, "jurnal.postings", frame, f"custom_id IN ({','.join('?' * len(ids))})", ids)
