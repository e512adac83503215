"""Double-precision LightGBM -> ONNX export and the ONNX scoring checks.

Parity is asserted at 1e-9 against Booster.predict on float64 rows that contain
NaN, exact zeros and values at LightGBM's zero threshold.
"""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mlops_assets.core.onnx_export import K_ZERO_THRESHOLD, OnnxExportError, lightgbm_to_onnx
from mlops_assets.core.scoring import (
    LatencyResult,
    OnnxScorer,
    OnnxValidationError,
    ParityResult,
    check_parity,
    measure_latency,
    smoke_test,
)

PARITY_TOL = 1e-9
N_FEATURES = 12
NAN_TRAIN_FEATURES = 4  # features 0..3 have NaN in training -> missing_type 'NaN'
NAMES = [f"f{i}" for i in range(N_FEATURES)]


def _make_data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[:, 5] = np.where(rng.random(n) < 0.3, 0.0, X[:, 5])  # exact zeros
    logit = X[:, :6] @ np.linspace(1.0, 0.3, 6) + np.sin(3 * X[:, 6]) + X[:, 7] * X[:, 8]
    nan_mask = rng.random((n, NAN_TRAIN_FEATURES)) < 0.08
    X[:, :NAN_TRAIN_FEATURES][nan_mask] = np.nan
    logit = logit + 0.8 * nan_mask[:, 0]
    return X, logit + rng.normal(scale=0.5, size=n)


@pytest.fixture(scope="module")
def train() -> tuple[np.ndarray, np.ndarray]:
    return _make_data(seed=0, n=8000)


@pytest.fixture(scope="module")
def X_score() -> np.ndarray:
    """Fresh rows with NaN in every feature, including those trained without NaN
    (missing_type 'None': LightGBM scores NaN as 0.0), plus zero-threshold edge values."""
    X, _ = _make_data(seed=1, n=6000)
    rng = np.random.default_rng(2)
    X[rng.random(X.shape) < 0.05] = np.nan
    edge = np.array([0.0, -0.0, K_ZERO_THRESHOLD, -K_ZERO_THRESHOLD, 1e-40, -1e-40])
    mask = rng.random(X.shape) < 0.03
    X[mask] = rng.choice(edge, size=int(mask.sum()))
    return X


def _fit(params: dict, X: np.ndarray, y: np.ndarray, rounds: int, **dataset_kw) -> lgb.Booster:
    base = {"verbose": -1, "seed": 0, "num_threads": 1, "deterministic": True}
    return lgb.train({**base, **params}, lgb.Dataset(X, y, **dataset_kw), num_boost_round=rounds)


