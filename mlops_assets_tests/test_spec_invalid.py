"""Invalid specs, one per row: each must be refused naming the exact field and the rule.

Every row mutates the demo spec (a known-good YAML file), writes it back as YAML and loads
it with `PipelineSpec.from_yaml`, so the loader, the field constraints and the cross-field
rules are all on the path. `SpecError.problems` holds the (field path, message) pairs; a row
passes only when the one problem reported is at its path and the message says its rule.
"""

from __future__ import annotations

import textwrap

import pytest
import yaml

from mlops_assets.demo import SPEC_FILE
from mlops_assets.spec import PipelineSpec, SpecError

# Feature indices in the demo spec.
AGE, INCOME, EMPLOYMENT, PURPOSE, HOME, REGION = 0, 1, 2, 10, 11, 12


def base() -> dict:
    return yaml.safe_load(SPEC_FILE.read_text())


def put(**fields):
    """Set top-level fields; `section__key=value` sets one key of a section."""
    def mutate(d):
        for name, value in fields.items():
            if "__" in name:
                section, key = name.split("__")
                d.setdefault(section, {})[key] = value
            else:
                d[name] = value
    return mutate


def feature(index, **fields):
    return lambda d: d["features"][index].update(fields)


def add_feature(name, kind="numeric"):
    return lambda d: d["features"].append({"name": name, "type": kind})


def both(*mutations):
    def mutate(d):
        for m in mutations:
            m(d)
    return mutate


def as_regression(d):
    d.update(task="regression", target="interest_rate")
    d["features"] = [f for f in d["features"] if f["name"] != "interest_rate"]
    d["drift"]["key_features"] = ["credit_score"]


def as_multiclass(d):
    d.update(task="multiclass", target="grade", classes=["A", "B", "C", "D"])


def gate(**fields):
    return lambda d: d["gate"].update(fields)


def per_feature(name, **override):
    return lambda d: d["drift"].setdefault("per_feature", {}).update({name: override})


def search(**space):
    return lambda d: d["model"].update(search={"strategy": "random", "max_trials": 3, "space": space})


GROUND_TRUTH = {"path": "labels"}

