"""Double-precision ONNX export of LightGBM boosters.

Why a hand-written converter: onnxmltools' ``convert_lightgbm`` emits
TreeEnsembleRegressor/Classifier with float32 thresholds, leaf weights and
output. It rejects a double input, and its ``split=`` option only sums chunks
of trees in double before casting back to float32. On 200 trees x 63 leaves,
scored on 1M rows, its probabilities differ from ``Booster.predict`` by up to
0.0083: a threshold rounded to float32 can land on a data value, so rows that
hold that value take the other branch, and the leaf sums lose digits too.

This module reads ``Booster.dump_model()`` (thresholds and leaf values are
printed with 17 significant digits, so they round-trip exactly) and emits
ai.onnx.ml opset 5 ``TreeEnsemble``. That operator takes double splits and
leaf weights and returns double sums in onnxruntime. The opset 3
TreeEnsembleRegressor accepts double attributes but always outputs float32.
Standard ONNX ops then apply LightGBM's link function. The result matches
``Booster.predict`` on float64 input to about 1e-15.

``precision="float32"`` builds the compact edge variant instead: the same graph
with float32 splits, leaf weights and arithmetic, wrapped in Cast nodes so the
contract (double 'features' in, double 'score' out) is unchanged. It is not
faithful in general (see above) and ships only through the
edge gate. Thresholds are rounded *down* to float32, not to nearest: for any x
that is itself a float32 value (data that was float32 before it reached the
model) ``x <= t`` then equals ``x <= float32(t)`` exactly, so such rows never
take the other branch; only the leaf sums lose digits. Double-only inputs can
still flip when x lies within a float32 step of a threshold.

LightGBM semantics reproduced here (include/LightGBM/tree.h, src/c_api.cpp):
* a numeric split sends x left when ``x <= threshold``;
* the dense-matrix prediction path turns any |x| <= kZeroThreshold (1e-35f)
  into exactly 0.0 before the trees see it;
* missing_type 'NaN': NaN follows default_left;
  missing_type 'None': NaN is treated as 0.0;
  missing_type 'Zero': 0.0 and NaN both follow default_left.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:  # pragma: no cover
    import lightgbm

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "PRECISIONS", "OnnxExportError", "lightgbm_to_onnx"]

INPUT_NAME = "features"
OUTPUT_NAME = "score"
PRODUCER = "mlops_assets"

# LightGBM's kZeroThreshold is declared `const double kZeroThreshold = 1e-35f`.
K_ZERO_THRESHOLD = float(np.float32(1e-35))

_OPSET_DEFAULT = 21  # first default-domain opset paired with ai.onnx.ml 5
_OPSET_ML = 5  # TreeEnsemble with double outputs
_IR_VERSION = 10  # onnx 1.16's IR; TreeEnsemble itself needs onnxruntime >= 1.20

_IDENTITY_OBJECTIVES = {"regression", "regression_l1", "huber", "fair", "quantile", "mape"}
_EXP_OBJECTIVES = {"poisson", "gamma", "tweedie"}
_SIGMOID_OBJECTIVES = {"binary", "cross_entropy"}

# precision -> numpy dtype of splits, leaf weights and the arithmetic after the trees.
PRECISIONS = {"double": np.float64, "float32": np.float32}


class OnnxExportError(ValueError):
    """The booster uses something this exporter cannot reproduce exactly."""


def lightgbm_to_onnx(
    booster: lightgbm.Booster,
    feature_names: list[str] | None = None,
    *,
    precision: str = "double",
) -> bytes:
    """Export a LightGBM booster to ONNX bytes that reproduce ``booster.predict``.

    Task is inferred from the booster's objective. Graph input: name 'features',
    tensor(double), shape [None, n_features]. Graph output: name 'score',
    tensor(double): binary -> shape [None] (probability of class 1);
    multiclass -> [None, n_classes] probabilities; regression -> [None] prediction.
    Must equal booster.predict(X) for float64 X (NaN allowed).

    ``precision="float32"``: the compact variant described in the module docstring;
    same input and output, float32 inside, close to but not equal to booster.predict.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    dump = booster.dump_model()
    n_features = int(dump["max_feature_idx"]) + 1
    names = _resolve_feature_names(dump, feature_names, n_features)
    objective = str(dump.get("objective", ""))
    link = _parse_objective(objective)
    n_targets = int(dump["num_tree_per_iteration"])
    if link["task"] == "multiclass" and n_targets != int(dump["num_class"]):
        raise OnnxExportError(
            f"objective {objective!r}: num_tree_per_iteration={n_targets} "
            f"!= num_class={dump['num_class']}"
        )
    if link["task"] != "multiclass" and n_targets != 1:
        raise OnnxExportError(
            f"objective {objective!r} with {n_targets} trees per iteration is not supported"
        )

    trees = dump["tree_info"]
    if not trees:
        raise OnnxExportError("the booster has no trees to export")
    ensemble = _Ensemble(names)
    for position, info in enumerate(trees):
        # LightGBM stores trees iteration-major: tree i scores class i % num_class.
        ensemble.add_tree(info, target=position % n_targets)

    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    graph_input, graph_output = INPUT_NAME, OUTPUT_NAME
    if dtype is not np.float64:
        # The contract stays double: cast in, compute in float32, cast the score back out.
        graph_input, graph_output = f"{INPUT_NAME}_f32", f"{OUTPUT_NAME}_f32"
        nodes.append(helper.make_node("Cast", [INPUT_NAME], [graph_input], to=TensorProto.FLOAT))
    tree_input = _zero_preprocessing(ensemble, n_features, nodes, inits, graph_input, dtype)
    nodes.append(ensemble.make_node(tree_input, "raw", n_targets, dtype))
    current = "raw"
    if dump.get("average_output"):
        # Random-forest mode: Predict() divides the raw sum by the iteration count.
        n_iterations = len(trees) // n_targets
        inits.append(_const("n_iterations", np.array(float(n_iterations), dtype=dtype)))
        nodes.append(helper.make_node("Div", [current, "n_iterations"], ["raw_avg"]))
        current = "raw_avg"
    out_shape = _link_nodes(link, current, n_targets, nodes, inits, graph_output, dtype)
    if dtype is not np.float64:
        nodes.append(helper.make_node("Cast", [graph_output], [OUTPUT_NAME], to=TensorProto.DOUBLE))

    graph = helper.make_graph(
        nodes,
        "lightgbm_double" if dtype is np.float64 else f"lightgbm_{precision}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.DOUBLE, ["N", n_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.DOUBLE, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", _OPSET_DEFAULT),
            helper.make_opsetid("ai.onnx.ml", _OPSET_ML),
        ],
        producer_name=PRODUCER,
    )
    model.ir_version = _IR_VERSION
    helper.set_model_props(
        model,
        {
            "feature_names": json.dumps(names),
            "task": link["task"],
            "producer": PRODUCER,
            "objective": objective,
            "n_outputs": str(n_targets),
            # Only the compact variant says so: the double export stays byte-identical.
            **({} if dtype is np.float64 else {"precision": precision}),
        },
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _resolve_feature_names(
    dump: dict[str, Any], given: list[str] | None, n_features: int
) -> list[str]:
    names = list(given) if given is not None else list(dump.get("feature_names") or [])
    if not names:
        names = [f"Column_{i}" for i in range(n_features)]
    if len(names) != n_features:
        raise OnnxExportError(
            f"{len(names)} feature names given but the booster uses {n_features} features"
        )
    return [str(n) for n in names]


def _parse_objective(objective: str) -> dict[str, Any]:
    """Map LightGBM's objective string (e.g. 'binary sigmoid:1') to a link function."""
    tokens = objective.split()
    if not tokens:
        raise OnnxExportError("the booster has no objective; cannot infer the task")
    name, rest = tokens[0], tokens[1:]
    params = dict(t.split(":", 1) for t in rest if ":" in t)
    flags = {t for t in rest if ":" not in t}
    if name in _SIGMOID_OBJECTIVES:
        # cross_entropy's ConvertOutput is the plain logistic function.
        return {"task": "binary", "link": "sigmoid", "sigmoid": float(params.get("sigmoid", 1.0))}
    if name == "multiclass":
        return {"task": "multiclass", "link": "softmax"}
    if name in _IDENTITY_OBJECTIVES:
        # 'reg_sqrt' trains on sqrt(label); predict() returns sign(x) * x * x.
        return {"task": "regression", "link": "signed_square" if "sqrt" in flags else "identity"}
    if name in _EXP_OBJECTIVES:
        return {"task": "regression", "link": "exp"}
    raise OnnxExportError(
        f"objective {name!r} is not supported by the ONNX exporter "
        "(supported: binary, cross_entropy, multiclass, regression, regression_l1, huber, "
        "fair, quantile, mape, poisson, gamma, tweedie)"
    )


def _const(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value), name=name)


