"""The same month posted by 1, 2 and 4 Celery workers (Dagster's production deployment on this machine).

Each worker has its own source address (127.0.0.2 ..) and private data directory; the four shards are dealt over the
workers (1 worker serves all four queues, 2 workers two each). Jurnal's limits are time-scaled (--scale, default 1.5:
60 requests/min per address), the sandbox runs on 127.0.0.1, the month is launched as the UI does (one asset backfill).
Needs Postgres, RabbitMQ and Redis (the env vars of the distributed test, defaults for this machine below).

    .venv/bin/python bench/distributed.py [--tenants 200] [--scale 1.5] [--workers 1,2,4]

Measured per setup: posting (the close's `postings` step, from sending the shard tasks to the last answer), the whole
close (from launch to the run's end: queueing, charts, extract, journal, posting, reconciliation), requests, 429s,
and the one-address floor.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LEDGER_FIRST_MONTH", "2024-01")

import httpx  # noqa: E402
from common import save  # noqa: E402

from ledger_pipeline.testing.cluster import (  # noqa: E402
    Services,
    one_address_floor,
    posting_span,
    prepared,
    services_from_env,
)

DEFAULTS = Services("postgresql+psycopg://postgres@127.0.0.1:5432/test", "amqp://guest:guest@127.0.0.1:5672//",
                    "redis://127.0.0.1:6379/0")


def measure(workers: int, tenants: int, scale: float, services: Services) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-dist-{workers}-") as tmp, \
            prepared(Path(tmp), services, tenants, 1, scale) as (cluster, sandbox, _engine, months):
        cluster.start(workers)
        t0 = time.time()
        status = cluster.wait_run(cluster.launch_close(months[0]), 1800).value
        total = time.time() - t0
        with cluster.instance() as instance:
            wall, requests, shards = posting_span(instance, months[0])
        stats = httpx.get(f"{sandbox.url}/_sandbox/stats").json()
        return {"workers": workers, "status": status, "tenants": tenants, "scale": scale, "posting_s": round(wall, 1),
                "close_s": round(total, 1), "requests": requests, "rate_limited": stats["rate_limited"],
                "addresses": len(stats["by_address"]), "shards": len(shards),
                "one_address_floor_s": round(one_address_floor(requests, sandbox.ctx.limits), 1)}


def reachable(services: Services) -> str | None:
    """None when Postgres, RabbitMQ and Redis answer on their ports, else what is missing."""
    import socket

    from sqlalchemy.engine import make_url

    missing = []
    for name, url, port in (("Postgres", services.postgres, 5432), ("RabbitMQ", services.broker, 5672),
                            ("Redis", services.backend, 6379)):
        u = make_url(url.replace("amqp://", "postgresql://").replace("redis://", "postgresql://"))
        try:
            socket.create_connection((u.host or "127.0.0.1", u.port or port), timeout=2).close()
        except OSError:
            missing.append(f"{name} ({u.host}:{u.port or port})")
    return ", ".join(missing) or None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--scale", type=float, default=1.5)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    services = services_from_env() or DEFAULTS
    if (missing := reachable(services)) is not None:
        why = (f"skipped: {missing} not reachable (set LEDGER_TEST_POSTGRES_URL, LEDGER_TEST_CELERY_BROKER and "
               "LEDGER_TEST_CELERY_BACKEND, or start them)")
        print(why)
        save("distributed", {"skipped": why})
        return
    rows = [measure(int(w), args.tenants, args.scale, services) for w in args.workers.split(",")]
    base = rows[0]["posting_s"]
    print(f"\nthe same month ({args.tenants} tenants, Jurnal's limits x{args.scale:g}) on 1, 2 and 4 workers\n")
    print("| workers | posting | speed-up | whole close | requests | 429s | one-address floor |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['posting_s']:.1f} s | {base / r['posting_s']:.2f}x | {r['close_s']:.0f} s "
              f"| {r['requests']} | {r['rate_limited']} | {r['one_address_floor_s']:.0f} s |")
    save("distributed", {"rows": rows})


if __name__ == "__main__":
    main()
