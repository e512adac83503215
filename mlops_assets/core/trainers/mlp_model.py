"""The tabular MLP as a torch module, with its preprocessing built in.

This module imports torch at import time; import it lazily (inside functions),
because importing torch costs more than a second and definitions must load fast.

``TabularMLP`` takes the raw matrix produced by ``FeatureEncoder.transform``
(numeric values, NaN = missing; categorical ordinal codes 0..k-1, NaN = missing
or unseen) and does all of its preprocessing in ``forward``, so the exported
ONNX graph needs nothing but that matrix:

* numeric columns: ``(x - mean) / std`` with train-row statistics; a missing
  value (NaN or +-inf) becomes 0, i.e. the train mean. Each numeric column that
  had a missing value in the training rows also gets a 0/1 missing-indicator
  input. Columns complete in training get none: they are imputed silently.
* categorical columns with cardinality k: codes are truncated to integers;
  a code outside [0, k) or NaN maps to the reserved index k. Each column then
  goes through its own embedding table of k + 1 rows, or through a fixed
  identity table (one-hot of width k + 1) when the embedding width is 0.

``ScoreHead`` wraps the network with the output contract of the ONNX 'score':
binary -> sigmoid of the single logit, shape [N]; multiclass -> softmax,
[N, n_classes]; regression -> the de-standardised prediction, [N].
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import torch
from torch import nn

FORMAT_VERSION = 1
ONNX_OPSET = 17
PREDICT_CHUNK_ROWS = 65_536


class TabularMLP(nn.Module):
    def __init__(self, arch: dict):
        super().__init__()
        self.arch = dict(arch)
        num_idx = list(arch["numeric_columns"])
        ind_pos = list(arch["indicator_positions"])   # positions within num_idx
        cat_idx = list(arch["categorical_columns"])
        cards = list(arch["cardinalities"])
        dims = list(arch["embedding_dims"])            # 0 -> one-hot
        self.n_numeric, self.n_categorical = len(num_idx), len(cat_idx)
        self.register_buffer("num_idx", torch.tensor(num_idx, dtype=torch.long))
        self.register_buffer("ind_pos", torch.tensor(ind_pos, dtype=torch.long))
        self.register_buffer("cat_idx", torch.tensor(cat_idx, dtype=torch.long))
        self.register_buffer("num_mean", torch.zeros(len(num_idx), dtype=torch.float64))
        self.register_buffer("num_std", torch.ones(len(num_idx), dtype=torch.float64))
        self.register_buffer("cat_card", torch.tensor(cards, dtype=torch.float64))
        self.register_buffer("y_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("y_std", torch.ones((), dtype=torch.float64))
        self.embeddings = nn.ModuleList()
        width = len(num_idx) + len(ind_pos)
        for k, d in zip(cards, dims):
            if d == 0:
                table = nn.Embedding(k + 1, k + 1)
                table.weight.data.copy_(torch.eye(k + 1))
                table.weight.requires_grad_(False)
                width += k + 1
            else:
                table = nn.Embedding(k + 1, d)
                width += d
            self.embeddings.append(table)
        layers: list[nn.Module] = []
        for h in arch["hidden_sizes"]:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(arch["dropout"])]
            width = h
        layers.append(nn.Linear(width, arch["n_outputs"]))
        self.net = nn.Sequential(*layers)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Raw encoded matrix -> network input (standardised, indicators, embeddings)."""
        x = x.to(self.num_mean.dtype)
        parts = []
        if self.n_numeric:
            xn = torch.index_select(x, 1, self.num_idx)
            missing = ~torch.isfinite(xn)
            z = (xn - self.num_mean) / self.num_std
            parts.append(torch.where(missing, torch.zeros_like(z), z))
            if self.ind_pos.numel():
                parts.append(torch.index_select(missing, 1, self.ind_pos).to(x.dtype))
        if self.n_categorical:
            xc = torch.index_select(x, 1, self.cat_idx)
            known = torch.isfinite(xc) & (xc >= 0) & (xc < self.cat_card)
            codes = torch.where(known, xc, self.cat_card.expand_as(xc)).to(torch.long)
            for j, table in enumerate(self.embeddings):
                parts.append(table(codes[:, j]).to(x.dtype))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits (binary/regression: [N, 1], standardised target for regression)."""
        return self.net(self.inputs(x))


class ScoreHead(nn.Module):
    """The served contract: raw encoded float64 matrix -> 'score'."""

    def __init__(self, model: TabularMLP, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.model(features)
        if self.task == "binary":
            return torch.sigmoid(out).squeeze(1)
        if self.task == "multiclass":
            return torch.softmax(out, dim=1)
        return (out * self.model.y_std + self.model.y_mean).squeeze(1)


def serialise(model: TabularMLP, task: str) -> bytes:
    """Self-contained bytes: architecture, weights and preprocessing statistics (float64)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format_version": FORMAT_VERSION, "task": task, "arch": model.arch,
               "state_dict": state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def deserialise(native_bytes: bytes) -> ScoreHead:
    payload = torch.load(io.BytesIO(native_bytes), map_location="cpu", weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported MLP model format {payload.get('format_version')!r}")
    model = TabularMLP(payload["arch"]).double()
    model.load_state_dict(payload["state_dict"])
    return ScoreHead(model, payload["task"]).eval()


def predict(head: ScoreHead, X: np.ndarray) -> np.ndarray:
    """Native float64 predictions on CPU, in row chunks."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != head.model.arch["n_features"]:
        width = head.model.arch["n_features"]
        raise ValueError(f"model expects a 2-D array with {width} columns, got {X.shape}")
    outs = []
    with torch.inference_mode():
        for start in range(0, max(len(X), 1), PREDICT_CHUNK_ROWS):
            outs.append(head(torch.from_numpy(X[start:start + PREDICT_CHUNK_ROWS])).numpy())
    return np.concatenate(outs).astype(np.float64, copy=False)


def export_onnx(head, feature_names: list[str], task: str) -> bytes:
    """Export the float64 ``ScoreHead`` with the legacy TorchScript exporter.

    torch >= 2.9 defaults to the dynamo exporter, which needs the ``onnxscript``
    package; the TorchScript path (``dynamo=False``) has no extra dependency,
    exports this graph (Gather, Where, IsNaN/IsInf, Gemm) exactly and supports
    ``dynamic_axes``. Its DeprecationWarning is silenced here.
    """
    import onnx
    from onnx import helper

    from mlops_assets.core.onnx_export import INPUT_NAME, OUTPUT_NAME, PRODUCER

    n_features = head.model.arch["n_features"]
    example = torch.zeros(2, n_features, dtype=torch.float64)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            head, (example,), buffer, dynamo=False, opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}}, do_constant_folding=True,
        )
    model = onnx.load_from_string(buffer.getvalue())
    graph = model.graph
    names = ([i.name for i in graph.input], [o.name for o in graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise RuntimeError(f"unexpected ONNX signature {names[0]} -> {names[1]}")
    dims = graph.input[0].type.tensor_type.shape.dim
    if graph.input[0].type.tensor_type.elem_type != onnx.TensorProto.DOUBLE or dims[0].dim_value:
        raise RuntimeError("ONNX export lost the double input or the dynamic batch dimension")
    model.producer_name = PRODUCER
    del model.metadata_props[:]
    helper.set_model_props(model, {
        "feature_names": json.dumps([str(n) for n in feature_names]),
        "task": task, "producer": PRODUCER,
        "trainer": "mlp", "n_outputs": str(head.model.arch["n_outputs"]),
    })
    onnx.checker.check_model(model)
    return model.SerializeToString()
