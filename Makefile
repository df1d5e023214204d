# The two commands of the README: `make demo` (main job on the embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint dev sandbox bench bench-smoke clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,production]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ledger-pipeline demo

# The browser test (ledger_pipeline_tests/test_ui.py) drives Debian's chromium through playwright (never
# `playwright install`: no browser download). As root, install chromium when missing; failure is tolerated and the
# test then skips with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	    || echo "chromium could not be installed: the browser test will skip"; }

# Six test processes: most tests wait on rate limits, subprocesses, emulators and Dagster's daemon, not on the two cores.
# One test handed out at a time (--maxschedchunk 1), so the known-long tests, collected first (conftest.py), start on
# different processes instead of all landing in the first process's initial batch.
test: $(STAMP) browser
	$(BIN)/ruff check ledger_pipeline ledger_pipeline_tests bench
	$(BIN)/python -m pytest -q -n 6 --maxschedchunk 1

lint: $(STAMP)
	$(BIN)/ruff check ledger_pipeline ledger_pipeline_tests bench

dev: $(STAMP)
	DAGSTER_HOME=$(CURDIR)/dagster_home $(BIN)/dagster dev -h 127.0.0.1

sandbox: $(STAMP)
	$(BIN)/ledger-pipeline sandbox

# Every benchmark at its documented scale (tens of minutes; distributed.py also needs Postgres, RabbitMQ, Redis),
# then BENCHMARKS.md rendered from bench/results/*.json. Set LEDGER_TEST_POSTGRES_URL to measure Postgres too.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/run_all.py

# Every benchmark at a tiny scale (about a minute), results and report in a temp dir: `make bench` still runs.
bench-smoke: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/run_all.py --smoke

clean:
	rm -rf data/*.sqlite* data/*.duckdb* data/work data/locks data/sandbox* data/first_month data/demo_rates.csv
