"""Remote changes and the per-tenant policy in the operational database (state/models.py, Alembic revision 0003).

`remote_changes`: one row per (system, custom_id), the latest change a person made in the system to an entry we
posted (deleted, edited, moved; see reconcile.py), with its line-by-line diff, who found it (the drift read, a close,
`repost`), and its status: open (the next close acts on it under the tenant's policy, or holds it for a decision),
resolved (the entry is ours again), accepted (an operator accepted the system's version; its fingerprint is kept,
so the next close leaves it while neither side changes).

`remote_change_policies`: per tenant (`*` = every tenant without its own row): on_edit hold|overwrite, on_delete
recreate|hold. Without a row the default is hold / recreate (reconcile.Policy). Set with
`ledger-pipeline decisions [--tenant T] --on-edit overwrite|hold [--on-delete recreate|hold]`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ledger_pipeline.reconcile import DEFAULT_POLICY, Policy, RemoteChange
from ledger_pipeline.state.models import RemoteChangeRecord, RemotePolicyRecord

ALL_TENANTS = "*"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _change(r: dict) -> RemoteChange:
    return RemoteChange(r["system"], r["tenant_id"], r["period"], r["custom_id"], r["kind"], r["remote_id"] or "",
                        r["diff"] or "", r["remote_hash"], r["content_hash"], r["status"], r["action"] or "",
                        r["found_by"] or "", r["found_at"], bool(r["locked"]), r["resolution"] or "",
                        r["resolved_at"])


class RemoteChangeStore:
    """Reads and writes remote changes and policies; every write is its own committed transaction."""

    def __init__(self, engine: Engine, run_id: str | None = None):
        """`engine`: the operational database, opened with `state.database.make_ops_engine` (schema at head)."""
        self.engine, self.run_id = engine, run_id
        self._insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert

    # -- changes -----------------------------------------------------------------------------------------------------
    def load(self, start: dt.date, end: dt.date, tenants: list[str] | None = None, *,
             statuses: tuple[str, ...] = ("open", "accepted")) -> dict[str, dict[str, RemoteChange]]:
        """{tenant_id: {custom_id: change}} for the periods in [start, end) (open and accepted ones by default)."""
        t = RemoteChangeRecord.__table__
        stmt = select(t).where(t.c.period >= start, t.c.period < end, t.c.status.in_(statuses))
        if tenants is not None:
            stmt = stmt.where(t.c.tenant_id.in_(tenants))
        out: dict[str, dict[str, RemoteChange]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(stmt).mappings():
                out.setdefault(r["tenant_id"], {})[r["custom_id"]] = _change(r)
        return out

    def all_open(self, tenant_id: str | None = None) -> list[RemoteChange]:
        t = RemoteChangeRecord.__table__
        stmt = select(t).where(t.c.status == "open").order_by(t.c.tenant_id, t.c.period)
        if tenant_id is not None:
            stmt = stmt.where(t.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            return [_change(r) for r in conn.execute(stmt).mappings()]

    def record(self, changes: list[RemoteChange]) -> None:
        """Upsert the latest change per (system, custom_id)."""
        if not changes:
            return
        values = [{
            "system": c.system, "custom_id": c.custom_id, "tenant_id": c.tenant_id, "period": c.period,
            "kind": c.kind, "status": c.status, "action": c.action or None, "remote_id": c.remote_id or None,
            "diff": c.diff or None, "remote_hash": c.remote_hash, "content_hash": c.content_hash,
            "locked": int(c.locked), "found_by": c.found_by, "found_at": c.found_at or _now(),
            "resolution": c.resolution or None, "resolved_at": c.resolved_at, "run_id": self.run_id,
        } for c in {(c.system, c.custom_id): c for c in changes}.values()]
        stmt = self._insert(RemoteChangeRecord).values(values)
        stmt = stmt.on_conflict_do_update(index_elements=["system", "custom_id"], set_={
            c: stmt.excluded[c] for c in values[0] if c not in ("system", "custom_id")})
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def resolve(self, system: str, custom_ids: list[str], resolution: str) -> int:
        """Mark open (or accepted) changes of these entries resolved: the entry is ours again."""
        if not custom_ids:
            return 0
        t = RemoteChangeRecord.__table__
        with self.engine.begin() as conn:
            return conn.execute(update(t).where(t.c.system == system, t.c.custom_id.in_(custom_ids),
                                                t.c.status.in_(("open", "accepted")))
                                .values(status="resolved", resolution=resolution, resolved_at=_now(),
                                        run_id=self.run_id)).rowcount

    def resolve_verified(self, state: dict[str, dict[str, dict]], how: str) -> list[RemoteChange]:
        """Open changes whose entry the system has since answered with exactly ours (a verified create, update or
        look-up after the change was found) are resolved. `state`: system -> tenant -> custom_id -> PostingRow."""
        done: list[RemoteChange] = []
        t = RemoteChangeRecord.__table__
        with self.engine.connect() as conn:  # open changes are few: read them all, match them to the state here
            open_rows = [_change(r) for r in conn.execute(select(t).where(t.c.status == "open")).mappings()]
        for c in open_rows:
            row = state.get(c.system, {}).get(c.tenant_id, {}).get(c.custom_id)
            if row is not None and row.status == "posted" and row.verified_at is not None and (
                    c.found_at is None or row.verified_at > c.found_at):
                what = {"deleted": "re-created", "edited": "updated to our entry", "moved": "updated to our entry"}
                done.append(replace(c, status="resolved", resolved_at=_now(),
                                    resolution=f"{what[c.kind]} by {how} at {row.verified_at:%Y-%m-%d %H:%M:%S} UTC"))
        self.record(done)
        return done

    # -- policies ----------------------------------------------------------------------------------------------------
    def policies(self, tenants: list[str] | None = None) -> dict[str, Policy]:
        """{tenant: policy} for `tenants` (every tenant with a row when None), the `*` row or the default else."""
        with self.engine.connect() as conn:
            rows = {r.tenant_id: Policy(r.on_edit, r.on_delete) for r in conn.execute(
                select(RemotePolicyRecord.__table__))}
        default = rows.get(ALL_TENANTS, DEFAULT_POLICY)
        if tenants is None:
            return {t: p for t, p in rows.items() if t != ALL_TENANTS}
        return {t: rows.get(t, default) for t in tenants}

    def policy(self, tenant_id: str) -> Policy:
        return self.policies([tenant_id])[tenant_id]

    def set_policy(self, tenant_id: str, on_edit: str | None = None, on_delete: str | None = None) -> Policy:
        """Set a tenant's policy (tenant `*`: the default); unset parts keep their current value."""
        current = self.policy(tenant_id)
        new = Policy(on_edit or current.on_edit, on_delete or current.on_delete)  # type: ignore[arg-type]
        if new.on_edit not in ("hold", "overwrite") or new.on_delete not in ("recreate", "hold"):
            raise ValueError(f"unknown policy {new}: on_edit hold|overwrite, on_delete recreate|hold")
        stmt = self._insert(RemotePolicyRecord).values(tenant_id=tenant_id, on_edit=new.on_edit,
                                                       on_delete=new.on_delete, updated_at=_now())
        stmt = stmt.on_conflict_do_update(index_elements=["tenant_id"], set_={
            "on_edit": stmt.excluded.on_edit, "on_delete": stmt.excluded.on_delete,
            "updated_at": stmt.excluded.updated_at})
        with self.engine.begin() as conn:
            conn.execute(stmt)
        return new

    def decisions(self, tenant_id: str | None = None) -> list[tuple[RemoteChange, Policy]]:
        """Open changes the tenant's policy holds for an operator's decision, oldest first."""
        changes = self.all_open(tenant_id)
        policies = self.policies(sorted({c.tenant_id for c in changes}))
        held = [(c, policies[c.tenant_id]) for c in changes if policies[c.tenant_id].holds(c.kind)]
        return sorted(held, key=lambda cp: (cp[0].found_at or dt.datetime.min, cp[0].tenant_id, cp[0].period))
