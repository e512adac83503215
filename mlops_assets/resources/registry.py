"""MLflow behind our own resource: tracking runs, model versions, aliases and tags.

Only aliases (`champion`, `challenger`) are used, never the deprecated stages. mlflow is
imported inside methods: it costs about a second and definitions must load fast.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

CHAMPION = "champion"
CHALLENGER = "challenger"
_MLFLOW_LOCK = threading.Lock()  # mlflow's fluent API keeps the tracking URI in a global


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    run_id: str | None
    tags: dict[str, str]
    aliases: list[str]
    source: str | None = None


class MLflowRegistry(dg.ConfigurableResource):
    """MLflow tracking + model registry. Embedded default: a sqlite file and local artifacts."""

    tracking_uri: str = Field(description="e.g. sqlite:///path/mlflow.db or http://mlflow:5000")
    registry_uri: str | None = Field(None, description="Defaults to tracking_uri.")
    artifact_location: str | None = Field(
        None, description="Artifact root for experiments this resource creates (path or s3://)."
    )
    ui_url: str | None = Field(None, description="Base URL of the MLflow UI, for links in metadata.")

    # -- plumbing ----------------------------------------------------------------------------
    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri or self.tracking_uri)

    @contextlib.contextmanager
    def activated(self):
        """Point mlflow's fluent API at this store for the duration of a block."""
        import mlflow

        with _MLFLOW_LOCK:
            old_t, old_r = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)
            try:
                yield mlflow
            finally:
                mlflow.set_tracking_uri(old_t)
                mlflow.set_registry_uri(old_r)

    def ensure_experiment(self, name: str) -> str:
        client = self.client()
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.artifact_location:
            location = self.artifact_location.rstrip("/") + f"/{name}"
            if "://" not in location:
                Path(location).mkdir(parents=True, exist_ok=True)
                location = Path(location).resolve().as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # created concurrently by another run
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def run_url(self, experiment_id: str, run_id: str) -> str:
        base = self.ui_url or "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    # -- versions and aliases ----------------------------------------------------------------
    def version_by_alias(self, model_name: str, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client().get_model_version_by_alias(model_name, alias)
        except MlflowException:
            return None
        return _info(mv)

    def get_version(self, model_name: str, version: str) -> VersionInfo:
        return _info(self.client().get_model_version(model_name, str(version)))

    def list_versions(self, model_name: str) -> list[VersionInfo]:
        from mlflow.exceptions import MlflowException

        client = self.client()
        try:
            found = client.search_model_versions(f"name='{model_name}'")
            # search results leave `aliases` empty; the registered model has the map.
            alias_map = client.get_registered_model(model_name).aliases or {}
        except MlflowException:
            return []
        infos = []
        for v in found:
            info = _info(v)
            aliases = sorted(a for a, ver in alias_map.items() if str(ver) == info.version)
            infos.append(VersionInfo(info.name, info.version, info.run_id, info.tags, aliases, info.source))
        return sorted(infos, key=lambda v: int(v.version))

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        self.client().set_registered_model_alias(model_name, alias, str(version))

    def set_tags(self, model_name: str, version: str, tags: dict[str, Any]) -> None:
        client = self.client()
        for key, value in tags.items():
            client.set_model_version_tag(model_name, str(version), key, str(value))

    def download_bundle(self, model_name: str, version: str, cache_dir: str | None = None) -> Path:
        """Local directory holding the version's bundle files (cached per version)."""
        root = Path(cache_dir or os.path.join(tempfile.gettempdir(), "mlops-assets-bundles"))
        target = root / _safe(self.tracking_uri) / model_name / str(version)
        marker = target / ".complete"
        if marker.exists():
            return target / "artifacts" / "bundle"
        with self.activated() as mlflow:
            tmp = Path(tempfile.mkdtemp(prefix="bundle-", dir=_mkdir(root)))
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}", dst_path=str(tmp))
        target.parent.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            if target.exists():
                import shutil

                shutil.rmtree(target)
            tmp.rename(target)
            marker.touch()
        return target / "artifacts" / "bundle"


def _info(mv) -> VersionInfo:
    return VersionInfo(
        name=mv.name, version=str(mv.version), run_id=mv.run_id, tags=dict(mv.tags or {}),
        aliases=list(getattr(mv, "aliases", []) or []), source=mv.source,
    )


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)[-80:]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_and_register(
    registry: MLflowRegistry,
    *,
    model_name: str,
    bundle_dir: Path,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    dataset: Any | None = None,
    extra_artifacts: list[Path] | None = None,
    input_example: Any | None = None,
    trials: list[dict] | None = None,
) -> tuple[str, str, str]:
    """One MLflow run: params, metrics, dataset input, pyfunc model -> new version.

    Returns (experiment_id, run_id, version). The version starts as a candidate; aliases
    and approval tags are set by the gate, never here.
    """
    from mlops_assets.resources.pyfunc_model import OnnxBundleModel

    experiment_id = registry.ensure_experiment(model_name)
    with registry.activated() as mlflow, mlflow.start_run(
        experiment_id=experiment_id, run_name=tags.get("dagster_run_id", "")[:8], tags=tags
    ) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if not math.isnan(float(v))})
        if dataset is not None:
            mlflow.log_input(dataset, context="training")
        for trial in trials or []:
            # One nested run per search trial, scored on the validation split.
            # experiment_id is explicit: without it a nested run lands in the Default experiment.
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"trial-{trial['index']}",
                                  nested=True):
                mlflow.log_params({k: str(v) for k, v in trial["params"].items()})
                mlflow.log_metrics({f"valid_{trial['metric']}": trial["score"], "seconds": trial["seconds"]})
                mlflow.set_tag("best", str(trial["best"]).lower())
        for path in extra_artifacts or []:
            mlflow.log_artifact(str(path))
        signature = None
        if input_example is not None:
            from mlflow.models import infer_signature

            signature = infer_signature(input_example)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=OnnxBundleModel(),
            artifacts={"bundle": str(bundle_dir)},
            registered_model_name=model_name,
            pip_requirements=["mlops-assets", "onnxruntime", "polars", "pandas"],
            signature=signature,
        )
        version = str(info.registered_model_version)
    registry.set_tags(model_name, version, tags)
    return experiment_id, run.info.run_id, version
