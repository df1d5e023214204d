"""Every benchmark with its documented defaults (results in bench/results/*.json; figures in BENCHMARKS.md).

    make bench        # or: .venv/bin/python bench/run_all.py [--postgres URL]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    pg = os.environ.get("LEDGER_TEST_POSTGRES_URL")
    extra = ["--postgres", pg] if pg else []
    for script, args in (("seed_speed.py", extra), ("sandbox_throughput.py", []), ("validate_1m.py", []),
                         ("close_month.py", extra), ("posting.py", []), ("gl_ingest.py", [])):
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *args], cwd=HERE, check=True)


if __name__ == "__main__":
    main()
