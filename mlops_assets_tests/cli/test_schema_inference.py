"""`schema_inference`: a starting spec from a sample (pure, fast)."""

import datetime as dt

import polars as pl
import pytest

from mlops_assets.schema_inference import (
    InferenceError,
    InferenceOptions,
    guess_column,
    identifier,
    infer_spec,
)
from mlops_assets.spec import PipelineSpec


def _frame(n=400, **extra):
    data = {
        "customer_id": list(range(1000, 1000 + n)),
        "signup_at": [f"2026-01-{1 + i % 28:02d}T08:00:00Z" for i in range(n)],
        "tenure": [float(i % 50) for i in range(n)],
        "spend": [10.0 + i * 0.5 if i % 20 else None for i in range(n)],
        "plan": [["basic", "pro", "enterprise"][i % 3] for i in range(n)],
        "churned": [i % 2 for i in range(n)],
    }
    data.update(extra)
    return pl.DataFrame(data)


def _infer(frame, **kw):
    kw.setdefault("target", "churned")
    return infer_spec(frame, name="churn", source_path="landing", source_format="csv", **kw)


def test_roles_types_and_bounds_are_guessed():
    inferred = _infer(_frame())
    assert inferred.id_column == "customer_id"
    assert inferred.timestamp_column == "signup_at"
    assert inferred.task == "binary" and inferred.classes is None
    features = {c.name: c.feature for c in inferred.features}
    assert set(features) == {"tenure", "spend", "plan"}
    tenure = features["tenure"]
    assert tenure["type"] == "numeric"
    # 0 .. 49 widened by 25% of the range, never below 0 for a non-negative column
    assert tenure["min"] == 0 and 49 * 1.25 <= tenure["max"] <= 70
    spend = features["spend"]
    assert spend["max_null_fraction"] >= 0.05 + 0.01     # 5% missing in the sample, plus a margin
    assert features["plan"] == {"name": "plan", "type": "categorical",
                                "categories": ["basic", "enterprise", "pro"], "max_null_fraction": 0.01}
    assert inferred.min_rows == 40


def test_the_yaml_loads_and_says_what_to_review(tmp_path):
    text = _infer(_frame()).to_yaml()
    assert "REVIEW" in text and "min/max" in text
    path = tmp_path / "churn.yaml"
    path.write_text(text)
    spec = PipelineSpec.from_yaml(path)
    assert spec.name == "churn" and spec.source.path == str(tmp_path / "landing")
    assert spec.feature_names == ["tenure", "spend", "plan"]
    assert spec.state_dir == str(tmp_path / ".mlops")


def test_task_guesses():
    assert _infer(_frame(label=[["a", "b", "c"][i % 3] for i in range(400)]), target="label").task == "multiclass"
    multi = _infer(_frame(label=[i % 4 for i in range(400)]), target="label")
    assert multi.task == "multiclass" and multi.classes == [0, 1, 2, 3]
    reg = _infer(_frame(label=[i * 1.37 for i in range(400)]), target="label")
    assert reg.task == "regression"
    yes_no = _infer(_frame(label=["yes" if i % 2 else "no" for i in range(400)]), target="label")
    assert yes_no.task == "binary" and "must be 0/1" in yes_no.task_review[0]


def test_categories_are_capped_and_integer_codes_flagged():
    many = guess_column(pl.Series("city", [f"c{i % 80}" for i in range(400)]), 400, InferenceOptions(max_categories=50))
    assert many.role == "feature" and "categories" not in many.feature
    codes = guess_column(pl.Series("grade", [i % 4 for i in range(400)]), 400, InferenceOptions())
    assert codes.feature["type"] == "categorical" and codes.feature["categories"] == [0, 1, 2, 3]
    assert any("count or an amount" in r for r in codes.review)
    free_text = guess_column(pl.Series("note", [f"text {i}" for i in range(400)]), 400, InferenceOptions())
    assert free_text.role == "skipped"
    when = guess_column(pl.Series("ts", [dt.datetime(2026, 1, 1)] * 400), 400, InferenceOptions())
    assert when.role == "skipped"


def test_a_constant_column_is_flagged():
    const = guess_column(pl.Series("flag", [3.0] * 100), 100, InferenceOptions())
    assert const.feature["min"] < 3.0 < const.feature["max"]
    assert any("constant" in r for r in const.review)


def test_what_cannot_be_inferred_is_said():
    with pytest.raises(InferenceError, match="target column 'nope'"):
        _infer(_frame(), target="nope")
    no_id = _frame().drop("customer_id").with_columns(pl.lit(1).alias("dup"))
    no_id = no_id.with_columns(pl.col("signup_at").str.slice(0, 7))   # no longer unique nor a full timestamp
    with pytest.raises(InferenceError, match="no column is unique"):
        _infer(no_id.drop("signup_at"))
    with pytest.raises(InferenceError, match="nothing to learn"):
        _infer(_frame(churned=[1] * 400))


def test_explicit_roles_win_and_reserved_names_are_skipped():
    frame = _frame(prediction=[0.5] * 400, other_id=[f"x{i}" for i in range(400)])
    inferred = _infer(frame, id_column="other_id")
    assert inferred.id_column == "other_id"
    roles = {c.name: c.role for c in inferred.columns}
    assert roles["prediction"] == "skipped" and roles["customer_id"] == "feature"


def test_identifier():
    assert identifier("Loans 2026") == "loans_2026"
    assert identifier("2026-data") == "pipeline_2026_data"
