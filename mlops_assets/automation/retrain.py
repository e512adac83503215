"""The retrain sensor: gathers recorded state, asks the pure decision, emits at most one run.

The decision itself (`core/retrain.py: decide_retrain`) is where the rules live; this module
only reads the Dagster instance into plain facts and turns an "act" into a run request whose
run key is the training set's identity. Every tick's text says why it acted or skipped,
including why each ignored signal did not count.
"""

import time

import dagster as dg

from mlops_assets.automation.jobs import PipelineJobs
from mlops_assets.core.retrain import RetrainDecision, RetrainPolicy, decide_retrain
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import DECISION_TAG, SIGNALS_TAG, TRAINING_SET_TAG, TRIGGER_TAG
from mlops_assets.state import (
    candidate_training_set,
    champion_of_record,
    delayed_label_rows,
    in_flight_partitions,
    retrain_signals,
    training_runs,
    version_records,
)


def training_job_names(pipeline: Pipeline, jobs: PipelineJobs) -> list[str]:
    return [jobs.retrain.name, jobs.bootstrap.name]


def decide_now(instance: dg.DagsterInstance, pipeline: Pipeline, jobs: PipelineJobs,
               now: float | None = None) -> RetrainDecision:
    """The retrain decision for the pipeline's current recorded state."""
    busy = in_flight_partitions(instance, [jobs.ingest.name, jobs.bootstrap.name])
    if busy:
        # Train on complete data: a partition still being ingested would miss this training set.
        return RetrainDecision(False, f"waiting for {len(busy)} partition(s) still being ingested: "
                                      f"{sorted(busy)[:5]}")
    return decide_retrain(
        champion=champion_of_record(instance, pipeline),
        versions=version_records(instance, pipeline),
        candidate=candidate_training_set(instance, pipeline, delayed_label_rows(instance, pipeline)),
        signals=retrain_signals(instance, pipeline),
        runs=training_runs(instance, training_job_names(pipeline, jobs), bootstrap_job=jobs.bootstrap.name),
        policy=RetrainPolicy.from_spec(pipeline.spec.automation),
        now=time.time() if now is None else now,
    )


def retrain_request(pipeline: Pipeline, decision: RetrainDecision) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=decision.run_key,
        asset_selection=pipeline.keys([Stage(s) for s in decision.stages]) if decision.stages else None,
        tags={TRIGGER_TAG: decision.trigger, TRAINING_SET_TAG: decision.training_set,
              SIGNALS_TAG: ",".join(decision.counted)[:1000], DECISION_TAG: decision.reason[:1000]},
    )


def build_retrain_sensor(pipeline: Pipeline, jobs: PipelineJobs) -> dg.SensorDefinition:
    auto = pipeline.spec.automation

    @dg.sensor(
        name=pipeline.sensor("retrain"),
        job=jobs.retrain,
        minimum_interval_seconds=auto.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Retrain when there is something new to learn: drift or a performance drop against the "
                    "current champion, or enough new labelled rows; once per training set, within the "
                    "spec's cooldown and budget. The tick says why it acted or skipped.",
    )
    def retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        decision = decide_now(context.instance, pipeline, jobs)
        if not decision.act:
            return dg.SensorResult(skip_reason=decision.describe())
        context.log.info(decision.describe())
        return dg.SensorResult(run_requests=[retrain_request(pipeline, decision)])

    return retrain_sensor
