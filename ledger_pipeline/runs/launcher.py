"""The run launcher of the committed dagster.yaml (`module: ledger_pipeline.runs`, `class: LedgerRunLauncher`):
Dagster's run monitoring uses the same liveness check as the CLI, so the daemon fails UI runs whose process died.

Built on Dagster's private `DefaultRunLauncher` and `CheckRunHealthResult` (dagster._core.launcher): the one place
that imports them.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher

from ledger_pipeline.runs.liveness import liveness


class LedgerRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher plus a worker health check, so `run_monitoring` fails runs whose process is gone.

    DefaultRunLauncher itself has no health check: a run whose worker (or code server) died stays STARTED.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        state = liveness(self._instance, run)
        if state.dead:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"{state.detail}: the run's process died without "
                                        "ending the run; run monitoring marks it failed and frees its slots")
        return CheckRunHealthResult(WorkerStatus.RUNNING, state.detail)
