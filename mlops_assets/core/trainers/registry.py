"""One registry of trainers: the only place that maps `model.trainer` to code.

A trainer turns encoded arrays into a `TrainedModel` (native model + faithful ONNX export)
and can re-run its stored native model for the parity check. Adding a trainer means one
class here and its name in `ModelSpec.trainer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mlops_assets.core.trainers.base import TrainedModel, TrainingDataError

Progress = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainingArrays:
    """Encoded splits: X/y for train and valid, and what a trainer may need about columns."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    feature_names: list[str]
    categorical_cardinality: dict[int, int]    # column index -> number of categories
    num_class: int | None
    task: str
    target: str
    seed: int


class Trainer(Protocol):
    name: str
    # Largest |onnx - native| accepted by default: exact double paths for trees (1e-5 leaves
    # room for nothing but rounding); the MLP's float32-trained weights cast to double, 1e-4.
    parity_tolerance: float

    def settings(self, model_spec) -> Any:
        """This trainer's settings block of `ModelSpec` (a pydantic model)."""

    def fit(self, data: TrainingArrays, settings: Any, *, checkpoint_dir: str | None = None,
            progress: Progress | None = None) -> TrainedModel: ...

    def native_predict(self, native_bytes: bytes, X: np.ndarray) -> np.ndarray: ...


class LightGBMTrainer:
    name = "lightgbm"
    parity_tolerance = 1e-5

    def settings(self, model_spec):
        return model_spec.lightgbm

    def fit(self, data, settings, *, checkpoint_dir=None, progress=None) -> TrainedModel:
        from mlops_assets.core.trainers.lightgbm_trainer import train_lightgbm

        # LightGBM trains in well under the time a checkpoint would save: none is kept.
        return train_lightgbm(
            data.X_train, data.y_train, data.X_valid, data.y_valid, task=data.task,
            feature_names=data.feature_names, config=settings, seed=data.seed, target_name=data.target,
            num_class=data.num_class, on_iteration=progress,
        )

    def native_predict(self, native_bytes: bytes, X: np.ndarray) -> np.ndarray:
        import lightgbm as lgb

        booster = lgb.Booster(model_str=native_bytes.decode())
        return booster.predict(np.ascontiguousarray(X, dtype=np.float64))


class MLPTrainer:
    name = "mlp"
    parity_tolerance = 1e-4

    def settings(self, model_spec):
        return model_spec.mlp

    def fit(self, data, settings, *, checkpoint_dir=None, progress=None) -> TrainedModel:
        from mlops_assets.core.trainers.mlp_trainer import MLPConfig, train_mlp

        fields = settings.model_dump()
        fields["hidden_sizes"] = tuple(fields["hidden_sizes"])
        return train_mlp(
            data.X_train, data.y_train, data.X_valid, data.y_valid, task=data.task,
            feature_names=data.feature_names, categorical=data.categorical_cardinality,
            config=MLPConfig(**fields), seed=data.seed, target_name=data.target, num_class=data.num_class,
            checkpoint_dir=checkpoint_dir, on_epoch=progress,
        )

    def native_predict(self, native_bytes: bytes, X: np.ndarray) -> np.ndarray:
        from mlops_assets.core.trainers import mlp_model  # imports torch: keep it lazy

        return mlp_model.predict(mlp_model.deserialise(native_bytes), X)


TRAINERS: dict[str, Trainer] = {t.name: t for t in (LightGBMTrainer(), MLPTrainer())}


def get_trainer(name: str) -> Trainer:
    try:
        return TRAINERS[name]
    except KeyError:
        raise TrainingDataError(f"model.trainer: unknown trainer '{name}' (known: {sorted(TRAINERS)})") from None


def parity_tolerance(trainer: str, configured: float | None) -> float:
    """The gate's ONNX parity limit: the spec's, else the trainer's default."""
    return configured if configured is not None else get_trainer(trainer).parity_tolerance


def native_predict(trainer: str, native_bytes: bytes, X: np.ndarray) -> np.ndarray:
    """Predictions of a stored native model, for parity checks against its ONNX export."""
    return get_trainer(trainer).native_predict(native_bytes, X)
