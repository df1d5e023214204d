"""Journal building, account mapping and the pandera contract: pure and fast, no Dagster, no I/O."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ledger_pipeline.ledger.journal import build_journal
from ledger_pipeline.ledger.mapping import load_mapping, resolve_numbers
from ledger_pipeline.ledger.schemas import validate_lines
from ledger_pipeline.sandboxes.chart import DEFAULT_CHART
from ledger_pipeline.settings import DATA_DIR

RULES = load_mapping(DATA_DIR / "account_mapping.csv")
JAN, FEB = dt.date(2025, 1, 1), dt.date(2025, 2, 1)
SUBS = [("revenue", "product_sales"), ("revenue", "service_revenue"), ("cogs", "merchandise"),
        ("cogs", "raw_materials"), ("expense", "salaries"), ("expense", "rent"), ("expense", "marketing"),
        ("expense", "something_new")]


def chart(tenants: list[str], archived: set[str] = frozenset(), missing: set[str] = frozenset()) -> pd.DataFrame:
    rows = [(t, i + 1, n, name, n in archived) for t in tenants for i, (n, name, _) in enumerate(DEFAULT_CHART)
            if n not in missing]
    return pd.DataFrame(rows, columns=["tenant_id", "account_id", "number", "name", "archived"])


def detail(rows: list[tuple[str, str, str, int]], period: dt.date = JAN) -> pd.DataFrame:
    return pd.DataFrame([{"tenant_id": t, "period": period, "category": c, "subcategory": s, "amount_minor": a,
                          "currency": "IDR", "source_rows": 1} for t, c, s, a in rows])


amounts = st.integers(min_value=-10**17, max_value=10**17)  # up to 10^15 rupiah, in sen


# The corners are fixed examples (always run, before the random ones): no activity, the extremes on every account,
# a P&L netting to zero with activity, one negative revenue line; hypothesis adds random mixes to them.
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(SUBS), amounts), min_size=1, max_size=8, unique_by=lambda x: x[0]))
@example([(SUBS[0], 0), (SUBS[4], 0)])
@example([(sub, 10**17) for sub in SUBS])
@example([(sub, -10**17) for sub in SUBS])
@example([(SUBS[0], 10**17), (SUBS[2], -10**17), (SUBS[7], 1)])
@example([(SUBS[1], 12345), (SUBS[5], 12345)])
@example([(SUBS[0], -1)])
def test_any_pl_gives_a_balanced_entry(rows) -> None:  # noqa: ANN001
    d = detail([("t1", c, s, a) for (c, s), a in rows])
    build = build_journal(d, chart(["t1"]), RULES)
    lines, invalid = validate_lines(build.lines, JAN, FEB)
    assert invalid.empty
    revenue = sum(a for (c, _), a in rows if c == "revenue")
    costs = sum(a for (c, _), a in rows if c != "revenue")
    if all(a == 0 for _, a in rows):
        assert build.entries.empty and len(build.no_activity) == 1, "no activity: no entry, not an error"
        return
    debit, credit = int(lines["debit_minor"].sum()), int(lines["credit_minor"].sum())
    assert debit == credit, "balances exactly"
    assert (lines["debit_minor"] >= 0).all() and (lines["credit_minor"] >= 0).all()
    assert ((lines["debit_minor"] > 0) != (lines["credit_minor"] > 0)).all(), "one side per line"
    pl = lines[lines["category"] != "clearing"]
    net_pl = int((pl["credit_minor"] - pl["debit_minor"]).sum())
    assert net_pl == revenue - costs, "the P&L accounts net to R2a's net income"
    entry = build.entries.iloc[0]
    assert entry["net_income_minor"] == revenue - costs
    assert entry["transaction_date"] == pd.Timestamp("2025-01-31") and entry["custom_id"] == "r2a-pl-t1-202501"
    assert entry["memo"] == "R2a Monthly P&L - 2025-01"


def test_sides_balancing_line_and_hash() -> None:
    d = detail([("t1", "revenue", "product_sales", 100_000_00), ("t1", "revenue", "service_revenue", -5_000_00),
                ("t1", "cogs", "merchandise", 60_000_00), ("t1", "expense", "rent", 0),
                ("t2", "revenue", "product_sales", 10_00), ("t2", "expense", "salaries", 30_00)])
    build = build_journal(d, chart(["t1", "t2"]), RULES)
    t1 = build.lines[build.lines["tenant_id"] == "t1"].set_index("subcategory")
    assert t1.loc["product_sales", "credit_minor"] == 100_000_00
    assert t1.loc["service_revenue", "debit_minor"] == 5_000_00, "a negative amount flips its side"
    assert t1.loc["merchandise", "debit_minor"] == 60_000_00
    assert "rent" not in t1.index, "zero lines are dropped"
    assert t1.loc["net_income", "debit_minor"] == 35_000_00 and t1.loc["net_income", "account_number"] == "3-30100"
    t2 = build.lines[build.lines["tenant_id"] == "t2"].set_index("subcategory")
    assert t2.loc["net_income", "credit_minor"] == 20_00, "a loss credits the clearing account"
    assert list(t1["line_no"]) == [1, 2, 3, 4]
    again = build_journal(d, chart(["t1", "t2"]), RULES)
    assert list(again.entries["content_hash"]) == list(build.entries["content_hash"]), "deterministic hash"
    changed = build_journal(d.assign(amount_minor=d["amount_minor"] + 1), chart(["t1", "t2"]), RULES)
    assert set(changed.entries["content_hash"]).isdisjoint(build.entries["content_hash"])


def test_mapping_precedence_and_tenant_overrides() -> None:
    rules = pd.concat([RULES, pd.DataFrame([
        {"tenant_id": "t9", "category": "expense", "subcategory": "rent", "account_number": "6-60100"},
        {"tenant_id": "t9", "category": "expense", "subcategory": "*", "account_number": "8-80000"},
        {"tenant_id": "t9", "category": "clearing", "subcategory": "*", "account_number": "3-30999"},
    ])], ignore_index=True)
    keys = pd.DataFrame([("t1", "expense", "rent"), ("t1", "expense", "odd"), ("t9", "expense", "rent"),
                         ("t9", "expense", "salaries"), ("t9", "clearing", "net_income"), ("t1", "other", "x")],
                        columns=["tenant_id", "category", "subcategory"])
    got = resolve_numbers(keys, rules).tolist()
    assert got[:5] == ["6-60401", "8-80999", "6-60100", "8-80000", "3-30999"]
    assert pd.isna(got[5])


def test_missing_archived_and_unmapped_accounts_reject_the_tenant_month() -> None:
    d = detail([("t1", "revenue", "product_sales", 100), ("t1", "expense", "rent", 50),
                ("t2", "revenue", "product_sales", 100), ("t2", "expense", "rent", 50),
                ("t3", "revenue", "product_sales", 100), ("t4", "revenue", "product_sales", 100)])
    accounts = pd.concat([chart(["t1"], missing={"6-60401"}), chart(["t2"], archived={"6-60401"}), chart(["t3"])])
    rules = RULES[~((RULES["category"] == "revenue") & (RULES["tenant_id"] == ""))].copy()
    rules = pd.concat([rules, pd.DataFrame([{"tenant_id": "t1", "category": "revenue", "subcategory": "*",
                                             "account_number": "4-40000"},
                                            {"tenant_id": "t2", "category": "revenue", "subcategory": "*",
                                             "account_number": "4-40000"}])])
    build = build_journal(d, accounts, rules)
    reasons = dict(zip(build.rejections["tenant_id"], build.rejections["detail"], strict=True))
    assert "6-60401" in reasons["t1"] and "does not exist" in reasons["t1"]
    assert "6-60401" in reasons["t2"] and "archived" in reasons["t2"]
    assert "no account mapping for revenue/product_sales" in reasons["t3"]
    assert "no GL accounts" in reasons["t4"]
    assert build.entries.empty and build.lines.empty, "nothing is built for a rejected tenant-month"


def good_lines() -> pd.DataFrame:
    d = detail([("t1", "revenue", "product_sales", 100_00), ("t1", "expense", "rent", 40_00),
                ("t2", "revenue", "product_sales", 7_00)])
    return build_journal(d, chart(["t1", "t2"]), RULES).lines


@pytest.mark.parametrize("breakage, words", [
    (lambda f: f.loc[0, "debit_minor"].__class__ and f.assign(debit_minor=[1] + list(f["debit_minor"][1:])),
     "does not balance"),
    (lambda f: f.assign(debit_minor=f["debit_minor"].where(f.index != 0, 5), credit_minor=f["credit_minor"].where(
        f.index != 0, 5)), "both a debit and a credit"),
    (lambda f: f.assign(credit_minor=f["credit_minor"].where(f.index != 0, -f["credit_minor"])), "negative amount"),
    (lambda f: f.assign(account_id=f["account_id"].where(f.index != 0, pd.NA)), "missing value in account_id"),
    (lambda f: f.assign(period=pd.Timestamp("2025-03-01"), transaction_date=pd.Timestamp("2025-03-31")),
     "outside the partition"),
    (lambda f: f.assign(debit_minor=f["debit_minor"].astype(float)), "never float"),
    (lambda f: f[f["line_no"] != 2], "does not balance"),
    (lambda f: f.assign(line_no=1), "share a line number"),
])
def test_contract_rejects_broken_frames_with_readable_reasons(breakage, words: str) -> None:  # noqa: ANN001
    lines = good_lines()
    broken = breakage(lines.copy())
    valid, rejections = validate_lines(broken, JAN, FEB)
    assert len(rejections) >= 1
    assert any(words in d for d in rejections["detail"]), rejections["detail"].tolist()
    assert (rejections["stage"] == "validate").all()
    assert "t1" in set(rejections["tenant_id"])
    assert set(valid["custom_id"]).isdisjoint(set(lines.loc[lines["tenant_id"] == "t1", "custom_id"]))


def test_contract_isolates_the_bad_entry() -> None:
    lines = good_lines()
    broken = lines.assign(debit_minor=lines["debit_minor"].where(lines["tenant_id"] != "t1", 1))
    valid, rejections = validate_lines(broken, JAN, FEB)
    assert list(rejections["tenant_id"]) == ["t1"]
    assert set(valid["tenant_id"]) == {"t2"}, "the good tenant goes on"
