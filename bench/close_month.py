"""Local close of one month for N tenants: the floor, the pipeline's own code, the Dagster materialization, and the
seed-style loop, each in a fresh process (wall time and peak RSS), medians of --runs.

    .venv/bin/python bench/close_month.py --tenants 10000 --months 12 --runs 3 [--postgres URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics

from common import RESULTS, in_child, save

CHILD_PRELUDE = """
import json, time, datetime as dt, os
os.environ.update({env})
t0 = time.perf_counter()
"""
CHILD_END = """
seconds = time.perf_counter() - t0
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"seconds": seconds, "peak_mib": hwm / 1024, **extra}}))
"""

FLOOR = """
from sqlalchemy import create_engine, text
engine = create_engine(os.environ["R2A_DATABASE_URL"])
start, end = dt.date.fromisoformat(os.environ["B_START"]), dt.date.fromisoformat(os.environ["B_END"])
params = {{"s": start, "e": end}}
if engine.dialect.name == "sqlite":
    params = {{k: v.isoformat() for k, v in params.items()}}
t0 = time.perf_counter()
with engine.connect() as c:
    rows = c.execute(text("SELECT tenant_id, category, subcategory, SUM(amount) FROM r2a_transactions "
                          "WHERE txn_date >= :s AND txn_date < :e GROUP BY tenant_id, category, subcategory"),
                     params).fetchall()
extra = {{"groups": len(rows)}}
"""

PIPELINE = """
import pandas as pd
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.r2a.extract import extract
from ledger_pipeline.ledger.journal import build_journal
from ledger_pipeline.ledger.mapping import load_mapping
from ledger_pipeline.ledger.schemas import validate_lines, validated_entries
from ledger_pipeline.settings import load_settings
from ledger_pipeline.warehouse.store import Warehouse, replace_rows, transaction, window_where
s = load_settings()
engine = make_engine(s.r2a_database_url)
wh = Warehouse(s.work_warehouse_path, s.warehouse_path)
with wh.connect() as con:
    accounts = con.execute("SELECT tenant_id, account_id, number, name, archived FROM jurnal.gl_accounts").fetchdf()
rules = load_mapping(s.account_mapping_path)
start, end = dt.date.fromisoformat(os.environ["B_START"]), dt.date.fromisoformat(os.environ["B_END"])
t0 = time.perf_counter()
x = extract(engine, start, end); t_extract = time.perf_counter() - t0
b = build_journal(x.detail, accounts, rules); t_build = time.perf_counter() - t0 - t_extract
lines, bad = validate_lines(b.lines, start, end)
entries = validated_entries(lines, b.entries); t_validate = time.perf_counter() - t0 - t_extract - t_build
run = {{"run_id": "bench"}}
now = pd.Timestamp.now()
with wh.connect() as con, transaction(con):
    replace_rows(con, "r2a.pl_monthly", x.monthly.assign(**run, extracted_at=now), window_where(), [start, end])
    replace_rows(con, "r2a.pl_monthly_detail", x.detail.assign(**run), window_where(), [start, end])
    replace_rows(con, "ledger.journal_entries", entries.assign(**run, built_at=now), window_where(), [start, end])
    replace_rows(con, "ledger.journal_lines", lines.assign(**run), window_where(), [start, end])
t_land = time.perf_counter() - t0 - t_extract - t_build - t_validate
extra = {{"entries": len(entries), "lines": len(lines), "extract": t_extract, "build": t_build,
          "validate": t_validate, "land": t_land}}
"""

DAGSTER = """
import dagster as dg
from ledger_pipeline.definitions import ASSETS
from ledger_pipeline_tests.helpers import resources
from ledger_pipeline.settings import load_settings
s = load_settings()
t0 = time.perf_counter()
result = dg.materialize(ASSETS, selection=["r2a_pl_monthly", "journal_entries", "journal_lines"],
                        resources=resources(s), instance=dg.DagsterInstance.ephemeral(),
                        partition_key=os.environ["B_START"])
assert result.success
extra = {{}}
"""

SEED_LOOP = """
# The seed's get_r2a_monthly_summary: one query per tenant (index on tenant and date), rows built and inserted
# one by one.
import duckdb
from sqlalchemy import create_engine, text
engine = create_engine(os.environ["R2A_DATABASE_URL"])
start, end = os.environ["B_START"], os.environ["B_END"]
con = duckdb.connect(os.environ["B_LOOP_DB"])
con.execute("CREATE OR REPLACE TABLE pl (tenant_id VARCHAR, period DATE, revenue DECIMAL(18,2), "
            "cogs DECIMAL(18,2), expenses DECIMAL(18,2))")
