"""Training, evaluation and the gate on real models (LightGBM), without Dagster."""

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.bundle import ModelBundle
from mlops_assets.core.evaluation import evaluate_candidate
from mlops_assets.core.features import prepare_features
from mlops_assets.core.trainers import TrainingDataError, native_predict
from mlops_assets.core.trainers.registry import parity_tolerance
from mlops_assets.core.training import assemble_training_frame, train_from_frame
from mlops_assets.spec import PipelineSpec


def _variant(spec, **changes) -> PipelineSpec:
    data = spec.model_dump(mode="json")
    target = changes.pop("target", None)
    if target:
        data["target"] = target
        data["features"] = [f for f in data["features"] if f["name"] != target]
        data["drift"]["key_features"] = [k for k in data["drift"]["key_features"] if k != target]
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    return PipelineSpec.from_dict(data)


def _frame(df, spec):
    return assemble_training_frame([prepare_features(df, spec)], spec)


def test_same_data_spec_seed_give_byte_identical_model(spec, loans_day1):
    frame = _frame(loans_day1, spec)
    a = train_from_frame(frame, spec)
    b = train_from_frame(frame, spec)
    assert a.model.native_bytes == b.model.native_bytes
    assert a.bundle.onnx_bytes == b.bundle.onnx_bytes
    X = a.bundle.encoder.transform(a.holdout)
    assert np.array_equal(a.model.predict(X), b.model.predict(X))
    assert a.data_version == b.data_version


