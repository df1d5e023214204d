"""Journal building: a partition's P&L detail -> one balanced journal entry per tenant-month (pure, vectorised).

Revenue is credited, COGS and expenses debited, each per subcategory; a negative amount flips its side; zero lines
are dropped. The balancing line takes net income to the tenant's clearing/equity account: a debit on a profit,
a credit on a loss. Amounts are int64 minor units of the tenant-month's currency throughout (that currency's own
minor unit: JPY 0 decimals, IDR 2, KWD 3); every sum is taken per currency, never across currencies (a tenant-month
in two currencies gets a balancing line per currency, and the JournalLines contract rejects the mix).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ledger_pipeline.ledger.mapping import CLEARING, resolve_numbers
from ledger_pipeline.ledger.sink import CUSTOM_ID_PREFIX, MEMO_PREFIX

CATEGORY_ORDER = {"revenue": 0, "cogs": 1, "expense": 2, CLEARING: 3}
LINE_COLUMNS = ["tenant_id", "period", "transaction_date", "custom_id", "entry_no", "line_no", "account_id",
                "account_number", "account_name", "debit_minor", "credit_minor", "description", "category",
                "subcategory", "currency"]
ENTRY_COLUMNS = ["tenant_id", "period", "custom_id", "transaction_date", "memo", "currency", "line_count",
                 "total_debit_minor", "total_credit_minor", "net_income_minor", "content_hash", "source_rows"]
REJECTION_COLUMNS = ["tenant_id", "period", "stage", "reason", "detail"]


@dataclass
class JournalBuild:
    entries: pd.DataFrame
    lines: pd.DataFrame
    rejections: pd.DataFrame
    no_activity: pd.DataFrame  # tenant_id, period: months whose P&L nets to nothing on every line


def custom_id(tenant_id: pd.Series, period: pd.Series) -> pd.Series:
    months = {p: p.strftime("%Y%m") for p in period.unique()}  # strftime once per month, not per line
    return CUSTOM_ID_PREFIX + tenant_id + "-" + period.map(months)


def build_journal(detail: pd.DataFrame, accounts: pd.DataFrame, rules: pd.DataFrame) -> JournalBuild:
    """detail: tenant_id, period, category, subcategory, amount_minor (int64 minor units of `currency`), currency,
    source_rows.
    accounts: the tenants' latest charts (charts.load_charts: tenant_id, account_id, number, name, archived)."""
    d = detail.copy()
    d["period"] = pd.to_datetime(d["period"])
    d["amount_minor"] = d["amount_minor"].astype("int64")
    key = ["tenant_id", "period"]
    sources = d.groupby(key)["source_rows"].sum().rename("source_rows")
    active = d[d["amount_minor"] != 0]
    all_months = d[key].drop_duplicates()
    no_activity = all_months.merge(active[key].drop_duplicates(), how="left", indicator=True)
    no_activity = no_activity[no_activity["_merge"] == "left_only"][key].reset_index(drop=True)

    # P&L lines: side by category and sign.
    credit_side = (active["category"] == "revenue") == (active["amount_minor"] > 0)
    amount = active["amount_minor"].abs()
    pl = active.assign(
        debit_minor=np.where(credit_side, 0, amount).astype("int64"),
        credit_minor=np.where(credit_side, amount, 0).astype("int64"),
        description=active["category"] + ": " + active["subcategory"],
    )
    # Balancing line: net income (credits - debits of the P&L lines) to the clearing account, per currency.
    net = (pl["credit_minor"] - pl["debit_minor"]).groupby([pl["tenant_id"], pl["period"], pl["currency"]]).sum()
    bal = net[net != 0].rename("net").reset_index()
    bal = bal.assign(
        category=CLEARING, subcategory="net_income", amount_minor=bal["net"],
        debit_minor=np.where(bal["net"] > 0, bal["net"], 0).astype("int64"),
        credit_minor=np.where(bal["net"] < 0, -bal["net"], 0).astype("int64"),
        description="net income for the month (R2a)",
    ).drop(columns="net")
    lines = pd.concat([pl, bal], ignore_index=True)

    # Accounts: mapping rule -> number -> the tenant's Jurnal account.
    lines["account_number"] = resolve_numbers(lines[["tenant_id", "category", "subcategory"]], rules)
    chart = accounts[["tenant_id", "account_id", "number", "name", "archived"]].rename(
        columns={"number": "account_number", "name": "account_name"}).drop_duplicates(["tenant_id", "account_number"])
    lines = lines.merge(chart, on=["tenant_id", "account_number"], how="left")
    has_chart = lines["tenant_id"].isin(set(accounts["tenant_id"]))
    problem = pd.Series(pd.NA, index=lines.index, dtype="object")
    what = lines["category"] + "/" + lines["subcategory"]
    problem = problem.mask(~has_chart, "no GL accounts ingested for this tenant: connect it "
                                       "(ledger-pipeline connect) and materialize gl_accounts")
    problem = problem.mask(has_chart & lines["account_number"].isna(),
                           "no account mapping for " + what + ": add a row to the account mapping file")
    problem = problem.mask(has_chart & lines["account_number"].notna() & lines["account_id"].isna(),
                           "account " + lines["account_number"].astype(str) + " (for " + what
                           + ") does not exist in the tenant's chart of accounts")
    problem = problem.mask(has_chart & lines["archived"].astype("boolean").fillna(False).astype(bool),
                           "account " + lines["account_number"].astype(str) + " (for " + what
                           + ") is archived in the tenant's chart of accounts")
    bad = lines[problem.notna()].assign(problem=problem[problem.notna()])
    rejections = (
        bad.groupby(key)["problem"].agg(lambda s: "; ".join(dict.fromkeys(s))).reset_index()
        .assign(stage="map", reason=lambda f: np.where(f["problem"].str.startswith("no GL"), "no chart of accounts",
                                                       "account mapping"))
        .rename(columns={"problem": "detail"})
    )
    rejections["detail"] = ("tenant " + rejections["tenant_id"] + ", " + rejections["period"].dt.strftime("%Y-%m")
                            + ": " + rejections["detail"] + ". Nothing was posted for this tenant-month.")
    rejected = pd.MultiIndex.from_frame(rejections[key]) if len(rejections) else pd.MultiIndex.from_tuples(
        [], names=key)
    lines = lines[~pd.MultiIndex.from_frame(lines[key]).isin(rejected)].copy()

    lines["custom_id"] = custom_id(lines["tenant_id"], lines["period"])
    lines["transaction_date"] = lines["period"] + pd.offsets.MonthEnd(0)
    lines["_order"] = lines["category"].map(CATEGORY_ORDER)
    lines = lines.sort_values(["custom_id", "_order", "subcategory"], ignore_index=True)
    lines["line_no"] = lines.groupby("custom_id").cumcount().astype("int64") + 1
    lines["entry_no"] = lines.groupby("custom_id", sort=False).ngroup().astype("int64")
    lines["account_id"] = lines["account_id"].astype("string")
    lines = lines[LINE_COLUMNS]
    entries = summarize_entries(lines, sources)
    return JournalBuild(entries, lines, rejections[REJECTION_COLUMNS], no_activity)


