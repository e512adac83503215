"""The code location a real `dagster-daemon` loads in test_postgres.py.

It builds the demo pipeline from the JSON file named by $MLOPS_SERVICES_CONFIG, which the
test writes (spec, artifact directory, MLflow tracking URI on PostgreSQL). The daemon, its
code server and every run worker it launches load this same file, so they all build the
same definitions as the test process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.resources import ArtifactStore, MLflowRegistry
from mlops_assets.spec import PipelineSpec

CONFIG_ENV = "MLOPS_SERVICES_CONFIG"


def _build_defs(config: dict) -> dg.Definitions:
    spec = PipelineSpec.from_dict(config["spec"])
    return build_mlops_defs(
        spec,
        storage=ArtifactStore(base_uri=config["storage_uri"]),
        registry=MLflowRegistry(tracking_uri=config["tracking_uri"],
                                artifact_location=config["artifact_location"]),
    )


def _load() -> dg.Definitions:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"${CONFIG_ENV} must name the JSON config written by test_postgres.py")
    return _build_defs(json.loads(Path(path).read_text()))


defs = _load()
