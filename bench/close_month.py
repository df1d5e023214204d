"""Local close (no request) for N tenants, each measurement in a fresh process (wall time and peak RSS), medians of
--runs, side by side in one invocation:

- floor: the bare `GROUP BY tenant, category, subcategory` of the month in R2a's database;
- pipeline code: what the r2a_pl_monthly and journal assets do, step by step, without Dagster (extract, land the
  P&L, read it back, build, validate, land the journal, the canonical entries for the operational database, save
  them there, publish the snapshot after each asset);
- dagster: the same two assets as one in-process Dagster run on the committed instance config (no checks), and
  once with the assets' checks, as the monthly job runs them;
- seed-style loop: one query per tenant, one DuckDB insert per tenant (the seed's own approach);
- backfill: the same assets for --backfill-months months as one run (single-run backfill policy): peak RSS.

    .venv/bin/python bench/close_month.py --tenants 10000 --months 12 --runs 3 [--postgres URL]
    .venv/bin/python bench/close_month.py --smoke      # 40 tenants, seconds: keeps the benchmark running in CI
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from common import in_child, own_schema, results_dir, save

from ledger_pipeline import clock

FIRST = dt.date(2025, 1, 1)  # seeded history starts here (fixed: the figures never depend on today's date)

CHILD_PRELUDE = """
import json, time, datetime as dt, os
os.environ.update({env})
start, end = dt.date.fromisoformat(os.environ["B_START"]), dt.date.fromisoformat(os.environ["B_END"])
t0 = time.perf_counter()
c0 = time.process_time()
"""
CHILD_END = """
seconds = time.perf_counter() - t0
cpu_seconds = time.process_time() - c0
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": hwm / 1024, **extra}}))
"""

FLOOR = """
from sqlalchemy import create_engine, text
engine = create_engine(os.environ["R2A_DATABASE_URL"])
params = {{"s": start, "e": end}}
if engine.dialect.name == "sqlite":
    params = {{k: v.isoformat() for k, v in params.items()}}
t0, c0 = time.perf_counter(), time.process_time()
with engine.connect() as c:
    rows = c.execute(text("SELECT tenant_id, category, subcategory, SUM(amount) FROM r2a_transactions "
                          "WHERE txn_date >= :s AND txn_date < :e GROUP BY tenant_id, category, subcategory"),
                     params).fetchall()
extra = {{"groups": len(rows)}}
"""

# The r2a_pl_monthly and journal assets' bodies (ledger_pipeline/assets/r2a.py, assets/ledger.py), step by step.
PIPELINE = """
import pandas as pd
from ledger_pipeline.assets.ledger import CHART_COLUMNS, DETAIL_SQL
from ledger_pipeline.charts import load_charts
from ledger_pipeline.ledger.journal import build_journal
from ledger_pipeline.ledger.mapping import load_mapping
from ledger_pipeline.ledger.schemas import validate_lines, validated_entries
from ledger_pipeline.ledger.sink import entries_from_frames
from ledger_pipeline.r2a.extract import extract
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.settings import load_settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.ledger import save_window
from ledger_pipeline.warehouse.store import Warehouse, replace_rows, transaction, window_where
s = load_settings()
engine, ops = make_engine(s.r2a_database_url, read_only=True), make_ops_engine(s.ops_database_url)
wh = Warehouse(s.work_warehouse_path, s.warehouse_path)
with wh.connect() as con:  # schema setup outside the timing (the first connect of a fresh process creates it)
    pass
rules = load_mapping(s.account_mapping_path)
steps = {{}}
def step(name, t=[time.perf_counter()]):
    now = time.perf_counter(); steps[name] = steps.get(name, 0.0) + now - t[0]; t[0] = now
