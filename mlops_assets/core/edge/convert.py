"""ONNX rewrites that turn a bundle's faithful double-precision model into an edge variant.

Every variant keeps the bundle's contract: one input 'features' tensor(double) [N, f] and one
output 'score' tensor(double) of the full model's shape. When the inside of the graph is
float32, a Cast sits at each end, so `OnnxScorer` and every caller run it unchanged.

* LightGBM "float32": the project's own exporter with ``precision="float32"`` (same NaN and
  zero semantics as the faithful export; thresholds rounded down, see ``onnx_export``).
* MLP "float32": the exported double graph rewritten to float32 (`graph_to_float32`).
* MLP "int8": that float32 graph with each ``Gemm`` split into ``MatMul`` + ``Add``, then
  ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, uint8 activations quantised at
  run time). Two steps are needed before the quantiser can do anything: dynamic quantisation
  handles float32 only, and its registry (IntegerOpsRegistry: Conv, MatMul, Attention, LSTM,
  Gather) has no Gemm, which is what the TorchScript exporter emits for ``nn.Linear``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from mlops_assets.core.onnx_export import INPUT_NAME, OUTPUT_NAME

__all__ = [
    "EdgeBuildError",
    "graph_to_float32",
    "lightgbm_float32",
    "mlp_float32",
    "mlp_int8",
    "split_gemm",
]

_F32_INPUT = f"{INPUT_NAME}_f32"
_F32_OUTPUT = f"{OUTPUT_NAME}_f32"
# Ops whose attributes name an output dtype other than through Cast's 'to'; none is in the
# exported MLP graph, and rewriting them blindly could change what they compute.
_DTYPE_ATTRIBUTE_OPS = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "EyeLike",
    "Multinomial",
    "Bernoulli",
}


class EdgeBuildError(ValueError):
    """An edge variant cannot be built from this model; the message says what is in the way."""


def lightgbm_float32(native_bytes: bytes, feature_names: list[str] | None, variant: str) -> bytes:
    """The compact LightGBM variant, exported from the bundle's native booster text."""
    import lightgbm as lgb

    from mlops_assets.core.onnx_export import lightgbm_to_onnx

    booster = lgb.Booster(model_str=native_bytes.decode())
    return _tag(
        onnx.load_from_string(lightgbm_to_onnx(booster, feature_names, precision="float32")),
        variant,
    )


def mlp_float32(onnx_bytes: bytes, variant: str) -> bytes:
    return _tag(graph_to_float32(onnx.load_from_string(onnx_bytes)), variant)


