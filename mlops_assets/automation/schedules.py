"""Schedules: batch inference on the spec's cron, partition-aware."""


import dagster as dg

from mlops_assets.automation.jobs import PipelineJobs
from mlops_assets.stages.common import Names

MAX_PARTITIONS_PER_TICK = 50


def partitions_needing_scores(instance: dg.DagsterInstance, names: Names) -> tuple[str | None, list[str]]:
    """Accepted partitions whose latest predictions are missing or from an older champion."""
    latest_reg = instance.get_latest_materialization_event(names.key("registered_model"))
    if latest_reg is None or latest_reg.asset_materialization is None:
        return None, []
    champion = str(latest_reg.asset_materialization.metadata["model_version"].value)
    todo: list[str] = []
    for partition in instance.get_dynamic_partitions(names.partitions):
        feats = _latest(instance, names.key("validated_features"), partition)
        if feats is None or feats.metadata.get("status", dg.TextMetadataValue("")).value != "accepted":
            continue
        preds = _latest(instance, names.key("batch_predictions"), partition)
        if preds is None or str(preds.metadata["model_version"].value) != champion:
            todo.append(partition)
    return champion, todo


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str):
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    )
    return found.records[0].asset_materialization if found.records else None


def _partition_schedule(names: Names, *, what: str, job, cron: str, description: str, find,
                        run_key_tag: str, done: str) -> dg.ScheduleDefinition:
    """A schedule that requests one run per partition `find(instance, names)` returns."""
    spec = names.spec

    @dg.schedule(
        name=names.schedule(what),
        job=job,
        cron_schedule=cron,
        execution_timezone=spec.automation.timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=description,
    )
    def partition_schedule(context: dg.ScheduleEvaluationContext):
        champion, todo = find(context.instance, names)
        if champion is None:
            return dg.SkipReason("no champion model yet")
        if not todo:
            return dg.SkipReason(done.format(champion=champion))
        return [
            dg.RunRequest(run_key=f"{p}:{run_key_tag}v{champion}", partition_key=p,
                          tags={"mlops/champion": champion})
            for p in sorted(todo)[:MAX_PARTITIONS_PER_TICK]
        ]

    return partition_schedule


def build_batch_inference_schedule(names: Names, jobs: PipelineJobs) -> dg.ScheduleDefinition:
    return _partition_schedule(
        names, what="batch_inference", job=jobs.batch_inference, cron=names.spec.automation.batch_inference_cron,
        description="Score every accepted partition not yet scored by the current champion.",
        find=partitions_needing_scores, run_key_tag="",
        done="every accepted partition is scored by champion v{champion}",
    )


def partitions_needing_drift(instance: dg.DagsterInstance, names: Names) -> tuple[str | None, list[str]]:
    """Scored partitions whose drift report is missing or against an older champion."""
    champion, _ = partitions_needing_scores(instance, names)
    if champion is None:
        return None, []
    todo = []
    for partition in instance.get_dynamic_partitions(names.partitions):
        preds = _latest(instance, names.key("batch_predictions"), partition)
        if preds is None or str(preds.metadata["model_version"].value) != champion:
            continue   # scored by an older champion: the batch schedule goes first
        drift = _latest(instance, names.key("drift_report"), partition)
        if drift is None or str(drift.metadata["champion_version"].value) != champion:
            todo.append(partition)
    return champion, todo


def build_monitoring_schedule(names: Names, jobs: PipelineJobs) -> dg.ScheduleDefinition:
    """Drift check: every scored partition gets a drift report against the current champion.

    Safe to run often: a recomputed report on the same data carries the same data
    version, so the retrain sensor treats it as already handled.
    """
    return _partition_schedule(
        names, what="drift_check", job=jobs.drift, cron=names.spec.automation.monitoring_cron,
        description="Drift reports for partitions not yet compared with the current champion.",
        find=partitions_needing_drift, run_key_tag="drift:",
        done="every scored partition has a drift report against champion v{champion}",
    )


def build_performance_schedule(names: Names, job) -> dg.ScheduleDefinition:
    spec = names.spec
    return dg.ScheduleDefinition(
        name=names.schedule("performance"),
        job=job,
        cron_schedule=spec.automation.monitoring_cron,
        execution_timezone=spec.automation.timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Recompute the champion's delayed-label metrics.",
    )
