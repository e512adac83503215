"""Build a bundle's edge variants and measure each against the full model on the holdout."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from mlops_assets.core.edge.convert import EdgeBuildError, lightgbm_float32, mlp_float32, mlp_int8
from mlops_assets.core.metrics import HIGHER_IS_BETTER, compute_metrics
from mlops_assets.core.onnx_export import INPUT_NAME, OUTPUT_NAME

if TYPE_CHECKING:  # scoring imports onnxruntime: only when variants are built
    from mlops_assets.core.bundle import ModelBundle
    from mlops_assets.core.scoring import LatencyResult

__all__ = [
    "DEFAULT_VARIANTS",
    "VARIANTS_BY_TRAINER",
    "EdgeVariant",
    "build_edge_variants",
    "check_contract",
]

VARIANTS_BY_TRAINER: dict[str, tuple[str, ...]] = {
    "mlp": ("int8", "float32"),
    "lightgbm": ("float32",),
}
DEFAULT_VARIANTS: dict[str, tuple[str, ...]] = {"mlp": ("int8",), "lightgbm": ("float32",)}
METHODS = {
    (
        "mlp",
        "int8",
    ): "onnxruntime quantize_dynamic: int8 weights, uint8 activations (input layer float32)",
    ("mlp", "float32"): "double graph rewritten to float32, Cast at input and output",
    ("lightgbm", "float32"): "TreeEnsemble with float32 splits (rounded down) and leaf weights",
}
_PROBABILITY_TASKS = ("binary", "multiclass")


@dataclass(frozen=True)
class EdgeVariant:
    """One edge variant of a bundle's model and how it compares to the full model."""

    name: str  # "int8", "float32"
    trainer: str
    task: str
    method: str
    onnx_bytes: bytes  # empty when the build failed (see error)
    size_bytes: int
    full_size_bytes: int
    latency: LatencyResult | None
    full_latency: LatencyResult | None
    max_abs_score_diff: float  # max |variant - full| over every holdout score
    score_scale: float  # 1 for probabilities; full prediction std for regression
    main_metric: str
    metric: float
    full_metric: float
    n_rows: int
    error: str | None = None  # why it could not be built or breaks the contract

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.onnx_bytes).hexdigest()

    @property
    def size_ratio(self) -> float:
        return self.size_bytes / self.full_size_bytes if self.full_size_bytes else float("nan")

    @property
    def metric_delta(self) -> float:
        """How much worse the main metric is than the full model's (negative: better)."""
        higher = HIGHER_IS_BETTER.get(self.main_metric, True)
        return (self.full_metric - self.metric) if higher else (self.metric - self.full_metric)

    @property
    def relative_metric_delta(self) -> float:
        return self.metric_delta / max(abs(self.full_metric), 1e-12)

    @property
    def normalised_score_diff(self) -> float:
        return self.max_abs_score_diff / self.score_scale

    @property
    def single_row_speedup(self) -> float:
        """Full model's single-row p50 over the variant's (> 1: the variant is faster)."""
        return _ratio(
            self.full_latency and self.full_latency.single_row_p50_ms,
            self.latency and self.latency.single_row_p50_ms,
        )

    @property
    def batch_speedup(self) -> float:
        return _ratio(
            self.latency and self.latency.batch_rows_per_s,
            self.full_latency and self.full_latency.batch_rows_per_s,
        )

    def to_dict(self) -> dict:
        """Everything but the bytes, as JSON-ready data (NaN stays NaN: json writes it)."""
        out = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("onnx_bytes", "latency", "full_latency")
        }
        out.update(
            sha256=self.sha256 if self.onnx_bytes else None,
            latency=asdict(self.latency) if self.latency else None,
            full_latency=asdict(self.full_latency) if self.full_latency else None,
            size_ratio=self.size_ratio,
            metric_delta=self.metric_delta,
            relative_metric_delta=self.relative_metric_delta,
            normalised_score_diff=self.normalised_score_diff,
            single_row_speedup=self.single_row_speedup,
            batch_speedup=self.batch_speedup,
        )
        return out


def _ratio(numerator: float | None, denominator: float | None) -> float:
    if not numerator or not denominator:
        return float("nan")
    return float(numerator) / float(denominator)


