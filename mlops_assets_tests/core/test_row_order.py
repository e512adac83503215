"""Scoring a chunk in the tree-friendly row order gives the file-order scores, bit for bit."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mlops_assets.core.onnx_export import K_ZERO_THRESHOLD, lightgbm_to_onnx
from mlops_assets.core.row_order import MAX_CONDITIONS, TreeRowOrder, _graph_nodes
from mlops_assets.core.scoring import OnnxScorer

N_FEATURES = 8


def _data(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[:, 3] = rng.integers(0, 5, n)                      # a low-cardinality code
    X[:, 4] = np.where(rng.random(n) < 0.3, 0.0, X[:, 4])  # exact zeros
    X[rng.random(X.shape) < 0.05] = np.nan
    return X


def _booster(objective: str, **params) -> lgb.Booster:
    X = _data(0, 4000)
    logit = np.nan_to_num(X[:, 0]) + np.sin(3 * np.nan_to_num(X[:, 1])) + 0.5 * np.nan_to_num(X[:, 3])
    if objective == "binary":
        y = (logit > 0.3).astype(float)
    elif objective == "multiclass":
        y = np.digitize(logit, [-0.5, 0.5, 1.5]).astype(float)
        params["num_class"] = 4
    else:
        y = logit
    base = {"objective": objective, "verbose": -1, "seed": 0, "num_threads": 1, "num_leaves": 31}
    return lgb.train({**base, **params}, lgb.Dataset(X, y), num_boost_round=40)


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    out = {task: lightgbm_to_onnx(_booster(objective))
           for task, objective in (("binary", "binary"), ("multiclass", "multiclass"), ("regression", "regression"))}
    out["float32"] = lightgbm_to_onnx(_booster("binary"), precision="float32")
    out["zero_missing"] = lightgbm_to_onnx(_booster("regression", zero_as_missing=True))
    return out


def _rows(n: int = 20_000) -> np.ndarray:
    X = _data(1, n)
    rng = np.random.default_rng(2)
    mask = rng.random(X.shape) < 0.02
    X[mask] = rng.choice([0.0, -0.0, K_ZERO_THRESHOLD, -K_ZERO_THRESHOLD], size=int(mask.sum()))
    return X


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression", "float32", "zero_missing"])
def test_sorted_scores_equal_file_order_bit_for_bit(models, kind):
    order = TreeRowOrder.from_onnx(models[kind])
    assert order is not None and 0 < len(order.features) <= MAX_CONDITIONS
    scorer = OnnxScorer(models[kind], threads=1)
    X = _rows()
    for start, size in ((0, 20_000), (0, 4097), (5000, 1031)):   # odd sizes: ragged tails
        chunk = X[start:start + size]
        permutation = order.permutation(chunk)
        assert np.array_equal(np.sort(permutation), np.arange(len(chunk)))
        assert not np.array_equal(permutation, np.arange(len(chunk)))  # it does reorder
        ordered = scorer.predict(chunk[permutation])
        back = np.empty_like(ordered)
        back[permutation] = ordered
        assert np.array_equal(back, scorer.predict(chunk))


def test_the_conditions_are_those_most_rows_test_heaviest_first(models):
    """Weight of a condition: 2^-depth summed over its nodes (a root counts 1, its children
    1/2, ...), computed here from onnx's own reading of the graph."""
    model = onnx.load_from_string(models["binary"])
    node = next(n for n in model.graph.node if n.op_type == "TreeEnsemble")
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    splits = numpy_helper.to_array(a["nodes_splits"])
    weights: dict = {}
    stack = [(r, 0) for r in a["tree_roots"]]
    while stack:
        i, depth = stack.pop()
        key = (a["nodes_featureids"][i], float(splits[i]))
        weights[key] = weights.get(key, 0.0) + 0.5 ** depth
        stack += [(a["nodes_truenodeids"][i], depth + 1)] * (not a["nodes_trueleafs"][i])
        stack += [(a["nodes_falsenodeids"][i], depth + 1)] * (not a["nodes_falseleafs"][i])
    order = TreeRowOrder.from_onnx(models["binary"])
    chosen = [weights[(int(f), float(t))] for f, t in zip(order.features, order.thresholds, strict=True)]
    assert chosen == sorted(chosen, reverse=True)
    assert chosen[0] == max(weights.values())
    assert len(chosen) == min(MAX_CONDITIONS, len(weights))
    assert chosen[-1] >= sorted(weights.values(), reverse=True)[len(chosen) - 1]


@pytest.mark.parametrize("kind", ["binary", "multiclass", "float32", "zero_missing"])
def test_the_wire_reader_matches_onnx(models, kind):
    model = onnx.load_from_string(models[kind])
    ours = _graph_nodes(memoryview(models[kind]))
    assert [(op, domain) for op, domain, _ in ours] == [(n.op_type, n.domain) for n in model.graph.node]
    for (_, _, attrs), node in zip(ours, model.graph.node, strict=True):
        for attribute in node.attribute:
            value = helper.get_attribute_value(attribute)
            if isinstance(value, onnx.TensorProto):
                value = numpy_helper.to_array(value)
            if attribute.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS, onnx.AttributeProto.TENSOR):
                assert np.array_equal(np.asarray(attrs[attribute.name]), np.asarray(value)), attribute.name


def _graph(nodes, inits=()) -> bytes:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("features", TensorProto.DOUBLE, ["N", 2])],
        [helper.make_tensor_value_info("score", TensorProto.DOUBLE, None)], initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]).SerializeToString()


def test_graphs_that_are_not_row_wise_trees_keep_file_order(models):
    weights = numpy_helper.from_array(np.ones((2, 1)), name="w")
    assert TreeRowOrder.from_onnx(_graph([helper.make_node("MatMul", ["features", "w"], ["score"])], [weights])) is None
    assert TreeRowOrder.from_onnx(_graph([helper.make_node("Softmax", ["features"], ["score"], axis=0)])) is None
    assert TreeRowOrder.from_onnx(_graph([helper.make_node("Sigmoid", ["features"], ["score"])])) is None  # no trees
    assert TreeRowOrder.from_onnx(b"not an onnx model") is None
    assert TreeRowOrder.from_onnx(models["binary"][:1000]) is None  # truncated
