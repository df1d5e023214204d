"""Posting against the sandbox with Jurnal's limits, time-scaled: requests per posted entry (fresh, unchanged re-run,
12-month backfill), the share of the allowed request rate used, and 429s.

    .venv/bin/python bench/posting.py --tenants 300 --scale 20
    .venv/bin/python bench/posting.py --smoke      # 8 tenants, 2 months, x1000: seconds, for CI
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import httpx
from common import save

from ledger_pipeline import clock

FIRST = dt.date(2025, 1, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=300)
    ap.add_argument("--scale", type=float, default=20.0, help="sandbox and client clock (20 = 800 req/min per IP)")
    ap.add_argument("--months", type=int, default=12, help="seeded months from 2025-01; the backfill posts them all")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.tenants, args.scale, args.months = 8, 1000.0, 2
    from ledger_pipeline.testing import private_env

    with private_env(first_month=FIRST, rate_limit_scale=args.scale) as env:
        report = run(env.root, args)
    save("posting_smoke" if args.smoke else "posting", report)


def run(tmp, args) -> dict:  # noqa: ANN001
    from ledger_pipeline.r2a import seed as seeding
    from ledger_pipeline.r2a.models import make_engine
    from ledger_pipeline.sandboxes.base import SandboxLimits
    from ledger_pipeline.sandboxes.server import SandboxServer
    from ledger_pipeline.testing import LOCAL_CLOSE, connect, materialize, materialize_gl, tenant_ids

    report: dict = {"tenants": args.tenants, "scale": args.scale, "months": args.months}
    with SandboxServer(tmp / "sandbox.sqlite", limits=SandboxLimits(scale=args.scale)) as server:
        os.environ.update(server.env())
        engine = make_engine(os.environ["R2A_DATABASE_URL"])
        seeding.seed(engine, args.tenants, args.months, FIRST, seed=3)
        month, last = clock.add_months(FIRST, min(5, args.months - 1)), clock.add_months(FIRST, args.months - 1)
        server.ctx.limits.enabled = False  # connecting is setup, not the measurement
        connect(tenant_ids(args.tenants))
        materialize_gl()
        materialize(LOCAL_CLOSE, month)
        server.ctx.limits.enabled = True
        time.sleep(60 / args.scale)  # start on fresh windows

        def post(first: dt.date, last: dt.date | None = None) -> dict:
            httpx.post(f"{server.url}/_sandbox/stats/reset")
            t0 = time.perf_counter()
            result = materialize(["postings"], first, last)
            wall = time.perf_counter() - t0
            meta = next(e for e in result.get_asset_materialization_events()).materialization.metadata
            stats = httpx.get(f"{server.url}/_sandbox/stats").json()
            return {"seconds": wall, "requests": stats["api_requests"], "writes": stats["api_writes"],
                    "rate_limited": stats["rate_limited"], "done": meta["done"].value}

        fresh = post(month)
        entries = sum(fresh["done"].values())
        allowed_per_s = 40 * args.scale / 60  # the per-IP limit binds: one egress IP, one token per tenant
        report["fresh"] = {**fresh, "entries": entries, "requests_per_entry": fresh["requests"] / entries,
                           "allowed_requests_per_second": allowed_per_s,
                           "achieved_requests_per_second": fresh["requests"] / fresh["seconds"],
                           "share_of_allowed_rate": fresh["requests"] / fresh["seconds"] / allowed_per_s,
                           "share_429": fresh["rate_limited"] / max(fresh["requests"], 1)}
        rerun = post(month)
        report["unchanged_rerun"] = {**rerun, "requests_per_entry": rerun["requests"] / entries}
        # a backfill of every seeded month (ranged run, one run): each tenant's new months go in one batch_create
        materialize(LOCAL_CLOSE, FIRST, last)
        back = post(FIRST, last)
        batch = back["writes"]
        report["backfill"] = {**back, "months": args.months, "created": back["done"].get("create", 0),
                                        "requests_per_created_entry": back["requests"] / back["done"]["create"],
                                        "write_calls": batch}
    report["targets"] = {"requests_per_entry_fresh": "<= 1.0", "unchanged_rerun": "0",
                         "backfill_requests_per_entry": "<= 0.1", "share_of_allowed_rate": ">= 0.9",
                         "share_429": "<= 0.01"}
    return report


if __name__ == "__main__":
    main()
