"""`make bench` keeps running: each benchmark at a tiny scale (what `bench/run_all.py --smoke` runs), in this process
(the benchmarks' own child processes aside), then BENCHMARKS.md's renderer on its result file. One test per
benchmark, each well under a minute on an idle 2-core machine; results go to the test's temp dir, never to
bench/results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ledger_pipeline.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow
BENCH = PROJECT_ROOT / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import report  # noqa: E402  (bench/report.py)
import run_all  # noqa: E402  (bench/run_all.py)

SMOKE = [name for name, (_, in_smoke) in run_all.BENCHES.items() if in_smoke]


def test_the_smoke_run_covers_every_benchmark_but_the_one_needing_services() -> None:
    scripts = {p.stem for p in BENCH.glob("*.py")} - {"common", "run_all", "report"}
    assert set(run_all.BENCHES) == scripts
    assert set(SMOKE) == scripts - {"distributed"}
    assert {s for s, _, _ in report.SECTIONS} == scripts  # every benchmark has its section in BENCHMARKS.md


@pytest.mark.parametrize("name", SMOKE)
def test_benchmark_runs_at_smoke_scale_and_renders(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                   ) -> None:
    monkeypatch.setenv("LEDGER_BENCH_RESULTS", str(tmp_path))
    real = BENCH / "results" / f"{name}_smoke.json"
    before = real.stat().st_mtime_ns if real.exists() else None
    run_all.run_smoke([name])
    result = json.loads((tmp_path / f"{name}_smoke.json").read_text())
    meta = result["_meta"]
    assert meta["command"].endswith(f"{name}.py --smoke") and meta["machine"]["cores"] and meta["date"]
    section = report.render(tmp_path, smoke=True).split(f"(`bench/{name}.py`)")[1].split("\n## ")[0]
    assert "Not measured" not in section and "not understood" not in section, section
    assert meta["command"] in section  # the command, machine and date are printed with the figures
    if name == "close_month":
        sqlite = result["sqlite"]
        assert sqlite["pipeline_code"]["entries"] > 0 and set(sqlite["pipeline_code"]["steps"]) >= {
            "extract", "build", "validate", "entries_from_frames", "save_window", "publish"}
        assert "x the floor" in section
    if name == "month_end":
        assert result["fresh"]["rate_limited"] == 0 and result["resume"]["duplicate_entries"] == 0
        assert result["unchanged_rerun"]["requests"] == 0
    if name == "posting":
        assert result["unchanged_rerun"]["requests"] == 0 and result["fresh"]["requests_per_entry"] <= 1
    if name == "systems":
        assert all(s["unchanged_rerun_requests"] == 0 for s in result["systems"].values())
    assert (real.stat().st_mtime_ns if real.exists() else None) == before  # bench/results untouched
