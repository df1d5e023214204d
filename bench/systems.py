"""Requests per posted entry for each accounting system: a fresh month, the three months before it as one fresh
ranged run (a backfill), and an unchanged re-run of all four, against the sandbox (every system's limits time-scaled).

    .venv/bin/python bench/systems.py --tenants-per-system 40 --scale 100
    .venv/bin/python bench/systems.py --smoke      # 2 tenants per system, x1000: seconds, for CI
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import httpx
from common import save

from ledger_pipeline import clock


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants-per-system", type=int, default=40)
    ap.add_argument("--scale", type=float, default=100.0)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.tenants_per_system, args.scale = 2, 1000.0
    from ledger_pipeline.testing import private_env

    last = clock.last_complete_month()
    first = clock.add_months(last, -2)  # the three months ending with `last`
    with private_env(first_month=first, rate_limit_scale=args.scale) as env:
        report = run(env.root, args, first, last)
    save("systems_smoke" if args.smoke else "systems", report)


def run(tmp, args, first: dt.date, last: dt.date) -> dict:  # noqa: ANN001
    from ledger_pipeline.r2a import seed as seeding
    from ledger_pipeline.r2a.models import make_engine
    from ledger_pipeline.sandboxes.base import SandboxLimits
    from ledger_pipeline.sandboxes.server import SandboxServer
    from ledger_pipeline.systems import SYSTEMS
    from ledger_pipeline.testing import CLOSE, LOCAL_CLOSE, connect, materialize, materialize_gl, tenant_ids

    n = args.tenants_per_system * len(SYSTEMS)
    report: dict = {"tenants_per_system": args.tenants_per_system, "scale": args.scale, "systems": {}}
    with SandboxServer(tmp / "sandbox.sqlite", limits=SandboxLimits(scale=args.scale)) as server:
        os.environ.update(server.env())
        seeding.seed(make_engine(os.environ["R2A_DATABASE_URL"]), n, 4, first, seed=9)
        tenants = tenant_ids(n)
        for k, system in enumerate(SYSTEMS):
            connect(tenants[k::len(SYSTEMS)], system)
        materialize_gl()
        materialize(LOCAL_CLOSE, first, last)

        def close(a: dt.date, b: dt.date) -> dict:
            httpx.post(f"{server.url}/_sandbox/stats/reset")
            t0 = time.perf_counter()
            ok = materialize(CLOSE, a, b, raise_on_error=False).success
            stats = httpx.get(f"{server.url}/_sandbox/stats").json()
            return {"ok": ok, "seconds": round(time.perf_counter() - t0, 1), "by_system": stats["by_system"],
                    "rate_limited": stats["rate_limited"]}

        def entries(a: dt.date, b: dt.date) -> dict[str, int]:
            import duckdb

            con = duckdb.connect(str(tmp / "warehouse.duckdb"), read_only=True)
            rows = con.execute("SELECT system, COUNT(*) FROM accounting.postings WHERE period BETWEEN ? AND ? "
                               "AND status <> 'deleted' GROUP BY 1", [a, b]).fetchall()
            con.close()
            return dict(rows)

        fresh_month = close(last, last)
        e_month = entries(last, last)
        fresh_range = close(first, (last - dt.timedelta(days=1)).replace(day=1))
        e_range = {s: v - e_month.get(s, 0) for s, v in entries(first, last).items()}
        rerun = close(first, last)
        for system in SYSTEMS:
            report["systems"][system] = {
                "fresh_month_entries": e_month.get(system, 0),
                "fresh_month_requests_per_entry": round(fresh_month["by_system"][system]["api_requests"]
                                                        / max(e_month.get(system, 0), 1), 3),
                "fresh_3_months_one_run_requests_per_entry": round(fresh_range["by_system"][system]["api_requests"]
                                                                   / max(e_range.get(system, 0), 1), 3),
                "unchanged_rerun_requests": rerun["by_system"][system]["api_requests"],
            }
        report["runs"] = {"fresh_month": fresh_month, "fresh_range": fresh_range, "rerun": rerun}
    return report


if __name__ == "__main__":
    main()