def mlp_int8(onnx_bytes: bytes, variant: str, *, keep_input_layer_float: bool = True) -> bytes:
    """int8 dynamic quantisation of the MLP.

    ``keep_input_layer_float``: the first MatMul reads the concatenated standardised numerics,
    missing indicators and embeddings. One per-tensor uint8 scale over those mixed ranges costs
    the most accuracy (measured on the test MLPs: max |delta p| 0.033 -> 0.020 binary; regression
    RMSE worse by 0.054 -> 0.006), while that layer is a small share of the weights.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = split_gemm(graph_to_float32(onnx.load_from_string(onnx_bytes)))
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    if not matmuls:
        raise EdgeBuildError("int8: the graph has no MatMul/Gemm with constant weights to quantise")
    exclude = matmuls[:1] if keep_input_layer_float else []
    with tempfile.TemporaryDirectory() as tmp, _quiet_preprocess_hint():
        path = Path(tmp) / "int8.onnx"
        # The quantiser writes a file; per_channel measured no better here, so per-tensor.
        quantize_dynamic(
            model, path, weight_type=QuantType.QInt8, per_channel=False, nodes_to_exclude=exclude
        )
        quantised = onnx.load_from_string(path.read_bytes())
    return _tag(quantised, variant, source=model)


def graph_to_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite every double tensor of the graph to float32, keeping the double I/O contract.

    Hand-written because neither onnx nor onnxruntime ships a double-to-float converter
    (onnxconverter-common only converts float32 to float16). It covers what the exported MLP
    uses: double initializers, Constant / ConstantOfShape values and Cast(to=DOUBLE); anything
    else that could carry a dtype is refused rather than guessed.
    """
    model = _copy(model)
    graph = model.graph
    _check_rewritable(graph)
    for init in graph.initializer:
        if init.data_type == TensorProto.DOUBLE:
            init.CopyFrom(_as_float32(init))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR and attr.t.data_type == TensorProto.DOUBLE:
                attr.t.CopyFrom(_as_float32(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.DOUBLE:
                attr.i = TensorProto.FLOAT
        node.input[:] = [_F32_INPUT if i == INPUT_NAME else i for i in node.input]
        node.output[:] = [_F32_OUTPUT if o == OUTPUT_NAME else o for o in node.output]
    del graph.value_info[:]  # recorded double types are stale; shape inference redoes them
    graph.node.insert(
        0,
        helper.make_node(
            "Cast", [INPUT_NAME], [_F32_INPUT], to=TensorProto.FLOAT, name="edge_cast_features"
        ),
    )
    graph.node.append(
        helper.make_node(
            "Cast", [_F32_OUTPUT], [OUTPUT_NAME], to=TensorProto.DOUBLE, name="edge_cast_score"
        )
    )
    return _checked(model)


def split_gemm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace ``Gemm(A, W, b)`` with ``MatMul(A, W') + b`` where W is a constant.

    Hand-written: the dynamic quantiser only quantises MatMul, and no onnx/onnxruntime tool
    does this split (onnxruntime's own optimiser fuses the other way). Only the plain form
    (alpha = beta = 1, transA = 0, constant W and bias) is split; any other Gemm stays float32.
    """
    model = _copy(model)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (
            node.op_type == "Gemm"
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
            and not attrs.get("transA", 0)
            and node.input[1] in inits
            and (len(node.input) < 3 or node.input[2] in inits)
        )
        if not plain:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        weight_name = f"{node.input[1]}_matmul"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), weight_name))
        name = node.name or node.output[0]
        if len(node.input) < 3 or not node.input[2]:
            nodes.append(
                helper.make_node(
                    "MatMul", [node.input[0], weight_name], [node.output[0]], name=f"{name}_matmul"
                )
            )
            continue
        product = f"{node.output[0]}_matmul"
        nodes.append(
            helper.make_node(
                "MatMul", [node.input[0], weight_name], [product], name=f"{name}_matmul"
            )
        )
        nodes.append(
            helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{name}_bias")
        )
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return _checked(model)


def _check_rewritable(graph: onnx.GraphProto) -> None:
    inputs, outputs = [i.name for i in graph.input], [o.name for o in graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise EdgeBuildError(
            f"expected the contract {INPUT_NAME} -> {OUTPUT_NAME}, got {inputs} -> {outputs}"
        )
    if graph.sparse_initializer:
        raise EdgeBuildError("sparse initializers are not supported by the float32 rewrite")
    for node in graph.node:
        if node.op_type in _DTYPE_ATTRIBUTE_OPS or node.domain not in ("", "ai.onnx"):
            raise EdgeBuildError(
                f"op {node.domain or 'ai.onnx'}.{node.op_type} is not supported "
                "by the float32 rewrite"
            )
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
            raise EdgeBuildError(
                f"op {node.op_type} has a subgraph; not supported by the float32 rewrite"
            )


def _as_float32(tensor: TensorProto) -> TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _checked(model: onnx.ModelProto) -> onnx.ModelProto:
    """Strict shape inference proves every node still type-checks after the rewrite."""
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    del model.graph.value_info[:]  # keep only what the rewrite wrote; sizes stay honest
    onnx.checker.check_model(model)
    return model


def _tag(model: onnx.ModelProto, variant: str, source: onnx.ModelProto | None = None) -> bytes:
    """Carry the full model's metadata (task, feature_names, ...) and name the variant."""
    props = {p.key: p.value for p in (source or model).metadata_props}
    props.update({p.key: p.value for p in model.metadata_props})
    props["edge_variant"] = variant
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model.SerializeToString()


class _DropPreprocessHint(logging.Filter):
    # quantize_dynamic logs a root-level warning recommending quant_pre_process. Its ORT graph
    # optimisation would fuse MatMul + Add back into Gemm (which then is not quantised), and
    # the shape inference it adds is not needed: every quantised MatMul has constant weights.
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


class _quiet_preprocess_hint:
    def __enter__(self):
        self._filter = _DropPreprocessHint()
        logging.getLogger().addFilter(self._filter)

    def __exit__(self, *exc):
        logging.getLogger().removeFilter(self._filter)
