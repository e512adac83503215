"""Code-location entry point for deployments: `dagster code-server start -m mlops_assets.entrypoint`.

Environment:
  MLOPS_SPECS          comma-separated spec YAML paths (required in production)
  MLOPS_STORAGE_URI    artifact root, e.g. s3://bucket/prefix (default: each spec's state_dir)
  AWS_ENDPOINT_URL     S3-compatible endpoint (MinIO, ...); unset for AWS
  MLFLOW_TRACKING_URI  e.g. http://mlflow:5000 (default: each spec's sqlite store)
Credentials come from the standard AWS chain and are never read here.
"""

from __future__ import annotations

import os

import dagster as dg

from mlops_assets.definitions import build_mlops_defs, default_registry, default_storage
from mlops_assets.resources import ArtifactStore, MLflowRegistry
from mlops_assets.spec import PipelineSpec, SpecError


def build_defs_from_env(env: dict[str, str] | None = None) -> dg.Definitions:
    env = dict(os.environ if env is None else env)
    paths = [p.strip() for p in env.get("MLOPS_SPECS", "").split(",") if p.strip()]
    if not paths:
        raise SpecError("MLOPS_SPECS is not set: name one or more pipeline spec YAML files, comma-separated")
    specs = [PipelineSpec.from_yaml(p) for p in paths]
    seen: dict[str, str] = {}
    for spec, path in zip(specs, paths):
        if spec.name in seen:
            raise SpecError(f"two pipelines are named '{spec.name}': {seen[spec.name]} and {path}")
        seen[spec.name] = path
    defs = []
    for spec in specs:
        storage = default_storage(spec)
        if env.get("MLOPS_STORAGE_URI"):
            storage = ArtifactStore(base_uri=env["MLOPS_STORAGE_URI"], s3_endpoint_url=env.get("AWS_ENDPOINT_URL"))
        registry = default_registry(spec)
        if env.get("MLFLOW_TRACKING_URI"):
            registry = MLflowRegistry(tracking_uri=env["MLFLOW_TRACKING_URI"],
                                      ui_url=env.get("MLFLOW_UI_URL") or env["MLFLOW_TRACKING_URI"])
        defs.append(build_mlops_defs(spec, storage=storage, registry=registry))
    return dg.Definitions.merge(*defs)


defs = build_defs_from_env()
