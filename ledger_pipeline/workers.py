"""Runs on Celery workers (production profile): the run launcher the daemon uses, and the app workers start.

`ShardRunLauncher` is dagster-celery's `CeleryRunLauncher` with two changes:
- Routing: a run of a month x shard partition goes to that shard's queue (`ledger-shard-N`), derived from the
  run's `dagster/partition/shard` tag (or its multi-partition key), so the runs of a UI backfill, which only carry
  the backfill's own tags, still land on the right worker. Other runs go to `default_queue` (`ledger-default`); an
  explicit `dagster-celery/queue` tag still wins for them.
- Health: Celery keeps a task STARTED forever when its worker is SIGKILLed (OOM, reboot), so run monitoring would
  never fail the run and the shard's one run slot would stay taken. Here a STARTED task is checked on the worker that
  took it (the node name Celery stores with the STARTED state): the node answers and no longer runs the task (it was
  restarted) -> FAILED; the node does not answer `unanswered_checks` times in a row -> FAILED; otherwise RUNNING
  (Dagster's run monitoring fails a run on any other status, so doubt reads RUNNING).

Workers: `celery -A ledger_pipeline.workers worker -Q ledger-shard-0 -n shard-0@%h -c 1 --prefetch-multiplier 1`
with the same DAGSTER_HOME instance config (deploy/production/dagster.yaml) and LEDGER_* environment as the daemon,
their own LEDGER_DATA_DIR and LEDGER_SOURCE_ADDRESS. Queues are declared alike on both sides (a topic exchange,
`<queue>.#`), so the launcher's `<queue>.execute_job` routing key reaches the worker's queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery
from dagster import DagsterRun
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._serdes import ConfigurableClassData
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.make_app import make_app
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG, DAGSTER_CELERY_TASK_ID_TAG
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task
from kombu import Exchange, Queue

from ledger_pipeline.settings import load_settings
from ledger_pipeline.shards import DEFAULT_QUEUE, SHARD_PREFIX, queue_for, shard_keys

SHARD_TAG = "dagster/partition/shard"
PARTITION_TAG = "dagster/partition"
EXCHANGE = Exchange("ledger", type="topic")


def ledger_queue(name: str) -> Queue:
    """One queue definition for the launcher (publisher) and the workers (consumers)."""
    return Queue(name, EXCHANGE, routing_key=f"{name}.#")


def shard_of(tags: Mapping[str, str]) -> str | None:
    """The shard a run posts for: its shard partition tag, else the shard part of its multi-partition key."""
    if tags.get(SHARD_TAG):
        return tags[SHARD_TAG]
    parts = [p for p in tags.get(PARTITION_TAG, "").split("|") if p.startswith(SHARD_PREFIX)]
    return parts[0] if len(parts) == 1 else None


def queue_of(tags: Mapping[str, str], default_queue: str) -> str:
    shard = shard_of(tags)
    if shard is not None:
        return queue_for(shard)
    return tags.get(DAGSTER_CELERY_QUEUE_TAG) or default_queue


class ShardRunLauncher(CeleryRunLauncher):
    """CeleryRunLauncher routing each shard's runs to the shard's queue, with a health check that notices dead
    workers (see the module docstring)."""

    def __init__(self, default_queue: str = DEFAULT_QUEUE, broker: str | None = None, backend: str | None = None,
                 include: list[str] | None = None, config_source: dict | None = None,
                 inst_data: ConfigurableClassData | None = None, unanswered_checks: int = 2,
                 ping_timeout: float = 2.0) -> None:
        super().__init__(default_queue=default_queue, broker=broker, backend=backend, include=include,
                         config_source=config_source, inst_data=inst_data)
        self.unanswered_checks, self.ping_timeout = unanswered_checks, ping_timeout
        declare_queues(self.celery, [default_queue])
        self._unanswered: dict[str, int] = {}

    @classmethod
    def config_type(cls) -> dict:
        from dagster import Field

        return {**super().config_type(),
                "unanswered_checks": Field(int, is_required=False, default_value=2,
                                           description="Failed pings in a row before a STARTED run's worker is "
                                                       "declared dead."),
                "ping_timeout": Field(float, is_required=False, default_value=2.0)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
                          ) -> ShardRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        queue = queue_of(run.tags, self.default_queue)
        declare_queues(self.celery, [queue])
        if run.tags.get(DAGSTER_CELERY_QUEUE_TAG) != queue:
            # the parent reads the queue from this tag; it also shows in the UI which queue (worker) ran the run
            self._instance.add_run_tags(run.run_id, {DAGSTER_CELERY_QUEUE_TAG: queue})
            run = self._instance.get_run_by_id(run.run_id) or run
            context = context._replace(dagster_run=run)
        super().launch_run(context)

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        task_id = run.tags.get(DAGSTER_CELERY_TASK_ID_TAG)
        if not task_id:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no Celery task recorded yet")
        result = self.celery.AsyncResult(task_id)
        if result.state == "PENDING":
            # Dagster only monitors STARTED runs, whose task was STARTED: PENDING means the stored state is gone
            # (result_expires, a flushed Redis). Run monitoring fails anything not RUNNING: never guess a live run dead
            return CheckRunHealthResult(WorkerStatus.RUNNING, "Celery task state unknown (expired?): not judged")
        if result.state != "STARTED":
            return super().check_run_worker_health(run)
        info = result.info if isinstance(result.info, dict) else {}
        node = info.get("hostname")
        if not node:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "STARTED (worker not recorded)")
        replies = self.celery.control.inspect(destination=[node], timeout=self.ping_timeout).active() or {}
        if node in replies:
            self._unanswered.pop(run.run_id, None)
            if any(t.get("id") == task_id for t in replies[node]):
                return CheckRunHealthResult(WorkerStatus.RUNNING, f"running on {node}")
            return self._gone(run, result, f"worker {node} is up but no longer runs the task (it was restarted: "
                                           "the run's process died with it)")
        misses = self._unanswered[run.run_id] = self._unanswered.get(run.run_id, 0) + 1
        if misses < self.unanswered_checks:  # anything but RUNNING fails the run: one lost ping must not
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker {node} did not answer ({misses})")
        return self._gone(run, result, f"worker {node} did not answer {misses} checks in a row (killed, OOM, "
                                       "host down?)")

    def _gone(self, run: DagsterRun, result: Any, why: str) -> CheckRunHealthResult:
        """FAILED, unless the run ended meanwhile (the task may finish between two reads)."""
        self._unanswered.pop(run.run_id, None)
        latest = self._instance.get_run_by_id(run.run_id)
        if result.state != "STARTED" or (latest is not None and latest.is_finished):
            return CheckRunHealthResult(WorkerStatus.SUCCESS if result.state == "SUCCESS" else WorkerStatus.UNKNOWN)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"{why}. Posting resumes exactly where it stopped: "
                                                         "re-run the month (or let run retries do it)")


def declare_queues(app: Celery, names: list[str]) -> None:
    """Add our queue definitions to an app (idempotent)."""
    queues = app.amqp.queues
    for name in names:
        if name not in queues or queues[name].exchange.name != EXCHANGE.name:
            queues[name] = ledger_queue(name)


def worker_app() -> Celery:
    """The app `celery -A ledger_pipeline.workers worker` serves: dagster-celery's tasks, our queues."""
    s = load_settings()
    app = make_app({"broker": s.celery_broker, "backend": s.celery_backend, "include": [],
                    "task_default_queue": DEFAULT_QUEUE,
                    "config_source": {"worker_prefetch_multiplier": 1, "task_default_priority": 5,
                                      "worker_hijack_root_logger": False,
                                      "result_expires": 7 * 86400}})  # the STARTED state the health check reads
    app.conf.task_queues = [ledger_queue(q) for q in [DEFAULT_QUEUE, *map(queue_for, shard_keys(s.shards))]]
    create_execute_job_task(app)
    create_resume_job_task(app)
    return app


app = worker_app()
