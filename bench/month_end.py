"""Month-end at scale: N tenants seeded and connected, charts ingested by the daily GL job, then a fresh month closed
with `ledger-pipeline run` against the sandbox with Jurnal's real limits time-scaled on both sides, then an unchanged
re-run, then a second month killed part-way (SIGKILL) and resumed.

    .venv/bin/python bench/month_end.py --tenants 10000 --scale 100 --kill-at 6000
    .venv/bin/python bench/month_end.py --smoke     # 30 tenants, x1000, killed after 10 writes: seconds, for CI

Reports requests per tenant, wall time against the floor (requests needed / allowed rate, real and scaled), 429s,
peak memory of the run process, and the writes repeated by the resumed run. Results: bench/results/month_end.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import ROOT, child_env, save

from ledger_pipeline import clock
from ledger_pipeline.testing.net import free_port

PER_IP_MINUTE = 40  # Jurnal's binding limit: requests per minute per source address


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def run_close(month: str, env: dict, kill_when: tuple[str, int] | None = None) -> dict:
    """`ledger-pipeline run --month` as a child; (wall seconds, peak RSS MiB, exit code); optionally SIGKILLed once
    the sandbox has seen `kill_when[1]` writes."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ledger_pipeline.cli", "run", "--month", month], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    killed = False
    if kill_when:
        url, writes = kill_when
        while proc.poll() is None:
            if httpx.get(f"{url}/_sandbox/stats").json()["api_writes"] >= writes:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.2)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read() if proc.stdout else ""
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": usage.ru_maxrss / 1024,
            "exit": os.waitstatus_to_exitcode(status), "killed": killed, "tail": out[-1500:]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=10_000)
    ap.add_argument("--scale", type=float, default=100.0, help="Jurnal's clock on both sides (100: 4,000 req/min/IP)")
    ap.add_argument("--kill-at", type=int, default=6_000, help="SIGKILL the second month's run after this many writes")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.tenants, args.scale, args.kill_at = 30, 1000.0, 10
    from ledger_pipeline.testing import private_env

    m1, _ = clock.recent_months(2)
    with private_env(first_month=m1, rate_limit_scale=args.scale, keep=not args.smoke) as penv:
        report = run(penv.root, args)
    save("month_end_smoke" if args.smoke else "month_end", report)


def run(tmp: Path, args: argparse.Namespace) -> dict:
    port = free_port()
    m1, m2 = clock.recent_months(2)
    env = child_env({"LEDGER_SANDBOX_URL": f"http://127.0.0.1:{port}",
                     "JURNAL_API_BASE_URL": f"http://127.0.0.1:{port}/partner/core/api/v1",
                     "JURNAL_OAUTH_BASE_URL": f"http://127.0.0.1:{port}"})
    os.environ.update({k: env[k] for k in ("LEDGER_SANDBOX_URL", "JURNAL_API_BASE_URL", "JURNAL_OAUTH_BASE_URL")})
    sandbox = subprocess.Popen([sys.executable, "-m", "ledger_pipeline.cli", "sandbox", "--port", str(port),
                                "--state", str(tmp / "sandbox.sqlite"), "--rate-limit-scale", str(args.scale)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    report: dict = {"tenants": args.tenants, "scale": args.scale, "months": [f"{m1:%Y-%m}", f"{m2:%Y-%m}"]}
    url = env["LEDGER_SANDBOX_URL"]
    try:
        wait_http(f"{url}/_sandbox/stats")
        from ledger_pipeline.r2a import seed as seeding
        from ledger_pipeline.r2a.models import make_engine
        from ledger_pipeline.testing import connect, materialize_gl, tenant_ids

        t0 = time.perf_counter()
        seeding.seed(make_engine(env["R2A_DATABASE_URL"]), args.tenants, 2, m1, seed=3)
        tenants = tenant_ids(args.tenants)
        with ThreadPoolExecutor(4) as pool:  # the OAuth flow per tenant (not rate limited by Jurnal)
            list(pool.map(connect, [tenants[i::4] for i in range(4)]))
        report["setup_seconds"] = round(time.perf_counter() - t0, 1)
        time.sleep(60 / args.scale)
        httpx.post(f"{url}/_sandbox/stats/reset")
        t0 = time.perf_counter()
        materialize_gl()  # the daily GL job (background priority)
        charts = httpx.get(f"{url}/_sandbox/stats").json()
        report["charts"] = {"seconds": round(time.perf_counter() - t0, 1), "requests": charts["api_requests"],
                            "rate_limited": charts["rate_limited"]}
        time.sleep(60 / args.scale)

        def close(month: dt.date, kill_at: int | None = None) -> dict:
            httpx.post(f"{url}/_sandbox/stats/reset")
            res = run_close(f"{month:%Y-%m}", env, (url, kill_at) if kill_at else None)
            stats = httpx.get(f"{url}/_sandbox/stats").json()
            return {**res, "requests": stats["api_requests"], "writes": stats["api_writes"],
                    "rate_limited": stats["rate_limited"]}

        allowed_per_s = PER_IP_MINUTE * args.scale / 60
        fresh = close(m1)
        floor = fresh["requests"] / allowed_per_s
        report["fresh"] = {**fresh, "requests_per_tenant": fresh["requests"] / args.tenants,
                           "floor_seconds": round(floor, 1), "floor_seconds_unscaled": round(floor * args.scale),
                           "wall_over_floor": round(fresh["seconds"] / floor, 3)}
        rerun = close(m1)
        report["unchanged_rerun"] = {**rerun, "requests_per_tenant": rerun["requests"] / args.tenants}
        time.sleep(60 / args.scale)
        killed = close(m2, args.kill_at)
        resumed = close(m2)
        with sqlite3.connect(tmp / "sandbox.sqlite") as db:  # the sandbox's own books (20k entries: no HTTP dump)
            entries, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT company_id || custom_id) FROM entries"
                                           ).fetchone()
        report["resume"] = {"killed_after_writes": killed["writes"], "resumed_writes": resumed["writes"],
                            "resumed_requests": resumed["requests"], "entries_in_jurnal_both_months": entries,
                            "duplicate_entries": entries - distinct,
                            "repeated_writes": killed["writes"] + resumed["writes"] - (entries - fresh["writes"]),
                            "killed_run": {k: killed[k] for k in ("seconds", "killed", "exit")},
                            "resumed_run": {k: resumed[k] for k in ("seconds", "exit", "rate_limited")}}
        for part in ("fresh", "unchanged_rerun"):
            report[part].pop("tail", None)
    finally:
        sandbox.send_signal(signal.SIGTERM)
        sandbox.wait(timeout=20)
    report["targets"] = {"requests_per_tenant_fresh": "<= 1.1", "unchanged_rerun_requests": "0",
                         "wall_over_floor": "<= 1.1", "rate_limited": "0", "peak_rss_mib": "< 1024",
                         "repeated_writes": "0"}
    return report


if __name__ == "__main__":
    main()
