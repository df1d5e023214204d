"""The production profile's Celery side: the run launcher the daemon uses, the shard task, and the app workers start.

- `ShardRunLauncher`: dagster-celery's `CeleryRunLauncher` sending every run to `ledger-default` (the DuckDB host; an
  explicit `dagster-celery/queue` tag wins), with a health check that notices dead workers: Celery keeps a task
  STARTED forever when its worker is SIGKILLed (OOM, reboot), so run monitoring would never fail the run. Here a
  STARTED task is checked on the worker that took it (the node name Celery stores with the STARTED state): the node
  answers and no longer runs the task (it was restarted) -> FAILED; the node does not answer `unanswered_checks`
  times in a row -> FAILED; otherwise RUNNING (run monitoring fails a run on any other status, so doubt reads
  RUNNING).
- `post_shard` (task `ledger.post_shard`, queue `ledger-shard-N`): one shard's tenants posted for a window
  (dispatch.post_window), from the worker's own source address; its answer is JSON (dispatch.to_wire).
- `post_on_shards`: what the close's `postings` step does in the production profile (resources.PostingWorkers):
  assign new tenants to shards, one `post_shard` task per shard, wait for all, merge.

Workers: `celery -A ledger_pipeline.workers worker -Q ledger-shard-0 -n shard-0@%h -c 1 --prefetch-multiplier 1`
with the same DAGSTER_HOME instance config (deploy/production/dagster.yaml) and LEDGER_* environment as the daemon,
their own LEDGER_DATA_DIR and LEDGER_SOURCE_ADDRESS. Queues are declared alike on both sides (a topic exchange,
`<queue>.#`), so the routing keys `<queue>.execute_job` and `<queue>.post_shard` reach the worker's queue. The app is
built when Celery first asks for `app` (no environment read at import).
"""

from __future__ import annotations

import datetime as dt
import time
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
from ledger_pipeline.shards import DEFAULT_QUEUE, queue_for, shard_keys

EXCHANGE = Exchange("ledger", type="topic")
POST_SHARD_TASK = "ledger.post_shard"


def ledger_queue(name: str) -> Queue:
    """One queue definition for the publishers (launcher, dispatcher) and the workers (consumers)."""
    return Queue(name, EXCHANGE, routing_key=f"{name}.#")


def queue_of(tags: Mapping[str, str], default_queue: str) -> str:
    """A run's queue: its `dagster-celery/queue` tag, else the default queue (the DuckDB host)."""
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
    """The app `celery -A ledger_pipeline.workers worker` serves: dagster-celery's tasks, `post_shard`, our queues."""
    s = load_settings()
    app = make_app({"broker": s.celery_broker, "backend": s.celery_backend, "include": [],
                    "task_default_queue": DEFAULT_QUEUE,
                    "config_source": {"worker_prefetch_multiplier": 1, "task_default_priority": 5,
                                      "worker_hijack_root_logger": False,
                                      "result_expires": 7 * 86400}})  # the STARTED state the health check reads
    app.conf.task_queues = [ledger_queue(q) for q in [DEFAULT_QUEUE, *map(queue_for, shard_keys(s.shards))]]
    create_execute_job_task(app)
    create_resume_job_task(app)
    # acknowledged when it ends: a worker killed mid-shard gives the task back to the broker, and the restarted
    # worker resumes it (posting is idempotent); STARTED records which worker took it
    app.task(name=POST_SHARD_TASK, acks_late=True, reject_on_worker_lost=True, track_started=True)(post_shard)
    return app


def post_shard(run_id: str, shard: str, start: str, end: str, options: dict, accounting: dict) -> dict:
    """One shard's tenants posted for [start, end) on this worker: the dispatch.to_wire of what was done, with the
    worker's identity under `shards[shard]`."""
    import logging

    from ledger_pipeline.charts import rechart_for
    from ledger_pipeline.dispatch import PostingOptions, post_window, to_wire, worker_identity
    from ledger_pipeline.state.database import make_ops_engine
    from ledger_pipeline.systems import Connections, OpenOptions

    s = load_settings()
    ops = make_ops_engine(s.ops_database_url)
    log = logging.getLogger(f"ledger_pipeline.{shard}")
    recharted: set[str] = set()  # the default host copies their refreshed charts to DuckDB
    try:
        from ledger_pipeline.shards import tenants_of

        tenants = tenants_of(ops, shard)
        opened = OpenOptions(s.ops_database_url, accounting["rate_limit_scale"], accounting["backoff"],
                             accounting["timeout"], "posting")
        posted = post_window(log, run_id, PostingOptions(**options), ops, lambda: Connections(s, opened),
                             dt.date.fromisoformat(start), dt.date.fromisoformat(end), tenants=tenants,
                             rechart=lambda connections: rechart_for(ops, connections, run_id, recharted),
                             rate_limit_scale=accounting["rate_limit_scale"], backoff=accounting["backoff"])
    finally:
        ops.dispose()
    posted.recharted = sorted(recharted)
    posted.shards = {shard: {**worker_identity(), "tenants": len(tenants), "seconds": round(posted.seconds, 1),
                             "api_requests": sum(posted.requests.values())}}
    return to_wire(posted)


