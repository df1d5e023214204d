"""When a run publishes the DuckDB warehouse: once, after its last step that writes it (and once after a failure).

A publish checkpoints the work file and copies all of it to a new snapshot (warehouse/snapshots.py), so a run does
it once, not after every step:

- Every asset whose step writes the work file ends its writes with `publish_if_last(context, wh)` and carries
  `hooks={publish_after_failure}` (the hook also marks it as a publishing step). `publish_if_last` publishes only
  when no asset selected in this run waits downstream of this step's assets with a publishing step of its own (the
  run's selection is the job's asset layer: a whole-job run, a subset and `dg.materialize` alike); otherwise the
  last publishing step does it. A run of one asset, or of independent assets, publishes at each of them.
- A failing step skips everything downstream, so `publish_after_failure` (a failure hook: it runs in every job,
  the UI's ad-hoc materializations included) publishes what the run wrote up to there (ledger.rejections of a
  failing extract, accounting.postings of a failing posting step), unless the step published before failing.
- A step that succeeds after another step of its run failed publishes too: the steps waiting downstream of it may
  be skipped by that failure (the close's gl_accounts_fresh failing, then r2a_pl_monthly writing its rejections).
- A blocking check that is about to fail skips its asset's downstream too: `publish_before_blocking_failure`.

An asset without the hook is never waited for. An op job (repost_job) has no asset selection; its op publishes
itself. Not covered: a cancelled run (Dagster re-raises the interrupt before hooks run; the next run publishes) and
`execute_in_process(raise_on_error=True)`, which re-raises a step's error before its hooks (the CLI and launched
runs use False). Storage code (warehouse/) knows nothing of Dagster: this module is the one place that decides when
a run publishes.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from ledger_pipeline.warehouse.store import LockWaitTimeout, Warehouse

# (run_id, step key) of the steps that published in this process: their failure hook does not publish again.
_PUBLISHED: set[tuple[str, str]] = set()


@dg.failure_hook(required_resource_keys={"warehouse"})
def publish_after_failure(context: dg.HookContext) -> None:
    """A failed step skips every step downstream of it: publish what the run wrote up to here, once."""
    if (context.run_id, context.step_key) in _PUBLISHED:
        return  # published before it failed (the run's last step)
    if isinstance(context.op_exception, LockWaitTimeout):
        context.log.warning("DuckDB warehouse not published: the step failed waiting for the work-file lock; the "
                            "run's writes are published by its retry or the next run")
        return
    context.resources.warehouse.warehouse.publish(run_id=context.run_id)
    context.log.info(f"DuckDB warehouse published after the failure of {context.step_key}: what the run recorded "
                     "up to there")


def publish_if_last(context: dg.AssetExecutionContext, wh: Warehouse) -> bool:
    """Publish the warehouse when no later step of this run will: no asset selected in the run waits downstream of
    this step's assets with a publishing step of its own (or a step of the run failed already, which may skip
    them). Call it once the step's writes are done. Returns whether it published."""
    waiting = later_publishers(context.job_def, context.selected_asset_keys)
    if waiting and not _run_failed(context.instance, context.run_id):
        context.log.info("DuckDB warehouse not published yet: the run publishes once, after its last step ("
                         + ", ".join(sorted(k.to_user_string() for k in waiting)) + " to come)")
        return False
    wh.publish(run_id=context.run_id)
    _PUBLISHED.add((context.run_id, str(context.op_handle)))
    context.log.info(f"DuckDB warehouse published: {wh.publish_path} (meta.snapshot_log names run {context.run_id})")
    return True


def publish_before_blocking_failure(context: dg.AssetCheckExecutionContext, wh: Warehouse) -> bool:
    """A blocking check about to fail skips its asset's downstream, whose last step would have published: publish
    what the run wrote (its asset's step, run in this run, left it to them). Returns whether it published."""
    assets = {k.asset_key for k in context.selected_asset_check_keys}
    if not assets & set(context.job_def.asset_layer.selected_asset_keys):
        return False  # the asset did not run in this run: nothing written to show
    if not later_publishers(context.job_def, assets):
        return False  # the asset's step was the last and published
    wh.publish(run_id=context.run.run_id)
    context.log.info("DuckDB warehouse published before the blocking check fails: what the run recorded up to here")
    return True


def later_publishers(job_def: dg.JobDefinition, keys: Iterable[dg.AssetKey]) -> set[dg.AssetKey]:
    """The assets selected in this run (the job's asset layer, subset to the run) downstream of `keys` through
    selected assets (the run's step dependencies) whose step publishes (carries `publish_after_failure`)."""
    layer = job_def.asset_layer
    selected = set(layer.selected_asset_keys)
    children: dict[dg.AssetKey, set[dg.AssetKey]] = {}
    for key in selected:
        for parent in layer.get(key).parent_keys:
            children.setdefault(parent, set()).add(key)
    start = set(keys)
    seen: set[dg.AssetKey] = set()
    todo = list(start)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return {k for k in seen - start if _publishes(layer.get(k).assets_def)}


def _publishes(assets_def: dg.AssetsDefinition) -> bool:
    return any(h.name == publish_after_failure.name for h in assets_def.hook_defs)


def _run_failed(instance: dg.DagsterInstance, run_id: str) -> bool:
    """True when a step of the run has failed already (its downstream steps are skipped)."""
    return bool(instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1).records)
