"""A model bundle: everything needed to score and monitor one model version.

Files in a bundle directory:
  model.onnx              faithful ONNX export (input 'features' double, output 'score')
  model.<fmt>             the native model (LightGBM text, torch state, ...)
  encoder.json            raw frame -> feature matrix
  bundle.json             task, classes, threshold, lineage
  reference_profile.json  training-data profile the drift report compares against
  reference_sample.parquet  capped sample used only to render the Evidently report
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from mlops_assets.core.features import FeatureEncoder
from mlops_assets.core.metrics import predicted_labels

ONNX_FILE = "model.onnx"
ENCODER_FILE = "encoder.json"
META_FILE = "bundle.json"
PROFILE_FILE = "reference_profile.json"
SAMPLE_FILE = "reference_sample.parquet"


@dataclass
class ModelBundle:
    onnx_bytes: bytes
    encoder: FeatureEncoder
    meta: dict = field(default_factory=dict)   # task, classes, threshold, trainer, lineage
    native_bytes: bytes | None = None
    native_format: str | None = None

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def classes(self) -> list:
        return self.meta.get("classes") or []

    @cached_property
    def scorer(self):
        from mlops_assets.core.scoring import OnnxScorer

        return OnnxScorer(self.onnx_bytes)

    def score(self, df: pl.DataFrame) -> np.ndarray:
        """Raw scores from the ONNX model: the 'score' output contract."""
        return self.scorer.predict(self.encoder.transform(df))

    def score_frame(self, df: pl.DataFrame) -> pl.DataFrame:
        """Readable prediction columns for a frame of raw features."""
        return prediction_columns(self.task, self.score(df), self.meta.get("threshold", 0.5), self.classes)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ONNX_FILE).write_bytes(self.onnx_bytes)
        (directory / ENCODER_FILE).write_text(json.dumps(self.encoder.to_dict(), indent=2))
        meta = dict(self.meta, native_format=self.native_format)
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if self.native_bytes is not None:
            (directory / f"model.{self.native_format}").write_bytes(self.native_bytes)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ModelBundle:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        fmt = meta.get("native_format")
        native = directory / f"model.{fmt}" if fmt else None
        return cls(
            onnx_bytes=(directory / ONNX_FILE).read_bytes(),
            encoder=FeatureEncoder.from_dict(json.loads((directory / ENCODER_FILE).read_text())),
            meta=meta,
            native_bytes=native.read_bytes() if native is not None and native.exists() else None,
            native_format=fmt,
        )


def prediction_columns(task: str, score: np.ndarray, threshold: float, classes: list) -> pl.DataFrame:
    if task == "binary":
        return pl.DataFrame({"score": score, "prediction": predicted_labels(task, score, threshold)})
    if task == "multiclass":
        labels = [str(c) for c in classes] or [str(i) for i in range(score.shape[1])]
        cols = {f"proba_{c}": score[:, i] for i, c in enumerate(labels)}
        idx = predicted_labels(task, score)
        return pl.DataFrame({"prediction": np.asarray(labels, dtype=object)[idx].astype(str), **cols})
    return pl.DataFrame({"prediction": score})
