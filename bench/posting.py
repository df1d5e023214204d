"""Posting against the sandbox with Jurnal's limits, time-scaled: requests per posted entry (fresh, unchanged re-run,
12-month backfill), the share of the allowed request rate used, and 429s.

    .venv/bin/python bench/posting.py --tenants 300 --scale 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import httpx
from common import save
from cryptography.fernet import Fernet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=300)
    ap.add_argument("--scale", type=float, default=20.0, help="sandbox and client clock (20 = 800 req/min per IP)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-posting-"))
    os.environ.update({
        "LEDGER_DATA_DIR": str(tmp), "R2A_DATABASE_URL": f"sqlite:///{tmp / 'r2a.sqlite'}",
        "LEDGER_WAREHOUSE": str(tmp / "warehouse.duckdb"), "LEDGER_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "JURNAL_RATE_LIMIT_SCALE": str(args.scale),
    })
    from ledger_pipeline.r2a import seed as seeding
    from ledger_pipeline.r2a.models import make_engine
    from ledger_pipeline.sandboxes.jurnal import Limits
    from ledger_pipeline.sandboxes.server import SandboxServer
    from ledger_pipeline_tests.helpers import connect, materialize, materialize_gl

    report: dict = {"tenants": args.tenants, "scale": args.scale}
    with SandboxServer(tmp / "sandbox.sqlite", limits=Limits(scale=args.scale)) as server:
        os.environ["JURNAL_API_BASE_URL"] = server.api_url
        os.environ["JURNAL_OAUTH_BASE_URL"] = server.url
        engine = make_engine(os.environ["R2A_DATABASE_URL"])
        seeding.seed(engine, args.tenants, 12, dt.date(2025, 1, 1), seed=3)
        server.ctx.limits.enabled = False  # connecting is setup, not the measurement
        connect([f"t{i:05d}" for i in range(1, args.tenants + 1)])
        materialize_gl()
        materialize(["r2a_pl_monthly", "journal_entries", "journal_lines"], "2025-06-01")
        server.ctx.limits.enabled = True
        time.sleep(60 / args.scale)  # start on fresh windows

        def post(first: str, last: str | None = None) -> dict:
            httpx.post(f"{server.url}/_sandbox/stats/reset")
            t0 = time.perf_counter()
            result = materialize(["jurnal_postings"], first, last)
            wall = time.perf_counter() - t0
            meta = next(e for e in result.get_asset_materialization_events()).materialization.metadata
            stats = httpx.get(f"{server.url}/_sandbox/stats").json()
            return {"seconds": wall, "requests": stats["api_requests"], "writes": stats["api_writes"],
                    "rate_limited": stats["rate_limited"], "done": meta["done"].value}

        fresh = post("2025-06-01")
        entries = sum(fresh["done"].values())
        allowed_per_s = 40 * args.scale / 60  # the per-IP limit binds: one egress IP, one token per tenant
        report["fresh"] = {**fresh, "entries": entries, "requests_per_entry": fresh["requests"] / entries,
                           "allowed_requests_per_second": allowed_per_s,
                           "achieved_requests_per_second": fresh["requests"] / fresh["seconds"],
                           "share_of_allowed_rate": fresh["requests"] / fresh["seconds"] / allowed_per_s,
                           "share_429": fresh["rate_limited"] / max(fresh["requests"], 1)}
        rerun = post("2025-06-01")
        report["unchanged_rerun"] = {**rerun, "requests_per_entry": rerun["requests"] / entries}
        # a 12-month backfill (ranged run, one run): each tenant's 11 new months go in one batch_create
        materialize(["r2a_pl_monthly", "journal_entries", "journal_lines"], "2025-01-01", "2025-12-01")
        back = post("2025-01-01", "2025-12-01")
        batch = back["writes"]
        report["backfill_12_months"] = {**back, "created": back["done"].get("create", 0),
                                        "requests_per_created_entry": back["requests"] / back["done"]["create"],
                                        "write_calls": batch}
    report["targets"] = {"requests_per_entry_fresh": "<= 1.0", "unchanged_rerun": "0",
                         "backfill_requests_per_entry": "<= 0.1", "share_of_allowed_rate": ">= 0.9",
                         "share_429": "<= 0.01"}
    save("posting", report)


if __name__ == "__main__":
    main()
