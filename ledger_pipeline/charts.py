"""Charts of accounts, every system alike: fetch per tenant through its system's Connection (a failing tenant is
recorded, the others go on) and diff against the last state (added, renamed, renumbered, archived, ...)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from ledger_pipeline.ledger.sink import SinkError

ACCOUNT_COLUMNS = ["system", "tenant_id", "account_id", "number", "name", "category", "parent_id", "archived"]
STATUS_COLUMNS = ["system", "tenant_id", "status", "accounts", "error"]


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


def stale_tenants(tenants: dict[str, str], checked: pd.DataFrame, max_age: dt.timedelta,
                  now: dt.datetime) -> list[tuple[str, str]]:
    """(system, tenant) whose chart was not fetched OK from its current system within max_age (pure).
    `checked`: system, tenant_id, checked_at of the last OK fetch per tenant."""
    fresh = {(r.system, r.tenant_id) for r in checked.itertuples(index=False)
             if pd.notna(r.checked_at) and now - pd.Timestamp(r.checked_at).to_pydatetime() <= max_age}
    return sorted((system, t) for t, system in tenants.items() if (system, t) not in fresh)


def diff_charts(previous: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Changes between two states of the same tenants' charts: added, renamed, renumbered, archived,
    unarchived, removed. Columns: system, tenant_id, account_id, change, number, name, previous_name, archived."""
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
