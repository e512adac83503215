"""The deployment entry point: specs from MLOPS_SPECS, resources from the environment."""

import shutil

import pytest

from mlops_assets.demo import SPEC_FILE
from mlops_assets.spec import SpecError


@pytest.fixture
def build(monkeypatch):
    """The module builds `defs` from the environment at import (what a code server loads);
    import it with a valid MLOPS_SPECS, then call its builder with explicit environments."""
    import importlib
    import sys

    monkeypatch.setenv("MLOPS_SPECS", str(SPEC_FILE))
    sys.modules.pop("mlops_assets.entrypoint", None)
    module = importlib.import_module("mlops_assets.entrypoint")
    assert {s.name for s in module.defs.sensors} >= {"demo_new_data_sensor"}
    return module.build_defs_from_env


def test_specs_and_resources_come_from_the_environment(tmp_path, build):
    fraud = tmp_path / "fraud.yaml"
    shutil.copy(SPEC_FILE, fraud)
    fraud.write_text(fraud.read_text().replace("name: demo", "name: fraud"))
    defs = build({"MLOPS_SPECS": f"{SPEC_FILE},{fraud}", "MLOPS_STORAGE_URI": "s3://bucket/mlops",
                  "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert defs.resources["demo_storage"].base_uri == "s3://bucket/mlops"
    assert defs.resources["fraud_storage"].s3_endpoint_url == "http://127.0.0.1:9000"
    assert defs.resources["fraud_mlflow"].tracking_uri == "http://mlflow:5000"
    assert {s.name for s in defs.sensors} >= {"demo_new_data_sensor", "fraud_new_data_sensor"}


def test_missing_or_duplicate_specs_are_refused(build):
    with pytest.raises(SpecError, match="MLOPS_SPECS is not set"):
        build({})
    with pytest.raises(SpecError, match="two pipelines are named 'demo'"):
        build({"MLOPS_SPECS": f"{SPEC_FILE},{SPEC_FILE}"})
