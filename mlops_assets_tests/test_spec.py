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


def test_rule_tables_match_what_the_core_computes():
    """spec_rules.py cannot import the core (the spec is the bottom layer), so its tables are
    checked here against the core's own names: a new metric or column must be added to both."""
    import numpy as np

    from mlops_assets.core.drift.compare import METHODS_BY_KIND
    from mlops_assets.core.features import SPLIT_COLUMN
    from mlops_assets.core.metrics import HIGHER_IS_BETTER, compute_metrics
    from mlops_assets.core.performance import LABEL
    from mlops_assets.core.predictions import (
        MODEL_VERSION,
        MONITORED_COLUMN,
        PREDICTION,
        PROBA_PREFIX,
        SCORE,
        SCORED_AT,
    )
    from mlops_assets.serving.request_log import RECEIVED_AT
    from mlops_assets.serving.stream_output import EVENT_ID_COLUMN
    from mlops_assets.spec_rules import DRIFT_METHODS, METRICS, RESERVED_COLUMNS, RESERVED_PREFIX

    y = np.array([0, 1, 2, 0, 1, 2])
    scores = {"binary": (y % 2, np.linspace(0.1, 0.9, 6)),
              "multiclass": (y, np.eye(3)[y] * 0.8 + 0.2 / 3),
              "regression": (y.astype(float), y + 0.5)}
    for task, (truth, score) in scores.items():
        computed = set(compute_metrics(task, truth, score)) & set(HIGHER_IS_BETTER)
        assert set(METRICS[task]) == computed, task
        assert {m: higher for m, (_, _, higher) in METRICS[task].items()} == {m: HIGHER_IS_BETTER[m] for m in computed}
        for name, (low, high, _) in METRICS[task].items():
            value = compute_metrics(task, truth, score)[name]
            assert low <= value <= high, (task, name, value)
    for kind, methods in METHODS_BY_KIND.items():
        # "z" is Evidently's choice for two-valued columns, reachable through "auto" only.
        assert set(DRIFT_METHODS[kind]) == (methods - {"z"}) | {"auto"}
    from mlops_assets.core.release import ARM

    added = {SPLIT_COLUMN, MONITORED_COLUMN, LABEL, MODEL_VERSION, SCORED_AT, SCORE, PREDICTION, RECEIVED_AT,
             EVENT_ID_COLUMN, ARM}
    assert added == set(RESERVED_COLUMNS) and RESERVED_PREFIX == PROBA_PREFIX


def test_reference_shows_defaults_and_requires_only_fields_without_one():
    from mlops_assets.spec_reference import render

    rows = {line.split("|")[1].strip(): line for line in render().splitlines() if line.startswith("| `")}
    assert "**required**" in rows["`name`"] and "**required**" in rows["`id_column`"]
    assert "| `[]` |" in rows["`owners`"] and "| `{}` |" in rows["`tags`"]          # default_factory fields
    assert "| `[128, 64]` |" in rows["`hidden_sizes`"]
    assert "| see section |" in rows["`split`"]
    assert "list of string or integer or null" in rows["`categories`"]


def test_a_spec_error_keeps_its_problems_for_callers():
    data = _base()
    data["group_column"] = data["target"]
    data["automation"] = {"timezone": "Moon/Base"}
    with pytest.raises(SpecError) as err:
        PipelineSpec.from_dict(data)
    # Field errors are found first; cross-field rules run once every section is valid.
    assert err.value.problems == [
        ("automation.timezone", "unknown time zone 'Moon/Base': use an IANA name such as 'UTC' or 'Europe/Paris'"),
    ]
    data["automation"] = {}
    with pytest.raises(SpecError) as err:
        PipelineSpec.from_dict(data)
    assert err.value.problems == [("group_column", "'defaulted' is also the target: a column has one role")]
    assert str(err.value) == ("invalid pipeline spec 'demo':\n"
                              "  group_column: 'defaulted' is also the target: a column has one role")
