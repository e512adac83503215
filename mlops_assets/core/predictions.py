"""The predictions table: one contract for batch scoring, serving, drift and delayed labels.

Columns: the id, the score columns of the task, `model_version` and `scored_at`.
  binary      score (P(class 1)), prediction (0/1 at the decision threshold)
  multiclass  prediction (the class label), proba_<class> per class
  regression  prediction
The *monitored value* is the one number per row whose distribution drift watches: P(class 1)
for binary, the top-class probability (confidence) for multiclass, the prediction for
regression.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from mlops_assets.core.metrics import predicted_labels

SCORE = "score"
PREDICTION = "prediction"
PROBA_PREFIX = "proba_"
MODEL_VERSION = "model_version"
SCORED_AT = "scored_at"
MONITORED_COLUMN = "__prediction"   # the monitored value's name in drift profiles


def class_names(classes: list | None, n_columns: int) -> list[str]:
    return [str(c) for c in classes] if classes else [str(i) for i in range(n_columns)]


def score_columns(task: str, classes: list | None) -> list[str]:
    if task == "binary":
        return [SCORE, PREDICTION]
    if task == "multiclass":
        return [PREDICTION, *(f"{PROBA_PREFIX}{c}" for c in class_names(classes, 0))]
    return [PREDICTION]


def prediction_columns(task: str, score: np.ndarray, threshold: float, classes: list | None) -> pl.DataFrame:
    """Raw model scores -> the task's readable score columns."""
    if task == "binary":
        return pl.DataFrame({SCORE: score, PREDICTION: predicted_labels(task, score, threshold)})
    if task == "multiclass":
        labels = class_names(classes, score.shape[1])
        probabilities = {f"{PROBA_PREFIX}{c}": score[:, i] for i, c in enumerate(labels)}
        index = predicted_labels(task, score)
        return pl.DataFrame({PREDICTION: np.asarray(labels, dtype=object)[index].astype(str), **probabilities})
    return pl.DataFrame({PREDICTION: score})


def predictions_table(ids: pl.Series, scored: pl.DataFrame, model_version: str,
                      scored_at: dt.datetime | None = None) -> pl.DataFrame:
    scored_at = scored_at or dt.datetime.now(dt.UTC)
    return pl.DataFrame([ids]).hstack(scored).with_columns(
        pl.lit(str(model_version)).alias(MODEL_VERSION), pl.lit(scored_at).alias(SCORED_AT),
    )


def monitored_from_scores(task: str, scores: np.ndarray) -> np.ndarray:
    """The monitored value from raw model scores."""
    if task == "multiclass":
        return scores.max(axis=1).astype(np.float64)
    return scores.astype(np.float64)


def monitored_from_table(table: pl.DataFrame, task: str) -> np.ndarray:
    """The monitored value from a stored predictions table (what was actually served)."""
    if task == "binary":
        return table[SCORE].cast(pl.Float64).to_numpy()
    if task == "multiclass":
        probabilities = [c for c in table.columns if c.startswith(PROBA_PREFIX)]
        return table.select(pl.max_horizontal(probabilities)).to_series().cast(pl.Float64).to_numpy()
    return table[PREDICTION].cast(pl.Float64).to_numpy()


def scores_for_metrics(table: pl.DataFrame, task: str, classes: list | None) -> np.ndarray:
    """Stored predictions back to the raw-score shape `compute_metrics` takes."""
    if task == "binary":
        return table[SCORE].to_numpy()
    if task == "multiclass":
        return table.select([f"{PROBA_PREFIX}{c}" for c in class_names(classes, 0)]).to_numpy()
    return table[PREDICTION].to_numpy()
