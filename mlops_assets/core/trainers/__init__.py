"""Trainers: arrays in, a `TrainedModel` (native model + faithful ONNX export) out."""

from mlops_assets.core.trainers.base import TrainedModel, TrainingDataError, check_training_labels

__all__ = ["TrainedModel", "TrainingDataError", "check_training_labels", "native_predict"]


def native_predict(trainer: str, native_bytes: bytes, X):
    """Predictions of a stored native model, for parity checks against its ONNX export."""
    if trainer == "lightgbm":
        import lightgbm as lgb
        import numpy as np

        booster = lgb.Booster(model_str=native_bytes.decode())
        return booster.predict(np.ascontiguousarray(X, dtype=np.float64))
    elif trainer == "mlp":
        from mlops_assets.core.trainers import mlp_model  # imports torch: keep it lazy

        return mlp_model.predict(mlp_model.deserialise(native_bytes), X)
    raise ValueError(f"unknown trainer '{trainer}'")