def _onnx_predict(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    return OnnxScorer(lightgbm_to_onnx(booster), threads=1).predict(X)


def _missing_types(booster: lgb.Booster) -> set[str]:
    found: set[str] = set()
    stack = [t["tree_structure"] for t in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_index" in node:
            found.add(node["missing_type"])
            stack += [node["left_child"], node["right_child"]]
    return found


def _labels(task: str, signal: np.ndarray) -> np.ndarray:
    if task == "binary":
        return (signal > 0).astype(int)
    if task == "multiclass":
        return np.digitize(signal, np.quantile(signal, [0.25, 0.5, 0.75]))
    if task == "poisson":
        return np.random.default_rng(5).poisson(np.exp(np.clip(signal, -5, 5) / 2))
    return 100.0 * signal + 1000.0  # large targets: float32 sums would lose ~1e-4


CASES = {
    "binary": ({"objective": "binary", "num_leaves": 31}, 100, "binary"),
    "binary_sigmoid_0.5": ({"objective": "binary", "num_leaves": 31, "sigmoid": 0.5}, 50, "binary"),
    "multiclass_4": (
        {"objective": "multiclass", "num_class": 4, "num_leaves": 15},
        40,
        "multiclass",
    ),
    "regression_l2": ({"objective": "regression", "num_leaves": 63}, 100, "regression"),
    "regression_no_boost_from_average": (
        {"objective": "regression", "num_leaves": 31, "boost_from_average": False},
        50,
        "regression",
    ),
    "poisson": ({"objective": "poisson", "num_leaves": 31}, 80, "poisson"),
    # Random-forest mode divides the summed trees by the iteration count.
    "random_forest": (
        {
            "objective": "regression",
            "boosting": "rf",
            "bagging_freq": 1,
            "bagging_fraction": 0.6,
            "num_leaves": 31,
        },
        30,
        "regression",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_booster_predict(case, train, X_score):
    params, rounds, label_kind = CASES[case]
    X, signal = train
    booster = _fit(params, X, _labels(label_kind, signal), rounds)
    # The data must exercise both NaN conventions, or the test proves less than it claims.
    assert {"NaN", "None"} <= _missing_types(booster)
    assert np.isnan(X_score[:, NAN_TRAIN_FEATURES:]).any()

    expected = booster.predict(X_score)
    actual = _onnx_predict(booster, X_score)
    assert actual.dtype == np.float64
    result = check_parity(expected, actual, PARITY_TOL)
    assert result.passed, f"{case}: max |diff| {result.max_abs_diff}"
    assert result.n_rows == X_score.shape[0]


def test_early_stopped_booster_exports_best_iteration(train, X_score):
    X, signal = train
    y = _labels("binary", signal)
    booster = lgb.train(
        {
            "objective": "binary",
            "num_leaves": 63,
            "learning_rate": 0.3,
            "verbose": -1,
            "seed": 0,
            "num_threads": 1,
        },
        lgb.Dataset(X[:6000], y[:6000]),
        num_boost_round=300,
        valid_sets=[lgb.Dataset(X[6000:], y[6000:])],
        callbacks=[lgb.early_stopping(5, verbose=False)],
        keep_training_booster=True,  # keeps the trees after best_iteration in the booster
    )
    assert 0 < booster.best_iteration < booster.num_trees()
    assert check_parity(
        booster.predict(X_score), _onnx_predict(booster, X_score), PARITY_TOL
    ).passed


def test_zero_as_missing_matches(train, X_score):
    X, signal = train
    booster = _fit(
        {"objective": "binary", "zero_as_missing": True, "num_leaves": 31},
        X,
        _labels("binary", signal),
        60,
    )
    assert "Zero" in _missing_types(booster)
    assert check_parity(
        booster.predict(X_score), _onnx_predict(booster, X_score), PARITY_TOL
    ).passed


def test_single_leaf_trees(train, X_score):
    X, signal = train
    # A constant model: min_data_in_leaf larger than the data forbids any split;
    # its only leaf is the boost_from_average init score.
    const = _fit(
        {"objective": "binary", "min_data_in_leaf": 100_000},
        X[:500],
        _labels("binary", signal[:500]),
        5,
    )
    assert [t["num_leaves"] for t in const.dump_model()["tree_info"]] == [1]
    assert check_parity(const.predict(X_score), _onnx_predict(const, X_score), PARITY_TOL).passed

    # Multiclass with a rare class: its trees cannot reach min_sum_hessian_in_leaf
    # and stay single leaves, interleaved with the other classes' real trees.
    y = _labels("binary", signal)
    y[np.random.default_rng(7).random(len(y)) < 0.01] = 2
    mixed = _fit(
        {
            "objective": "multiclass",
            "num_class": 3,
            "num_leaves": 15,
            "min_sum_hessian_in_leaf": 150,
        },
        X,
        y,
        20,
    )
    leaves = [t["num_leaves"] for t in mixed.dump_model()["tree_info"]]
    assert 1 in leaves and max(leaves) > 1
    assert check_parity(mixed.predict(X_score), _onnx_predict(mixed, X_score), PARITY_TOL).passed


def test_naive_float32_export_is_measurably_worse():
    """Documents why the hand-written converter exists.

    LightGBM puts thresholds halfway between neighbouring training values, in
    double. For a float32 feature whose neighbours are one float32 step apart
    (a fine price grid, say), the float32 threshold rounds onto a data value,
    and every row holding that value takes the other branch.
    """
    import onnxruntime as ort
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    rng = np.random.default_rng(4)
    n = 10_000
    step = rng.integers(0, 60, size=n)
    grid = np.float32(1000.0) + np.arange(60, dtype=np.float32) * np.spacing(np.float32(1000.0))
    X = np.column_stack([grid[step], rng.normal(size=(n, 3)).astype(np.float32)]).astype(np.float64)
    y = ((step % 2 == 0) ^ (X[:, 1] > 0)).astype(int)
    booster = _fit({"objective": "binary", "num_leaves": 63, "min_data_in_leaf": 5}, X, y, 100)
    expected = booster.predict(X)
    ours = check_parity(expected, _onnx_predict(booster, X), PARITY_TOL)

    naive = convert_lightgbm(
        booster, initial_types=[("X", FloatTensorType([None, 4]))], zipmap=False, target_opset=15
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the naive graph declares a wrong label shape
    session = ort.InferenceSession(
        naive.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    naive_proba = session.run(None, {"X": X.astype(np.float32)})[1][:, 1]
    naive = check_parity(expected, naive_proba, 1e-5)

    assert ours.passed, ours
    assert not naive.passed and naive.max_abs_diff > 1e-3, naive
    assert naive.max_abs_diff > 1e6 * max(ours.max_abs_diff, 1e-16)


def test_metadata_and_graph_signature(train):
    X, signal = train
    booster = _fit(
        {"objective": "multiclass", "num_class": 3, "num_leaves": 7},
        X,
        np.digitize(signal, [-1.0, 1.0]),
        5,
    )
    names = [f"col_{i}" for i in range(N_FEATURES)]
    model = onnx.load_from_string(lightgbm_to_onnx(booster, feature_names=names))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["feature_names"]) == names
    assert meta["task"] == "multiclass"
    assert meta["producer"] == "mlops_assets"

    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "features" and inp.type.tensor_type.elem_type == TensorProto.DOUBLE
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1] == N_FEATURES
    assert out.name == "score" and out.type.tensor_type.elem_type == TensorProto.DOUBLE

    scorer = OnnxScorer(model.SerializeToString())
    assert (scorer.n_features, scorer.input_name, scorer.task) == (
        N_FEATURES,
        "features",
        "multiclass",
    )
    assert scorer.predict(X[:5]).shape == (5, 3)
    # Without explicit names the booster's own names are stored.
    default = onnx.load_from_string(lightgbm_to_onnx(booster))
    stored = {p.key: p.value for p in default.metadata_props}["feature_names"]
    assert json.loads(stored) == booster.feature_name()
    with pytest.raises(OnnxExportError, match="3 feature names given but the booster uses 12"):
        lightgbm_to_onnx(booster, feature_names=["a", "b", "c"])


def test_categorical_split_raises_naming_the_feature():
    rng = np.random.default_rng(11)
    n = 4000
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 10, size=n).astype(float)])
    y = np.isin(X[:, 1], [1, 4, 7]).astype(int)  # not expressible as one threshold
    booster = _fit(
        {"objective": "binary", "num_leaves": 7, "min_data_per_group": 5, "cat_smooth": 1},
        X,
        y,
        5,
        categorical_feature=[1],
        feature_name=["amount", "city"],
    )
    with pytest.raises(OnnxExportError, match="categorical split on feature 'city'"):
        lightgbm_to_onnx(booster)


@pytest.mark.parametrize("objective", ["multiclassova", "lambdarank"])
def test_unsupported_objective_raises(objective, train):
    X, signal = train
    y = _labels("multiclass", signal)
    params = {"objective": objective, "num_leaves": 7}
    kwargs = {}
    if objective == "multiclassova":
        params["num_class"] = 4
    else:
        kwargs["group"] = [100] * (len(y) // 100)
    booster = _fit(params, X, y, 3, **kwargs)
    with pytest.raises(OnnxExportError, match=objective):
        lightgbm_to_onnx(booster)


@pytest.fixture(scope="module")
def binary_onnx(train) -> bytes:
    X, signal = train
    return lightgbm_to_onnx(
        _fit({"objective": "binary", "num_leaves": 15}, X, _labels("binary", signal), 20)
    )


@pytest.mark.parametrize("corrupt", [b"", b"definitely not an onnx model", "half"])
def test_corrupted_bytes_raise_validation_error(corrupt, binary_onnx):
    data = binary_onnx[: len(binary_onnx) // 2] if corrupt == "half" else corrupt
    with pytest.raises(OnnxValidationError):
        OnnxScorer(data)
    with pytest.raises(OnnxValidationError, match="unloadable"):
        smoke_test(data, N_FEATURES)


def test_wrong_column_count_names_the_numbers(binary_onnx, X_score):
    scorer = OnnxScorer(binary_onnx)
    with pytest.raises(ValueError, match=r"expects 12 feature columns, got 11"):
        scorer.predict(X_score[:, :-1])
    with pytest.raises(
        OnnxValidationError, match=r"wrong input width: model takes 12 features, expected 13"
    ):
        smoke_test(binary_onnx, N_FEATURES + 1)


def test_scorer_casts_float32_and_non_contiguous_input(binary_onnx, X_score):
    scorer = OnnxScorer(binary_onnx, threads=1)
    fortran = np.asfortranarray(X_score[:50])
    np.testing.assert_array_equal(
        scorer.predict(fortran), scorer.predict(np.ascontiguousarray(fortran))
    )
    assert scorer.predict(X_score[:10].astype(np.float32)).dtype == np.float64


def test_smoke_test_accepts_good_models(binary_onnx, train):
    smoke_test(binary_onnx, N_FEATURES)
    X, signal = train
    multi = _fit(
        {"objective": "multiclass", "num_class": 3, "num_leaves": 7},
        X,
        np.digitize(signal, [-1.0, 1.0]),
        5,
    )
    smoke_test(lightgbm_to_onnx(multi), N_FEATURES)


def _tiny_model(make_output, task: str) -> bytes:
    """A hand-built double model, to feed smoke_test the failures exports should never have."""
    nodes, out_shape = make_output()
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.DOUBLE, ["N", 3])],
        [helper.make_tensor_value_info("score", TensorProto.DOUBLE, out_shape)],
        initializer=[
            helper.make_tensor("minus_one", TensorProto.DOUBLE, [], [-1.0]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    helper.set_model_props(model, {"task": task})
    return model.SerializeToString()


def test_smoke_test_rejects_non_finite_and_wrong_shape():
    def log_of_negative():  # log(x - 1) on the all-zero row is NaN
        return [
            helper.make_node("Add", ["features", "minus_one"], ["shifted"]),
            helper.make_node("Log", ["shifted"], ["logged"]),
            helper.make_node("ReduceSum", ["logged", "axes"], ["score"], keepdims=0),
        ], ["N"]

    def passthrough():  # a [N, 3] output where a regression must give [N]
        return [helper.make_node("Identity", ["features"], ["score"])], ["N", 3]

    with pytest.raises(OnnxValidationError, match="non-finite output"):
        smoke_test(_tiny_model(log_of_negative, "regression"), 3)
    with pytest.raises(OnnxValidationError, match="wrong output shape"):
        smoke_test(_tiny_model(passthrough, "regression"), 3)


def test_check_parity_semantics():
    a = np.array([0.1, 0.2, 0.3])
    exact = check_parity(a, a.copy(), 0.0)
    assert exact == ParityResult(max_abs_diff=0.0, tolerance=0.0, n_rows=3, passed=True)

    off = check_parity(a, a + np.array([0.0, 2e-6, -3e-6]), 1e-5)
    assert off.passed and off.max_abs_diff == pytest.approx(3e-6)
    assert not check_parity(a, a + 2e-5, 1e-5).passed

    for expected, actual in ((a, np.array([0.1, np.nan, 0.3])), (np.array([np.nan, 0.2, 0.3]), a)):
        result = check_parity(expected, actual, 1.0)
        assert not result.passed and result.max_abs_diff == float("inf")

    both_nan = np.array([np.nan, 0.2])
    assert not check_parity(both_nan, both_nan.copy(), 1.0).passed

    multi = np.full((4, 3), 1 / 3)
    assert check_parity(multi, multi, 1e-12).n_rows == 4
    with pytest.raises(ValueError, match="shape mismatch"):
        check_parity(np.zeros(4), np.zeros((4, 1)), 1e-5)
    with pytest.raises(ValueError):
        check_parity(np.zeros(0), np.zeros(0), 1e-5)
    with pytest.raises(ValueError):
        check_parity(a, a, -1.0)


def test_measure_latency_returns_positive_finite_numbers(binary_onnx, X_score):
    scorer = OnnxScorer(binary_onnx, threads=1)
    result = measure_latency(scorer, X_score[:50], single_row_iters=30, batch_rows=2_000)
    assert isinstance(result, LatencyResult)
    assert result.batch_rows == 2_000
    for value in (result.single_row_p50_ms, result.single_row_p99_ms, result.batch_rows_per_s):
        assert np.isfinite(value) and value > 0
    assert result.single_row_p99_ms >= result.single_row_p50_ms
