"""pandera validation of ~1 M journal lines in one frame (target: at most 1 s).

    .venv/bin/python bench/validate_1m.py --runs 5
    .venv/bin/python bench/validate_1m.py --smoke     # 1,000 tenants (~11 k lines), 1 run, for CI
"""

from __future__ import annotations

import argparse
import datetime as dt

import numpy as np
import pandas as pd
from common import median_time, save

from ledger_pipeline.ledger.journal import build_journal
from ledger_pipeline.ledger.mapping import load_mapping
from ledger_pipeline.ledger.schemas import validate_lines
from ledger_pipeline.r2a.seed import SUBCATEGORIES
from ledger_pipeline.sandboxes.chart import DEFAULT_CHART
from ledger_pipeline.settings import DATA_DIR


def frame(tenants: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    ids = [f"t{i:06d}" for i in range(tenants)]
    rows = [(t, c, s) for t in ids for c, s, _, _ in SUBCATEGORIES]
    detail = pd.DataFrame(rows, columns=["tenant_id", "category", "subcategory"]).assign(
        period=dt.date(2025, 6, 1), amount_minor=rng.integers(-10**6, 10**9, len(rows)), currency="IDR",
        source_rows=1)
    accounts = pd.DataFrame([(t, i, n, name, False) for t in ids for i, (n, name, _) in enumerate(DEFAULT_CHART)],
                            columns=["tenant_id", "account_id", "number", "name", "archived"])
    return build_journal(detail, accounts, load_mapping(DATA_DIR / "account_mapping.csv")).lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=91_000, help="x ~11 lines each = ~1 M lines")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.tenants, args.runs = 1000, 1
    lines = frame(args.tenants)
    start, end = dt.date(2025, 6, 1), dt.date(2025, 7, 1)
    import time

    c0 = time.process_time()
    med, times = median_time(lambda: validate_lines(lines, start, end), args.runs)
    cpu = (time.process_time() - c0) / args.runs
    valid, rejected = validate_lines(lines, start, end)
    assert len(valid) == len(lines) and rejected.empty
    save("validate_1m_smoke" if args.smoke else "validate_1m",
         {"lines": len(lines), "entries": int(lines["custom_id"].nunique()), "median_seconds": med,
          "all_seconds": times, "cpu_seconds_mean": cpu, "target_seconds": 1.0})


if __name__ == "__main__":
    main()
