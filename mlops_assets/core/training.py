"""From validated feature frames to a model bundle: pure, no Dagster, no MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mlops_assets.core.bundle import ModelBundle
from mlops_assets.core.features import (
    SPLIT_COLUMN,
    FeatureEncoder,
    canonical_series,
    canonical_strings,
    data_hash,
    encode_target,
)
from mlops_assets.core.labels import label_profile
from mlops_assets.core.predictions import MONITORED_COLUMN, monitored_from_scores
from mlops_assets.core.trainers.base import TrainedModel, TrainingDataError
from mlops_assets.core.trainers.registry import (
    Progress,
    Trainer,
    TrainingArrays,
    get_trainer,
    parity_tolerance,
)
from mlops_assets.spec import PipelineSpec


@dataclass
class TrainingOutcome:
    model: TrainedModel
    bundle: ModelBundle
    train_rows: int
    valid_rows: int
    holdout: pl.DataFrame                 # holdout rows, untouched by training and selection
    data_version: str                     # content hash of the training frame
    parity_max_abs_diff: float
    search: object | None = None          # core.search.SearchResult when the spec searches
    edge: tuple[list, list] = ((), ())    # (EdgeVariant, EdgeDecision) lists when spec.edge.enabled

    def save(self, directory) -> Path:
        """The candidate's bundle directory: the bundle and its edge variants (shipped or not)."""
        directory = self.bundle.save(directory)
        variants, decisions = self.edge
        if variants:
            from mlops_assets.core.edge import save_variants

            save_variants(variants, decisions, directory)
        return directory


def assemble_training_frame(frames: list[pl.DataFrame], spec: PipelineSpec) -> pl.DataFrame:
    labelled = [f for f in frames if spec.target in f.columns and f.height]
    if not labelled:
        raise TrainingDataError(
            f"no labelled validated partitions: column '{spec.target}' is absent from every batch"
        )
    # Partitions labelled late carry the target after the split column; line every frame up
    # with the first one's column order, and name what differs when the columns themselves do.
    columns = labelled[0].columns
    for f in labelled[1:]:
        if set(f.columns) != set(columns):
            missing, extra = sorted(set(columns) - set(f.columns)), sorted(set(f.columns) - set(columns))
            raise TrainingDataError(f"validated partitions disagree on their columns: missing {missing}, "
                                    f"extra {extra}; re-validate them with the current spec")
    frame = pl.concat([f.select(columns) for f in labelled], how="vertical_relaxed")
    dup = frame.height - frame[spec.id_column].n_unique()
    if dup:
        # The same id in two files: keep the latest arrival (frames are in arrival order).
        frame = frame.unique(subset=[spec.id_column], keep="last", maintain_order=True)
    return frame.sort(spec.id_column)


def attach_labels(features: pl.DataFrame, labels: pl.DataFrame, spec: PipelineSpec) -> pl.DataFrame:
    """Unlabelled validated rows + delayed ground-truth labels (joined by id) -> labelled rows.

    Rows without a label stay out; the latest label per id wins (labels can be corrected)."""
    gt = spec.ground_truth
    label_column = (gt.label_column if gt is not None else None) or spec.target
    if labels.height == 0 or label_column not in labels.columns or spec.id_column not in labels.columns:
        return features.head(0).with_columns(pl.lit(None).alias(spec.target))
    if spec.task == "multiclass":   # class 3 arrives as 3, 3.0 or "3": matched by value
        label = canonical_strings(pl.col(label_column), labels.schema[label_column])
    else:
        label = pl.col(label_column).cast(pl.Int64 if spec.task == "binary" else pl.Float64)
    ids = labels.select(
        pl.col(spec.id_column).cast(features.schema[spec.id_column]),
        label.alias(spec.target),
    ).drop_nulls().unique(subset=[spec.id_column], keep="last", maintain_order=True)
    return features.join(ids, on=spec.id_column, how="inner")


def class_labels(frame: pl.DataFrame, spec: PipelineSpec) -> list | None:
    if spec.task != "multiclass":
        return None
    if spec.classes is not None:
        return [str(c) for c in spec.classes]
    return sorted(canonical_series(frame[spec.target]).unique().drop_nulls().to_list())


