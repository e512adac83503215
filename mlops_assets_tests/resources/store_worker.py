"""Log one model to a (new) MLflow store and load version 1 back, in its own process.

Usage: python -m mlops_assets_tests.resources.store_worker ROOT STORE CACHE NUM_LEAVES SEED
Prints `logged=<sha256 of the logged ONNX> loaded=<sha256 of what version 1 loads>`.
"""

import datetime as dt
import hashlib
import sys
import tempfile
from pathlib import Path

import polars as pl

from mlops_assets.core.features import prepare_features
from mlops_assets.core.training import assemble_training_frame, train_from_frame
from mlops_assets.demo.data import generate_loans
from mlops_assets.resources.registry import MLflowRegistry
from mlops_assets_tests.conftest import small_spec


def main(root: str, store: str, cache: str, num_leaves: str, seed: str) -> int:
    base = small_spec(root)
    data = base.model_dump(mode="json")
    data["model"]["lightgbm"]["num_leaves"] = int(num_leaves)
    spec = type(base).from_dict(data)
    frame = pl.from_pandas(generate_loans(3_000, day=dt.date(2026, 1, 1), seed=int(seed)))
    out = train_from_frame(assemble_training_frame([prepare_features(frame, spec)], spec), spec)
    registry = MLflowRegistry(tracking_uri=f"sqlite:///{store}/mlflow.db", artifact_location=f"{store}/art",
                              cache_dir=cache)
    with tempfile.TemporaryDirectory() as tmp:
        registry.log_candidate("demo", out.bundle.save(Path(tmp) / "bundle"), params={}, metrics={},
                               tags={}, run_name="store worker")
    loaded = registry.load_bundle("demo", "1").onnx_bytes
    print(f"logged={hashlib.sha256(out.bundle.onnx_bytes).hexdigest()} "
          f"loaded={hashlib.sha256(loaded).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