t0 = time.perf_counter(); c0 = time.process_time(); step("setup")
steps.clear()
run = {{"run_id": "bench"}}
now = pd.Timestamp.now()
x = extract(engine, start, end); step("extract")
with wh.connect() as con, transaction(con):
    replace_rows(con, "r2a.pl_monthly", x.monthly.assign(**run, extracted_at=now), window_where(), [start, end])
    replace_rows(con, "r2a.pl_monthly_detail", x.detail.assign(**run), window_where(), [start, end])
    replace_rows(con, "ledger.rejections", x.rejections.assign(**run, recorded_at=now),
                 f"stage = 'extract' AND ({{window_where()}} OR period IS NULL)", [start, end])
step("land_pl")
wh.publish(run_id="bench"); step("publish")
with wh.connect() as con:
    detail = con.execute(DETAIL_SQL, [start, end]).fetchdf()
accounts = load_charts(ops, columns=CHART_COLUMNS)  # the charts' one home, as the journal asset reads them
step("read_back")
b = build_journal(detail, accounts, rules); step("build")
lines, invalid = validate_lines(b.lines, start, end)
entries = validated_entries(lines, b.entries); step("validate")
rejections = pd.concat([f for f in (b.rejections, invalid) if len(f)] or [b.rejections], ignore_index=True)
with wh.connect() as con, transaction(con):
    replace_rows(con, "ledger.journal_entries", entries.assign(**run, built_at=now), window_where(), [start, end])
    replace_rows(con, "ledger.journal_lines", lines.assign(**run), window_where(), [start, end])
    replace_rows(con, "ledger.rejections", rejections.assign(**run, recorded_at=now),
                 window_where() + " AND stage IN ('map', 'validate')", [start, end])
    held = con.execute(f"SELECT tenant_id, period FROM ledger.rejections WHERE {{window_where()}}",
                       [start, end]).fetchdf()
step("land_journal")
canonical = entries_from_frames(entries, lines); step("entries_from_frames")
save_window(ops, start, end, canonical, held, "bench"); step("save_window")
wh.publish(run_id="bench"); step("publish")
extra = {{"entries": len(entries), "lines": len(lines), "detail_rows": len(x.detail), "steps": steps}}
"""

DAGSTER = """
from ledger_pipeline.testing import LOCAL_CLOSE, materialize
import ledger_pipeline.definitions  # imports outside the timing, as for the pipeline code
t0, c0 = time.perf_counter(), time.process_time()
result = materialize(LOCAL_CLOSE, os.environ["B_START"], os.environ.get("B_LAST"), checks={checks})
assert result.success
extra = {{"months": os.environ.get("B_LAST", os.environ["B_START"])}}
"""

SEED_LOOP = """
# The seed's get_r2a_monthly_summary: one query per tenant (index on tenant and date), rows built and inserted
# one by one.
import duckdb
from sqlalchemy import create_engine, text
engine = create_engine(os.environ["R2A_DATABASE_URL"])
# The index the loop needs to be fair, for this measurement only: left in place it changes the plan of the
# pipeline's own extract query (SQLite then scans the whole table through it for the second UNION ALL branch).
with engine.begin() as c:
    c.execute(text("CREATE INDEX IF NOT EXISTS ix_bench_tenant_date ON r2a_transactions (tenant_id, txn_date)"))
con = duckdb.connect(os.environ["B_LOOP_DB"])
con.execute("CREATE OR REPLACE TABLE pl (tenant_id VARCHAR, period DATE, revenue DECIMAL(18,2), "
            "cogs DECIMAL(18,2), expenses DECIMAL(18,2))")
t0, c0 = time.perf_counter(), time.process_time()
s, e = os.environ["B_START"], os.environ["B_END"]
with engine.connect() as c:
    tenants = [r[0] for r in c.execute(text("SELECT tenant_id FROM tenants ORDER BY tenant_id"))]
    for t in tenants:
        rows = c.execute(text("SELECT category, SUM(amount) FROM r2a_transactions WHERE tenant_id = :t "
                              "AND txn_date >= :s AND txn_date < :e GROUP BY category"),
                         {{"t": t, "s": s, "e": e}}).fetchall()
        if not rows:
            continue
        d = dict(rows)
        con.execute("INSERT INTO pl VALUES (?, ?, ?, ?, ?)",
                    [t, s, d.get("revenue", 0), d.get("cogs", 0), d.get("expense", 0)])