def build_edge_variants(
    bundle: ModelBundle,
    X_holdout: np.ndarray,
    y_holdout: np.ndarray,
    *,
    main_metric: str,
    threshold: float,
    variants: Sequence[str] | None = None,
    latency_iters: int = 200,
    batch_rows: int = 10_000,
    threads: int | None = None,
    keep_input_layer_float: bool = True,
) -> list[EdgeVariant]:
    """Build and measure the edge variants of `bundle` on encoded holdout rows.

    ``variants`` defaults to DEFAULT_VARIANTS for the bundle's trainer (none for an unknown
    trainer). A variant that cannot be built, or breaks the contract, comes back with ``error``
    set and fails its gate; nothing here raises for it, so the full model is never blocked.
    """
    trainer = str(bundle.meta.get("trainer", ""))
    names = tuple(variants) if variants is not None else DEFAULT_VARIANTS.get(trainer, ())
    unknown = [n for n in names if n not in VARIANTS_BY_TRAINER.get(trainer, ())]
    if unknown:
        raise ValueError(
            f"edge variants {unknown} are not defined for trainer {trainer!r} "
            f"(defined: {list(VARIANTS_BY_TRAINER.get(trainer, ()))})"
        )
    if not names:
        return []
    X = np.ascontiguousarray(X_holdout, dtype=np.float64)
    y = np.asarray(y_holdout)
    if X.ndim != 2 or X.shape[0] == 0 or len(y) != X.shape[0]:
        raise ValueError(
            f"need a non-empty 2-D holdout with one label per row, got X {X.shape}, y {y.shape}"
        )
    from mlops_assets.core.scoring import OnnxScorer, measure_latency

    full = OnnxScorer(bundle.onnx_bytes, threads=threads)
    full_score = full.predict(X)
    full_metric = _main_metric(bundle.task, y, full_score, threshold, main_metric)
    full_latency = measure_latency(full, X, latency_iters, batch_rows)
    scale = 1.0 if bundle.task in _PROBABILITY_TASKS else float(np.std(full_score)) or 1.0
    common = {
        "trainer": trainer,
        "task": bundle.task,
        "full_size_bytes": len(bundle.onnx_bytes),
        "full_latency": full_latency,
        "score_scale": scale,
        "main_metric": main_metric,
        "full_metric": full_metric,
        "n_rows": int(X.shape[0]),
    }
    built = []
    for name in names:
        method = METHODS[(trainer, name)]
        onnx_bytes = b""
        try:
            onnx_bytes = _convert(bundle, trainer, name, keep_input_layer_float)
            scorer = OnnxScorer(onnx_bytes, threads=threads)
            score = scorer.predict(X)
            check_contract(onnx_bytes, X.shape[1], full_score, score)
            built.append(
                EdgeVariant(
                    name=name,
                    method=method,
                    onnx_bytes=onnx_bytes,
                    size_bytes=len(onnx_bytes),
                    latency=measure_latency(scorer, X, latency_iters, batch_rows),
                    max_abs_score_diff=float(np.max(np.abs(score - full_score))),
                    metric=_main_metric(bundle.task, y, score, threshold, main_metric),
                    **common,
                )
            )
        # An optional artifact: whatever breaks (the quantiser, onnxruntime, the contract) is
        # recorded on the variant and fails its gate; it must never fail the full model's run.
        except Exception as exc:  # noqa: BLE001
            built.append(
                EdgeVariant(
                    name=name,
                    method=method,
                    onnx_bytes=b"",
                    size_bytes=len(onnx_bytes),
                    latency=None,
                    max_abs_score_diff=float("nan"),
                    metric=float("nan"),
                    error=f"{type(exc).__name__}: {exc}",
                    **common,
                )
            )
    return built


def _convert(bundle: ModelBundle, trainer: str, name: str, keep_input_layer_float: bool) -> bytes:
    if trainer == "lightgbm":
        if bundle.native_bytes is None or bundle.native_format != "txt":
            raise EdgeBuildError("float32: the bundle has no native LightGBM model (model.txt)")
        return lightgbm_float32(bundle.native_bytes, bundle.meta.get("feature_names"), name)
    if name == "int8":
        return mlp_int8(bundle.onnx_bytes, name, keep_input_layer_float=keep_input_layer_float)
    return mlp_float32(bundle.onnx_bytes, name)


def _main_metric(task: str, y: np.ndarray, score: np.ndarray, threshold: float, name: str) -> float:
    with warnings.catch_warnings():
        # A float32 softmax sums to 1 within ~1e-7, above sklearn's 1.5e-8 check for log_loss;
        # the loss itself is unaffected at that size, so the warning is only noise here.
        warnings.filterwarnings("ignore", message="The y_prob values do not sum to one")
        metrics = compute_metrics(task, y, score, threshold)
    if name not in metrics:
        raise ValueError(
            f"main metric {name!r} is not computed for task {task!r} (available: {sorted(metrics)})"
        )
    return float(metrics[name])


def check_contract(
    onnx_bytes: bytes, n_features: int, full_score: np.ndarray, score: np.ndarray
) -> None:
    """Raise EdgeBuildError unless the variant serves exactly like the full model."""
    graph = onnx.load_from_string(onnx_bytes).graph
    signature = ([i.name for i in graph.input], [o.name for o in graph.output])
    if signature != ([INPUT_NAME], [OUTPUT_NAME]):
        raise EdgeBuildError(
            f"signature {signature[0]} -> {signature[1]}, expected "
            f"['{INPUT_NAME}'] -> ['{OUTPUT_NAME}']"
        )
    for value, what in ((graph.input[0], "input"), (graph.output[0], "output")):
        if value.type.tensor_type.elem_type != onnx.TensorProto.DOUBLE:
            name = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)
            raise EdgeBuildError(f"{what} '{value.name}' is {name}, expected DOUBLE")
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 2 or dims[0].dim_value or dims[1].dim_value not in (0, n_features):
        raise EdgeBuildError(
            f"input shape {[d.dim_value or d.dim_param for d in dims]}, expected [N, {n_features}]"
        )
    from mlops_assets.core.scoring import smoke_test

    smoke_test(onnx_bytes, n_features)
    if score.dtype != np.float64 or score.shape != full_score.shape:
        raise EdgeBuildError(
            f"score {score.dtype} {score.shape}, full model gives "
            f"{full_score.dtype} {full_score.shape}"
        )
    if not np.isfinite(score).all():
        raise EdgeBuildError("non-finite scores on holdout rows")