def test_binary_parity_and_evaluation(spec, loans_day1):
    spec = _variant(spec, gate={**spec.gate.model_dump(mode="json"), "min_main_metric": 0.6})
    out = train_from_frame(_frame(loans_day1, spec), spec)
    assert out.parity_max_abs_diff <= 1e-5
    result = evaluate_candidate(spec, out.bundle, out.holdout, latency_iters=20)
    assert {"roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "f1"} <= set(result.metrics)
    assert result.metrics["roc_auc"] > 0.65     # 6k rows; the demo's 20k reach ~0.76
    assert result.fairness is not None and {g["group"] for g in result.fairness.groups} >= {"female", "male"}
    assert result.fairness.demographic_parity_difference is not None
    assert result.latency["single_row_p99_ms"] > 0 and result.latency["batch_rows_per_s"] > 0
    assert set(result.importance) == set(spec.feature_names)
    assert result.decision.passed and result.decision.bootstrap


@pytest.mark.parametrize(
    "target, task, metrics",
    [("grade", "multiclass", {"macro_f1", "log_loss", "accuracy"}),
     ("interest_rate", "regression", {"rmse", "mae", "r2"})],
)
def test_other_tasks_end_to_end_in_core(spec, loans_day1, target, task, metrics):
    extra = {"classes": ["A", "B", "C", "D"]} if task == "multiclass" else {}
    s = _variant(spec, target=target, task=task, gate={"max_fairness_gap": None, "min_main_metric": None}, **extra)
    out = train_from_frame(_frame(loans_day1, s), s)
    assert out.parity_max_abs_diff <= 1e-5
    result = evaluate_candidate(s, out.bundle, out.holdout, champion=out.bundle, champion_version="1",
                                latency_iters=20)
    assert metrics <= set(result.metrics)
    assert result.decision.passed, result.decision.message()
    scored = out.bundle.score_frame(out.holdout)
    if task == "multiclass":
        assert set(scored["prediction"].unique()) <= {"A", "B", "C", "D"}
        assert {"proba_A", "proba_D"} <= set(scored.columns)
        assert result.metrics["accuracy"] > 0.5
    else:
        assert result.metrics["r2"] > 0.5


def test_one_class_and_nan_labels_fail_before_training(spec, loans_day1):
    one = loans_day1.with_columns(pl.lit(0).alias("defaulted"))
    with pytest.raises(TrainingDataError, match="target 'defaulted': only one class"):
        train_from_frame(_frame(one, spec), spec)
    frame = _frame(loans_day1, spec).with_columns(
        pl.when(pl.col("loan_id") % 7 == 0).then(None).otherwise(pl.col("defaulted")).alias("defaulted")
    )
    with pytest.raises(TrainingDataError, match="NaN labels"):
        train_from_frame(frame, spec)


def test_corrupted_onnx_fails_infra_validation_never_promotion(spec, loans_day1):
    out = train_from_frame(_frame(loans_day1, spec), spec)
    broken = ModelBundle(onnx_bytes=out.bundle.onnx_bytes[: len(out.bundle.onnx_bytes) // 2],
                         encoder=out.bundle.encoder, meta=out.bundle.meta,
                         native_bytes=out.bundle.native_bytes, native_format=out.bundle.native_format)
    forced = _variant(spec, gate={"force_promote": True, "force_reason": "testing the override"})
    result = evaluate_candidate(forced, broken, out.holdout, latency_iters=5)
    failed = {r.name for r in result.decision.failed_rules}
    assert "onnx_smoke_test" in failed and "onnx_parity" in failed
    assert not result.decision.passed and not result.decision.forced
    assert "ONNX infra-validation failed" in result.decision.message()


def test_search_picks_best_on_validation_within_budget(spec, loans_day1):
    s = _variant(spec, model={**spec.model.model_dump(mode="json"), "search": {
        "strategy": "grid", "max_trials": 3,
        "space": {"num_leaves": {"values": [2, 8, 31]}, "learning_rate": {"values": [0.1]}},
    }})
    out = train_from_frame(_frame(loans_day1, s), s)
    search = out.search
    assert len(search.trials) == 3 and search.stopped_by == "exhausted"
    assert search.best.score == max(t.score for t in search.trials)
    assert out.model.params["num_leaves"] == search.best.params["num_leaves"]
    timed = _variant(spec, model={**spec.model.model_dump(mode="json"), "search": {
        "strategy": "random", "max_trials": None, "max_seconds": 0.001,
        "space": {"num_leaves": {"low": 4, "high": 64, "integer": True, "log": True}},
    }})
    assert len(train_from_frame(_frame(loans_day1, timed), timed).search.trials) == 1


def test_native_predict_matches_trained_model(spec, loans_day1):
    out = train_from_frame(_frame(loans_day1, spec), spec)
    X = out.bundle.encoder.transform(out.holdout)
    assert np.array_equal(native_predict("lightgbm", out.model.native_bytes, X), out.model.predict(X))


def test_mlp_trainer_chosen_in_spec_end_to_end(spec, loans_day1, tmp_path):
    s = _variant(spec, model={**spec.model.model_dump(mode="json"), "trainer": "mlp",
                              "mlp": {"hidden_sizes": [32], "max_epochs": 8, "num_threads": 1}},
                 gate={**spec.gate.model_dump(mode="json"), "min_main_metric": 0.6})
    assert parity_tolerance(s.model.trainer, s.gate.onnx_parity_tolerance) == 1e-4
    out = train_from_frame(_frame(loans_day1, s), s, checkpoint_dir=str(tmp_path / "ckpt"))
    assert out.model.trainer == "mlp" and out.bundle.native_format == "pt"
    assert out.parity_max_abs_diff <= 1e-4
    result = evaluate_candidate(s, out.bundle, out.holdout, latency_iters=20)
    assert result.metrics["roc_auc"] > 0.6
    assert result.decision.passed, result.decision.message()
    X = out.bundle.encoder.transform(out.holdout)
    assert np.allclose(native_predict("mlp", out.model.native_bytes, X), out.model.predict(X))


def test_partitions_labelled_late_line_up_with_labelled_ones(spec, loans_day1):
    labelled = prepare_features(loans_day1, spec)
    # attach_labels appends the target after the split column: same columns, another order.
    late = labelled.select([c for c in labelled.columns if c != spec.target] + [spec.target])
    assert late.columns != labelled.columns
    frame = assemble_training_frame([labelled, late.with_columns(pl.col(spec.id_column) + 10**9)], spec)
    assert frame.columns == labelled.columns and frame.height == 2 * labelled.height


def test_partitions_with_other_columns_are_refused_by_name(spec, loans_day1):
    labelled = prepare_features(loans_day1, spec)
    other = labelled.drop(spec.feature_names[0]).with_columns(pl.lit(1).alias("surplus"))
    with pytest.raises(TrainingDataError, match=rf"missing \['{spec.feature_names[0]}'\], extra \['surplus'\]"):
        assemble_training_frame([labelled, other], spec)
