"""From validated feature frames to a model bundle: pure, no Dagster, no MLflow."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from mlops_assets.core.bundle import ModelBundle
from mlops_assets.core.features import SPLIT_COLUMN, FeatureEncoder, data_hash, encode_target
from mlops_assets.core.trainers.base import TrainedModel, TrainingDataError
from mlops_assets.spec import PipelineSpec

PREDICTION_COLUMN = "__prediction"


@dataclass
class TrainingOutcome:
    model: TrainedModel
    bundle: ModelBundle
    train_rows: int
    valid_rows: int
    holdout: pl.DataFrame                 # holdout rows, untouched by training and selection
    data_version: str                     # content hash of the training frame
    parity_max_abs_diff: float
    reference_profile: dict
    reference_sample: pl.DataFrame
    search: object | None = None          # core.search.SearchResult when the spec searches


def assemble_training_frame(frames: list[pl.DataFrame], spec: PipelineSpec) -> pl.DataFrame:
    labelled = [f for f in frames if spec.target in f.columns and f.height]
    if not labelled:
        raise TrainingDataError(
            f"no labelled validated partitions: column '{spec.target}' is absent from every batch"
        )
    frame = pl.concat(labelled, how="vertical_relaxed")
    dup = frame.height - frame[spec.id_column].n_unique()
    if dup:
        # The same id in two files: keep the latest arrival (frames are in arrival order).
        frame = frame.unique(subset=[spec.id_column], keep="last", maintain_order=True)
    return frame.sort(spec.id_column)


def class_labels(frame: pl.DataFrame, spec: PipelineSpec) -> list | None:
    if spec.task != "multiclass":
        return None
    if spec.classes is not None:
        return [str(c) for c in spec.classes]
    return sorted(frame[spec.target].cast(pl.String).unique().drop_nulls().to_list())


def train_from_frame(frame: pl.DataFrame, spec: PipelineSpec, checkpoint_dir: str | None = None) -> TrainingOutcome:
    from mlops_assets.core.drift import build_profile
    from mlops_assets.core.scoring import check_parity, smoke_test

    classes = class_labels(frame, spec)
    parts = {name: frame.filter(pl.col(SPLIT_COLUMN) == name) for name in ("train", "valid", "holdout")}
    if parts["train"].height == 0:
        raise TrainingDataError("the split left no training rows")
    encoder = FeatureEncoder.fit(parts["train"], spec)
    X = {k: encoder.transform(v) for k, v in parts.items()}
    y = {k: encode_target(v[spec.target], spec, classes) for k, v in parts.items()}

    model, search = _train(spec, X, y, classes, encoder, checkpoint_dir)

    if parts["holdout"].height == 0:
        raise TrainingDataError("the split left no holdout rows; the gate needs some")
    bundle = ModelBundle(
        onnx_bytes=model.onnx_bytes,
        encoder=encoder,
        meta={
            "task": spec.task, "classes": classes, "threshold": spec.model.decision_threshold,
            "trainer": model.trainer, "feature_names": model.feature_names, "spec_hash": spec.spec_hash,
        },
        native_bytes=model.native_bytes,
        native_format=model.native_format,
    )
    smoke_test(model.onnx_bytes, len(model.feature_names))
    native = model.predict(X["holdout"])
    parity = check_parity(native, bundle.scorer.predict(X["holdout"]), spec.parity_tolerance)

    train_scores = bundle.scorer.predict(X["train"])
    profiled = parts["train"].select(spec.feature_names).with_columns(
        _prediction_series(spec.task, train_scores, classes)
    )
    profile = build_profile(profiled, dict(spec.feature_types), prediction_column=PREDICTION_COLUMN,
                            psi_bins=spec.drift.psi_bins)
    sample_n = min(parts["train"].height, spec.drift.evidently_sample_rows)
    sample = parts["train"].select(spec.feature_names).sample(n=sample_n, seed=spec.model.seed)
    return TrainingOutcome(
        model=model, bundle=bundle, train_rows=parts["train"].height, valid_rows=parts["valid"].height,
        holdout=parts["holdout"], data_version=data_hash(frame.drop(SPLIT_COLUMN)),
        parity_max_abs_diff=parity.max_abs_diff, reference_profile=profile.to_dict(),
        reference_sample=sample, search=search,
    )


def prediction_for_drift(task: str, scores: np.ndarray) -> np.ndarray:
    """The one number per row whose distribution we monitor: P(class 1) for binary,
    the top-class probability (confidence) for multiclass, the prediction for regression."""
    if task == "multiclass":
        return scores.max(axis=1).astype(np.float64)
    return scores.astype(np.float64)


def _prediction_series(task: str, scores: np.ndarray, classes: list | None) -> pl.Series:
    return pl.Series(PREDICTION_COLUMN, prediction_for_drift(task, scores))


def _train(spec: PipelineSpec, X: dict, y: dict, classes: list | None, encoder: FeatureEncoder,
           checkpoint_dir: str | None = None):
    """Train once, or run the spec's search and keep the best trial (on validation data)."""
    num_class = len(classes) if classes else None
    base = spec.model.lightgbm if spec.model.trainer == "lightgbm" else spec.model.mlp

    def fit(overrides: dict):
        config = type(base).model_validate({**base.model_dump(), **overrides}) if overrides else base
        return _fit_one(spec, config, X, y, num_class, encoder, checkpoint_dir if not overrides else None)

    if spec.model.search is None:
        return fit({}), None
    from mlops_assets.core.metrics import HIGHER_IS_BETTER, compute_metrics
    from mlops_assets.core.search import run_search

    if len(y["valid"]) == 0:
        raise TrainingDataError("hyperparameter search needs validation rows; raise split.validation_fraction")
    metric = spec.main_metric

    def score(model) -> float:
        return compute_metrics(spec.task, y["valid"], model.predict(X["valid"]),
                               spec.model.decision_threshold)[metric]

    result = run_search(spec.model.search, seed=spec.model.seed, train=fit, score=score, metric=metric,
                        higher_is_better=HIGHER_IS_BETTER.get(metric, True))
    return result.best.model, result


def _fit_one(spec: PipelineSpec, config, X: dict, y: dict, num_class: int | None, encoder: FeatureEncoder,
             checkpoint_dir: str | None) -> TrainedModel:
    if spec.model.trainer == "lightgbm":
        from mlops_assets.core.trainers.lightgbm_trainer import train_lightgbm

        return train_lightgbm(
            X["train"], y["train"], X["valid"], y["valid"],
            task=spec.task, feature_names=spec.feature_names, config=config,
            seed=spec.model.seed, target_name=spec.target, num_class=num_class,
        )
    if spec.model.trainer == "mlp":
        from mlops_assets.core.trainers.mlp_trainer import MLPConfig, train_mlp

        fields = config.model_dump()
        fields["hidden_sizes"] = tuple(fields["hidden_sizes"])
        categorical = {
            i: len(encoder.categories[name])
            for i, name in enumerate(encoder.feature_names) if encoder.kinds[name] == "categorical"
        }
        return train_mlp(
            X["train"], y["train"], X["valid"], y["valid"],
            task=spec.task, feature_names=spec.feature_names, categorical=categorical,
            config=MLPConfig(**fields), seed=spec.model.seed, target_name=spec.target,
            num_class=num_class, checkpoint_dir=checkpoint_dir,
        )
    raise TrainingDataError(f"model.trainer: unknown trainer '{spec.model.trainer}'")