def summarize_entries(lines: pd.DataFrame, sources: pd.Series) -> pd.DataFrame:
    """One row per entry, with totals, net income (the balancing amount) and the content hash."""
    g = lines.groupby("custom_id", sort=True)
    entries = g.agg(tenant_id=("tenant_id", "first"), period=("period", "first"),
                    transaction_date=("transaction_date", "first"), currency=("currency", "first"),
                    line_count=("line_no", "size"), total_debit_minor=("debit_minor", "sum"),
                    total_credit_minor=("credit_minor", "sum")).reset_index()
    is_bal = lines["category"] == CLEARING
    net = (lines["debit_minor"].where(is_bal, 0) - lines["credit_minor"].where(is_bal, 0)).groupby(
        lines["custom_id"]).sum()
    entries["net_income_minor"] = entries["custom_id"].map(net).fillna(0).astype("int64")
    entries["memo"] = MEMO_PREFIX + entries["period"].dt.strftime("%Y-%m")
    entries["content_hash"] = content_hashes(lines, entries)
    entries = entries.merge(sources.reset_index(), on=["tenant_id", "period"], how="left")
    entries["source_rows"] = entries["source_rows"].fillna(0).astype("int64")
    return entries[ENTRY_COLUMNS]


def content_hashes(lines: pd.DataFrame, entries: pd.DataFrame) -> pd.Series:
    """sha256 over the canonical entry: what would be posted (date, memo, currency, numbered lines).
    `lines` must be sorted by custom_id, line_no (build_journal's order)."""
    parts: dict[str, list[str]] = {}
    for cid, no, acc, debit, credit, desc in zip(
        lines["custom_id"].tolist(), lines["line_no"].tolist(), lines["account_number"].tolist(),
        lines["debit_minor"].tolist(), lines["credit_minor"].tolist(), lines["description"].tolist(), strict=True,
    ):
        parts.setdefault(cid, []).append(f"{no}:{acc}:{debit}:{credit}:{desc}")
    dates = entries["transaction_date"].dt.strftime("%Y-%m-%d").tolist()
    return pd.Series([
        hashlib.sha256(f"{cid}|{day}|{memo}|{cur}|{'|'.join(parts.get(cid, []))}".encode()).hexdigest()
        for cid, day, memo, cur in zip(entries["custom_id"].tolist(), dates, entries["memo"].tolist(),
                                       entries["currency"].tolist(), strict=True)
    ], index=entries.index, dtype="object")
