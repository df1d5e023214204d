"""Account mapping: R2a category/subcategory -> GL account number, with per-tenant overrides.

The mapping file (data/account_mapping.csv) has columns tenant_id, category, subcategory, account_number.
An empty tenant_id is the default for every tenant; subcategory `*` matches any subcategory; the category
`clearing` names the account that takes net income (the balancing line). Most specific rule wins:
tenant+subcategory, tenant+`*`, default+subcategory, default+`*`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

CLEARING = "clearing"


def load_mapping(path: Path) -> pd.DataFrame:
    rules = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"tenant_id", "category", "subcategory", "account_number"} - set(rules.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    return rules.apply(lambda col: col.str.strip())


def resolve_numbers(keys: pd.DataFrame, rules: pd.DataFrame) -> pd.Series:
    """Account number for each row of `keys` (tenant_id, category, subcategory); NaN where no rule applies."""
    out = pd.Series(pd.NA, index=keys.index, dtype="object")
    tenant_rules = rules[rules["tenant_id"] != ""]
    default_rules = rules[rules["tenant_id"] == ""]
    steps = [
        (tenant_rules[tenant_rules["subcategory"] != "*"], ["tenant_id", "category", "subcategory"]),
        (tenant_rules[tenant_rules["subcategory"] == "*"], ["tenant_id", "category"]),
        (default_rules[default_rules["subcategory"] != "*"], ["category", "subcategory"]),
        (default_rules[default_rules["subcategory"] == "*"], ["category"]),
    ]
    for subset, on in steps:
        if subset.empty:
            continue
        right = subset.drop_duplicates(on, keep="last")[[*on, "account_number"]]
        found = pd.Series(keys[on].merge(right, on=on, how="left")["account_number"].to_numpy(), index=keys.index)
        out = out.where(out.notna(), found)
    return out
