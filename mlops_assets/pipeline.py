"""The pipeline context: every name one pipeline puts into a deployment, in one object.

`Pipeline(spec)` owns the asset keys (through its translator), the partitions definition,
the resource keys, the job, sensor and schedule names and the storage layout. Stages and
automation take a `Pipeline` and never spell a name themselves, so several pipelines merge
into one deployment without collisions and a custom translator changes keys everywhere.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlops_assets.sources.keys import check_partition_key
from mlops_assets.spec import PipelineSpec

if TYPE_CHECKING:
    from mlops_assets.translator import MLOpsTranslator


class Stage(StrEnum):
    RAW_DATA = "raw_data"
    VALIDATED_FEATURES = "validated_features"
    TRAINED_MODEL = "trained_model"
    EVALUATION_REPORT = "evaluation_report"
    REGISTERED_MODEL = "registered_model"
    BATCH_PREDICTIONS = "batch_predictions"
    DRIFT_REPORT = "drift_report"
    # Only with `ground_truth` in the spec: the labels (an external asset) and their metrics.
    GROUND_TRUTH = "ground_truth"
    MODEL_PERFORMANCE = "model_performance"


LIFECYCLE = (
    Stage.RAW_DATA, Stage.VALIDATED_FEATURES, Stage.TRAINED_MODEL, Stage.EVALUATION_REPORT,
    Stage.REGISTERED_MODEL, Stage.BATCH_PREDICTIONS, Stage.DRIFT_REPORT,
)
# Training steps of every pipeline share one Dagster pool, so a deployment's limit (one by
# default, see dagster.yaml) keeps concurrent trainings from starving each other's cores.
TRAINING_POOL = "mlops_training"
PARTITIONED = frozenset({Stage.RAW_DATA, Stage.VALIDATED_FEATURES, Stage.BATCH_PREDICTIONS, Stage.DRIFT_REPORT})


@dataclass(frozen=True)
class StorageLayout:
    """Where each artifact lives, relative to the artifact store's root. Partition- and
    version-scoped, so a later write never overwrites an earlier good one."""

    pipeline: str

    # One folder per partition key: file names never repeat or collide with a key's suffix.
    def raw(self, partition: str) -> str:
        return f"{self.pipeline}/raw/{check_partition_key(partition)}/data.parquet"

    def features(self, partition: str) -> str:
        return f"{self.pipeline}/features/{check_partition_key(partition)}/data.parquet"

    def rejection(self, partition: str, run_id: str) -> str:
        return f"{self.pipeline}/rejected/{check_partition_key(partition)}/{run_id}.json"

    def quarantine_record(self, partition: str) -> str:
        return f"{self.pipeline}/quarantine/{check_partition_key(partition)}.json"

    def model_dir(self, version: str) -> str:
        return f"{self.pipeline}/models/v{int(version)}"

    def bundle_file(self, version: str, name: str) -> str:
        return f"{self.model_dir(version)}/bundle/{name}"

    def holdout(self, version: str) -> str:
        return f"{self.model_dir(version)}/holdout.parquet"

    def evaluation(self, version: str) -> str:
        return f"{self.model_dir(version)}/evaluation.json"

    def plot(self, version: str, file_name: str) -> str:
        return f"{self.model_dir(version)}/plots/{file_name}"

    def registration(self, version: str) -> str:
        return f"{self.model_dir(version)}/registration.json"

    def predictions(self, partition: str, version: str) -> str:
        return f"{self.predictions_prefix()}/{check_partition_key(partition)}/v{int(version)}.parquet"

    def predictions_prefix(self) -> str:
        return f"{self.pipeline}/predictions"

    def drift_dir(self, partition: str, version: str) -> str:
        return f"{self.pipeline}/drift/{check_partition_key(partition)}/v{int(version)}"

    def drift_scores(self, day: str, partition: str, run_id: str) -> str:
        return f"{self.drift_scores_prefix()}/day={day}/{check_partition_key(partition)}-{run_id[:8]}.parquet"

    def drift_scores_prefix(self) -> str:
        return f"{self.pipeline}/drift_scores"

    def performance_series(self) -> str:
        return f"{self.pipeline}/performance/daily.parquet"


@dataclass(frozen=True)
class PipelineResources:
    """The resources a stage or sensor asked for, read off its context by resource key."""

    storage: Any = None
    registry: Any = None
    notifier: Any = None
    s3: Any = None


@dataclass(frozen=True, eq=False)
class Pipeline:
    spec: PipelineSpec
    translator: MLOpsTranslator | None = None
    _asset_specs: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.translator is None:
            # Imported here: the translator module imports `Stage` from this one.
            from mlops_assets.translator import MLOpsTranslator

            object.__setattr__(self, "translator", MLOpsTranslator())

    # -- the pipeline's own names ----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def model_name(self) -> str:
        return self.spec.name

    @property
    def stages(self) -> tuple[Stage, ...]:
        extra = (Stage.GROUND_TRUTH, Stage.MODEL_PERFORMANCE) if self.spec.ground_truth else ()
        return LIFECYCLE + extra

    @property
    def layout(self) -> StorageLayout:
        return StorageLayout(self.name)

    # -- assets ---------------------------------------------------------------------------
    def asset_spec(self, stage: Stage) -> dg.AssetSpec:
        """The translator's spec for a stage, asked once: every caller sees the same one."""
        stage = Stage(stage)
        if stage not in self._asset_specs:
            self._asset_specs[stage] = self.translator.get_asset_spec(stage, self)
        return self._asset_specs[stage]

    def key(self, stage: Stage) -> dg.AssetKey:
        return self.asset_spec(stage).key

    def keys(self, stages) -> list[dg.AssetKey]:
        return [self.key(s) for s in stages]

    @property
    def partitions_name(self) -> str:
        return f"{self.name}_arrivals"

    @functools.cached_property
    def partitions_def(self) -> dg.DynamicPartitionsDefinition:
        return dg.DynamicPartitionsDefinition(name=self.partitions_name)

    # -- resources, jobs, sensors, schedules -------------------------------------------------
    @property
    def storage_key(self) -> str:
        return f"{self.name}_storage"

    @property
    def registry_key(self) -> str:
        return f"{self.name}_mlflow"

    @property
    def notifier_key(self) -> str:
        return f"{self.name}_notifier"

    @property
    def s3_key(self) -> str:
        return f"{self.name}_s3"

    def resources(self, context) -> PipelineResources:
        res = context.resources
        return PipelineResources(
            **{attr: getattr(res, key) for attr, key in (
                ("storage", self.storage_key), ("registry", self.registry_key),
                ("notifier", self.notifier_key), ("s3", self.s3_key)) if hasattr(res, key)}
        )

    def job(self, what: str) -> str:
        return f"{self.name}_{what}_job"

    def sensor(self, what: str) -> str:
        return f"{self.name}_{what}_sensor"

    def schedule(self, what: str) -> str:
        return f"{self.name}_{what}_schedule"

