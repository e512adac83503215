"""What every stage shares: keys, names, storage paths, resources and metadata helpers."""

from __future__ import annotations

import re
from dataclasses import dataclass

import dagster as dg
import polars as pl

from mlops_assets import __version__
from mlops_assets.spec import PipelineSpec

STAGES = (
    "raw_data", "validated_features", "trained_model", "evaluation_report",
    "registered_model", "batch_predictions", "drift_report",
)
_PARTITION_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")


@dataclass(frozen=True)
class Names:
    """Every name a pipeline puts into a deployment, prefixed so pipelines never collide."""

    spec: PipelineSpec

    @property
    def pipeline(self) -> str:
        return self.spec.name

    def key(self, stage: str) -> dg.AssetKey:
        return dg.AssetKey([self.pipeline, stage])

    @property
    def partitions(self) -> str:
        return f"{self.pipeline}_arrivals"

    @property
    def partitions_def(self) -> dg.DynamicPartitionsDefinition:
        return dg.DynamicPartitionsDefinition(name=self.partitions)

    @property
    def storage(self) -> str:
        return f"{self.pipeline}_storage"

    @property
    def s3(self) -> str:
        return f"{self.pipeline}_s3"

    @property
    def registry(self) -> str:
        return f"{self.pipeline}_mlflow"

    @property
    def notifier(self) -> str:
        return f"{self.pipeline}_notifier"

    def job(self, what: str) -> str:
        return f"{self.pipeline}_{what}_job"

    def sensor(self, what: str) -> str:
        return f"{self.pipeline}_{what}_sensor"

    def schedule(self, what: str) -> str:
        return f"{self.pipeline}_{what}_schedule"

    @property
    def eager_condition(self) -> dg.AutomationCondition | None:
        """With `automation.declarative`, downstream partitions update as soon as their
        parents do (Dagster's AutomationCondition); training stays sensor-driven."""
        return dg.AutomationCondition.eager() if self.spec.automation.declarative else None

    @property
    def model_name(self) -> str:
        return self.pipeline

    @property
    def code_version(self) -> str:
        # A spec change (features, model, gate...) makes every asset stale in the UI.
        return f"{__version__}+{self.spec.spec_hash[:12]}"


class Paths:
    """Storage layout. Partition- and version-scoped, so nothing good is overwritten."""

    def __init__(self, pipeline: str):
        self.p = pipeline

    def raw(self, partition: str) -> str:
        return f"{self.p}/raw/{partition}.parquet"

    def features(self, partition: str) -> str:
        return f"{self.p}/features/{partition}.parquet"

    def features_prefix(self) -> str:
        return f"{self.p}/features"

    def partition_profile(self, partition: str) -> str:
        return f"{self.p}/profiles/{partition}.json"

    def rejection(self, partition: str, run_id: str) -> str:
        return f"{self.p}/rejected/{partition}/{run_id}.json"

    def model_dir(self, version: str) -> str:
        return f"{self.p}/models/v{version}"

    def holdout(self, version: str) -> str:
        return f"{self.model_dir(version)}/holdout.parquet"

    def training_record(self, version: str) -> str:
        return f"{self.model_dir(version)}/training.json"

    def evaluation(self, version: str) -> str:
        return f"{self.model_dir(version)}/evaluation.json"

    def registration(self, version: str) -> str:
        return f"{self.model_dir(version)}/registration.json"

    def predictions(self, partition: str, version: str) -> str:
        return f"{self.p}/predictions/{partition}/v{version}.parquet"

    def drift_dir(self, partition: str, version: str) -> str:
        return f"{self.p}/drift/{partition}/v{version}"


def partition_key_for_file(file_name: str) -> str | None:
    """Arrival partition key = the file name, if it is a valid Dagster partition key."""
    return file_name if _PARTITION_KEY_RE.match(file_name) else None


def table_schema(df: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=n, type=str(t)) for n, t in df.schema.items()])


def markdown_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".4f") -> str:
    if not rows:
        return "_no rows_"
    columns = columns or list(rows[0])
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append(format(v, floatfmt) if isinstance(v, float) else ("-" if v is None else str(v)))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def metrics_markdown(metrics: dict[str, float], other: dict[str, float] | None = None,
                     labels: tuple[str, str] = ("challenger", "champion")) -> str:
    rows = []
    for name, value in metrics.items():
        row = {"metric": name, labels[0]: value}
        if other is not None:
            row[labels[1]] = other.get(name)
        rows.append(row)
    return markdown_table(rows)