def train_from_frame(frame: pl.DataFrame, spec: PipelineSpec, checkpoint_dir: str | None = None,
                     progress: Progress | None = None) -> TrainingOutcome:
    """Split, encode, train (or search), export, parity-check and profile: one candidate bundle."""
    from mlops_assets.core.drift import build_profile
    from mlops_assets.core.scoring import check_parity, smoke_test

    trainer = get_trainer(spec.model.trainer)
    classes = class_labels(frame, spec)
    parts = {name: frame.filter(pl.col(SPLIT_COLUMN) == name) for name in ("train", "valid", "holdout")}
    if parts["train"].height == 0:
        raise TrainingDataError("the split left no training rows")
    if parts["holdout"].height == 0:
        raise TrainingDataError("the split left no holdout rows; the gate needs some")
    encoder = FeatureEncoder.fit(parts["train"], spec)
    X = {k: encoder.transform(v) for k, v in parts.items()}
    y = {k: encode_target(v[spec.target], spec, classes) for k, v in parts.items()}
    data = TrainingArrays(
        X_train=X["train"], y_train=y["train"], X_valid=X["valid"], y_valid=y["valid"],
        feature_names=spec.feature_names, num_class=len(classes) if classes else None, task=spec.task,
        target=spec.target, seed=spec.model.seed,
        categorical_cardinality={i: len(encoder.categories[name]) for i, name in enumerate(encoder.feature_names)
                                 if encoder.kinds[name] == "categorical"},
    )
    model, search = _train(spec, trainer, data, X, y, checkpoint_dir, progress)

    smoke_test(model.onnx_bytes, len(model.feature_names))
    bundle = ModelBundle(
        onnx_bytes=model.onnx_bytes,
        encoder=encoder,
        meta={
            "task": spec.task, "classes": classes, "threshold": spec.model.decision_threshold,
            "trainer": model.trainer, "feature_names": model.feature_names, "spec_hash": spec.spec_hash,
            "feature_importance": model.feature_importance,
            "label_profile": label_profile(y["train"], spec.task, classes),
        },
        native_bytes=model.native_bytes,
        native_format=model.native_format,
    )
    tolerance = parity_tolerance(spec.model.trainer, spec.gate.onnx_parity_tolerance)
    parity = check_parity(model.predict(X["holdout"]), bundle.scorer.predict(X["holdout"]), tolerance)

    # The drift reference: training rows with the model's own monitored value beside them.
    profiled = parts["train"].select(spec.feature_names).with_columns(
        pl.Series(MONITORED_COLUMN, monitored_from_scores(spec.task, bundle.scorer.predict(X["train"])))
    )
    bundle.reference_profile = build_profile(
        profiled, dict(spec.feature_types), prediction_column=MONITORED_COLUMN, psi_bins=spec.drift.psi_bins
    ).to_dict()
    sample_n = min(parts["train"].height, spec.drift.evidently_sample_rows)
    bundle.reference_sample = parts["train"].select(spec.feature_names).sample(n=sample_n, seed=spec.model.seed)
    edge = _edge_variants(spec, bundle, X["holdout"], y["holdout"]) if spec.edge.enabled else ((), ())
    return TrainingOutcome(
        edge=edge, model=model, bundle=bundle, train_rows=parts["train"].height, valid_rows=parts["valid"].height,
        holdout=parts["holdout"], data_version=data_hash(frame.drop(SPLIT_COLUMN)),
        parity_max_abs_diff=parity.max_abs_diff, search=search,
    )


def _edge_variants(spec: PipelineSpec, bundle: ModelBundle, X, y) -> tuple[list, list]:
    """Compact variants measured on the holdout, each judged by its own rules (never the gate's)."""
    from mlops_assets.core.edge import EdgeRules, build_edge_variants, evaluate_edge_variant

    variants = build_edge_variants(bundle, X, y, main_metric=spec.main_metric, threshold=bundle.threshold,
                                   variants=spec.edge.variants)
    decisions = [evaluate_edge_variant(v, EdgeRules.from_spec(getattr(spec.edge, v.name))) for v in variants]
    return variants, decisions


def _train(spec: PipelineSpec, trainer: Trainer, data: TrainingArrays, X: dict, y: dict,
           checkpoint_dir: str | None, progress: Progress | None):
    """Train once, or run the spec's search and keep the best trial (on validation data)."""
    base = trainer.settings(spec.model)

    def fit(overrides: dict):
        settings = type(base).model_validate({**base.model_dump(), **overrides}) if overrides else base
        # Search trials are cheap and many: no checkpoints and no per-iteration progress for them.
        return trainer.fit(data, settings, checkpoint_dir=None if overrides else checkpoint_dir,
                           progress=None if overrides else progress)

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