def post_on_shards(log: Any, run_id: str, options: Any, ops_engine: Any, accounting: dict, start: dt.date,
                   end: dt.date, count: int, timeout: float, poll: float = 1.0, every: float = 30.0) -> Any:
    """Post [start, end) on the shard workers: new tenants assigned (shards.assign_new), one `post_shard` task per
    shard with tenants, each on its queue; waits for all (visibly: a line per waiting shard every `every` seconds),
    then returns the merged dispatch.PostedWindow. A shard that fails, or gives no answer within `timeout` seconds,
    fails its tenants' entries as `retryable` (the run retry, or a re-run, posts what is left)."""
    import dataclasses

    from ledger_pipeline.dispatch import from_wire, merge, window_tenants
    from ledger_pipeline.posting import TenantOutcome
    from ledger_pipeline.shards import assign_new, assignments
    from ledger_pipeline.state.ledger import load_window
    from ledger_pipeline.state.vault import connected_systems

    keys = shard_keys(count)
    tenants = window_tenants(ops_engine, start, end)
    assign_new(ops_engine, tenants, keys)
    owner = assignments(ops_engine)
    busy = sorted({owner[t] for t in tenants if t in owner})
    app = worker_app()
    declare_queues(app, [queue_for(k) for k in busy])
    t0 = time.monotonic()
    tasks = {shard: app.send_task(POST_SHARD_TASK, kwargs={
        "run_id": run_id, "shard": shard, "start": start.isoformat(), "end": end.isoformat(),
        "options": dataclasses.asdict(options), "accounting": accounting},
        queue=queue_for(shard), routing_key=f"{queue_for(shard)}.post_shard") for shard in busy}
    log.info(f"posting {len(tenants)} tenant(s) on {len(busy)} shard(s): "
             + ", ".join(f"{k} -> {queue_for(k)}" for k in busy))
    parts, failed, last = {}, {}, time.monotonic()
    while tasks:
        for shard, task in list(tasks.items()):
            if task.state == "SUCCESS":
                parts[shard] = from_wire(task.result)
                where = parts[shard].shards.get(shard, {})
                log.info(f"{shard}: {where.get('tenants', 0)} tenant(s) posted on "
                         f"{where.get('celery_worker', where.get('host'))} from {where.get('source_address')} "
                         f"({where.get('api_requests', 0)} requests, {where.get('seconds', 0)}s)")
                del tasks[shard]
            elif task.state == "FAILURE":
                failed[shard] = f"shard {shard} failed on its worker: {task.result!r}"
                del tasks[shard]
        waited = time.monotonic() - t0
        if tasks and waited >= timeout:
            for shard in tasks:
                failed[shard] = (f"shard {shard}: no answer within {timeout:.0f}s; is a worker consuming "
                                 f"{queue_for(shard)}? (`celery -A ledger_pipeline.workers inspect active_queues`)")
            break
        if tasks and time.monotonic() - last >= every:
            last = time.monotonic()
            log.info(f"waiting {waited:.0f}s for " + "; ".join(f"{k} ({task_state(t)})" for k, t in tasks.items()))
        if tasks:
            time.sleep(poll)
    posted = merge(start, end, parts, time.monotonic() - t0)
    systems = connected_systems(ops_engine)
    for shard, why in failed.items():
        log.warning(why)
        entries, _ = load_window(ops_engine, start, end, sorted(t for t in tenants if owner.get(t) == shard))
        for tenant, mine in entries.items():
            posted.systems.setdefault(tenant, systems.get(tenant, ""))
            posted.result.outcomes.append((systems.get(tenant, ""), TenantOutcome(
                tenant, failures=[(e.custom_id, why, "retryable") for e in mine])))
        posted.shards[shard] = {"failed": why}
    return posted


def task_state(task: Any) -> str:
    """A waiting shard task's state in an operator's words."""
    if task.state == "PENDING":
        return "queued: no worker has taken it yet"
    node = task.info.get("hostname") if isinstance(task.info, dict) else None
    return task.state.lower() + (f" on {node}" if node else "")


def __getattr__(name: str) -> Celery:
    """`app`, built on first use (Celery's `-A ledger_pipeline.workers` asks for it), not at import."""
    if name == "app":
        globals()["app"] = built = worker_app()
        return built
    raise AttributeError(name)
