"""A model bundle: everything needed to score and monitor one model version.

Files in a bundle directory:
  model.onnx                faithful ONNX export (input 'features' double, output 'score')
  model.<fmt>               the native model (LightGBM text, torch state, ...)
  encoder.json              raw frame -> feature matrix
  bundle.json               task, classes, threshold, trainer, feature importance, lineage
  reference_profile.json    training-data profile the drift report compares against
  reference_sample.parquet  capped sample of training rows, only to render Evidently's report

`manifest(directory)` hashes every file (SHA-256); the registry records it on the model
version and `verify(directory, manifest)` refuses a bundle whose files differ from it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from mlops_assets.core.features import FeatureEncoder
from mlops_assets.core.predictions import prediction_columns

ONNX_FILE = "model.onnx"
ENCODER_FILE = "encoder.json"
META_FILE = "bundle.json"
PROFILE_FILE = "reference_profile.json"
SAMPLE_FILE = "reference_sample.parquet"


class BundleIntegrityError(RuntimeError):
    """A bundle whose files are not the ones recorded at registration."""


@dataclass
class ModelBundle:
    onnx_bytes: bytes
    encoder: FeatureEncoder
    meta: dict = field(default_factory=dict)   # task, classes, threshold, trainer, importance
    native_bytes: bytes | None = None
    native_format: str | None = None
    reference_profile: dict | None = None      # DatasetProfile.to_dict() of the training rows
    reference_sample: pl.DataFrame | None = None

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def classes(self) -> list:
        return self.meta.get("classes") or []

    @property
    def trainer(self) -> str:
        return self.meta["trainer"]

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    @property
    def feature_importance(self) -> dict[str, float]:
        return dict(self.meta.get("feature_importance") or {})

    @cached_property
    def scorer(self):
        from mlops_assets.core.scoring import OnnxScorer

        return OnnxScorer(self.onnx_bytes)

    def profile(self):
        """The reference profile as a `DatasetProfile` (None for bundles saved without one)."""
        from mlops_assets.core.drift import DatasetProfile

        return None if self.reference_profile is None else DatasetProfile.from_dict(self.reference_profile)

    def score(self, df: pl.DataFrame) -> np.ndarray:
        """Raw scores from the ONNX model: the 'score' output contract."""
        return self.scorer.predict(self.encoder.transform(df))

    def score_frame(self, df: pl.DataFrame) -> pl.DataFrame:
        """The predictions table's score columns for a frame of raw features."""
        return prediction_columns(self.task, self.score(df), self.threshold, self.classes)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ONNX_FILE).write_bytes(self.onnx_bytes)
        (directory / ENCODER_FILE).write_text(json.dumps(self.encoder.to_dict(), indent=2))
        meta = dict(self.meta, native_format=self.native_format)
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if self.native_bytes is not None:
            (directory / f"model.{self.native_format}").write_bytes(self.native_bytes)
        if self.reference_profile is not None:
            (directory / PROFILE_FILE).write_text(json.dumps(self.reference_profile, sort_keys=True))
        if self.reference_sample is not None:
            self.reference_sample.write_parquet(directory / SAMPLE_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ModelBundle:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        fmt = meta.get("native_format")
        native = directory / f"model.{fmt}" if fmt else None
        profile, sample = directory / PROFILE_FILE, directory / SAMPLE_FILE
        return cls(
            onnx_bytes=(directory / ONNX_FILE).read_bytes(),
            encoder=FeatureEncoder.from_dict(json.loads((directory / ENCODER_FILE).read_text())),
            meta=meta,
            native_bytes=native.read_bytes() if native is not None and native.exists() else None,
            native_format=fmt,
            reference_profile=json.loads(profile.read_text()) if profile.exists() else None,
            reference_sample=pl.read_parquet(sample) if sample.exists() else None,
        )


def manifest(directory: str | Path) -> dict[str, str]:
    """SHA-256 of every file in a bundle directory, by path relative to it."""
    root = Path(directory)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        out[path.relative_to(root).as_posix()] = digest.hexdigest()
    return out


def verify(directory: str | Path, expected: dict[str, str], what: str = "bundle") -> None:
    """Raise `BundleIntegrityError` naming each file that is missing, extra or changed."""
    found = manifest(directory)
    changed = sorted(f for f in expected if f in found and found[f] != expected[f])
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if changed or missing or extra:
        parts = [f"{label}: {files}" for label, files in
                 (("changed", changed), ("missing", missing), ("unexpected", extra)) if files]
        raise BundleIntegrityError(f"{what} does not match the hashes recorded at registration ({'; '.join(parts)})")
