"""MLflow behind our own resource: the only code in the package that speaks MLflow.

Stages call intents (log a candidate, record an evaluation, promote, load a bundle, links);
how MLflow stores them is this module's business. Only aliases (`champion`, `challenger`)
are used, never the deprecated stages. "No champion" is established positively (the
registered model or its alias does not exist), never inferred from an error: any other
failure is retried, then raised, so a flaky tracking server fails a run instead of turning
an evaluation into a bootstrap. mlflow is imported inside methods (it costs about a second).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from mlops_assets.core.bundle import ModelBundle
from mlops_assets.redaction import redact_text, redact_uri, uri_secrets
from mlops_assets.resources.bundle_cache import BundleCache, manifest_digest

CHAMPION = "champion"
CHALLENGER = "challenger"
MANIFEST_TAG = "bundle_manifest"
DIGEST_TAG = "bundle_sha256"
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST"}
_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_QUIET_ENV = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
_MLFLOW_LOCK = threading.Lock()  # mlflow's fluent API keeps the tracking URI in a global


class RegistryError(RuntimeError):
    """The model registry could not answer; the message names the operation and the cause."""


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    run_id: str | None
    tags: dict[str, str]
    aliases: list[str]
    source: str | None = None


@dataclass(frozen=True)
class PromotionResult:
    version: str
    previous: str | None     # the champion before (None for the first one)
    changed: bool
    intent_id: str | None = None
    recovered: str | None = None   # what a half-done earlier promotion needed: finished | undone


@dataclass(frozen=True)
class CandidateRef:
    """What training hands to evaluation along the asset edge: one logged model version."""

    model_name: str
    version: str
    run_id: str
    experiment_id: str


class MLflowRegistry(dg.ConfigurableResource):
    """MLflow tracking + model registry. Embedded default: a sqlite file and local artifacts."""

    tracking_uri: str = Field(description="e.g. sqlite:///path/mlflow.db or http://mlflow:5000")
    registry_uri: str | None = Field(None, description="Defaults to tracking_uri.")
    artifact_location: str | None = Field(
        None, description="Artifact root for experiments this resource creates (path or s3://)."
    )
    ui_url: str | None = Field(None, description="Base URL of the MLflow UI, for links in metadata.")
    cache_dir: str | None = Field(
        None, description="Where verified bundles are cached. Unset: a private folder in the temp dir."
    )
    attempts: int = Field(3, ge=1, description="Tries per registry read before the run fails.")
    retry_delay_s: float = Field(1.0, ge=0)

    # -- plumbing ----------------------------------------------------------------------------
    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri or self.tracking_uri)

    @contextlib.contextmanager
    def activated(self):
        """Point mlflow's fluent API at this store for the duration of a block."""
        import mlflow

        with _MLFLOW_LOCK:
            # set_tracking_uri also writes MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI into the
            # environment; restore those exactly, or every later subprocess inherits our store.
            saved_env = {k: os.environ.get(k) for k in (*_MLFLOW_ENV, *_QUIET_ENV)}
            # MLflow prints the run's URL (credentials included) to stdout, and progress bars.
            for key, value in _QUIET_ENV.items():
                os.environ.setdefault(key, value)
            old_t, old_r = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)
            try:
                yield mlflow
            finally:
                mlflow.set_tracking_uri(old_t)
                mlflow.set_registry_uri(old_r)
                for key, value in saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    def _call(self, what: str, fn: Callable[[], Any], *, not_found: Any = ...) -> Any:
        """Run a registry call with retries. `not_found` (when given) is returned for
        RESOURCE_DOES_NOT_EXIST; every other error is retried, then raised as RegistryError."""
        from mlflow.exceptions import MlflowException

        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                return fn()
            except MlflowException as exc:
                if exc.error_code in _NOT_FOUND and not_found is not ...:
                    return not_found
                last = exc
            except Exception as exc:  # noqa: BLE001 (connection errors surface as many types)
                last = exc
            if attempt + 1 < self.attempts:
                time.sleep(self.retry_delay_s * (2**attempt))
        # `from None`: the original exception's text (and traceback) can carry the URI's credentials.
        cause = redact_text(str(last), uri_secrets(self.tracking_uri) + uri_secrets(self.registry_uri))
        raise RegistryError(
            f"MLflow registry at {redact_uri(self.tracking_uri)}: {what} failed after {self.attempts} "
            f"attempts: {type(last).__name__}: {cause[:300]}"
        ) from None

    def _cache(self) -> BundleCache:
        root = self.cache_dir or os.path.join(tempfile.gettempdir(), f"mlops-assets-{os.getuid()}", "bundles")
        return BundleCache(root)

    # -- links -------------------------------------------------------------------------------
    def _ui(self) -> str:
        if self.ui_url:
            return redact_uri(self.ui_url).rstrip("/")
        if self.tracking_uri.startswith(("http://", "https://")):
            return redact_uri(self.tracking_uri).rstrip("/")
        return "http://127.0.0.1:5000"

    # `?workflowType=machine_learning`: MLflow 3.17 opens the Model training view only when the
    # link asks for it (its experiment tag does not choose the view; a browser default is GenAI).
    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self._ui()}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"

    def version_url(self, model_name: str, version: str) -> str:
        return f"{self._ui()}/#/models/{model_name}/versions/{version}?workflowType=machine_learning"

    def experiment_of(self, run_id: str) -> str:
        return self._call(f"get run {run_id}", lambda: self.client().get_run(run_id).info.experiment_id)

    # -- reading versions and aliases --------------------------------------------------------
    def version_by_alias(self, model_name: str, alias: str) -> VersionInfo | None:
        """The version an alias points at; None only when the model or the alias does not exist."""
        model = self._call(f"get model '{model_name}'", lambda: self.client().get_registered_model(model_name),
                           not_found=None)
        if model is None or alias not in (model.aliases or {}):
            return None
        return self.get_version(model_name, str(model.aliases[alias]))

    def champion(self, model_name: str) -> VersionInfo | None:
        return self.version_by_alias(model_name, CHAMPION)

    def get_version(self, model_name: str, version: str) -> VersionInfo:
        mv = self._call(f"get version {model_name}/{version}",
                        lambda: self.client().get_model_version(model_name, str(version)))
        return _info(mv)

    def list_versions(self, model_name: str) -> list[VersionInfo]:
        client = self.client()
        model = self._call(f"get model '{model_name}'", lambda: client.get_registered_model(model_name),
                           not_found=None)
        if model is None:
            return []
        found = self._call(f"search versions of '{model_name}'",
                           lambda: client.search_model_versions(f"name='{model_name}'"))
        alias_map = model.aliases or {}   # search results leave `aliases` empty
        infos = []
        for v in found:
            info = _info(v)
            aliases = sorted(a for a, ver in alias_map.items() if str(ver) == info.version)
            infos.append(VersionInfo(info.name, info.version, info.run_id, info.tags, aliases, info.source))
        return sorted(infos, key=lambda v: int(v.version))

    # -- writing -----------------------------------------------------------------------------
    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        self._call(f"set alias {alias}", lambda: self.client().set_registered_model_alias(model_name, alias,
                                                                                           str(version)))

    def delete_alias(self, model_name: str, alias: str) -> None:
        self._call(f"delete alias {alias}",
                   lambda: self.client().delete_registered_model_alias(model_name, alias), not_found=None)

    def set_tags(self, model_name: str, version: str, tags: dict[str, Any]) -> None:
        client = self.client()
        for key, value in tags.items():
            self._call(f"tag {model_name}/{version}",
                       lambda k=key, v=value: client.set_model_version_tag(model_name, str(version), k, str(v)))

    def set_run_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        client = self.client()
        for key, value in tags.items():
            self._call(f"tag run {run_id}", lambda k=key, v=value: client.set_tag(run_id, k, str(v)))

    def log_candidate(self, model_name: str, bundle_dir: Path, **run) -> CandidateRef:
        """One MLflow run (params, metrics, dataset, trials, the pyfunc model) -> a new version
        tagged with its bundle's file hashes. See `mlflow_runs.log_candidate_run` for `run`."""
        from mlops_assets.resources.mlflow_runs import log_candidate_run

        experiment_id = self.ensure_experiment(model_name)
        with self.activated() as mlflow:
            ref = log_candidate_run(mlflow, model_name=model_name, experiment_id=experiment_id,
                                    bundle_dir=bundle_dir, **run)
        return ref

    def record_evaluation(self, ref: CandidateRef, *, metrics: dict[str, float] | None = None,
                          report: dict | None = None, artifacts: list[tuple[str, Path]] = (),
                          tags: dict[str, str] | None = None,
                          report_path: str = "evaluation/report.json") -> None:
        """An evaluation of one version, on its training run: the gate's verdict on the holdout
        (metrics, report, plots, and tags on run and version alike, so a rejection reads the
        same in both places), or a drift report on new data (`report_path` and artifacts under
        drift/<partition>/, no tags). The MLflow UI previews the PNG and HTML artifacts."""
        import math

        from mlops_assets.resources.mlflow_runs import no_progress_bars

        client = self.client()
        with no_progress_bars():
            for name, value in (metrics or {}).items():
                if not math.isnan(value):
                    self._call("log metric", lambda n=name, v=value: client.log_metric(ref.run_id, n, v))
            if report is not None:
                self._call("log report", lambda: client.log_dict(ref.run_id, report, report_path))
            for folder, path in artifacts:
                self._call("log artifact", lambda f=folder, p=path: client.log_artifact(ref.run_id, str(p), f))
        if tags:
            # A sweep may have abandoned the version before a recovery run judged it: the verdict
            # replaces the abandonment (a pass awaits its promotion as `pending`; an undone
            # promotion would follow a stale `abandoned`), and its reason no longer holds.
            was = self.get_version(ref.model_name, ref.version).tags if "gate_passed" in tags else {}
            if was.get("approval") == "abandoned":
                tags = {"approval": "pending", **tags}
            self.set_tags(ref.model_name, ref.version, tags)
            self.set_run_tags(ref.run_id, tags)
            if "abandoned_reason" in was:
                client = self.client()
                self._call(f"untag {ref.model_name}/{ref.version}", lambda: client.delete_model_version_tag(
                    ref.model_name, ref.version, "abandoned_reason"), not_found=None)
                self._call(f"untag run {ref.run_id}", lambda: client.delete_tag(ref.run_id, "abandoned_reason"),
                           not_found=None)

    # -- registered-model tags (the promotion intent lives here) -----------------------------
    def model_tags(self, model_name: str) -> dict[str, str]:
        model = self._call(f"get model '{model_name}'", lambda: self.client().get_registered_model(model_name),
                           not_found=None)
        return dict(model.tags or {}) if model is not None else {}

    def set_model_tag(self, model_name: str, key: str, value: str) -> None:
        self._call(f"tag model '{model_name}'",
                   lambda: self.client().set_registered_model_tag(model_name, key, value))

    def delete_model_tag(self, model_name: str, key: str) -> None:
        self._call(f"untag model '{model_name}'",
                   lambda: self.client().delete_registered_model_tag(model_name, key), not_found=None)

    # -- promotion and rollback: see core/promotion.py ---------------------------------------
    def promote(self, model_name: str, version: str, *, run_id: str, approval: str) -> PromotionResult:
        """Move `champion` to `version` through a recorded intent; finishes any half-done one first."""
        from mlops_assets.resources.promotions import promote

        return promote(self, model_name, str(version), run_id=run_id, approval=approval)

    def rollback(self, model_name: str, to_version: str, *, from_version: str | None, run_id: str,
                 reason: str) -> PromotionResult:
        from mlops_assets.resources.promotions import rollback

        return rollback(self, model_name, str(to_version), from_version=from_version, run_id=run_id, reason=reason)

    def recover_promotion(self, model_name: str) -> str | None:
        """Finish or undo a promotion a killed run left half done; returns what it did."""
        from mlops_assets.resources.promotions import recover

        return recover(self, model_name)

    def sweep(self, model_name: str, is_alive: Callable[[str], bool]) -> dict[str, list[str]]:
        """Repair what killed runs left behind: finish or undo a half-done promotion, mark versions
        whose run died before the gate judged them `abandoned`, and fail their open MLflow runs."""
        from mlops_assets.resources.promotions import sweep

        return sweep(self, model_name, is_alive)

    def fail_orphaned_runs(self, model_name: str, is_alive: Callable[[str], bool]) -> list[str]:
        """MLflow runs left RUNNING by a Dagster run that died (SIGKILL mid-logging): mark them
        FAILED, with why. `is_alive(dagster_run_id)` says whether that Dagster run still runs."""
        client = self.client()
        experiment = self._call(f"get experiment '{model_name}'", lambda: client.get_experiment_by_name(model_name))
        if experiment is None:
            return []
        running = self._call("search running runs", lambda: client.search_runs(
            [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=200))
        by_id = {r.info.run_id: r for r in running}
        failed = []
        for run in running:
            owner = run.data.tags.get("dagster_run_id")
            parent = run.data.tags.get("mlflow.parentRunId")
            if owner is None and parent in by_id:    # a search trial: judged by its parent
                owner = by_id[parent].data.tags.get("dagster_run_id")
            if owner is None or is_alive(owner):
                continue
            self._call("tag orphaned run", lambda r=run, o=owner: client.set_tag(
                r.info.run_id, "mlops.failure", f"Dagster run {o} ended while this run was still open"))
            self._call("fail orphaned run", lambda r=run: client.set_terminated(r.info.run_id, "FAILED"))
            failed.append(run.info.run_id)
        return failed

    def ensure_experiment(self, name: str) -> str:
        client = self.client()
        exp = self._call(f"get experiment '{name}'", lambda: client.get_experiment_by_name(name))
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.artifact_location:
            location = self.artifact_location.rstrip("/") + f"/{name}"
            if "://" not in location:
                Path(location).mkdir(parents=True, exist_ok=True)
                location = Path(location).resolve().as_uri()
        try:
            # Declares the experiment a model-training one; MLflow 3.17's UI still chooses its view
            # from the link (see run_url), so both are set.
            return client.create_experiment(name, artifact_location=location,
                                            tags={"mlflow.experimentKind": "custom_model_development"})
        except Exception:  # created concurrently by another run
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # -- bundles -----------------------------------------------------------------------------
    def bundle_dir(self, model_name: str, version: str) -> Path:
        """A local, verified copy of the version's bundle (cached, checked on every read)."""
        from mlops_assets.core.bundle import BundleIntegrityError

        info = self.get_version(model_name, version)
        raw = info.tags.get(MANIFEST_TAG)
        if not raw or not info.run_id:
            raise BundleIntegrityError(
                f"{model_name} v{version} has no recorded bundle hashes: its registration did not finish, "
                "so its files cannot be trusted"
            )
        manifest = json.loads(raw)
        if manifest_digest(manifest) != info.tags.get(DIGEST_TAG):
            raise BundleIntegrityError(f"{model_name} v{version}: the recorded bundle manifest was altered")

        def fetch(tmp: Path) -> None:
            for leftover in tmp.iterdir():          # a failed attempt's partial files
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            with self.activated() as mlflow:
                mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}",
                                                    dst_path=str(tmp))

        def download(tmp: Path) -> Path:
            # Retried with backoff like every registry read, and raised without the URI's secrets.
            self._call(f"download {model_name} v{version} bundle", lambda: fetch(tmp))
            return tmp / "artifacts" / "bundle"

        return self._cache().get(model_name, info.run_id, manifest, download, what=f"{model_name} v{version} bundle")

    def load_bundle(self, model_name: str, version: str) -> ModelBundle:
        return ModelBundle.load(self.bundle_dir(model_name, version))


def _info(mv) -> VersionInfo:
    return VersionInfo(
        name=mv.name, version=str(mv.version), run_id=mv.run_id, tags=dict(mv.tags or {}),
        aliases=list(getattr(mv, "aliases", []) or []), source=mv.source,
    )
