"""The sections of a pipeline spec that decide what a model learns: features, the source, limits,
the split, the trainers and the search, and the promotion gate. `mlops_assets.spec` re-exports
them; `PipelineSpec` composes them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    field_validator,
    model_validator,
)

import mlops_assets.spec_rules as rules
from mlops_assets.spec_base import (
    CategoryValue,
    FeatureType,
    _Strict,
)


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
