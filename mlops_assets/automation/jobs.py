"""The jobs sensors and schedules launch. Each selects a slice of the lifecycle."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from mlops_assets.stages.common import STAGES, Names

INGEST_STAGES = ("raw_data", "validated_features", "batch_predictions", "drift_report")
PREPARE_STAGES = ("raw_data", "validated_features")
RETRAIN_STAGES = ("trained_model", "evaluation_report", "registered_model")


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


def build_jobs(names: Names, partitions: dg.PartitionsDefinition) -> PipelineJobs:
    def select(stages) -> dg.AssetSelection:
        return dg.AssetSelection.assets(*[names.key(s) for s in stages])

    return PipelineJobs(
        ingest=dg.define_asset_job(
            names.job("ingest"), select(INGEST_STAGES), partitions_def=partitions,
            description="Ingest one arrival, validate it, score it with the champion, check drift.",
        ),
        bootstrap=dg.define_asset_job(
            names.job("bootstrap"), select(STAGES), partitions_def=partitions,
            description="First arrival: the whole lifecycle, training the first champion.",
        ),
        retrain=dg.define_asset_job(
            names.job("retrain"), select(RETRAIN_STAGES),
            description="Train on all labelled partitions, evaluate, promote if the gate passes.",
            tags={"mlops/kind": "retrain"},
        ),
        batch_inference=dg.define_asset_job(
            names.job("batch_inference"), select(["batch_predictions"]), partitions_def=partitions,
            description="Score a partition with the current champion.",
        ),
        drift=dg.define_asset_job(
            names.job("drift"), select(["drift_report"]), partitions_def=partitions,
            description="Recompute a partition's drift report against the champion.",
        ),
        performance=dg.define_asset_job(
            names.job("performance"), select(["model_performance"]),
            description="Join delayed labels to predictions and compute daily metrics.",
        ) if names.spec.ground_truth is not None else None,
    )