def _zero_preprocessing(
    ensemble: _Ensemble,
    n_features: int,
    nodes: list,
    inits: list,
    input_name: str = INPUT_NAME,
    dtype: type = np.float64,
) -> str:
    """Map |x| <= kZeroThreshold to 0.0, or to NaN for 'Zero'-missing features.

    LightGBM's dense prediction path drops such values, so the trees see 0.0.
    For a 'Zero' feature, mapping zero to NaN lets ``nodes_missing_value_tracks_true``
    send it to default_left, exactly like NaN. The step is skipped when it cannot
    change any branch: no 'Zero' feature and no threshold in [-k, k).
    """
    if not ensemble.zero_features and not ensemble.has_tiny_threshold:
        return input_name
    fill = np.zeros(n_features, dtype=dtype)
    fill[sorted(ensemble.zero_features)] = np.nan
    inits.append(_const("k_zero", np.array(K_ZERO_THRESHOLD, dtype=dtype)))
    inits.append(_const("zero_fill", fill))
    nodes.append(helper.make_node("Abs", [input_name], ["abs_x"]))
    nodes.append(helper.make_node("LessOrEqual", ["abs_x", "k_zero"], ["is_zero"]))
    nodes.append(helper.make_node("Where", ["is_zero", "zero_fill", input_name], ["x_zeroed"]))
    return "x_zeroed"


