"""What the UI renders as markdown survives it (issue 25): no `<placeholder>` that the renderer strips as an HTML
tag (the custom_id description once showed as `r2a-pl--.`), and descriptions name every system, not only Jurnal."""

from __future__ import annotations

import re

from ledger_pipeline.definitions import ASSETS
from ledger_pipeline.warehouse.descriptions import column_description
from ledger_pipeline.warehouse.schema import TABLES

TAG = re.compile(r"<[A-Za-z_/][^>]*>")


def _outside_code(text: str) -> str:
    return re.sub(r"`[^`]*`", "", text)


def test_column_descriptions_have_no_html_like_placeholders() -> None:
    bad = {(t, c): d for t, cols in TABLES.items() for c, _ in cols
           if (d := column_description(t, c)) and TAG.search(_outside_code(d))}
    assert not bad, bad
    assert "r2a-pl-{tenant}-{YYYYMM}" in column_description("accounting.postings", "custom_id")


def test_asset_descriptions_have_no_html_like_placeholders() -> None:
    bad = {}
    for a in ASSETS:
        for spec in getattr(a, "specs", []):
            if spec.description and TAG.search(_outside_code(spec.description)):
                bad[spec.key.to_user_string()] = spec.description
    assert not bad, bad