# (id, mutation, field path, a distinctive part of the message)
CASES = [
    # column roles
    ("group-is-target", put(group_column="defaulted"), "group_column", "is also the target"),
    ("group-is-id", put(group_column="loan_id"), "group_column", "is also the id column"),
    ("group-is-timestamp", put(group_column="applied_at"), "group_column", "is also the timestamp column"),
    ("timestamp-is-id", put(timestamp_column="loan_id"), "timestamp_column", "is also the id column"),
    ("timestamp-is-target", put(timestamp_column="defaulted"), "timestamp_column", "is also the target"),
    ("id-is-target", put(id_column="defaulted"), "id_column", "is also the target"),
    ("id-is-feature", put(id_column="age"), "id_column", "is also features.0"),
    ("target-is-feature", put(target="income"), "target", "is also features.1"),
    ("timestamp-is-feature", put(timestamp_column="age"), "timestamp_column", "must not also be a feature"),
    ("duplicate-feature", add_feature("age"), "features.13.name", "is also features.0"),
    # names the package adds next to the user's columns
    ("feature-_split", add_feature("_split"), "features.13.name", "train/valid/holdout column"),
    ("feature-__prediction", add_feature("__prediction"), "features.13.name", "monitored prediction"),
    ("feature-__label", add_feature("__label"), "features.13.name", "delayed-label join"),
    ("feature-model_version", add_feature("model_version"), "features.13.name", "predictions-table column"),
    ("feature-scored_at", add_feature("scored_at", "categorical"), "features.13.name", "predictions-table column"),
    ("feature-score", add_feature("score"), "features.13.name", "'score' is reserved"),
    ("feature-proba_", add_feature("proba_A"), "features.13.name", "'proba_<class>'"),
    ("id-prediction", put(id_column="prediction"), "id_column", "'prediction' is reserved"),
    ("group-event_id", put(group_column="event_id"), "group_column", "stream-output column"),
    ("feature-polars-rename", add_feature("age_duplicated_0"), "features.13.name", "repeated CSV header"),
    # numbers that would silently check nothing
    ("min-nan", feature(AGE, min=float("nan")), "features.0.min", "finite number"),
    ("max-inf", feature(AGE, max=float("inf")), "features.0.max", "finite number"),
    ("null-fraction-nan", feature(EMPLOYMENT, max_null_fraction=float("nan")),
     "features.2.max_null_fraction", "finite number"),
    ("settle-inf", put(source__settle_seconds=float("inf")), "source.settle_seconds", "finite number"),
    ("latency-inf", gate(max_p99_latency_ms=float("inf")), "gate.max_p99_latency_ms", "finite number"),
    ("share-nan", put(drift__share_threshold=float("nan")), "drift.share_threshold", "finite number"),
    ("min-above-max", feature(AGE, min=90, max=20), "features.0.max", "min (90) is greater than max (20)"),
    ("min-rows-boolean", put(min_rows=True), "min_rows", "YAML boolean"),
    # categories
    ("categories-empty", feature(PURPOSE, categories=[]), "features.10.categories", "empty list allows no value"),
    ("categories-repeat-by-value", feature(REGION, categories=[1, "1", 2]),
     "features.12.categories.1", "repeats categories.0"),
    ("categories-yaml-boolean", feature(HOME, categories=[True, "RENT"]),
     "features.11.categories.0", "YAML boolean"),
    ("categories-fraction", feature(REGION, categories=[2.5, 3]), "features.12.categories.0", "not a whole number"),
    ("categories-on-numeric", feature(AGE, categories=["a"]), "features.0.categories",
     "apply to categorical features only"),
    # the gate and the metrics of the task
    ("floor-unreachable", gate(min_main_metric=1.5), "gate.min_main_metric",
     "outside roc_auc's range [0, 1] as a floor: no model can reach it"),
    ("floor-vacuous", gate(min_main_metric=-0.2), "gate.min_main_metric", "every model passes it"),
    ("rmse-ceiling-negative", both(as_regression, gate(min_main_metric=-1)), "gate.min_main_metric",
     "outside rmse's range [0, inf] as a ceiling: no model can reach it (best is 0)"),
    ("r2-floor-above-1", both(as_regression, gate(main_metric="r2", min_main_metric=1.2)), "gate.min_main_metric",
     "no model can reach it (best is 1)"),
    ("metric-of-other-task", gate(main_metric="rmse"), "gate.main_metric", "'rmse' is not a binary metric"),
    ("metric-typo", gate(main_metric="auc"), "gate.main_metric", "choose from ['accuracy', 'brier', 'f1'"),
    ("metric-not-multiclass", both(as_multiclass, gate(main_metric="roc_auc")), "gate.main_metric",
     "'roc_auc' is not a multiclass metric"),
    ("regression-above-span", gate(max_regression=2), "gate.max_regression", "could never fail"),
    ("fairness-above-span", gate(max_fairness_gap=5), "gate.max_fairness_gap", "could never fail"),
    ("fairness-without-groups", put(group_column=None), "gate.max_fairness_gap", "needs group_column"),
    ("max-drop-above-span", put(performance__max_drop=3), "performance.max_drop", "could never fail"),
    # split and seeds
    ("split-sums-to-1", put(split={"holdout_fraction": 0.6, "validation_fraction": 0.4}), "split",
     "leaves no training rows"),
    ("split-seed-negative", put(split={"seed": -1}), "split.seed", "greater than or equal to 0"),
    ("model-seed-too-big", put(model__seed=2**31), "model.seed", "less than or equal to 2147483647"),
    # automation
    ("cron-minute-61", put(automation__batch_inference_cron="61 * * * *"), "automation.batch_inference_cron",
     "not a valid cron string"),
    ("cron-words", put(automation__monitoring_cron="every hour"), "automation.monitoring_cron",
     "not a valid cron string"),
    ("cron-step-90", put(automation__monitoring_cron="*/90 * * * *"), "automation.monitoring_cron",
     "step larger than its field's range"),
    ("timezone-unknown", put(automation__timezone="Mars/Olympus"), "automation.timezone",
     "unknown time zone 'Mars/Olympus'"),
    ("timezone-empty", put(automation__timezone=""), "automation.timezone", "unknown time zone ''"),
    ("budget-zero", put(automation__retrain_budget=0), "automation.retrain_budget", "greater than or equal to 1"),
    ("budget-window-zero", put(automation__retrain_budget_window_hours=0), "automation.retrain_budget_window_hours",
     "greater than 0"),
    ("cooldown-negative", put(automation__retrain_cooldown_minutes=-5), "automation.retrain_cooldown_minutes",
     "greater than or equal to 0"),
    # drift
    ("drift-wasserstein-categorical", per_feature("purpose", method="wasserstein"),
     "drift.per_feature.purpose.method", "does not apply to categorical feature 'purpose'"),
    ("drift-ks-categorical", per_feature("region", method="ks"), "drift.per_feature.region.method",
     "does not apply to categorical"),
    ("drift-pvalue-threshold", per_feature("age", method="ks", threshold=1.5), "drift.per_feature.age.threshold",
     "compares a p-value"),
    ("drift-js-threshold", per_feature("purpose", method="jensenshannon", threshold=2),
     "drift.per_feature.purpose.threshold", "at most 1"),
    ("drift-unknown-feature", per_feature("nope", method="psi"), "drift.per_feature.nope", "is not a feature"),
    ("key-feature-twice", put(drift__key_features=["age", "age"]), "drift.key_features.1", "listed twice"),
    ("key-feature-unknown", put(drift__key_features=["nope"]), "drift.key_features.0", "is not a feature"),
    # delayed labels
    ("labels-time-is-label", put(ground_truth={**GROUND_TRUTH, "label_column": "y", "time_column": "y"}),
     "ground_truth.time_column", "is also the label column (ground_truth.label_column)"),
    ("labels-time-is-target", put(ground_truth={**GROUND_TRUTH, "time_column": "defaulted"}),
     "ground_truth.time_column", "is also the label column (target)"),
    ("labels-time-is-id", put(ground_truth={**GROUND_TRUTH, "time_column": "loan_id"}),
     "ground_truth.time_column", "is also the id column"),
    ("labels-label-is-id", put(ground_truth={**GROUND_TRUTH, "label_column": "loan_id"}),
     "ground_truth.label_column", "is also the id column"),
    ("labels-path-empty", put(ground_truth={"path": ""}), "ground_truth.path", "at least 1 character"),
    # classes
    ("classes-repeat", both(as_multiclass, put(classes=["A", "B", "A"])), "classes.2", "repeats classes.0"),
    ("classes-repeat-by-value", both(as_multiclass, put(classes=[1, 2, 1.0])), "classes.2", "repeats classes.0"),
    ("classes-mixed", both(as_multiclass, put(classes=[1, "B", "C"])), "classes", "mix numbers and text"),
    ("classes-yaml-boolean", both(as_multiclass, put(classes=[True, "B", "C"])), "classes.0", "YAML boolean"),
    ("classes-binary", put(classes=["no", "yes", "maybe"]), "classes", "multiclass only"),
    ("classes-two", both(as_multiclass, put(classes=["A", "B"])), "classes", "at least 3 classes"),
    # empty names
    ("state-dir-empty", put(state_dir=""), "state_dir", "at least 1 character"),
    ("target-empty", put(target=""), "target", "at least 1 character"),
    # the model and its search space
    ("extra-params-alias", put(model={"lightgbm": {"extra_params": {"random_state": 1}}}),
     "model.lightgbm.extra_params.random_state", "LightGBM's alias of 'seed'"),
    ("extra-params-setting", put(model={"lightgbm": {"extra_params": {"eta": 0.3}}}),
     "model.lightgbm.extra_params.eta", "set lightgbm.learning_rate instead"),
    ("search-out-of-range", search(learning_rate={"low": 0.01, "high": 2}), "model.search.space.learning_rate.high",
     "2.0 is not a valid lightgbm.learning_rate"),
    ("search-int-range-not-integer", search(num_leaves={"low": 8, "high": 64}), "model.search.space.num_leaves",
     "set integer: true"),
    ("search-fractional-value", search(num_leaves={"values": [31, 40.5]}), "model.search.space.num_leaves.values.1",
     "40.5 is not a valid lightgbm.num_leaves"),
    ("search-log-values", search(num_leaves={"values": [31, 63], "log": True}), "model.search.space.num_leaves.log",
     "applies to low/high ranges"),
    ("search-unknown-setting", search(max_depth={"values": [3, 5]}), "model.search.space.max_depth",
     "not a lightgbm setting"),
]