def _link_nodes(
    link: dict[str, Any],
    current: str,
    n_targets: int,
    nodes: list,
    inits: list,
    output_name: str = OUTPUT_NAME,
    dtype: type = np.float64,
) -> list:
    """Append the objective's ConvertOutput and return the output shape."""
    kind = link["link"]
    if kind == "softmax":
        nodes.append(helper.make_node("Softmax", [current], [output_name], axis=-1))
        return ["N", n_targets]
    if kind == "sigmoid":
        if link["sigmoid"] != 1.0:
            inits.append(_const("sigmoid_coef", np.array(link["sigmoid"], dtype=dtype)))
            nodes.append(helper.make_node("Mul", [current, "sigmoid_coef"], ["scaled"]))
            current = "scaled"
        nodes.append(helper.make_node("Sigmoid", [current], ["linked"]))
        current = "linked"
    elif kind == "exp":
        nodes.append(helper.make_node("Exp", [current], ["linked"]))
        current = "linked"
    elif kind == "signed_square":
        nodes.append(helper.make_node("Sign", [current], ["sign"]))
        nodes.append(helper.make_node("Mul", ["sign", current], ["abs_raw"]))
        nodes.append(helper.make_node("Mul", ["abs_raw", current], ["linked"]))
        current = "linked"
    inits.append(_const("squeeze_axes", np.array([1], dtype=np.int64)))
    nodes.append(helper.make_node("Squeeze", [current, "squeeze_axes"], [output_name]))
    return ["N"]