t0 = time.perf_counter()
with engine.connect() as c:
    tenants = [r[0] for r in c.execute(text("SELECT tenant_id FROM tenants ORDER BY tenant_id"))]
    for t in tenants:
        rows = c.execute(text("SELECT category, SUM(amount) FROM r2a_transactions WHERE tenant_id = :t "
                              "AND txn_date >= :s AND txn_date < :e GROUP BY category"),
                         {{"t": t, "s": start, "e": end}}).fetchall()
        if not rows:
            continue
        d = dict(rows)
        con.execute("INSERT INTO pl VALUES (?, ?, ?, ?, ?)",
                    [t, start, d.get("revenue", 0), d.get("cogs", 0), d.get("expense", 0)])
extra = {{"tenants": len(tenants)}}
"""


def child(body: str, env: dict) -> dict:
    code = CHILD_PRELUDE.format(env=repr(env)) + body.format() + CHILD_END.format()
    _, _, out = in_child(code)
    return json.loads(out.strip().splitlines()[-1])


def prepare(env: dict, tenants: int, months: int, start: dt.date) -> None:
    import os

    os.environ.update(env)
    import pandas as pd
    from sqlalchemy import func, select, text

    from ledger_pipeline.r2a import seed as seeding
    from ledger_pipeline.r2a.models import Tenant, make_engine
    from ledger_pipeline.settings import load_settings
    from ledger_pipeline.systems.jurnal.chart import DEFAULT_CHART
    from ledger_pipeline.warehouse.store import Warehouse, replace_rows, transaction

    s = load_settings()
    engine = make_engine(s.r2a_database_url)
    seeding.create_tables(engine)  # the bench plays R2a's team: the pipeline itself never creates R2a's tables
    with engine.connect() as c:
        have = c.execute(select(func.count()).select_from(Tenant)).scalar_one()
    if have != tenants:
        r = seeding.seed(engine, tenants, months, start)
        print(f"seeded {r.rows:,} rows")
    with engine.begin() as c:  # the index the seed-style loop needs to be fair
        c.execute(text("CREATE INDEX IF NOT EXISTS ix_bench_tenant_date ON r2a_transactions (tenant_id, txn_date)"))
    wh = Warehouse(s.work_warehouse_path, s.warehouse_path)
    ids = [f"t{i:05d}" for i in range(1, tenants + 1)]
    chart = pd.DataFrame([(t, i + 1, n, name, cat, None, None, False, None, "bench") for t in ids
                          for i, (n, name, cat) in enumerate(DEFAULT_CHART)],
                         columns=["tenant_id", "account_id", "number", "name", "category", "category_id",
                                  "parent_id", "archived", "fetched_at", "run_id"])
    with wh.connect() as con, transaction(con):
        replace_rows(con, "jurnal.gl_accounts", chart, "TRUE")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=10_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--postgres", default=None, help="also run against this Postgres URL")
    args = ap.parse_args()
    start = dt.date(2025, 1, 1)
    month = dt.date(2025, 6, 1)
    data = RESULTS / "data"
    targets = {"sqlite": f"sqlite:///{data / 'r2a_bench.sqlite'}"}
    if args.postgres:
        targets["postgres"] = args.postgres
    report = {"tenants": args.tenants, "months": args.months, "month": str(month), "runs": args.runs}
    for name, url in targets.items():
        env = {"R2A_DATABASE_URL": url, "LEDGER_DATA_DIR": str(data / name),
               "LEDGER_WAREHOUSE": str(data / name / "warehouse.duckdb"), "B_START": str(month),
               "B_END": "2025-07-01", "B_LOOP_DB": str(data / name / "loop.duckdb"),
               "LEDGER_ENCRYPTION_KEY": "bench-key-not-used-000000000000000000000000="}
        prepare(env, args.tenants, args.months, start)
        results = {}
        for label, body in (("floor_group_by", FLOOR), ("pipeline_code", PIPELINE), ("dagster", DAGSTER),
                            ("seed_style_loop", SEED_LOOP)):
            runs = [child(body, env) for _ in range(args.runs if label != "seed_style_loop" else 1)]
            med = statistics.median(r["seconds"] for r in runs)
            results[label] = {**runs[len(runs) // 2], "seconds": med, "all_seconds": [r["seconds"] for r in runs],
                              "peak_mib": max(r["peak_mib"] for r in runs)}
            print(name, label, f"{med:.2f}s", f"{results[label]['peak_mib']:.0f} MiB", flush=True)
        floor, own = results["floor_group_by"]["seconds"], results["pipeline_code"]["seconds"]
        results["ratios"] = {
            "pipeline_vs_floor": own / floor,
            "seed_loop_vs_pipeline": results["seed_style_loop"]["seconds"] / own,
            "dagster_overhead_seconds": results["dagster"]["seconds"] - own,
        }
        report[name] = results
    save("close_month", report)


if __name__ == "__main__":
    main()