def _load(tmp_path, data: dict) -> PipelineSpec:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return PipelineSpec.from_yaml(path)


def test_the_table_is_large_and_ids_are_unique():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("mutate, path, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_spec_is_refused_naming_the_field_and_rule(tmp_path, mutate, path, fragment):
    data = base()
    mutate(data)
    with pytest.raises(SpecError) as caught:
        _load(tmp_path, data)
    err = caught.value
    assert [p for p, _ in err.problems] == [path], err.problems
    assert fragment in err.problems[0][1], err.problems
    assert f"{path}: " in str(err)              # the readable message names the field too


@pytest.mark.parametrize(
    "text, key, line, first",
    [
        ("min_rows: 500\n", "min_rows", 12, 11),
        ("  - {name: age, type: numeric, min: 18, max: 100}\n", "min", 13, 13),
    ],
    ids=["top-level", "inside-a-feature"],
)
def test_duplicate_yaml_keys_are_refused_with_key_and_line(tmp_path, text, key, line, first):
    original = SPEC_FILE.read_text()
    if key == "min_rows":
        doubled = original.replace(text, text + "min_rows: 50   # a second value: YAML keeps the last\n", 1)
    else:
        doubled = original.replace(text, "  - {name: age, type: numeric, min: 18, max: 100, min: 0}\n", 1)
    path = tmp_path / "spec.yaml"
    path.write_text(doubled)
    assert doubled.splitlines()[line - 1].lstrip().startswith(("min_rows", "- {name: age"))
    with pytest.raises(SpecError) as caught:
        PipelineSpec.from_yaml(path)
    assert f"duplicate key '{key}' at line {line} (first at line {first})" in str(caught.value)


VALID = [
    ("integer-categories", feature(REGION, categories=[1, 2, 3])),
    ("integer-float-categories", feature(REGION, categories=[1.0, 2.0, "3"])),
    ("integer-classes", both(as_multiclass, put(classes=[1, 2, 3]))),
    ("integer-float-classes", both(as_multiclass, put(classes=[1.0, 2.0, 3.0]))),
    ("group-is-a-feature", put(group_column="region")),
    ("min-equals-max", feature(AGE, min=40, max=40)),
    ("daily-cron-paris", put(automation={"batch_inference_cron": "@daily", "monitoring_cron": "*/15 * * * *",
                                         "timezone": "Europe/Paris"})),
    ("psi-on-categorical", per_feature("purpose", method="psi", threshold=0.2)),
    ("threshold-with-auto", per_feature("age", threshold=0.2)),
    ("negative-r2-floor", both(as_regression, gate(main_metric="r2", min_main_metric=-0.5))),
    ("log-loss-ceiling", both(as_multiclass, gate(main_metric="log_loss", min_main_metric=0.8))),
    ("big-rmse-ceiling", both(as_regression, gate(min_main_metric=1e12))),
    ("names-near-reserved", both(add_feature("scores"), add_feature("predicted"), add_feature("day"))),
    ("search-integer-range", search(num_leaves={"low": 8, "high": 64, "integer": True},
                                    learning_rate={"low": 0.01, "high": 0.3, "log": True})),
    ("labels-own-columns", put(ground_truth={**GROUND_TRUTH, "label_column": "outcome"})),
]


@pytest.mark.parametrize("mutate", [v[1] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_edge_cases_load(tmp_path, mutate):
    data = base()
    mutate(data)
    assert isinstance(_load(tmp_path, data), PipelineSpec)


def test_numeric_codes_load_as_their_canonical_text(tmp_path):
    data = base()
    feature(REGION, categories=[1, 2.0, "3"])(data)
    assert _load(tmp_path, data).features[REGION].categories == ["1", "2", "3"]
    data = base()
    both(as_multiclass, put(classes=[1.0, 2, 3]))(data)
    assert _load(tmp_path, data).classes == [1, 2, 3]


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    text = SPEC_FILE.read_text().replace(
        "  - {name: age, type: numeric, min: 18, max: 100}\n",
        "  - &age {name: age, type: numeric, min: 18, max: 100}\n"
        "  - {<<: *age, name: age_at_open, max: 120}\n", 1)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    spec = PipelineSpec.from_yaml(path)
    merged = spec.features[1]
    assert (merged.name, merged.min, merged.max) == ("age_at_open", 18, 120)


def test_several_broken_rules_are_all_reported(tmp_path):
    data = base()
    both(put(group_column="defaulted"), gate(main_metric="rmse"), per_feature("purpose", method="ks"))(data)
    with pytest.raises(SpecError) as caught:
        _load(tmp_path, data)
    assert [p for p, _ in caught.value.problems] == ["group_column", "gate.main_metric", "drift.per_feature.purpose.method"]


def test_empty_and_unreadable_files_say_so(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(SpecError, match="the file is empty"):
        PipelineSpec.from_yaml(empty)
    with pytest.raises(SpecError, match="cannot read the spec: No such file or directory"):
        PipelineSpec.from_yaml(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text(textwrap.dedent("""\
        - name: a
        - name: b
    """))
    with pytest.raises(SpecError, match="expected a mapping at the top level, got list"):
        PipelineSpec.from_yaml(listed)


def test_a_release_without_delayed_labels_is_refused(tmp_path):
    import pytest

    from mlops_assets.spec import PipelineSpec, SpecError
    from mlops_assets_tests.conftest import small_spec

    data = small_spec(tmp_path).model_dump(mode="json")
    data["release"] = {"mode": "canary"}
    with pytest.raises(SpecError) as caught:
        PipelineSpec.from_dict(data)
    assert ("release.mode", ("'canary' needs ground_truth: the release rule compares the two models on delayed "
                             "labels")) in caught.value.problems
    data["features"][0]["name"] = "arm"
    with pytest.raises(SpecError, match="'arm' is reserved: it is the canary predictions' arm column"):
        PipelineSpec.from_dict(data)


def test_source_options_that_cannot_apply_are_refused(tmp_path):
    import pytest

    from mlops_assets.spec import PipelineSpec, SpecError
    from mlops_assets_tests.conftest import small_spec

    data = small_spec(tmp_path).model_dump(mode="json")
    data["source"].update(settle_seconds=60, complete_within_seconds=10)
    with pytest.raises(SpecError, match=r"source: .*complete_within_seconds \(10\) must be at least settle_seconds"):
        PipelineSpec.from_dict(data)
    data["source"] = {"asset_key": ["crm", "snapshot"], "on_change": "reingest"}
    with pytest.raises(SpecError, match=r"\['on_change'\] apply to files in source.path, not to an upstream asset"):
        PipelineSpec.from_dict(data)
