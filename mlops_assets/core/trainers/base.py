"""What every trainer returns, and the label checks every trainer runs first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


class TrainingDataError(ValueError):
    """Training data that no model should be fitted on; the message says why."""


@dataclass
class TrainedModel:
    trainer: str
    task: str
    feature_names: list[str]
    native_bytes: bytes                     # the framework's own serialisation
    native_format: str                      # file suffix for native_bytes, e.g. "txt"
    onnx_bytes: bytes                       # input 'features' double [n, f] -> output 'score'
    params: dict
    predict: Callable[[np.ndarray], np.ndarray]   # native predictions, same contract as ONNX 'score'
    best_iteration: int | None = None
    feature_importance: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    history: dict[str, list[float]] = field(default_factory=dict)


def check_training_labels(y: np.ndarray, task: str, target: str, num_class: int | None = None) -> None:
    """Fail before training, naming the target column and the rule."""
    if len(y) == 0:
        raise TrainingDataError(f"target '{target}': no labelled training rows")
    nan = int(np.isnan(y).sum())
    if nan:
        raise TrainingDataError(f"target '{target}': {nan} rows have NaN labels")
    classes = np.unique(y)
    if task in ("binary", "multiclass") and len(classes) < 2:
        raise TrainingDataError(
            f"target '{target}': only one class ({classes[0]!r}) in the training data; "
            "a classifier needs at least two"
        )
    if task == "multiclass" and num_class is not None and classes.max() >= num_class:
        raise TrainingDataError(f"target '{target}': label index {classes.max()} >= num_class {num_class}")
    if task == "regression" and not np.isfinite(y).all():
        raise TrainingDataError(f"target '{target}': infinite labels")
