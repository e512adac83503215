"""Edge variants on small real models: int8 MLP, float32 LightGBM, their gate and storage.

Models are trained on 2000 generated rows with one thread (MLP: 8 epochs, hidden 128 x 64,
the trainer's default width, so the weights dominate the file and quantisation shows). Latency
is measured by the code under test but never asserted: only sizes, score differences and
metric deltas are.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import lightgbm as lgb
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mlops_assets.core.bundle import ModelBundle
from mlops_assets.core.edge import (
    DEFAULT_EDGE_RULES,
    EDGE_DIR,
    EdgeBuildError,
    EdgeRules,
    EdgeVariantError,
    build_edge_variants,
    edge_summary,
    edge_summary_markdown,
    evaluate_edge_variant,
    graph_to_float32,
    load_variants,
    save_variants,
)
from mlops_assets.core.features import FeatureEncoder
from mlops_assets.core.onnx_export import lightgbm_to_onnx
from mlops_assets.core.scoring import OnnxScorer
from mlops_assets.core.trainers.lightgbm_trainer import train_lightgbm
from mlops_assets.core.trainers.mlp_trainer import MLPConfig, train_mlp
from mlops_assets.spec import LightGBMSpec

NAMES = ["n0", "n1", "n2", "n3", "c_five", "c_three"]
CATEGORICAL = {4: 5, 5: 3}
TASKS = ["binary", "multiclass", "regression"]
MAIN_METRIC = {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}
MLP = MLPConfig(
    hidden_sizes=(128, 64),
    dropout=0.05,
    learning_rate=5e-3,
    batch_size=128,
    max_epochs=8,
    early_stopping_patience=3,
    num_threads=1,
)
LGBM = LightGBMSpec(num_boost_round=100, num_threads=1)
FAST_TIMING = {"latency_iters": 30, "batch_rows": 2000, "threads": 1}


def make_task(task: str, seed: int = 0, offset: float = 50.0):
    """4 numeric columns (n0 with NaN) and 2 categorical codes; 2000/500/500 rows."""
    rng = np.random.default_rng(seed)
    n = 3000
    X = np.empty((n, len(NAMES)))
    X[:, :4] = rng.normal(size=(n, 4)) * [1.0, 2.0, 0.5, 10.0] + [0.0, 5.0, -1.0, 100.0]
    X[:, 4] = rng.integers(0, 5, n)
    X[:, 5] = rng.integers(0, 3, n)
    X[rng.random(n) < 0.1, 0] = np.nan
    s = (
        np.nan_to_num(X[:, 0])
        + 0.5 * (X[:, 1] - 5.0)
        - 0.02 * (X[:, 3] - 100.0)
        + np.array([-1.0, 0.0, 1.0, 2.0, -2.0])[X[:, 4].astype(int)]
        + 0.7 * (X[:, 5] == 1)
    )
    if task == "binary":
        y = (s + rng.logistic(scale=0.3, size=n) > 0.3).astype(float)
    elif task == "multiclass":
        y = np.digitize(s + rng.normal(scale=0.3, size=n), np.quantile(s, [0.33, 0.66])).astype(
            float
        )
    else:
        y = offset + 20.0 * s + rng.normal(scale=5.0, size=n)
    return X[:2000], y[:2000], X[2000:2500], y[2000:2500], X[2500:], y[2500:]


def _bundle(model) -> ModelBundle:
    encoder = FeatureEncoder(tuple(NAMES), {n: "numeric" for n in NAMES}, {})
    meta = {"task": model.task, "trainer": model.trainer, "feature_names": NAMES, "threshold": 0.5}
    return ModelBundle(model.onnx_bytes, encoder, meta, model.native_bytes, model.native_format)


@functools.cache
def trained(trainer: str, task: str, offset: float = 50.0):
    Xtr, ytr, Xva, yva, Xh, yh = make_task(task, offset=offset)
    kw = {"task": task, "feature_names": NAMES, "seed": 0}
    kw["num_class"] = 3 if task == "multiclass" else None
    if trainer == "lightgbm":
        model = train_lightgbm(Xtr, ytr, Xva, yva, config=LGBM, **kw)
    else:
        model = train_mlp(Xtr, ytr, Xva, yva, categorical=CATEGORICAL, config=MLP, **kw)
    return _bundle(model), Xh, yh


@functools.cache
def variants_of(trainer: str, task: str, names: tuple[str, ...] | None = None):
    bundle, Xh, yh = trained(trainer, task)
    return build_edge_variants(
        bundle, Xh, yh, main_metric=MAIN_METRIC[task], threshold=0.5, variants=names, **FAST_TIMING
    )


def _only(variants, name):
    (variant,) = [v for v in variants if v.name == name]
    assert variant.error is None, variant.error
    return variant


def assert_contract(variant, bundle, Xh) -> None:
    """Same input and output names, types and shapes as the full model."""
    model = onnx.load_from_string(variant.onnx_bytes)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("features", "score")
    assert inp.type.tensor_type.elem_type == TensorProto.DOUBLE
    assert out.type.tensor_type.elem_type == TensorProto.DOUBLE
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [0, len(NAMES)]
    full, edge = OnnxScorer(bundle.onnx_bytes), OnnxScorer(variant.onnx_bytes)
    assert edge.task == full.task == bundle.task and edge.feature_names == NAMES
    got, want = edge.predict(Xh), full.predict(Xh)
    assert got.dtype == np.float64 and got.shape == want.shape
    assert edge.predict(Xh[:1]).shape == want[:1].shape
    props = {p.key: p.value for p in model.metadata_props}
    assert props["edge_variant"] == variant.name
    assert variant.size_bytes == len(variant.onnx_bytes) and variant.full_size_bytes == len(
        bundle.onnx_bytes
    )
    for timing in (variant.latency, variant.full_latency):  # recorded, never asserted on
        assert timing is not None and np.isfinite(timing.single_row_p99_ms)


# --- LightGBM: float32 compact -------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_lightgbm_float32_is_compact_and_within_parity(task):
    bundle, Xh, _ = trained("lightgbm", task)
    variant = _only(variants_of("lightgbm", task), "float32")
    assert_contract(variant, bundle, Xh)
    ensemble = [
        n
        for n in onnx.load_from_string(variant.onnx_bytes).graph.node
        if n.op_type == "TreeEnsemble"
    ]
    splits = {a.name: a.t for a in ensemble[0].attribute}["nodes_splits"]
    assert splits.data_type == TensorProto.FLOAT
    assert variant.size_ratio < 0.85  # measured 0.76 on all three tasks
    assert variant.normalised_score_diff < 1e-5  # leaf sums in float32, no branch flips
    assert abs(variant.relative_metric_delta) < 1e-5
    decision = evaluate_edge_variant(variant, DEFAULT_EDGE_RULES["float32"])
    assert decision.passed, decision.message()


def test_float32_rows_take_every_branch_lightgbm_takes():
    """Thresholds are rounded down: on float32 data no row crosses a split.

    Features take adjacent float32 values, so LightGBM's thresholds sit midway between two
    float32 values and rounding them to nearest would move some onto a data value above them.
    """
    rng = np.random.default_rng(3)
    steps = rng.integers(0, 40, size=(4000, 4))
    X = (np.float32(1.0) + steps.astype(np.float32) * np.float32(2.0**-23)).astype(np.float64)
    y = steps[:, 0] + steps[:, 1] * (steps[:, 2] > 20) + rng.logistic(scale=3, size=4000) > 30
    params = {
        "objective": "binary",
        "verbose": -1,
        "seed": 0,
        "num_threads": 1,
        "deterministic": True,
        "num_leaves": 15,
        "min_data_in_leaf": 5,
    }
    booster = lgb.train(params, lgb.Dataset(X, y.astype(int)), num_boost_round=50)
    thresholds, stack = [], [t["tree_structure"] for t in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_index" in node:
            thresholds.append((node["split_feature"], node["threshold"]))
            stack += [node["left_child"], node["right_child"]]
    values = [set(np.unique(X[:, j])) for j in range(4)]
    nearest_crosses = [
        (j, t)
        for j, t in thresholds
        if float(np.float32(t)) > t and float(np.float32(t)) in values[j]
    ]
    assert nearest_crosses, "the data must put values where nearest rounding would misroute them"
    compact = OnnxScorer(lightgbm_to_onnx(booster, precision="float32")).predict(X)
    assert np.max(np.abs(compact - booster.predict(X))) < 1e-6


def test_exporter_precision_option_leaves_the_double_export_alone():
    bundle, _, _ = trained("lightgbm", "binary")
    booster = lgb.Booster(model_str=bundle.native_bytes.decode())
    double = lightgbm_to_onnx(booster, NAMES)
    assert double == lightgbm_to_onnx(booster, NAMES, precision="double") == bundle.onnx_bytes
    assert "Cast" not in {n.op_type for n in onnx.load_from_string(double).graph.node}
    with pytest.raises(ValueError, match="precision must be one of"):
        lightgbm_to_onnx(booster, NAMES, precision="float16")


def test_float32_is_refused_where_parity_does_not_allow():
    """A regression target far from zero relative to its spread: float32 leaf sums lose the
    digits that matter, so the score-difference rule keeps the variant from shipping."""
    bundle, Xh, yh = trained("lightgbm", "regression", offset=2e6)
    (variant,) = build_edge_variants(
        bundle, Xh, yh, main_metric="rmse", threshold=0.5, **FAST_TIMING
    )
    assert variant.error is None and variant.normalised_score_diff > 1e-4
    decision = evaluate_edge_variant(variant, DEFAULT_EDGE_RULES["float32"])
    assert not decision.passed
    assert "max_score_diff" in {r.name for r in decision.failed_rules}


# --- MLP: int8 dynamic quantisation ----------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_mlp_int8_is_smaller_and_close(task):
    bundle, Xh, _ = trained("mlp", task)
    variant = _only(variants_of("mlp", task), "int8")
    assert_contract(variant, bundle, Xh)
    model = onnx.load_from_string(variant.onnx_bytes)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulInteger") == 2 and "Gemm" not in ops  # input layer stays float32
    int8_weights = [i for i in model.graph.initializer if i.data_type == TensorProto.INT8]
    assert sum(int(np.prod(i.dims)) for i in int8_weights) >= 128 * 64
    floats = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT]
    assert max(int(np.prod(i.dims)) for i in floats) < 128 * 64  # no float copy left behind
    assert variant.size_ratio < 0.4  # measured 0.30 to 0.31
    assert variant.normalised_score_diff < 0.05  # measured 0.012 to 0.018 (regression: in std)
    assert variant.relative_metric_delta < 0.01  # measured 0 to 0.22 %
    decision = evaluate_edge_variant(variant, DEFAULT_EDGE_RULES["int8"])
    assert decision.passed, decision.message()


def test_mlp_int8_build_is_deterministic():
    bundle, Xh, yh = trained("mlp", "binary")
    again = build_edge_variants(bundle, Xh, yh, main_metric="roc_auc", threshold=0.5, **FAST_TIMING)
    assert again[0].onnx_bytes == _only(variants_of("mlp", "binary"), "int8").onnx_bytes


def test_mlp_float32_variant_is_near_exact():
    bundle, Xh, _ = trained("mlp", "multiclass")
    variant = _only(variants_of("mlp", "multiclass", ("float32",)), "float32")
    assert_contract(variant, bundle, Xh)
    assert variant.max_abs_score_diff < 1e-5 and 0.45 < variant.size_ratio < 0.6
    assert all(
        i.data_type != TensorProto.DOUBLE
        for i in onnx.load_from_string(variant.onnx_bytes).graph.initializer
    )


def test_float32_rewrite_refuses_ops_it_cannot_retype():
    node = helper.make_node("RandomNormalLike", ["features"], ["score"], dtype=TensorProto.DOUBLE)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("features", TensorProto.DOUBLE, ["N", 2])],
        [helper.make_tensor_value_info("score", TensorProto.DOUBLE, ["N", 2])],
    )
    with pytest.raises(EdgeBuildError, match="RandomNormalLike"):
        graph_to_float32(helper.make_model(graph))


def test_unknown_or_inapplicable_variants():
    bundle, Xh, yh = trained("lightgbm", "binary")
    with pytest.raises(ValueError, match="not defined for trainer 'lightgbm'"):
        build_edge_variants(bundle, Xh, yh, main_metric="roc_auc", threshold=0.5, variants=["int8"])
    other = dataclasses.replace(bundle, meta={**bundle.meta, "trainer": "xgboost"})
    assert build_edge_variants(other, Xh, yh, main_metric="roc_auc", threshold=0.5) == []


def test_a_variant_that_cannot_be_built_fails_its_gate_without_raising():
    bundle, Xh, yh = trained("lightgbm", "binary")
    no_native = dataclasses.replace(bundle, native_bytes=None, native_format=None)
    (variant,) = build_edge_variants(
        no_native, Xh, yh, main_metric="roc_auc", threshold=0.5, **FAST_TIMING
    )
    assert variant.onnx_bytes == b"" and "no native LightGBM model" in variant.error
    decision = evaluate_edge_variant(variant, DEFAULT_EDGE_RULES["float32"])
    assert not decision.passed and [r.name for r in decision.failed_rules] == ["built"]


# --- the edge gate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule, tight, loose",
    [
        (
            "max_relative_metric_delta",
            {"max_relative_metric_delta": 1e-4},
            {"max_relative_metric_delta": 0.5},
        ),
        ("max_score_diff", {"max_score_diff": 1e-4}, {"max_score_diff": 0.5}),
        ("max_size_ratio", {"max_size_ratio": 0.1}, {"max_size_ratio": 1.0}),
        ("max_size_bytes", {"max_size_bytes": 1000}, {"max_size_bytes": 10_000_000}),
        ("max_p99_latency_ms", {"max_p99_latency_ms": 1e-6}, {"max_p99_latency_ms": 1e6}),
    ],
)
def test_each_rule_fails_when_its_limit_is_tight(rule, tight, loose):
    variant = _only(variants_of("mlp", "regression"), "int8")  # rmse worse by ~0.2 %
    off = EdgeRules(max_relative_metric_delta=None, max_score_diff=None, max_size_ratio=None)
    failing = evaluate_edge_variant(variant, dataclasses.replace(off, **tight))
    passing = evaluate_edge_variant(variant, dataclasses.replace(off, **loose))
    assert [r.name for r in failing.failed_rules] == [rule] and not failing.passed
    assert passing.passed and passing.rules[-1].name == rule
    assert failing.limits[rule] == tight[rule]


def test_nan_metric_fails_the_delta_rule():
    variant = _only(variants_of("mlp", "binary"), "int8")
    broken = dataclasses.replace(variant, metric=float("nan"))
    decision = evaluate_edge_variant(broken, EdgeRules())
    assert "max_relative_metric_delta" in {r.name for r in decision.failed_rules}


def test_decision_markdown_and_summary():
    variants = list(variants_of("mlp", "regression", ("int8", "float32")))
    decisions = [
        evaluate_edge_variant(variants[0], DEFAULT_EDGE_RULES["int8"]),
        evaluate_edge_variant(variants[1], EdgeRules(max_size_ratio=0.1)),
    ]
    assert decisions[0].passed and not decisions[1].passed
    md = decisions[1].to_markdown()
    assert "not shipped" in md and "| max_size_ratio |" in md and "FAIL" in md
    summary = edge_summary(variants, decisions)
    assert summary["shipped"] == ["int8"]
    row = summary["variants"][0]
    assert row["size_bytes"] == variants[0].size_bytes and row["main_metric"] == "rmse"
    assert row["metric_delta"] == pytest.approx(variants[0].metric - variants[0].full_metric)
    json.dumps(summary)
    table = edge_summary_markdown(variants, decisions)
    assert table.count("\n") == 3 and "not shipped: max_size_ratio" in table


# --- storage ----------------------------------------------------------------------------


def _saved(tmp_path):
    bundle, Xh, _ = trained("mlp", "binary")
    variants = list(variants_of("mlp", "binary", ("int8", "float32")))
    decisions = [
        evaluate_edge_variant(variants[0], DEFAULT_EDGE_RULES["int8"]),
        evaluate_edge_variant(variants[1], EdgeRules(max_size_ratio=0.1)),
    ]
    bundle.save(tmp_path)
    save_variants(variants, decisions, tmp_path)
    return variants, Xh


def test_save_load_round_trip(tmp_path):
    variants, Xh = _saved(tmp_path)
    files = sorted(p.name for p in (tmp_path / EDGE_DIR).iterdir())
    assert files == ["float32.json", "int8.json", "int8.onnx"]  # rejected: record only
    loaded = load_variants(tmp_path)
    int8, rejected = loaded["int8"], loaded["float32"]
    assert int8.shipped and int8.onnx_bytes == variants[0].onnx_bytes
    assert int8.sha256 == variants[0].sha256 and int8.decision.passed
    assert int8.summary["max_abs_score_diff"] == variants[0].max_abs_score_diff
    np.testing.assert_array_equal(
        int8.scorer().predict(Xh), OnnxScorer(variants[0].onnx_bytes).predict(Xh)
    )
    assert not rejected.shipped and rejected.onnx_bytes is None
    assert [r.name for r in rejected.decision.failed_rules] == ["max_size_ratio"]
    with pytest.raises(EdgeVariantError, match="was not shipped"):
        rejected.scorer()
    assert load_variants(tmp_path / "no_such_bundle") == {}


def test_saving_a_rejection_removes_previously_shipped_bytes(tmp_path):
    variants, _ = _saved(tmp_path)
    save_variants(
        variants[:1], [evaluate_edge_variant(variants[0], EdgeRules(max_size_bytes=10))], tmp_path
    )
    assert not (tmp_path / EDGE_DIR / "int8.onnx").exists()
    assert not load_variants(tmp_path)["int8"].shipped


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete", "bad_json"])
def test_corrupted_variant_is_refused_on_load(tmp_path, damage):
    _saved(tmp_path)
    onnx_path, json_path = tmp_path / EDGE_DIR / "int8.onnx", tmp_path / EDGE_DIR / "int8.json"
    data = bytearray(onnx_path.read_bytes())
    if damage == "flip_byte":
        data[len(data) // 2] ^= 0xFF
        onnx_path.write_bytes(bytes(data))
    elif damage == "truncate":
        onnx_path.write_bytes(bytes(data[:-10]))
    elif damage == "delete":
        onnx_path.unlink()
    else:
        json_path.write_text(json_path.read_text()[:-20])
    with pytest.raises(EdgeVariantError, match=r"edge/int8\.(onnx|json)"):
        load_variants(tmp_path)


def test_onnx_with_no_record_is_ignored(tmp_path):
    _saved(tmp_path)
    stray = tmp_path / EDGE_DIR / "fp16.onnx"
    stray.write_bytes(b"half-written")
    assert set(load_variants(tmp_path)) == {"int8", "float32"}


def test_records_are_standard_json_even_for_failed_builds(tmp_path):
    bundle, Xh, yh = trained("lightgbm", "binary")
    no_native = dataclasses.replace(bundle, native_bytes=None, native_format=None)
    variants = build_edge_variants(
        no_native, Xh, yh, main_metric="roc_auc", threshold=0.5, **FAST_TIMING
    )
    save_variants(variants, [evaluate_edge_variant(variants[0], EdgeRules())], tmp_path)
    text = (tmp_path / EDGE_DIR / "float32.json").read_text()
    record = json.loads(
        text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}")
    )
    assert record["shipped"] is False and record["variant"]["metric"] is None
    assert load_variants(tmp_path)["float32"].decision.failed_rules[0].name == "built"
