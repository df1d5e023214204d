"""Every benchmark with its documented defaults, then BENCHMARKS.md rendered from the results (bench/report.py).

    make bench                                   # or: .venv/bin/python bench/run_all.py [--postgres URL]
    .venv/bin/python bench/run_all.py --only close_month,gl_ingest
    make bench-smoke                             # or: bench/run_all.py --smoke: every benchmark at a tiny scale

Full runs: each script in its own process, results in bench/results/<name>.json, then BENCHMARKS.md regenerated.
`--smoke`: every script at a tiny scale in this one process (the benchmarks' own child processes aside), results
and a rendered report in a temporary directory (never over the full results): it proves `make bench` still runs
end to end (ledger_pipeline_tests/test_bench_smoke.py). distributed.py needs Postgres, RabbitMQ and Redis: it is
skipped, with the reason, when they do not answer; the smoke run leaves it out (the distributed test covers it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# name -> (extra args of a full run, run in the smoke run)
BENCHES: dict[str, tuple[list[str], bool]] = {
    "seed_speed": ([], True),
    "sandbox_throughput": ([], True),
    "validate_1m": ([], True),
    "close_month": ([], True),
    "posting": ([], True),
    "gl_ingest": ([], True),
    "systems": ([], True),
    "month_end": ([], True),
    "distributed": ([], False),
}
POSTGRES_AWARE = {"seed_speed", "close_month"}


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_full(names: list[str], postgres: str | None) -> dict[str, str]:
    outcome = {}
    for name in names:
        args = list(BENCHES[name][0])
        if postgres and name in POSTGRES_AWARE:
            args += ["--postgres", postgres]
        print(f"== {name} {' '.join(args)}", flush=True)
        t0 = time.time()
        code = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *args], cwd=HERE, env=child_env(),
                              check=False).returncode
        outcome[name] = "ok" if code == 0 else f"exit {code}"
        print(f"== {name}: {outcome[name]} in {time.time() - t0:.0f}s", flush=True)
    return outcome


@contextlib.contextmanager
def argv(values: list[str]):  # noqa: ANN201
    saved = sys.argv
    sys.argv = values
    try:
        yield
    finally:
        sys.argv = saved


def run_smoke(names: list[str]) -> dict[str, float]:
    """Each script's main(--smoke) in this process; returns seconds per script. Raises on the first failure."""
    sys.path.insert(0, str(HERE))
    os.environ["PYTHONPATH"] = child_env()["PYTHONPATH"]
    import resource

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    seconds = {}
    for name in names:
        t0, c0 = time.time(), cpu()
        print(f"== {name} --smoke", flush=True)
        module = importlib.import_module(name)
        with argv([f"bench/{name}.py", "--smoke"]):
            module.main()
        seconds[name] = round(time.time() - t0, 1)
        print(f"== {name}: {seconds[name]}s wall, {cpu() - c0:.1f}s CPU (this process and its children)", flush=True)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="every benchmark at a tiny scale, results in a temp dir")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--postgres", default=os.environ.get("LEDGER_TEST_POSTGRES_URL"),
                    help="also measure seed and close on this Postgres (default: LEDGER_TEST_POSTGRES_URL)")
    ap.add_argument("--no-report", action="store_true", help="do not regenerate BENCHMARKS.md")
    ap.add_argument("--results", default=None, help="results directory (default bench/results; smoke: a temp dir)")
    args = ap.parse_args()
    names = [n for n in (args.only.split(",") if args.only else BENCHES) if n]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    if args.smoke:
        results = Path(args.results or tempfile.mkdtemp(prefix="bench-smoke-results-"))
        os.environ["LEDGER_BENCH_RESULTS"] = str(results)
        seconds = run_smoke([n for n in names if BENCHES[n][1]])
        import report

        out = report.render(results, smoke=True)
        (results / "BENCHMARKS.md").write_text(out)
        print(f"smoke run done in {sum(seconds.values()):.0f}s: {seconds}; report rendered to "
              f"{results / 'BENCHMARKS.md'} ({len(out):,} characters)")
        return
    if args.results:
        os.environ["LEDGER_BENCH_RESULTS"] = args.results
    outcome = run_full(names, args.postgres)
    if not args.no_report:
        subprocess.run([sys.executable, str(HERE / "report.py"), *(["--results", args.results] if args.results
                                                                   else [])], cwd=ROOT, env=child_env(), check=True)
    failed = {k: v for k, v in outcome.items() if v != "ok"}
    if failed:
        raise SystemExit(f"benchmarks failed: {failed}")


if __name__ == "__main__":
    main()
