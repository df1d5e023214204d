"""GL accounts (chart of accounts) from Jurnal: fetch per tenant, isolate failures, diff against the last state."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.jurnal.client import JurnalClient, JurnalError

ACCOUNT_COLUMNS = ["tenant_id", "account_id", "number", "name", "category", "category_id", "parent_id", "archived"]


@dataclass
class ChartFetch:
    accounts: pd.DataFrame  # ACCOUNT_COLUMNS, for the tenants fetched
    status: pd.DataFrame  # tenant_id, status (ok | failed | needs_reauth), accounts, error


def fetch_charts(client: JurnalClient, tenants: Iterable[str],
                 progress: Callable[[int], None] | None = None) -> ChartFetch:
    """One GET /accounts per tenant (archived included). A failing tenant is recorded; the others go on."""
    rows, status = [], []
    for i, tenant in enumerate(tenants, 1):
        try:
            accounts = client.accounts(tenant, include_archive=True)
        except NeedsReauth as exc:
            status.append((tenant, "needs_reauth", 0, str(exc)))
        except JurnalError as exc:
            status.append((tenant, "failed", 0, f"{exc} (kept the previous chart; retried on the next run)"))
        else:
            rows += [(tenant, a["id"], a.get("number") or "", a["name"], a.get("category"), a.get("category_id"),
                      a.get("parent_id"), bool(a.get("archive", a.get("archived", False)))) for a in accounts]
            status.append((tenant, "ok", len(accounts), None))
        if progress:
            progress(i)
    frame = pd.DataFrame(rows, columns=ACCOUNT_COLUMNS)
    for col in ("account_id", "category_id", "parent_id"):
        frame[col] = frame[col].astype("Int64")
    return ChartFetch(frame, pd.DataFrame(status, columns=["tenant_id", "status", "accounts", "error"]))


def diff_charts(previous: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Changes between two states of the same tenants' charts: added, renamed, renumbered, archived,
    unarchived, removed. Columns: tenant_id, account_id, change, number, name, previous_name, archived."""
    key = ["tenant_id", "account_id"]
    merged = previous[ACCOUNT_COLUMNS].merge(current[ACCOUNT_COLUMNS], on=key, how="outer",
                                             suffixes=("_old", "_new"), indicator=True)
    changes = []

    def emit(mask: pd.Series, change: str, side: str = "_new") -> None:
        part = merged[mask]
        changes.append(pd.DataFrame({
            "tenant_id": part["tenant_id"], "account_id": part["account_id"], "change": change,
            "number": part["number" + side], "name": part["name" + side], "previous_name": part["name_old"],
            "archived": part["archived" + side],
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
    return out.sort_values(["tenant_id", "account_id", "change"], ignore_index=True)