class _Ensemble:
    """Accumulates trees in the TreeEnsemble (ai.onnx.ml 5) node/leaf layout."""

    def __init__(self, feature_names: list[str]):
        self.feature_names = feature_names
        self.roots: list[int] = []
        self.feature: list[int] = []
        self.split: list[float] = []
        self.true_id: list[int] = []
        self.true_leaf: list[int] = []
        self.false_id: list[int] = []
        self.false_leaf: list[int] = []
        self.nan_true: list[int] = []
        self.leaf_target: list[int] = []
        self.leaf_weight: list[float] = []
        self.zero_features: set[int] = set()
        self._missing_by_feature: dict[int, str] = {}
        self.has_tiny_threshold = False

    def _new_node(self) -> int:
        for column in (
            self.feature,
            self.split,
            self.true_id,
            self.true_leaf,
            self.false_id,
            self.false_leaf,
            self.nan_true,
        ):
            column.append(0)
        return len(self.feature) - 1

    def _new_leaf(self, node: dict[str, Any], target: int, tree_index: int) -> int:
        if "leaf_coeff" in node:
            raise OnnxExportError(
                f"tree {tree_index} has linear leaves (linear_tree=True); not supported"
            )
        self.leaf_target.append(target)
        self.leaf_weight.append(float(node["leaf_value"]))
        return len(self.leaf_weight) - 1

    def add_tree(self, info: dict[str, Any], target: int) -> None:
        tree_index = info.get("tree_index", len(self.roots))
        root = info["tree_structure"]
        root_id = self._new_node()
        self.roots.append(root_id)
        if "split_index" not in root:
            # Single-leaf tree: the spec's encoding is one node whose two
            # branches reference the same leaf.
            leaf = self._new_leaf(root, target, tree_index)
            self.true_id[root_id] = self.false_id[root_id] = leaf
            self.true_leaf[root_id] = self.false_leaf[root_id] = 1
            return
        # Iterative walk: trees can be deeper than Python's recursion limit.
        stack = [(root, root_id)]
        while stack:
            node, node_id = stack.pop()
            self._fill_split(node, node_id, tree_index)
            for child_key, ids, leafs in (
                ("left_child", self.true_id, self.true_leaf),
                ("right_child", self.false_id, self.false_leaf),
            ):
                child = node[child_key]
                if "split_index" in child:
                    child_id = self._new_node()
                    ids[node_id], leafs[node_id] = child_id, 0
                    stack.append((child, child_id))
                else:
                    ids[node_id], leafs[node_id] = self._new_leaf(child, target, tree_index), 1

    def _fill_split(self, node: dict[str, Any], node_id: int, tree_index: int) -> None:
        feature = int(node["split_feature"])
        name = self.feature_names[feature]
        decision = node.get("decision_type")
        if decision == "==":
            raise OnnxExportError(
                f"tree {tree_index} has a categorical split on feature {name!r}; categorical "
                "splits are not supported (encode categoricals as ordinal numeric codes "
                "before training)"
            )
        if decision != "<=":
            raise OnnxExportError(
                f"tree {tree_index}: unsupported decision_type {decision!r} on feature {name!r}"
            )
        threshold = float(node["threshold"])
        missing = node.get("missing_type", "None")
        default_left = bool(node.get("default_left", False))
        if missing == "NaN":
            nan_true = default_left
        elif missing == "None":
            nan_true = 0.0 <= threshold  # NaN is scored as 0.0
        elif missing == "Zero":
            nan_true = default_left  # zeros are rewritten to NaN before the trees
            self.zero_features.add(feature)
        else:
            raise OnnxExportError(
                f"tree {tree_index}: unknown missing_type {missing!r} on feature {name!r}"
            )
        # Zero-as-NaN preprocessing would break a 'NaN' split on the same feature.
        # LightGBM derives missing_type per feature, so this is only a safety net.
        seen = self._missing_by_feature.setdefault(feature, missing)
        if {seen, missing} == {"Zero", "NaN"}:
            raise OnnxExportError(f"feature {name!r} mixes missing_type 'Zero' and 'NaN' splits")
        if -K_ZERO_THRESHOLD <= threshold < K_ZERO_THRESHOLD:
            self.has_tiny_threshold = True
        self.feature[node_id] = feature
        self.split[node_id] = threshold
        self.nan_true[node_id] = int(nan_true)

    def make_node(
        self, input_name: str, output_name: str, n_targets: int, dtype: type = np.float64
    ) -> onnx.NodeProto:
        splits = np.asarray(self.split, dtype=np.float64)
        if dtype is not np.float64:
            splits = _round_down(splits, dtype)
        return helper.make_node(
            "TreeEnsemble",
            [input_name],
            [output_name],
            domain="ai.onnx.ml",
            n_targets=n_targets,
            aggregate_function=1,  # SUM
            post_transform=0,  # NONE: the link is applied with standard ops in double
            tree_roots=self.roots,
            nodes_featureids=self.feature,
            nodes_modes=numpy_helper.from_array(
                np.zeros(len(self.feature), dtype=np.uint8)
            ),  # BRANCH_LEQ
            nodes_splits=numpy_helper.from_array(splits),
            nodes_truenodeids=self.true_id,
            nodes_trueleafs=self.true_leaf,
            nodes_falsenodeids=self.false_id,
            nodes_falseleafs=self.false_leaf,
            nodes_missing_value_tracks_true=self.nan_true,
            leaf_targetids=self.leaf_target,
            leaf_weights=numpy_helper.from_array(np.asarray(self.leaf_weight, dtype=dtype)),
        )


def _round_down(values: np.ndarray, dtype: type) -> np.ndarray:
    """The largest ``dtype`` value <= each double (see the module docstring for why)."""
    with np.errstate(over="ignore"):  # LightGBM's 1e300 sentinels become inf, then float32 max
        rounded = values.astype(dtype)
    above = rounded.astype(np.float64) > values
    rounded[above] = np.nextafter(rounded[above], dtype(-np.inf))
    return rounded
