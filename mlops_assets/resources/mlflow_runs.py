"""Logging one training run and its model version to MLflow (used by `MLflowRegistry` only).

Quiet by construction: no artifact progress bars while logging, and the version is registered
through the client (with its tags and description in the same call) instead of through
`log_model(registered_model_name=...)`, which prints to stderr. MLflow's own warnings are met
at their source: the pyfunc is logged from code (no pickling), and integer columns of the
dataset sample and input example are given as doubles (an integer column cannot carry a
missing value; the model coerces either way).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_assets.core.bundle import manifest
from mlops_assets.resources.bundle_cache import manifest_digest

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
BATCH = 1_000        # MLflow's limit of metrics per log_batch call
ALREADY_EXISTS = {"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"}


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """MLflow draws a tqdm bar for every artifact download (also when it validates the input
    example); off for the block unless the user set the variable."""
    if PROGRESS_BAR_ENV in os.environ:
        yield
        return
    os.environ[PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        os.environ.pop(PROGRESS_BAR_ENV, None)


def ints_as_doubles(frame):
    """A pandas frame whose integer columns are float64 (see the module docstring)."""
    if frame is None:
        return None
    ints = [c for c in frame.columns if frame[c].dtype.kind in "iu"]
    return frame.astype({c: "float64" for c in ints}) if ints else frame


def log_curves(client, run_id: str, history: dict[str, list[float]] | None, prefix: str = "curve_") -> int:
    """Per-iteration curves as `<prefix><name>` with step = iteration (1-based), in batches."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"{prefix}{name}", float(v), now, step)
               for name, values in (history or {}).items()
               for step, v in enumerate(values, start=1) if not math.isnan(float(v))]
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + BATCH], synchronous=True)
    return len(metrics)


def readable_run_name(model_name: str, version: str, trigger: str) -> str:
    """Readable in the runs table: the pipeline, the version it produced and why it ran."""
    return f"{model_name} v{version} ({trigger})"


def model_signature(feature_kinds: dict[str, str], nullable: set[str], task: str, classes: list | None):
    """Inputs named and required as the spec declares them. Their type is `Any` because the model
    applies the pipeline's own coercion: integer columns are accepted wherever the pipeline
    accepts them (MLflow's `double` refuses int64 input)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    from mlops_assets.core.predictions import PREDICTION, PROBA_PREFIX, SCORE, class_names

    inputs = Schema([ColSpec(AnyType(), name, required=name not in nullable) for name in feature_kinds])
    if task == "binary":
        outputs = [ColSpec("double", SCORE), ColSpec("long", PREDICTION)]
    elif task == "multiclass":
        outputs = [ColSpec("string", PREDICTION)] + [
            ColSpec("double", f"{PROBA_PREFIX}{c}") for c in class_names(classes, 0)]
    else:
        outputs = [ColSpec("double", PREDICTION)]
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def log_candidate_run(
    mlflow,
    *,
    model_name: str,
    experiment_id: str,
    bundle_dir: Path,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    run_name: str,
    description: str = "",
    history: dict[str, list[float]] | None = None,
    dataset_sample=None,
    dataset_digest: str | None = None,
    target: str | None = None,
    feature_kinds: dict[str, str] | None = None,
    nullable: set[str] | frozenset = frozenset(),
    task: str = "binary",
    classes: list | None = None,
    input_example=None,
    trials: list[dict] | None = None,
):
    """Returns a `CandidateRef`. The version starts as a candidate: approval tags and aliases are
    the gate's and the promotion's business, never this function's."""
    from mlops_assets.resources.registry import DIGEST_TAG, MANIFEST_TAG, CandidateRef

    files = manifest(bundle_dir)
    file_tags = {MANIFEST_TAG: json.dumps(files, sort_keys=True), DIGEST_TAG: manifest_digest(files)}
    with no_progress_bars(), mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags,
                                              description=description or None) as run:
        client = mlflow.MlflowClient()
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if not math.isnan(float(v))})
        log_curves(client, run.info.run_id, history)
        if dataset_sample is not None:
            import mlflow.data

            # The schema comes from a sample; the digest is our hash of the full training frame.
            dataset = mlflow.data.from_pandas(ints_as_doubles(dataset_sample), name=f"{model_name}-training",
                                              targets=target, digest=dataset_digest)
            mlflow.log_input(dataset, context="training")
        trial_runs = []
        for trial in trials or []:
            # One nested run per search trial, scored on the validation split. experiment_id is
            # explicit: without it a nested run lands in the Default experiment.
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"{run_name} trial {trial['index']}",
                                  nested=True) as nested:
                trial_runs.append((trial["index"], nested.info.run_id))
                mlflow.log_params({k: str(v) for k, v in trial["params"].items()})
                mlflow.log_metrics({f"valid_{trial['metric']}": trial["score"], "seconds": trial["seconds"]})
                mlflow.set_tag("best", str(trial["best"]).lower())
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts={"bundle": str(bundle_dir)},
            pip_requirements=["mlops-assets", "onnxruntime", "polars", "pandas"],
            signature=model_signature(feature_kinds, set(nullable), task, classes) if feature_kinds else None,
            input_example=ints_as_doubles(input_example),
        )
        version = register_version(client, model_name, info, run.info.run_id, {**tags, **file_tags}, description)
        name = readable_run_name(model_name, version, tags.get("trigger", "manual"))
        mlflow.set_tags({**file_tags, "mlflow.runName": name})
        for index, trial_run in trial_runs:
            client.set_tag(trial_run, "mlflow.runName", f"{name} trial {index}")
    return CandidateRef(model_name, version, run.info.run_id, experiment_id)


def register_version(client, model_name: str, info, run_id: str, tags: dict[str, Any], description: str) -> str:
    """A new version of `model_name` for the logged model, created with its tags and description
    in one call (so no version is ever visible without its bundle hashes)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code not in ALREADY_EXISTS:
            raise
    mv = client.create_model_version(model_name, source=info.model_uri, run_id=run_id,
                                     tags={k: str(v) for k, v in tags.items()},
                                     description=description or None, model_id=info.model_id)
    return str(mv.version)
