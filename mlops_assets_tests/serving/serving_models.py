"""Models for the real-time serving tests and benchmark: small LightGBM bundles in a real
temporary sqlite MLflow store, trained by the project's own core.

`build_served_models(root)` trains two good versions (different seeds, so their scores differ)
and registers a third whose ONNX file is corrupt (a champion that cannot be loaded). The spec
is the demo spec made smaller, with `region` left without declared categories so that unseen
categories are valid input (the encoder routes them like missing values).

`shared_served_models(tmp_path_factory)` builds them once per test process: several test
modules use them and training costs seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import yaml

from mlops_assets.spec import PipelineSpec
from mlops_assets_tests.conftest import small_spec

UNDECLARED_CATEGORICAL = "region"      # no `categories` in the served spec: any string is valid


def served_spec(root: Path, *, num_boost_round: int = 40, task: str = "binary",
                early_stopping: bool = True) -> PipelineSpec:
    data = small_spec(root).model_dump(mode="json")
    data["model"]["lightgbm"]["num_boost_round"] = num_boost_round
    if not early_stopping:   # all the rounds: a model of the size asked for (benchmarks)
        data["model"]["lightgbm"]["early_stopping_rounds"] = None
    for feature in data["features"]:
        if feature["name"] == UNDECLARED_CATEGORICAL:
            feature["categories"] = None
    if task == "regression":
        data.update(task="regression", target="interest_rate")
        data["features"] = [f for f in data["features"] if f["name"] != "interest_rate"]
        data["drift"] = {**data["drift"], "key_features": ["credit_score"]}
        data["gate"] = {**data["gate"], "min_main_metric": None, "max_fairness_gap": None}
    elif task == "multiclass":
        data.update(task="multiclass", target="grade", classes=["A", "B", "C", "D"])
        data["gate"] = {**data["gate"], "min_main_metric": None, "max_fairness_gap": None}
    return PipelineSpec.from_dict(data)


def loan_rows(n: int, *, seed: int = 11, id_offset: int = 0) -> pl.DataFrame:
    """Raw rows shaped like the pipeline's data (ids, timestamps, features, labels)."""
    from mlops_assets.demo.data import generate_loans

    return pl.from_pandas(generate_loans(n, day=dt.date(2026, 2, 1), seed=seed, id_offset=id_offset))


def request_rows(spec: PipelineSpec, frame: pl.DataFrame, *, with_id: bool = True) -> list[dict]:
    """JSON-ready request rows: the spec's features (and the id), NaN as null."""
    columns = ([spec.id_column] if with_id else []) + spec.feature_names
    picked = frame.select(columns).with_columns(
        [pl.col(f.name).fill_nan(None) for f in spec.features if f.type == "numeric"])
    return picked.to_dicts()


def random_valid_rows(spec: PipelineSpec, n: int, seed: int) -> list[dict]:
    """Rows anywhere inside the spec's rules: nulls where allowed, unseen categories where
    allowed, integers and floats for numerics, values at the bounds."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        row: dict = {spec.id_column: index}
        for feature in spec.features:
            if feature.max_null_fraction > 0 and rng.random() < 0.2:
                row[feature.name] = None
            elif feature.type == "numeric":
                low = feature.min if feature.min is not None else -1e6
                high = feature.max if feature.max is not None else low + 1e6
                value = rng.choice([low, high, rng.uniform(low, high), rng.uniform(low, high)])
                row[feature.name] = round(value) if rng.random() < 0.3 else value
            elif feature.categories is not None:
                row[feature.name] = rng.choice(feature.categories)
            else:
                row[feature.name] = rng.choice(["north", "south", "east", "west", "atlantis", ""])
        rows.append(row)
    return rows


def train_bundle(spec: PipelineSpec, seed: int, directory: Path) -> Path:
    """Train one small bundle with the project's core and save it (with its reference files)."""
    from mlops_assets.core.bundle import PROFILE_FILE, SAMPLE_FILE
    from mlops_assets.core.features import prepare_features
    from mlops_assets.core.training import assemble_training_frame, train_from_frame
    from mlops_assets.demo.data import generate_loans

    raw = pl.from_pandas(generate_loans(4_000, day=dt.date(2026, 1, 1), seed=seed))
    outcome = train_from_frame(assemble_training_frame([prepare_features(raw, spec)], spec), spec)
    bundle_dir = outcome.bundle.save(directory)
    # Older cores kept the reference profile and sample on the outcome, not on the bundle.
    if not (bundle_dir / PROFILE_FILE).exists() and getattr(outcome, "reference_profile", None):
        (bundle_dir / PROFILE_FILE).write_text(json.dumps(outcome.reference_profile, sort_keys=True))
    if not (bundle_dir / SAMPLE_FILE).exists() and getattr(outcome, "reference_sample", None) is not None:
        outcome.reference_sample.write_parquet(bundle_dir / SAMPLE_FILE)
    return bundle_dir


