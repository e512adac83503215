"""`build_mlops_defs(spec)`: one pipeline spec -> Dagster definitions.

Everything a pipeline adds is prefixed with its name (asset keys, jobs, sensors, schedules,
resource keys, the partitions definition), so several pipelines merge into one deployment
next to the user's own assets without collisions. Names come from `Pipeline`; what each
asset looks like comes from its translator (pass a subclass of `MLOpsTranslator` to change it).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from mlops_assets.automation.jobs import build_jobs
from mlops_assets.automation.new_data import build_new_data_sensor
from mlops_assets.automation.release import build_release_job, build_release_sensor
from mlops_assets.automation.retrain import build_retrain_sensor
from mlops_assets.automation.rollback import build_rollback_job
from mlops_assets.automation.run_failure import build_run_failure_sensor
from mlops_assets.automation.schedules import (
    build_batch_inference_schedule,
    build_monitoring_schedule,
    build_performance_schedule,
)
from mlops_assets.automation.stream_health import build_stream_health_sensor
from mlops_assets.automation.watchdog import build_dead_run_watchdog_sensor
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.resources import ArtifactStore, MLflowRegistry, Notifier
from mlops_assets.spec import PipelineSpec, SpecError
from mlops_assets.stages.batch_predictions import build_batch_predictions_asset
from mlops_assets.stages.drift_report import build_drift_report_asset
from mlops_assets.stages.evaluation_report import build_evaluation_report_asset
from mlops_assets.stages.model_performance import build_model_performance_asset
from mlops_assets.stages.raw_data import build_raw_data_asset
from mlops_assets.stages.registered_model import build_registered_model_asset
from mlops_assets.stages.trained_model import build_trained_model_asset
from mlops_assets.stages.validated_features import build_validated_features_asset
from mlops_assets.translator import MLOpsTranslator

STAGE_BUILDERS = {
    Stage.RAW_DATA: build_raw_data_asset,
    Stage.VALIDATED_FEATURES: build_validated_features_asset,
    Stage.TRAINED_MODEL: build_trained_model_asset,
    Stage.EVALUATION_REPORT: build_evaluation_report_asset,
    Stage.REGISTERED_MODEL: build_registered_model_asset,
    Stage.BATCH_PREDICTIONS: build_batch_predictions_asset,
    Stage.DRIFT_REPORT: build_drift_report_asset,
    Stage.MODEL_PERFORMANCE: build_model_performance_asset,
    # The labels are files the pipeline reads, not computes: an external asset.
    Stage.GROUND_TRUTH: lambda pipeline: pipeline.asset_spec(Stage.GROUND_TRUTH),
}


def default_storage(spec: PipelineSpec) -> ArtifactStore:
    return ArtifactStore(base_uri=str(Path(spec.state_dir).resolve() / "artifacts"))


def default_registry(spec: PipelineSpec) -> MLflowRegistry:
    state = Path(spec.state_dir).resolve()
    return MLflowRegistry(
        tracking_uri=f"sqlite:///{state / 'mlflow.db'}",
        artifact_location=str(state / "mlartifacts"),
        cache_dir=str(state / "cache" / "bundles"),
    )


def default_notifier(spec: PipelineSpec) -> Notifier:
    """Webhook alerts when MLOPS_WEBHOOK_URL is set (read at run time, never stored), else log."""
    if os.environ.get("MLOPS_WEBHOOK_URL"):
        return Notifier(backend="webhook", webhook_url=dg.EnvVar("MLOPS_WEBHOOK_URL"), pipeline=spec.name)
    return Notifier(pipeline=spec.name)


def build_mlops_defs(
    spec: PipelineSpec,
    *,
    translator: MLOpsTranslator | None = None,
    storage: ArtifactStore | None = None,
    registry: MLflowRegistry | None = None,
    notifier: Notifier | None = None,
    s3: S3Resource | None = None,
) -> dg.Definitions:
    """Assets, checks, jobs, sensors, schedules and resources for one pipeline.

    Resources default to the embedded setup under `spec.state_dir` (a local artifact
    directory and a sqlite MLflow store); pass your own for S3 / an MLflow server.
    """
    pipeline = Pipeline(spec, translator)
    jobs = build_jobs(pipeline)
    notifier = notifier or default_notifier(spec)
    schedules = [build_batch_inference_schedule(pipeline, jobs), build_monitoring_schedule(pipeline, jobs)]
    if jobs.performance is not None:
        schedules.append(build_performance_schedule(pipeline, jobs.performance))
    rollback = build_rollback_job(pipeline)
    release = build_release_job(pipeline)
    sensors = [build_stream_health_sensor(pipeline, notifier)] if spec.streaming is not None else []
    return dg.Definitions(
        assets=[STAGE_BUILDERS[stage](pipeline) for stage in pipeline.stages],
        jobs=[*jobs.all(), rollback, release],
        sensors=[build_new_data_sensor(pipeline, jobs), build_retrain_sensor(pipeline, jobs),
                 build_release_sensor(pipeline, release),
                 build_run_failure_sensor(pipeline, jobs, notifier, extra_jobs=[rollback, release]),
                 build_dead_run_watchdog_sensor(
                     pipeline.sensor("dead_runs"), [j.name for j in [*jobs.all(), rollback, release]],
                     minimum_interval_seconds=spec.automation.watchdog_interval_seconds,
                     grace_seconds=spec.automation.watchdog_grace_seconds,
                     # Resolved when an alert is sent, like the run-failure sensor's (EnvVar secrets).
                     notify=lambda *alert: notifier.process_config_and_initialize().send(*alert),
                 ), *sensors],
        schedules=schedules,
        resources={
            pipeline.storage_key: storage or default_storage(spec),
            pipeline.registry_key: registry or default_registry(spec),
            pipeline.notifier_key: notifier,
            # Reads the S3 source (if any). Unset: the standard AWS chain, AWS_ENDPOINT_URL included.
            pipeline.s3_key: s3 or S3Resource(),
        },
    )


def build_pipelines_defs(specs: list[PipelineSpec], **resources) -> dg.Definitions:
    """Several pipelines in one deployment; two pipelines with the same name are refused."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise SpecError(
                f"two pipelines are named '{spec.name}': names prefix every asset key, job, sensor, "
                "schedule, resource and MLflow model, so they must be unique in a deployment"
            )
        seen.add(spec.name)
    return dg.Definitions.merge(*(build_mlops_defs(spec, **resources) for spec in specs))