seconds_loop = time.perf_counter() - t0
with engine.begin() as c:
    c.execute(text("DROP INDEX IF EXISTS ix_bench_tenant_date"))
t0 = time.perf_counter() - seconds_loop
extra = {{"tenants": len(tenants)}}
"""


def child(body: str, env: dict, **fmt: object) -> dict:
    code = CHILD_PRELUDE.format(env=repr(env)) + body.format(**fmt) + CHILD_END.format()
    _, _, out = in_child(code)
    return json.loads(out.strip().splitlines()[-1])


def chart_frame(tenants: list[str]):  # noqa: ANN201 - a pandas frame
    """Jurnal's default chart for every tenant, as a chart read gives it (charts.ACCOUNT_COLUMNS)."""
    import pandas as pd

    from ledger_pipeline.charts import ACCOUNT_COLUMNS
    from ledger_pipeline.sandboxes.chart import DEFAULT_CHART

    return pd.DataFrame([("jurnal", t, str(i + 1), n, name, cat, None, False)
                         for t in tenants for i, (n, name, cat) in enumerate(DEFAULT_CHART)], columns=ACCOUNT_COLUMNS)


def prepare(env: dict, tenants: int, months: int) -> None:
    import os

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        _prepare(tenants, months)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _prepare(tenants: int, months: int) -> None:
    import pandas as pd
    from sqlalchemy import func, select, text

    from ledger_pipeline.charts import STATUS_COLUMNS, ChartFetch, publish_charts, save_charts
    from ledger_pipeline.r2a import seed as seeding
    from ledger_pipeline.r2a.models import Tenant, make_engine
    from ledger_pipeline.settings import load_settings
    from ledger_pipeline.state.database import make_ops_engine
    from ledger_pipeline.testing import tenant_ids
    from ledger_pipeline.warehouse.store import Warehouse, transaction

    s = load_settings()
    engine = make_engine(s.r2a_database_url)
    seeding.create_tables(engine)  # the bench plays R2a's team: the pipeline itself never creates R2a's tables
    with engine.connect() as c:
        have = c.execute(select(func.count()).select_from(Tenant)).scalar_one() if engine.dialect.has_table(
            c, "tenants") else 0
    if have != tenants:
        r = seeding.seed(engine, tenants, months, FIRST)
        print(f"seeded {r.rows:,} rows", flush=True)
    with engine.begin() as c:  # only the seed-style loop's own measurement has its index (see SEED_LOOP)
        c.execute(text("DROP INDEX IF EXISTS ix_bench_tenant_date"))
    engine.dispose()
    import dagster as dg

    with dg.DagsterInstance.get():  # the instance's databases exist before the first timed run (as for users)
        pass
    ops = make_ops_engine(s.ops_database_url)  # the charts, as a chart refresh stores them, and their DuckDB copy
    accounts = chart_frame(tenant_ids(tenants))
    status = pd.DataFrame([("jurnal", t, "ok", n, None) for t, n in accounts.groupby("tenant_id").size().items()],
                          columns=STATUS_COLUMNS)
    save_charts(ops, ChartFetch(accounts, status), "bench")
    with Warehouse(s.work_warehouse_path, s.warehouse_path).connect() as con, transaction(con):
        publish_charts(con, ops)
    ops.dispose()


