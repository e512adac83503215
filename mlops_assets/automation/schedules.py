"""Schedules: batch inference on the spec's cron, partition-aware."""


import dagster as dg

from mlops_assets.automation.jobs import PipelineJobs
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import CHAMPION_TAG, CHAMPION_VERSION, MODEL_VERSION
from mlops_assets.state import (
    champion_epoch,
    champion_of_record,
    in_flight_partitions,
    latest_materialization,
    partition_facts,
    value,
)

MAX_PARTITIONS_PER_TICK = 50


def partitions_needing_scores(instance: dg.DagsterInstance, pipeline: Pipeline) -> tuple[str | None, list[str]]:
    """Accepted partitions whose latest predictions are missing or from another champion."""
    champion = champion_of_record(instance, pipeline)
    if champion is None:
        return None, []
    todo = []
    for facts in partition_facts(instance, pipeline):
        if not facts.accepted:
            continue
        preds = latest_materialization(instance, pipeline.key(Stage.BATCH_PREDICTIONS), facts.key)
        if str(value(preds, MODEL_VERSION)) != champion:
            todo.append(facts.key)
    return champion, todo


def _partition_schedule(pipeline: Pipeline, jobs: PipelineJobs, *, what: str, job, cron: str, description: str,
                        find, done: str) -> dg.ScheduleDefinition:
    """A schedule that requests one run per partition `find(instance, pipeline)` returns, except
    partitions a queued or running run is already working on (they are looked at next tick)."""
    spec = pipeline.spec
    partitioned_jobs = [jobs.ingest.name, jobs.bootstrap.name, jobs.batch_inference.name, jobs.drift.name]

    @dg.schedule(
        name=pipeline.schedule(what),
        job=job,
        cron_schedule=cron,
        execution_timezone=spec.automation.timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=description,
    )
    def partition_schedule(context: dg.ScheduleEvaluationContext):
        champion, todo = find(context.instance, pipeline)
        if champion is None:
            return dg.SkipReason("no champion model yet")
        if not todo:
            return dg.SkipReason(done.format(champion=champion))
        busy = in_flight_partitions(context.instance, partitioned_jobs)
        ready = [p for p in sorted(todo) if p not in busy]
        if not ready:
            return dg.SkipReason(f"{len(todo)} partition(s) to do, all with a run in flight: {sorted(todo)[:5]}")
        # The promotion (or rollback) that made this champion is part of the key: scoring with v1
        # again after a rollback from v2 is new work, not a duplicate of v1's first scoring.
        epoch = champion_epoch(context.instance, pipeline)
        return [
            dg.RunRequest(run_key=f"{p}:{what}:v{champion}@{epoch}", partition_key=p,
                          tags={CHAMPION_TAG: champion})
            for p in ready[:MAX_PARTITIONS_PER_TICK]
        ]

    return partition_schedule


def build_batch_inference_schedule(pipeline: Pipeline, jobs: PipelineJobs) -> dg.ScheduleDefinition:
    return _partition_schedule(
        pipeline, jobs, what="batch_inference", job=jobs.batch_inference, cron=pipeline.spec.automation.batch_inference_cron,
        description="Score every accepted partition not yet scored by the current champion.",
        find=partitions_needing_scores,
        done="every accepted partition is scored by champion v{champion}",
    )


def partitions_needing_drift(instance: dg.DagsterInstance, pipeline: Pipeline) -> tuple[str | None, list[str]]:
    """Scored partitions whose drift report is missing or against another champion."""
    champion, _ = partitions_needing_scores(instance, pipeline)
    if champion is None:
        return None, []
    todo = []
    for partition in instance.get_dynamic_partitions(pipeline.partitions_name):
        preds = latest_materialization(instance, pipeline.key(Stage.BATCH_PREDICTIONS), partition)
        if str(value(preds, MODEL_VERSION)) != champion:
            continue   # scored by another champion: the batch schedule goes first
        drift = latest_materialization(instance, pipeline.key(Stage.DRIFT_REPORT), partition)
        if str(value(drift, CHAMPION_VERSION)) != champion:
            todo.append(partition)
    return champion, todo


def build_monitoring_schedule(pipeline: Pipeline, jobs: PipelineJobs) -> dg.ScheduleDefinition:
    """Drift check: every scored partition gets a drift report against the current champion.

    Safe to run often: a recomputed report on the same data carries the same data
    version, so the retrain sensor treats it as already handled.
    """
    return _partition_schedule(
        pipeline, jobs, what="drift_check", job=jobs.drift, cron=pipeline.spec.automation.monitoring_cron,
        description="Drift reports for partitions not yet compared with the current champion.",
        find=partitions_needing_drift,
        done="every scored partition has a drift report against champion v{champion}",
    )


def build_performance_schedule(pipeline: Pipeline, job) -> dg.ScheduleDefinition:
    spec = pipeline.spec
    return dg.ScheduleDefinition(
        name=pipeline.schedule("performance"),
        job=job,
        cron_schedule=spec.automation.monitoring_cron,
        execution_timezone=spec.automation.timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Recompute the champion's delayed-label metrics.",
    )
