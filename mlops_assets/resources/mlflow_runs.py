"""Logging one training run and its model version to MLflow (used by `MLflowRegistry` only)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mlops_assets.core.bundle import manifest
from mlops_assets.resources.bundle_cache import manifest_digest

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


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
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags,
                          description=description or None) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if not math.isnan(float(v))})
        for name, values in (history or {}).items():
            for step, value in enumerate(values, start=1):
                if not math.isnan(float(value)):
                    mlflow.log_metric(f"curve_{name}", float(value), step=step)
        if dataset_sample is not None:
            import mlflow.data

            # The schema comes from a sample; the digest is our hash of the full training frame.
            dataset = mlflow.data.from_pandas(dataset_sample, name=f"{model_name}-training", targets=target,
                                              digest=dataset_digest)
            mlflow.log_input(dataset, context="training")
        for trial in trials or []:
            # One nested run per search trial, scored on the validation split. experiment_id is
            # explicit: without it a nested run lands in the Default experiment.
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"{run_name} trial {trial['index']}",
                                  nested=True):
                mlflow.log_params({k: str(v) for k, v in trial["params"].items()})
                mlflow.log_metrics({f"valid_{trial['metric']}": trial["score"], "seconds": trial["seconds"]})
                mlflow.set_tag("best", str(trial["best"]).lower())
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts={"bundle": str(bundle_dir)},
            registered_model_name=model_name,
            pip_requirements=["mlops-assets", "onnxruntime", "polars", "pandas"],
            signature=model_signature(feature_kinds, set(nullable), task, classes) if feature_kinds else None,
            input_example=input_example,
        )
        version = str(info.registered_model_version)
        # Readable in the runs table: the pipeline, the version it produced and why it ran.
        mlflow.set_tags({**file_tags, "mlflow.runName": f"{model_name} v{version} ({tags.get('trigger', 'manual')})"})
    client = mlflow.MlflowClient()
    for key, value in {**tags, **file_tags}.items():
        client.set_model_version_tag(model_name, version, key, str(value))
    if description:
        client.update_model_version(model_name, version, description=description)
    return CandidateRef(model_name, version, run.info.run_id, experiment_id)
