import pytest
import yaml

from mlops_assets.demo import SPEC_FILE, demo_spec
from mlops_assets.spec import PipelineSpec, SpecError


def _base() -> dict:
    return yaml.safe_load(SPEC_FILE.read_text())


def test_demo_spec_loads_from_yaml_and_resolves_paths(tmp_path):
    spec = PipelineSpec.from_yaml(SPEC_FILE)
    assert spec.name == "demo" and spec.task == "binary"
    assert spec.source.path == str(SPEC_FILE.parent / "landing")
    assert spec.main_metric == "roc_auc"
    assert "purpose" in spec.feature_names and spec.feature_types["purpose"] == "categorical"
    assert demo_spec(tmp_path).state_dir == str(tmp_path / "state")


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.update(name="Bad Name"), "name"),
        (lambda d: d["features"][0].update(type="text"), "features.0.type"),
        (lambda d: d["features"][0].update(min=10, max=1), "features.0"),
        (lambda d: d["features"].append({"name": "age", "type": "numeric"}), "features"),
        (lambda d: d["source"].update(asset_key=["x"]), "source"),
        (lambda d: d["gate"].update(force_promote=True), "gate"),
        (lambda d: d.update(unknown_field=1), "unknown_field"),
        (lambda d: d["drift"].update(key_features=["nope"]), "drift.key_features"),
        (lambda d: d["model"]["lightgbm"].update(extra_params={"objective": "huber"}), "model.lightgbm.extra_params"),
        (lambda d: d["model"]["lightgbm"].update(num_leaves=1), "model.lightgbm.num_leaves"),
    ],
)
def test_invalid_spec_names_the_field(mutate, field, tmp_path):
    data = _base()
    mutate(data)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as err:
        PipelineSpec.from_yaml(path)
    assert field in str(err.value)


def test_spec_hash_ignores_paths_but_not_model(tmp_path):
    a = demo_spec(tmp_path / "a")
    b = demo_spec(tmp_path / "b")
    assert a.spec_hash == b.spec_hash
    data = a.model_dump(mode="json")
    data["model"]["seed"] = 1
    assert PipelineSpec.from_dict(data).spec_hash != a.spec_hash


def test_force_promote_requires_reason():
    data = _base()
    data["gate"].update(force_promote=True, force_reason="  ")
    with pytest.raises(SpecError, match="force_reason"):
        PipelineSpec.from_dict(data)
    data["gate"]["force_reason"] = "incident 42: old model leaks PII"
    assert PipelineSpec.from_dict(data).gate.force_promote
