"""`PipelineSpec`: everything a user declares about one ML pipeline.

The same pydantic model is the Python API, the YAML file format and the Dagster
Component's attribute schema, so there is exactly one schema. Validation errors name
the field at fault (pydantic's `loc`), e.g. ``features.2.min: ...``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

import mlops_assets.spec_rules as rules

TaskType = Literal["binary", "multiclass", "regression"]
FeatureType = Literal["numeric", "categorical"]
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
OWNER_RE = re.compile(r"^(team:[A-Za-z0-9_\-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")
# Dagster's rules for tag keys and values (strict tags are what the UI can filter on).
TAG_KEY_RE = re.compile(r"^([A-Za-z0-9_.\-]{1,63}/)?[A-Za-z0-9_.\-]{1,63}$")
TAG_VALUE_RE = re.compile(r"^[A-Za-z0-9_.\-]*$")

# Sections that change what a model learns. Paths and schedules are deployment
# details: moving the state folder must not make every asset stale.
_HASHED_SECTIONS = (
    "name", "target", "task", "classes", "features", "id_column", "timestamp_column",
    "group_column", "split", "model", "gate",
)


class SpecError(ValueError):
    """A pipeline spec that cannot be used; the message names the field."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None):
        super().__init__(message)
        # (field path, rule) pairs, e.g. ("gate.main_metric", "'rmse' is not a binary metric; ...").
        self.problems = problems or []


class _Strict(BaseModel):
    # No NaN or infinity in any number: a bound of .nan would silently check nothing.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        rules.raise_problems(rules.boolean_for_number_problems(cls, data))
        return data


# A declared category: text, or an integer code (3 and 3.0 become "3", matched by value).
CategoryValue = Annotated[
    str,
    BeforeValidator(rules.canonical_category),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
]
ClassLabel = Annotated[str | int, BeforeValidator(rules.class_label)]


class FeatureSpec(_Strict):
    """One model input column and the validation rules for it."""

    name: str = Field(min_length=1)
    type: FeatureType
    min: float | None = Field(None, description="Numeric only: smallest allowed value.")
    max: float | None = Field(None, description="Numeric only: largest allowed value.")
    categories: list[CategoryValue] | None = Field(
        None, description="Categorical only: the allowed values; integer codes match by value (3 = 3.0 = "
        "'3'). Unset: any value is allowed.",
    )
    max_null_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Largest share of missing values allowed in a batch."
    )

    @model_validator(mode="after")
    def _rules_fit_type(self) -> FeatureSpec:
        rules.raise_problems(rules.feature_problems(self))
        return self


