"""CLI runs are job runs (issue 25, point 2): a `ledger-pipeline run` appears in monthly_close_job's Runs tab, as the
UI asks the webserver for it (GraphQL runsOrError filtered by job name and the `.dagster/repository` tag)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import make_engine
from ledger_pipeline.runs import ui_tags
from ledger_pipeline_tests.dev_server import dagster_dev, graphql
from ledger_pipeline_tests.helpers import connect, materialize_gl

pytestmark = pytest.mark.slow

# What the job page's Runs tab sends (dagster-webserver 1.13 bundle: runsFilter {pipelineName, tags:
# [{key: RepositoryLabelTag, value: repoAddress}]}).
JOB_RUNS = """query JobRuns($filter: RunsFilter) { runsOrError(filter: $filter) { __typename
  ... on Runs { results { runId jobName status tags { key value } } } } }"""


def test_a_cli_run_is_listed_on_the_jobs_runs_tab(settings, sandbox, tmp_path) -> None:  # noqa: ANN001
    assert ui_tags() == {".dagster/repository": "__repository__@ledger_pipeline"}
    seeding.seed(make_engine(settings.r2a_database_url), 3, 1, dt.date(2025, 1, 1), seed=4)
    connect(["t00001", "t00002", "t00003"])
    materialize_gl()
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home)}
    out = subprocess.run([sys.executable, "-m", "ledger_pipeline.cli", "run", "--month", "2025-01"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    with dagster_dev(tmp_path, home=settings.dagster_home) as url:
        runs = graphql(url, JOB_RUNS, {"filter": {
            "pipelineName": "monthly_close_job",
            "tags": [{"key": ".dagster/repository", "value": "__repository__@ledger_pipeline"}]}})["runsOrError"]
    assert runs["__typename"] == "Runs", runs
    [run] = runs["results"]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert run["jobName"] == "monthly_close_job" and run["status"] == "SUCCESS"
    assert tags["dagster/partition"] == "2025-01-01", "the partition the job's partition matrix groups it under"
