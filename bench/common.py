"""Shared helpers for the benchmarks: timing with medians, child processes with their peak memory, result files
that carry their own provenance (command, machine, date, load) for bench/report.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def results_dir() -> Path:
    """Where result files go: LEDGER_BENCH_RESULTS (read at each call), else bench/results."""
    return Path(os.environ.get("LEDGER_BENCH_RESULTS") or ROOT / "bench" / "results")


_STARTED = time.time()
_LOAD_START = os.getloadavg()


def child_env(extra: dict | None = None) -> dict[str, str]:
    """os.environ plus `extra`, with this checkout first on PYTHONPATH (children import this tree, not whatever
    ledger_pipeline the venv has installed)."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def own_schema(url: str, schema: str) -> str:
    """The Postgres URL with its own schema (created), so a benchmark never writes the database's public schema."""
    from sqlalchemy import create_engine, text

    admin = create_engine(url)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
    admin.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def median_time(fn: Callable[[], object], runs: int = 3) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def in_child(code: str, env: dict | None = None) -> tuple[float, float, str]:
    """Run `code` in a fresh Python; returns (wall seconds, peak RSS MiB of that child, stdout)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=err, text=True, env=child_env(env))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(err.read()[-3000:])
        return wall, usage.ru_maxrss / 1024, out.read()


def machine() -> dict:
    """What ran the benchmark: cores, memory, Python, the load before and after (the machine is shared)."""
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) // 1024 // 1024
    except (OSError, StopIteration):
        pass
    return {"cores": os.cpu_count(), "memory_gib": mem, "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}",
            "load_at_start": [round(x, 2) for x in _LOAD_START], "load_at_end": [round(x, 2) for x in os.getloadavg()]}


def save(name: str, data: dict) -> Path:
    """Write bench/results/<name>.json with the command, machine, date and duration next to the figures."""
    results = results_dir()
    results.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": round(time.time() - _STARTED, 1), "machine": machine()}
    path = results / f"{name}.json"
    path.write_text(json.dumps({"_meta": meta, **data}, indent=2, default=str))
    print(json.dumps(data, indent=2, default=str))
    return path