class SourceSpec(_Strict):
    """Where raw data comes from: a directory of files, or an asset the user already has."""

    path: str | None = Field(
        None, description="Directory (local path or s3://bucket/prefix) where data files arrive."
    )
    asset_key: list[str] | None = Field(
        None, description="Key of an upstream asset in the user's deployment that holds the raw data."
    )
    format: Literal["auto", "parquet", "csv"] = "auto"
    settle_seconds: float = Field(
        2.0, ge=0, description="A file is complete once its size and mtime are this old."
    )
    require_success_marker: bool = Field(
        False, description="Only pick up a file once '<file>._SUCCESS' exists next to it."
    )
    complete_within_seconds: float = Field(
        3600.0, ge=0, description="A settled file that still looks unfinished (a Parquet file without its "
        "footer, a CSV without a final line break, an empty file) waits this long for its producer, then "
        "goes to raw_data, which quarantines it if it cannot be read.",
    )
    allow_symlinks: bool = Field(
        False, description="Follow symbolic links in the landing folder. Off: a link is quarantined (the "
        "link itself, never its target) and its target is never read.",
    )
    on_change: Literal["report", "reingest"] = Field(
        "report", description="A file whose content changes after it was ingested: 'report' alerts and keeps "
        "what the partition holds; 'reingest' runs the partition again on the new content.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        if (self.path is None) == (self.asset_key is None):
            raise ValueError("set exactly one of 'path' or 'asset_key'")
        if self.asset_key is not None and not self.asset_key:
            raise ValueError("'asset_key' must have at least one part")
        if self.complete_within_seconds < self.settle_seconds:
            raise ValueError(f"complete_within_seconds ({self.complete_within_seconds:g}) must be at least "
                             f"settle_seconds ({self.settle_seconds:g}): a file settles before it can be complete")
        if self.asset_key is not None:
            set_for_files = [f for f in ("require_success_marker", "allow_symlinks", "on_change")
                             if f in self.model_fields_set]
            if set_for_files:
                raise ValueError(f"{set_for_files} apply to files in source.path, not to an upstream asset")
        return self


class LimitsSpec(_Strict):
    """Bounds on one arriving file, checked before it is loaded (Parquet: from its footer)."""

    max_file_bytes: int = Field(2 * 1024**3, ge=1, description="Largest file accepted, in bytes (2 GiB).")
    max_rows: int = Field(50_000_000, ge=1, description="Most rows in one file.")
    max_columns: int = Field(2_000, ge=1, description="Most columns in one file.")
    max_cells: int = Field(
        500_000_000, ge=1, description="Most rows x columns in one file: what bounds the memory one file takes.",
    )


class SplitSpec(_Strict):
    """Deterministic split by a hash of the id column: a row never changes side."""

    holdout_fraction: float = Field(0.2, gt=0, lt=0.9)
    validation_fraction: float = Field(0.1, gt=0, lt=0.9)
    seed: int = Field(17, ge=0, le=2**64 - 1, description="Salt of the id hash (an unsigned 64-bit integer).")

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitSpec:
        rules.raise_problems(rules.split_problems(self))
        return self


class LightGBMSpec(_Strict):
    num_boost_round: int = Field(300, ge=1, le=100_000)
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(31, ge=2, le=131_072)
    min_data_in_leaf: int = Field(20, ge=1)
    feature_fraction: float = Field(1.0, gt=0, le=1)
    lambda_l2: float = Field(0.0, ge=0)
    early_stopping_rounds: int | None = Field(30, ge=1)
    num_threads: int = Field(2, ge=1)
    extra_params: dict[str, Any] = Field(
        default_factory=dict, description="Passed to lightgbm.train as-is (after the above)."
    )

    @field_validator("extra_params")
    @classmethod
    def _no_float32_traps(cls, value: dict[str, Any]) -> dict[str, Any]:
        rules.raise_problems(rules.extra_params_problems(value))
        return value


class MLPSpec(_Strict):
    """PyTorch MLP for tabular data (standardised numerics, embeddings for categoricals)."""

    hidden_sizes: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    weight_decay: float = Field(1e-5, ge=0)
    batch_size: int = Field(512, ge=8)
    max_epochs: int = Field(50, ge=1, le=10_000)
    early_stopping_patience: int = Field(5, ge=1)
    embedding_dim: int | None = Field(
        None, ge=0, description="Unset: sized per feature; 0: one-hot encode categoricals."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = Field(2, ge=1)

    @field_validator("hidden_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(h < 1 for h in value):
            raise ValueError("every hidden size must be >= 1")
        return value


class SearchParam(_Strict):
    """One dimension of a search space: a list of values, or a numeric range."""

    values: list[float | int | str | bool] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> SearchParam:
        ranged = self.low is not None or self.high is not None
        if (self.values is None) == (not ranged):
            raise ValueError("give either 'values' or both 'low' and 'high'")
        if self.values is not None and not self.values:
            raise ValueError("'values' must not be empty")
        if ranged:
            if self.low is None or self.high is None or self.low >= self.high:
                raise ValueError("'low' must be set and below 'high'")
            if self.log and self.low <= 0:
                raise ValueError("a log range needs low > 0")
        rules.raise_problems(rules.search_param_problems(self))
        return self


class SearchSpec(_Strict):
    """Hyperparameter search; trials are chosen on the validation split, never the holdout."""

    strategy: Literal["random", "grid"] = "random"
    space: dict[str, SearchParam] = Field(min_length=1)
    max_trials: int | None = Field(20, ge=1)
    max_seconds: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _budget(self) -> SearchSpec:
        if self.max_trials is None and self.max_seconds is None:
            raise ValueError("set max_trials and/or max_seconds")
        if self.strategy == "grid":
            ranged = [k for k, p in self.space.items() if p.values is None]
            if ranged:
                raise ValueError(f"grid search needs 'values' for every parameter; {ranged} are ranges")
        return self


class ModelSpec(_Strict):
    trainer: Literal["lightgbm", "mlp"] = "lightgbm"
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Training seed (LightGBM takes a 32-bit int).")
    decision_threshold: float = Field(0.5, gt=0, lt=1, description="Binary: score -> label cut.")
    lightgbm: LightGBMSpec = LightGBMSpec()
    mlp: MLPSpec = MLPSpec()
    search: SearchSpec | None = Field(None, description="Optional hyperparameter search.")

    @property
    def trainer_settings(self) -> BaseModel:
        """The settings block named like the trainer (`lightgbm:` for trainer lightgbm, ...)."""
        return getattr(self, self.trainer)

    @model_validator(mode="after")
    def _search_space_fits_trainer(self) -> ModelSpec:
        if self.search is not None:
            rules.raise_problems(rules.search_space_problems(self.search.space, self.trainer_settings, self.trainer))
        return self


class GateSpec(_Strict):
    """Release rules a challenger must pass before the `champion` alias moves to it."""

    main_metric: str | None = Field(
        None, description="Defaults: roc_auc (binary), macro_f1 (multiclass), rmse (regression)."
    )
    min_main_metric: float | None = Field(None, description="Absolute floor (ceiling for errors).")
    max_regression: float | None = Field(
        0.01, ge=0, description="Largest allowed worsening of the main metric vs the champion."
    )
    max_fairness_gap: float | None = Field(
        None, ge=0, description="Largest main-metric gap between groups of the group column."
    )
    max_p99_latency_ms: float | None = Field(None, gt=0)
    onnx_parity_tolerance: float | None = Field(
        None, gt=0, le=1e-2, description="Unset: 1e-5 for LightGBM, 1e-4 for the MLP."
    )
    max_regression_on_champion_holdout: float | None = Field(
        0.01, ge=0, description="Largest allowed worsening vs the champion on the champion's own (frozen) "
        "holdout rows: a candidate trained on poisoned new data cannot hide behind a poisoned new holdout.",
    )
    bootstrap_policy: Literal["floor_ci", "all_rules", "infra_only"] = Field(
        "floor_ci", description="The first model (no champion yet): floor_ci fails the metric floor only "
        "when its confidence interval lies below it; all_rules judges point estimates as later; "
        "infra_only promotes any faithful model as the baseline (quality rules only warn).",
    )
    confidence: float = Field(0.9, gt=0.5, lt=1, description="Confidence of the bootstrap intervals.")
    fairness_min_group_rows: int = Field(30, ge=1, description="Smaller groups are reported, not gated.")
    fairness_min_group_positives: int = Field(
        10, ge=1, description="Groups with fewer rows of their rarest label are reported, not gated.")
    min_holdout_rows: int = Field(200, ge=1, description="A smaller holdout passes with a warning that it "
                                  "is too small to judge the model.")
    min_holdout_positives: int = Field(20, ge=1, description="Classification: rows of the rarest label "
                                       "below which the holdout is too small to judge.")
    force_promote: bool = Field(
        False, description="Promote despite failed quality rules (never despite ONNX infra rules); audited."
    )
    force_reason: str | None = None

    @model_validator(mode="after")
    def _force_needs_reason(self) -> GateSpec:
        if self.force_promote and not (self.force_reason or "").strip():
            raise ValueError("force_promote requires a non-empty force_reason (it is audited)")
        return self


class FeatureDriftSpec(_Strict):
    method: Literal["auto", "wasserstein", "ks", "psi", "jensenshannon", "chisquare"] = Field(
        "auto", description="auto follows Evidently's defaults (see docs/drift.md)."
    )
    threshold: float | None = Field(None, gt=0, description="Unset: the method's default.")

    @model_validator(mode="after")
    def _threshold_fits_method(self) -> FeatureDriftSpec:
        rules.raise_problems(rules.drift_threshold_problems(self))
        return self


class DriftSpec(_Strict):
    share_threshold: float = Field(
        0.5, gt=0, le=1, description="Dataset drift when at least this share of features drift."
    )
    key_features: list[str] = Field(
        default_factory=list,
        description="Any of these shifting significantly and materially triggers a retrain. "
        "Empty: the champion's most important features (top_key_features).",
    )
    per_feature: dict[str, FeatureDriftSpec] = Field(
        default_factory=dict, description="Per-feature method/threshold overrides."
    )
    psi_bins: int = Field(10, ge=2, le=100)
    evidently_sample_rows: int = Field(100_000, ge=100)
    evidently_html: Literal["on_drift", "always", "never"] = Field(
        "on_drift", description="When to render Evidently's HTML report next to our own drift summary: "
        "only when drift is found (default), on every report, or never.",
    )
    # The calibrated retrain signal (docs/drift.md, "Two layers").
    top_key_features: int = Field(
        3, ge=0, le=50,
        description="When key_features is empty: this many of the champion's most important features are key (0: none).",
    )
    key_feature_min_importance: float = Field(
        0.1, ge=0, le=1, description="Smallest share of the total importance for a top feature to be key."
    )
    prediction_drift_signal: bool = Field(
        True, description="A significant, material shift of the champion's predictions triggers a retrain."
    )
    signal_alpha: float = Field(
        0.05, gt=0, lt=1, description="False-alarm rate of the retrain signal per batch, bounded under any dependence."
    )
    min_wasserstein: float = Field(
        0.1, ge=0, description="Numeric materiality floor: Wasserstein distance / reference std."
    )
    min_category_share_change: float = Field(
        0.05, ge=0, le=1, description="Categorical materiality floor: largest change of one category's share."
    )
    share_rule_fraction: float = Field(
        0.1, gt=0, lt=1, description="Part of signal_alpha spent on the share rule (many features shifting "
        "together); the rest goes to key features and the prediction (Holm)."
    )
    min_novel_mass: float = Field(
        0.02, ge=0, le=1,
        description="Novelty floor of every column: the share of the batch lying where the reference is thin "
        "(beyond novelty_density_ratio x its density, on 10 reference-quantile bins or the categories; new "
        "values count fully) must reach it too. Keeps a batch drawn from part of what the champion trained on "
        "from firing. 0: off.",
    )
    novelty_density_ratio: float = Field(
        1.5, ge=1, description="Density ratio of the novel mass: batch density beyond this multiple of the "
        "reference's is new. A reference with up to 1 - 1/ratio of its rows from elsewhere (1/3 at 1.5) "
        "holds every part of the rest.",
    )


class GroundTruthSpec(_Strict):
    """Delayed labels: files with the id, the label and when it became known."""

    path: str = Field(min_length=1, description="Directory where label files (Parquet/CSV) arrive.")
    label_column: str | None = Field(None, min_length=1, description="Unset: the spec's target column name.")
    time_column: str = Field(
        "labelled_at", min_length=1, description="Timestamp of the outcome; metrics are per day of it."
    )


class PerformanceSpec(_Strict):
    max_drop: float = Field(0.05, ge=0, description="Retrain when the main metric drops this much vs holdout.")
    window_days: int = Field(3, ge=1, description="Labelled days averaged for the comparison.")
    min_rows_per_day: int = Field(50, ge=1, description="Days with fewer labelled rows are not scored.")


class ReleaseSpec(_Strict):
    """How a gated candidate replaces the champion: at once, or after a shadow or canary release
    judged on delayed labels (docs/serving.md, "Shadow and canary")."""

    mode: Literal["none", "shadow", "canary"] = Field(
        "none", description="none: promote a gated candidate at once; shadow: score beside the champion, "
        "serve the champion's; canary: the candidate serves canary_fraction of the ids.")
    canary_fraction: float = Field(0.1, gt=0, lt=1, description="Canary: share of ids (by a stable hash) "
                                   "the candidate serves.")
    min_labelled_rows: int = Field(500, ge=1, description="Labelled rows each arm needs, on the same days, "
                                   "before the release is judged.")
    max_metric_drop: float = Field(0.01, ge=0, description="The candidate is promoted when its main metric is "
                                   "at most this much worse than the champion's on the same days; else ended.")
    max_days: float | None = Field(14, gt=0, description="A release still undecided after this many days is "
                                   "ended (the candidate is not promoted). Unset: it waits for labels.")


class AutomationSpec(_Strict):
    batch_inference_cron: str = Field("0 6 * * *", description="Cron of the batch-inference schedule.")
    monitoring_cron: str = Field("0 * * * *", description="Cron of the drift/performance check schedule.")
    timezone: str = Field("UTC", description="IANA time zone of both crons, e.g. 'Europe/Paris'.")
    sensor_interval_seconds: int = Field(30, ge=5)
    retrain_on_drift: bool = True
    retrain_on_performance_drop: bool = True
    retrain_cooldown_minutes: float = Field(
        60, ge=0, description="No retrain starts within this long after the previous one."
    )
    retrain_budget: int = Field(3, ge=1, description="At most this many retrains per budget window.")
    retrain_budget_window_hours: float = Field(24, gt=0)
    retrain_on_new_data: bool = Field(
        True, description="Retrain when enough labelled rows arrived since the champion's training set."
    )
    new_data_min_rows: int = Field(
        1_000, ge=1, description="New labelled rows (not in the champion's training set) needed to retrain."
    )
    new_data_min_fraction: float = Field(
        0.25, ge=0, description="...and at least this share of the champion's training rows."
    )
    watchdog_interval_seconds: int = Field(
        30, ge=5, description="How often the dead-run watchdog looks for runs whose worker died."
    )
    watchdog_grace_seconds: float = Field(
        30, ge=1, description="A run whose worker is gone this long (and silent) is failed and its slots freed."
    )
    declarative: bool = Field(
        False, description="Also attach AutomationCondition.eager() to downstream assets (see docs)."
    )

    @field_validator("batch_inference_cron", "monitoring_cron")
    @classmethod
    def _dagster_cron(cls, value: str) -> str:
        problem = rules.cron_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("timezone")
    @classmethod
    def _iana_timezone(cls, value: str) -> str:
        problem = rules.timezone_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class EdgeRulesSpec(_Strict):
    """Limits an edge variant must meet to ship in the bundle (None switches a rule off)."""

    max_relative_metric_delta: float | None = Field(
        None, ge=0, description="Worsening of the main metric vs the full model, as a fraction of its value.")
    max_score_diff: float | None = Field(
        None, ge=0, description="Max |variant - full| score on the holdout (regression: in prediction std).")
    max_size_ratio: float | None = Field(None, gt=0, description="Variant size / full model size.")
    max_size_bytes: int | None = Field(None, ge=1)
    max_p99_latency_ms: float | None = Field(None, gt=0)


class EdgeSpec(_Strict):
    """Compact models for edge devices, built beside the full one: an int8 dynamic-quantised MLP,
    a float32 LightGBM. Each ships only when its own rules pass; it never blocks the full model."""

    enabled: bool = Field(False, description="Build, measure and gate the edge variants at training.")
    variants: list[Literal["int8", "float32"]] | None = Field(
        None, description="Unset: int8 for the MLP, float32 for LightGBM.")
    int8: EdgeRulesSpec = EdgeRulesSpec(max_relative_metric_delta=0.01, max_score_diff=0.1, max_size_ratio=0.5)
    float32: EdgeRulesSpec = EdgeRulesSpec(max_relative_metric_delta=0.001, max_score_diff=1e-4,
                                           max_size_ratio=0.9)


class StreamingSpec(_Strict):
    """Streaming inference: where the consumer (`mlops-assets stream`) reads, and when its health alerts."""

    broker_url: str = Field(description="e.g. redis://127.0.0.1:6379/0 (credentials are never logged).")
    stream: str | None = Field(None, description="Events stream. Unset: '<name>:events'.")
    group: str | None = Field(None, description="Consumer group. Unset: '<name>:scorers'.")
    output_dir: str | None = Field(None, description="Scored Parquet partitions. Unset: <state_dir>/stream.")
    max_lag: int = Field(10_000, ge=0, description="Alert when more events than this wait undelivered.")
    max_pending_seconds: float = Field(120, gt=0, description="Alert when a delivered batch waits this long.")
    max_idle_seconds: float = Field(300, gt=0, description="Alert when events wait and no consumer acted this long.")
    check_interval_seconds: int = Field(60, ge=5, description="How often the health sensor looks.")


class LabelsSpec(_Strict):
    """Sanity of the labels in each labelled arrival, against what the champion predicts for its rows."""

    check: bool = Field(True, description="Block labelled batches whose label distribution is implausible.")
    min_rows: int = Field(30, ge=1, description="Smaller labelled batches are only checked for a single class.")
    reject_single_class: bool = Field(
        True, description="Classification: a batch of at least min_rows rows holding one class is rejected."
    )
    max_rate_ratio: float = Field(
        3.0, gt=1, description="Classification: a class share this many times higher or lower than the "
        "champion predicts for the batch's rows is rejected, when the difference is also significant.",
    )
    max_mean_shift_sd: float = Field(
        1.0, gt=0, description="Regression: a label mean this many training std from the champion's mean "
        "prediction for the batch is rejected (if significant).",
    )
    alpha: float = Field(1e-3, gt=0, lt=0.5, description="Significance level of those tests.")


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
