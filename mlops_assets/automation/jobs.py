"""The jobs sensors and schedules launch. Each selects a slice of the lifecycle."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from mlops_assets.pipeline import LIFECYCLE, Pipeline, Stage
from mlops_assets.signals import KIND_TAG

INGEST_STAGES = (Stage.RAW_DATA, Stage.VALIDATED_FEATURES, Stage.BATCH_PREDICTIONS, Stage.DRIFT_REPORT)
PREPARE_STAGES = (Stage.RAW_DATA, Stage.VALIDATED_FEATURES)
RETRAIN_STAGES = (Stage.TRAINED_MODEL, Stage.EVALUATION_REPORT, Stage.REGISTERED_MODEL)


@dataclass(frozen=True)
class PipelineJobs:
    ingest: dg.UnresolvedAssetJobDefinition       # new file, champion exists
    bootstrap: dg.UnresolvedAssetJobDefinition    # new file, no champion yet: all seven
    retrain: dg.UnresolvedAssetJobDefinition      # train -> evaluate -> register
    batch_inference: dg.UnresolvedAssetJobDefinition
    drift: dg.UnresolvedAssetJobDefinition
    performance: dg.UnresolvedAssetJobDefinition | None = None

    def all(self) -> list[dg.UnresolvedAssetJobDefinition]:
        jobs = [self.ingest, self.bootstrap, self.retrain, self.batch_inference, self.drift]
        return jobs + ([self.performance] if self.performance else [])


def build_jobs(pipeline: Pipeline) -> PipelineJobs:
    def select(stages) -> dg.AssetSelection:
        return dg.AssetSelection.assets(*pipeline.keys(stages))

    # Partitioned jobs take their partitions from the selected assets.
    return PipelineJobs(
        ingest=dg.define_asset_job(
            pipeline.job("ingest"), select(INGEST_STAGES),
            description="Ingest one arrival, validate it, score it with the champion, check drift.",
        ),
        bootstrap=dg.define_asset_job(
            pipeline.job("bootstrap"), select(LIFECYCLE),
            description="First arrival: the whole lifecycle, training the first champion.",
        ),
        retrain=dg.define_asset_job(
            pipeline.job("retrain"), select(RETRAIN_STAGES),
            description="Train on all labelled partitions, evaluate, promote if the gate passes.",
            tags={KIND_TAG: "retrain"},
        ),
        batch_inference=dg.define_asset_job(
            pipeline.job("batch_inference"), select([Stage.BATCH_PREDICTIONS]),
            description="Score a partition with the current champion.",
        ),
        drift=dg.define_asset_job(
            pipeline.job("drift"), select([Stage.DRIFT_REPORT]),
            description="Recompute a partition's drift report against the champion.",
        ),
        performance=dg.define_asset_job(
            pipeline.job("performance"), select([Stage.MODEL_PERFORMANCE]),
            description="Join delayed labels to predictions and compute daily metrics.",
        ) if pipeline.spec.ground_truth is not None else None,
    )