def register_bundle(registry, spec: PipelineSpec, bundle_dir: Path, label: str) -> str:
    """Log the bundle as a new model version, the way the training stage does."""
    from mlops_assets.core.bundle import SAMPLE_FILE

    tags = {"dagster_run_id": f"serving-test-{label}", "approval": "approved", "trigger": "test"}
    nullable = {f.name for f in spec.features if f.max_null_fraction > 0}
    example = pl.read_parquet(bundle_dir / SAMPLE_FILE).head(5).to_pandas()
    return registry.log_candidate(
        spec.name, bundle_dir, params={"label": label}, metrics={}, tags=tags, run_name=label,
        feature_kinds=dict(spec.feature_types), nullable=nullable, task=spec.task,
        classes=[str(c) for c in spec.classes] if spec.classes else None, input_example=example).version


@dataclass
class ServedModels:
    spec: PipelineSpec
    spec_path: Path
    tracking_uri: str
    registry: object
    versions: list[str]                       # [good, good, corrupt ONNX]
    bundle_dirs: dict[str, Path] = field(default_factory=dict)

    def set_champion(self, version: str) -> None:
        self.registry.set_alias(self.spec.name, "champion", version)


def build_served_models(root: Path, *, seeds: tuple[int, ...] = (3, 4), corrupt: bool = True,
                        num_boost_round: int = 40, early_stopping: bool = True) -> ServedModels:
    from mlops_assets.core.bundle import ONNX_FILE
    from mlops_assets.resources.registry import MLflowRegistry

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    root.mkdir(parents=True, exist_ok=True)
    spec = served_spec(root, num_boost_round=num_boost_round, early_stopping=early_stopping)
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    # A fresh store folder: a bundle cache entry from an earlier store can never match it.
    store = root / f"mlflow-{uuid.uuid4().hex[:10]}"
    store.mkdir()
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    registry = MLflowRegistry(tracking_uri=tracking_uri, artifact_location=str(store / "artifacts"),
                              cache_dir=str(store / "bundle-cache"))
    models = ServedModels(spec, spec_path, tracking_uri, registry, [])
    for seed in seeds:
        # The folder must be named `bundle`: that is the artifact name the registry reads back.
        bundle_dir = train_bundle(spec, seed, root / f"seed{seed}" / "bundle")
        version = register_bundle(registry, spec, bundle_dir, f"seed{seed}")
        models.versions.append(version)
        models.bundle_dirs[version] = bundle_dir
    if corrupt:
        bad = root / "corrupt" / "bundle"
        shutil.copytree(models.bundle_dirs[models.versions[0]], bad)
        (bad / ONNX_FILE).write_bytes(b"this is not an onnx model")
        models.versions.append(register_bundle(registry, spec, bad, "corrupt"))
    models.set_champion(models.versions[0])
    return models


_SHARED: dict[str, ServedModels] = {}


def shared_served_models(tmp_path_factory) -> ServedModels:
    if "models" not in _SHARED:
        _SHARED["models"] = build_served_models(tmp_path_factory.mktemp("served-models"))
    return _SHARED["models"]


# -- processes -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> int:
    """SIGTERM the process group, SIGKILL it after `grace` seconds; returns the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.wait(30)