def measure(label: str, body: str, env: dict, runs: int, **fmt: object) -> dict:
    got = [child(body, env, **fmt) for _ in range(runs)]
    med = statistics.median(r["seconds"] for r in got)
    cpu = statistics.median(r["cpu_seconds"] for r in got)
    out = {**sorted(got, key=lambda r: r["seconds"])[len(got) // 2], "seconds": med, "cpu_seconds": cpu,
           "all_seconds": [round(r["seconds"], 3) for r in got],
           "all_cpu_seconds": [round(r["cpu_seconds"], 3) for r in got], "peak_mib": max(r["peak_mib"] for r in got)}
    print(f"  {label}: {med:.2f}s wall, {cpu:.2f}s CPU, {out['peak_mib']:.0f} MiB", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=10_000)
    ap.add_argument("--months", type=int, default=12, help="seeded months, from 2025-01")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--backfill-months", type=int, default=12, help="the ranged run measured for memory (0: skip)")
    ap.add_argument("--postgres", default=None, help="also run against this Postgres URL")
    ap.add_argument("--smoke", action="store_true", help="40 tenants, 2 months, 1 run, no backfill: for CI")
    args = ap.parse_args()
    if args.smoke:
        args.tenants, args.months, args.runs, args.backfill_months = 40, 2, 1, 0
    from ledger_pipeline.testing import env_vars

    month = clock.add_months(FIRST, min(5, args.months - 1))  # 2025-06 at full scale
    end = clock.add_months(month, 1)
    keep = results_dir() / "data"  # seeded databases are reused between invocations of the same size
    targets = {"sqlite": None}
    if args.postgres:
        targets["postgres"] = own_schema(args.postgres, "bench_close")
    report: dict = {"tenants": args.tenants, "months": args.months, "month": str(month), "runs": args.runs,
                    "smoke": args.smoke}
    for name, url in targets.items():
        root = Path(tempfile.mkdtemp(prefix=f"bench-close-{name}-")) if args.smoke else keep / name
        if not args.smoke and root.exists():  # keep only the seeded database: a fresh instance and warehouse
            for item in root.iterdir():
                if not item.name.startswith("r2a.sqlite"):
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        env = env_vars(root, first_month=FIRST, r2a_url=url,
                       encryption_key="YmVuY2gta2V5LW5vdC11c2VkLTAwMDAwMDAwMDAwMDA=")
        env.update({"B_START": str(month), "B_END": str(end), "B_LOOP_DB": str(root / "loop.duckdb")})
        print(f"== {name}: {args.tenants:,} tenants, month {month:%Y-%m}", flush=True)
        prepare(env, args.tenants, args.months)
        results = {
            "floor_group_by": measure("floor", FLOOR, env, args.runs),
            "pipeline_code": measure("pipeline code", PIPELINE, env, args.runs),
            "dagster": measure("dagster (no checks)", DAGSTER, env, args.runs, checks=False),
            "seed_style_loop": measure("seed-style loop", SEED_LOOP, env, 1),
        }
        if not args.smoke:
            results["dagster_with_checks"] = measure("dagster (with checks)", DAGSTER, env, 1, checks=True)
        if args.backfill_months and name == "sqlite":
            last = clock.add_months(FIRST, min(args.backfill_months, args.months) - 1)
            results["backfill"] = measure(f"backfill {args.backfill_months} months", DAGSTER,
                                          {**env, "B_START": str(FIRST), "B_LAST": str(last)}, 1, checks=False)
            results["backfill"]["months_count"] = min(args.backfill_months, args.months)
        floor, own = results["floor_group_by"]["seconds"], results["pipeline_code"]["seconds"]
        cpu = {k: results[k]["cpu_seconds"] for k in ("floor_group_by", "pipeline_code", "dagster")}
        results["ratios"] = {
            "pipeline_vs_floor_cpu": cpu["pipeline_code"] / cpu["floor_group_by"],
            "dagster_vs_pipeline_cpu": cpu["dagster"] / cpu["pipeline_code"],
            "pipeline_vs_floor": own / floor,
            "dagster_vs_pipeline": results["dagster"]["seconds"] / own,
            "dagster_overhead_seconds": results["dagster"]["seconds"] - own,
            "seed_loop_vs_pipeline": results["seed_style_loop"]["seconds"] / own,
        }
        report[name] = results
        if args.smoke:
            shutil.rmtree(root, ignore_errors=True)
    save("close_month_smoke" if args.smoke else "close_month", report)


if __name__ == "__main__":
    main()
