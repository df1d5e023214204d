"""`ledger-pipeline seed` speed: 10,000 tenants x 12 months on SQLite (and Postgres with --postgres URL).

    .venv/bin/python bench/seed_speed.py --tenants 10000 --months 12 [--postgres URL]
    .venv/bin/python bench/seed_speed.py --smoke     # 200 tenants x 2 months, for CI
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

from common import own_schema, save
from sqlalchemy import text

from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=10_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--postgres", default=None)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.tenants, args.months = 200, 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-seed-"))
    targets = {"sqlite": f"sqlite:///{tmp / 'r2a.sqlite'}"}
    if args.postgres:
        targets["postgres"] = own_schema(args.postgres, "bench_seed")
    report: dict = {"tenants": args.tenants, "months": args.months, "target": "well under 60 s on SQLite"}
    for name, url in targets.items():
        engine = make_engine(url)
        t0, c0 = time.perf_counter(), time.process_time()
        t_gen = time.perf_counter()
        tenants, txns = seeding.generate(args.tenants, args.months, dt.date(2025, 1, 1))
        t_gen = time.perf_counter() - t_gen
        seeding.write(engine, tenants, txns)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        with engine.connect() as c:
            rows = c.execute(text("SELECT COUNT(*) FROM r2a_transactions")).scalar_one()
        report[name] = {"rows": rows, "seconds": round(total, 2), "generate_seconds": round(t_gen, 2),
                        "rows_per_second": round(rows / total),
                        "cpu_seconds": round(cpu, 2)}
        print(name, report[name], flush=True)
        engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)
    save("seed_speed_smoke" if args.smoke else "seed_speed", report)


if __name__ == "__main__":
    main()
