"""`MLOpsTranslator`: the one place that decides what each stage's asset looks like.

Like dagster-sling's and dagster-dbt's translators: `get_asset_spec(stage, pipeline)` returns
the `dg.AssetSpec` (key, deps, group, kinds, description, owners, tags, automation condition,
partitions and code version) and is built from small `get_*` methods you can override one at
a time. Pass a subclass to `build_mlops_defs(spec, translator=MyTranslator())`; keys are
then changed everywhere (deps, jobs, sensors, schedules), because everything asks the pipeline
for its keys and the pipeline asks the translator.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlops_assets.pipeline import PARTITIONED, Stage
from mlops_assets.version import __version__

if TYPE_CHECKING:
    from mlops_assets.pipeline import Pipeline
    from mlops_assets.spec import PipelineSpec

UPSTREAM: dict[Stage, tuple[Stage, ...]] = {
    Stage.RAW_DATA: (),
    Stage.VALIDATED_FEATURES: (Stage.RAW_DATA,),
    Stage.TRAINED_MODEL: (Stage.VALIDATED_FEATURES,),
    Stage.EVALUATION_REPORT: (Stage.TRAINED_MODEL,),
    Stage.REGISTERED_MODEL: (Stage.EVALUATION_REPORT,),
    Stage.BATCH_PREDICTIONS: (Stage.VALIDATED_FEATURES, Stage.REGISTERED_MODEL),
    Stage.DRIFT_REPORT: (Stage.VALIDATED_FEATURES, Stage.BATCH_PREDICTIONS),
    Stage.GROUND_TRUTH: (),
    Stage.MODEL_PERFORMANCE: (Stage.GROUND_TRUTH, Stage.BATCH_PREDICTIONS),
}

# The spec sections each stage's code reads: its code version hashes only these, so changing
# a drift threshold makes drift_report stale and leaves trained_model alone.
_SCHEMA = ("task", "target", "classes", "features", "id_column")
STAGE_SECTIONS: dict[Stage, tuple[str, ...]] = {
    Stage.RAW_DATA: ("source.format", "limits"),
    Stage.VALIDATED_FEATURES: (*_SCHEMA, "timestamp_column", "group_column", "min_rows", "split", "labels"),
    Stage.TRAINED_MODEL: (*_SCHEMA, "split", "model", "edge", "drift.psi_bins", "drift.evidently_sample_rows"),
    Stage.EVALUATION_REPORT: (*_SCHEMA, "group_column", "gate", "model.decision_threshold", "model.trainer"),
    Stage.REGISTERED_MODEL: ("gate", "release"),
    Stage.BATCH_PREDICTIONS: ("id_column", "task", "release", "split.seed"),
    Stage.DRIFT_REPORT: ("features", "id_column", "task", "drift"),
    Stage.GROUND_TRUTH: ("ground_truth",),
    Stage.MODEL_PERFORMANCE: ("id_column", "task", "classes", "model.decision_threshold", "ground_truth",
                              "performance", "release"),
}

KINDS: dict[Stage, set[str]] = {
    Stage.RAW_DATA: {"polars", "parquet"},
    Stage.VALIDATED_FEATURES: {"polars", "parquet"},
    Stage.EVALUATION_REPORT: {"mlflow", "onnx"},
    Stage.REGISTERED_MODEL: {"mlflow"},
    Stage.BATCH_PREDICTIONS: {"onnx", "parquet"},
    Stage.DRIFT_REPORT: {"evidently", "polars", "html"},
    Stage.GROUND_TRUTH: {"files"},
    Stage.MODEL_PERFORMANCE: {"polars", "parquet"},
}

DESCRIPTIONS: dict[Stage, str] = {
    Stage.RAW_DATA: "Raw arrivals, one partition per file (or per upstream materialization), as Parquet.",
    Stage.VALIDATED_FEATURES: "Validated, typed features with a deterministic train/valid/holdout split.",
    Stage.TRAINED_MODEL: "Model trained on all labelled partitions, exported to ONNX, logged as an MLflow candidate.",
    Stage.EVALUATION_REPORT: "Holdout metrics, slices, latency and champion comparison; the gate decides.",
    Stage.REGISTERED_MODEL: "The MLflow version the gate blessed; the 'champion' alias moves to it.",
    Stage.BATCH_PREDICTIONS: "Scores of one partition by the champion model, through onnxruntime.",
    Stage.DRIFT_REPORT: "Per-feature drift (PSI, JS, Wasserstein, KS) vs the champion's reference profile.",
    Stage.GROUND_TRUTH: "Delayed labels arriving in the ground-truth folder.",
    Stage.MODEL_PERFORMANCE: "The champion's real-world metrics per day, from delayed labels.",
}

EAGER_STAGES = frozenset({Stage.VALIDATED_FEATURES, Stage.BATCH_PREDICTIONS, Stage.DRIFT_REPORT})


def _section(payload: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(payload, dict):
            return None
        payload = payload.get(part)
    return payload


def stage_code_version(spec: PipelineSpec, stage: Stage) -> str:
    dumped = spec.model_dump(mode="json")
    picked = {path: _section(dumped, path) for path in STAGE_SECTIONS[Stage(stage)]}
    digest = hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:12]
    return f"{__version__}+{digest}"


class MLOpsTranslator:
    """Override any `get_*` method (or `get_asset_spec` itself) to change what the assets look like."""

    def get_asset_spec(self, stage: Stage, pipeline: Pipeline) -> dg.AssetSpec:
        stage = Stage(stage)
        return dg.AssetSpec(
            key=self.get_asset_key(stage, pipeline.spec),
            deps=self.get_deps(stage, pipeline),
            group_name=self.get_group_name(stage, pipeline.spec),
            kinds=self.get_kinds(stage, pipeline.spec),
            description=self.get_description(stage, pipeline.spec),
            owners=self.get_owners(stage, pipeline.spec),
            tags=self.get_tags(stage, pipeline.spec),
            automation_condition=self.get_automation_condition(stage, pipeline.spec),
            code_version=None if stage == Stage.GROUND_TRUTH else self.get_code_version(stage, pipeline.spec),
            partitions_def=pipeline.partitions_def if stage in PARTITIONED else None,
            # A re-executed promotion whose record its earlier attempt stored yields none.
            skippable=stage == Stage.REGISTERED_MODEL,
        )

    def get_deps(self, stage: Stage, pipeline: Pipeline) -> list[dg.AssetKey]:
        deps = [pipeline.key(up) for up in UPSTREAM[stage]]
        if stage == Stage.RAW_DATA and pipeline.spec.source.asset_key:
            deps.append(dg.AssetKey(pipeline.spec.source.asset_key))   # bring-your-own raw data
        return deps

    def get_asset_key(self, stage: Stage, spec: PipelineSpec) -> dg.AssetKey:
        return dg.AssetKey([spec.name, stage.value])

    def get_group_name(self, stage: Stage, spec: PipelineSpec) -> str:
        return spec.name

    def get_kinds(self, stage: Stage, spec: PipelineSpec) -> set[str]:
        if stage == Stage.TRAINED_MODEL:
            return {spec.model.trainer, "mlflow", "onnx"}
        return set(KINDS[stage])

    def get_description(self, stage: Stage, spec: PipelineSpec) -> str:
        if stage == Stage.GROUND_TRUTH and spec.ground_truth is not None:
            return f"Delayed labels arriving in {spec.ground_truth.path}."
        return DESCRIPTIONS[stage]

    def get_owners(self, stage: Stage, spec: PipelineSpec) -> list[str]:
        return list(spec.owners)

    def get_tags(self, stage: Stage, spec: PipelineSpec) -> dict[str, str]:
        return dict(spec.tags)

    def get_automation_condition(self, stage: Stage, spec: PipelineSpec) -> dg.AutomationCondition | None:
        """With `automation.declarative`, downstream partitions update as soon as their parents
        do; training stays sensor-driven (it needs the retrain decision, not just fresh data)."""
        if spec.automation.declarative and stage in EAGER_STAGES:
            return dg.AutomationCondition.eager()
        return None

    def get_code_version(self, stage: Stage, spec: PipelineSpec) -> str:
        return stage_code_version(spec, stage)
