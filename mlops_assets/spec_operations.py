"""The sections of a pipeline spec that decide how a pipeline runs once models exist: drift and
its retrain signal, ground truth and performance, releases, automation, edge and streaming
deployment, and labels. `mlops_assets.spec` re-exports them; `PipelineSpec` composes them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

import mlops_assets.spec_rules as rules
from mlops_assets.spec_base import (
    _Strict,
)


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
