"""`build_mlops_defs(spec)`: one pipeline spec -> Dagster definitions.

Everything a pipeline adds is prefixed with its name (asset keys, jobs, sensors,
schedules, resource keys, the partitions definition), so several pipelines merge into
one deployment next to the user's own assets without collisions.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from mlops_assets.automation.jobs import build_jobs
from mlops_assets.automation.rollback import build_rollback_job
from mlops_assets.automation.schedules import (
    build_batch_inference_schedule,
    build_monitoring_schedule,
    build_performance_schedule,
)
from mlops_assets.automation.sensors import (
    build_new_data_sensor,
    build_retrain_sensor,
    build_run_failure_sensor,
)
from mlops_assets.resources import ArtifactStore, MLflowRegistry, Notifier
from mlops_assets.spec import PipelineSpec
from mlops_assets.stages.batch_predictions import build_batch_predictions_asset
from mlops_assets.stages.common import Names
from mlops_assets.stages.drift import build_drift_asset
from mlops_assets.stages.evaluation import build_evaluation_asset, build_registry_asset
from mlops_assets.stages.features import build_features_asset
from mlops_assets.stages.raw_data import build_raw_data_asset
from mlops_assets.stages.training import build_training_asset


def default_storage(spec: PipelineSpec) -> ArtifactStore:
    return ArtifactStore(base_uri=str(Path(spec.state_dir).resolve() / "artifacts"))


def default_registry(spec: PipelineSpec) -> MLflowRegistry:
    state = Path(spec.state_dir).resolve()
    return MLflowRegistry(
        tracking_uri=f"sqlite:///{state / 'mlflow.db'}",
        artifact_location=str(state / "mlartifacts"),
    )


def default_notifier(spec: PipelineSpec) -> Notifier:
    """Webhook alerts when MLOPS_WEBHOOK_URL is set (read at run time, never stored), else log."""
    import os

    if os.environ.get("MLOPS_WEBHOOK_URL"):
        return Notifier(backend="webhook", webhook_url=dg.EnvVar("MLOPS_WEBHOOK_URL"), pipeline=spec.name)
    return Notifier(pipeline=spec.name)


def build_mlops_defs(
    spec: PipelineSpec,
    *,
    storage: ArtifactStore | None = None,
    registry: MLflowRegistry | None = None,
    notifier: Notifier | None = None,
    s3: S3Resource | None = None,
) -> dg.Definitions:
    """Assets, checks, jobs, sensors, schedules and resources for one pipeline.

    Resources default to the embedded setup under `spec.state_dir` (a local artifact
    directory and a sqlite MLflow store); pass your own for S3 / an MLflow server.
    """
    names = Names(spec)
    partitions = names.partitions_def
    assets = [
        build_raw_data_asset(names, partitions),
        build_features_asset(names, partitions),
        build_training_asset(names),
        build_evaluation_asset(names),
        build_registry_asset(names),
        build_batch_predictions_asset(names, partitions),
        build_drift_asset(names, partitions),
    ]
    extra = []
    if spec.ground_truth is not None:
        from mlops_assets.stages.performance import build_performance_asset

        extra = [
            dg.AssetSpec(names.key("ground_truth"), group_name=spec.name, kinds={"files"},
                         description=f"Delayed labels arriving in {spec.ground_truth.path}."),
            build_performance_asset(names),
        ]
    assets += extra
    jobs = build_jobs(names, partitions)
    notifier = notifier or default_notifier(spec)
    return dg.Definitions(
        assets=assets,
        jobs=[*jobs.all(), build_rollback_job(names)],
        sensors=[build_new_data_sensor(names, jobs), build_retrain_sensor(names, jobs),
                 build_run_failure_sensor(names, jobs, notifier)],
        schedules=[
            build_batch_inference_schedule(names, jobs),
            build_monitoring_schedule(names, jobs),
            *([build_performance_schedule(names, jobs.performance)] if jobs.performance else []),
        ],
        resources={
            names.storage: storage or default_storage(spec),
            names.registry: registry or default_registry(spec),
            names.notifier: notifier,
            # Reads the S3 source (if any). Unset: the standard AWS chain, AWS_ENDPOINT_URL included.
            names.s3: s3 or S3Resource(),
        },
    )


def build_pipelines_defs(specs: list[PipelineSpec], **resources) -> dg.Definitions:
    """Several pipelines in one deployment; two pipelines with the same name are refused."""
    from mlops_assets.spec import SpecError

    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise SpecError(
                f"two pipelines are named '{spec.name}': names prefix every asset key, job, sensor, "
                "schedule, resource and MLflow model, so they must be unique in a deployment"
            )
        seen.add(spec.name)
    return dg.Definitions.merge(*(build_mlops_defs(spec, **resources) for spec in specs))
