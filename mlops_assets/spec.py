"""`PipelineSpec`: everything a user declares about one ML pipeline.

The same pydantic model is the Python API, the YAML file format and the Dagster
Component's attribute schema, so there is exactly one schema. Validation errors name
the field at fault (pydantic's `loc`), e.g. ``features.2.min: ...``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

import mlops_assets.spec_rules as rules
from mlops_assets.spec_base import (  # noqa: F401
    NAME_RE,
    OWNER_RE,
    TAG_KEY_RE,
    TAG_VALUE_RE,
    CategoryValue,
    ClassLabel,
    FeatureType,
    SpecError,
    TaskType,
    _Strict,
)
from mlops_assets.spec_operations import (  # noqa: F401
    AutomationSpec,
    DriftSpec,
    EdgeRulesSpec,
    EdgeSpec,
    FeatureDriftSpec,
    GroundTruthSpec,
    LabelsSpec,
    PerformanceSpec,
    ReleaseSpec,
    StreamingSpec,
)
from mlops_assets.spec_training import (  # noqa: F401
    FeatureSpec,
    GateSpec,
    LightGBMSpec,
    LimitsSpec,
    MLPSpec,
    ModelSpec,
    SearchParam,
    SearchSpec,
    SourceSpec,
    SplitSpec,
)

# Sections that change what a model learns. Paths and schedules are deployment
# details: moving the state folder must not make every asset stale.
_HASHED_SECTIONS = (
    "name", "target", "task", "classes", "features", "id_column", "timestamp_column",
    "group_column", "split", "model", "gate",
)


class PipelineSpec(_Strict):
    """One ML pipeline: data source, target, features, model, gate, drift and schedule."""

    name: str = Field(description="Lower-case identifier: asset key prefix, group and MLflow model name.")
    source: SourceSpec
    limits: LimitsSpec = LimitsSpec()
    target: str = Field(min_length=1)
    task: TaskType = "binary"
    classes: list[ClassLabel] | None = Field(
        None, description="Multiclass: the class labels in order, all text or all integers (matched by value: "
        "3 = 3.0 = '3'). Binary labels must be 0/1.",
    )
    features: list[FeatureSpec] = Field(min_length=1)
    id_column: str = Field(min_length=1)
    timestamp_column: str | None = Field(None, min_length=1, description="Datetime or ISO-8601 text column.")
    group_column: str | None = Field(
        None, min_length=1, description="Column for slice and fairness metrics (may also be a feature)."
    )
    min_rows: int = Field(100, ge=1, description="Smallest batch accepted by validation.")
    split: SplitSpec = SplitSpec()
    model: ModelSpec = ModelSpec()
    gate: GateSpec = GateSpec()
    drift: DriftSpec = DriftSpec()
    automation: AutomationSpec = AutomationSpec()
    ground_truth: GroundTruthSpec | None = Field(None, description="Delayed labels for model_performance.")
    performance: PerformanceSpec = PerformanceSpec()
    release: ReleaseSpec = ReleaseSpec()
    labels: LabelsSpec = LabelsSpec()
    edge: EdgeSpec = EdgeSpec()
    streaming: StreamingSpec | None = Field(None, description="Streaming inference and its health alerts.")
    state_dir: str = Field(
        ".mlops", min_length=1, description="Embedded default home for artifacts and the MLflow store."
    )
    owners: list[str] = Field(
        default_factory=list,
        description="Owners of every asset of the pipeline: emails or 'team:<name>' (shown in the UI).",
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Tags put on every asset of the pipeline (filterable in the UI)."
    )

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("must match ^[a-z][a-z0-9_]{0,62}$ (it becomes asset keys and a model name)")
        return value

    @field_validator("owners")
    @classmethod
    def _owners_are_dagster_owners(cls, value: list[str]) -> list[str]:
        bad = [o for o in value if not OWNER_RE.match(o)]
        if bad:
            raise ValueError(f"{bad}: each owner must be an email or 'team:<name>'")
        return value

    @field_validator("tags")
    @classmethod
    def _tags_are_dagster_tags(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not TAG_KEY_RE.match(k)]
        if bad:
            raise ValueError(f"{bad}: tag keys are letters, digits, '_', '-', '.', '/', at most 63 characters")
        long = [k for k, v in value.items() if len(v) > 63 or not TAG_VALUE_RE.match(v)]
        if long:
            raise ValueError(f"values of {long}: at most 63 characters of letters, digits, '_', '-', '.'")
        return value

    @field_validator("classes")
    @classmethod
    def _classes_distinct(cls, value: list[str | int] | None) -> list[str | int] | None:
        if value is not None:
            rules.raise_problems(rules.class_problems(value))
        return value

    @model_validator(mode="after")
    def _columns_consistent(self) -> PipelineSpec:
        # Column roles, reserved names, metrics per task, drift methods per type: spec_rules.py.
        rules.raise_problems(rules.pipeline_problems(self))
        return self

    # -- derived values -------------------------------------------------------------------

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def feature_types(self) -> dict[str, FeatureType]:
        return {f.name: f.type for f in self.features}

    @property
    def main_metric(self) -> str:
        return self.gate.main_metric or rules.DEFAULT_METRIC[self.task]

    @property
    def spec_hash(self) -> str:
        payload = self.model_dump(mode="json", include=set(_HASHED_SECTIONS))
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def state_path(self, *parts: str) -> Path:
        return Path(self.state_dir).joinpath(*parts)

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineSpec:
        if not isinstance(data, dict):
            raise SpecError(f"invalid pipeline spec: expected a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            message, problems = rules.format_validation_error(exc, data.get("name"))
            raise SpecError(message, problems) from exc

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> PipelineSpec:
        """Load a spec; relative `state_dir` and `source.path` resolve against the file's folder.

        A key written twice in one mapping is an error (plain YAML keeps the last one silently).
        """
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(f"{path}: cannot read the spec: {exc.strerror or exc}") from exc
        try:
            data = rules.load_yaml(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML: {exc}", [("<yaml>", str(exc))]) from exc
        if data is None:
            raise SpecError(f"{path}: the file is empty; a spec is a mapping (name, source, target, ...)")
        if not isinstance(data, dict):
            raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        data = _resolve_relative_paths(data, path.parent)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            message, problems = rules.format_validation_error(exc, data.get("name"))
            raise SpecError(f"{path}: " + message, problems) from exc


def format_validation_error(exc: ValidationError, name: object = None) -> str:
    return rules.format_validation_error(exc, name)[0]


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    # An empty path stays empty, so validation refuses it instead of it becoming the spec's folder.
    data = dict(data)
    state_dir = data.get("state_dir")
    if isinstance(state_dir, str) and state_dir and not _is_absolute(state_dir):
        data["state_dir"] = str((base / state_dir).resolve())
    for section in ("source", "ground_truth"):
        block = data.get(section)
        if isinstance(block, dict) and isinstance(block.get("path"), str) and block["path"] \
                and not _is_absolute(block["path"]):
            data[section] = {**block, "path": str((base / block["path"]).resolve())}
    return data


def _is_absolute(path: str) -> bool:
    return "://" in path or os.path.isabs(path)
