"""Trainers: arrays in, a `TrainedModel` (native model + faithful ONNX export) out."""

from mlops_assets.core.trainers.base import TrainedModel, TrainingDataError, check_training_labels
from mlops_assets.core.trainers.registry import TRAINERS, Trainer, get_trainer, native_predict

__all__ = [
    "TRAINERS",
    "TrainedModel",
    "Trainer",
    "TrainingDataError",
    "check_training_labels",
    "get_trainer",
    "native_predict",
]
