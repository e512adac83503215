"""Score ONNX models with onnxruntime and check them before promotion.

Everything here works on the serialized bytes so that what is checked is
exactly what ships: each scorer builds a fresh InferenceSession from bytes.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

__all__ = [
    "LatencyResult",
    "OnnxScorer",
    "OnnxValidationError",
    "ParityResult",
    "check_parity",
    "measure_latency",
    "smoke_test",
]

_OUTPUT_NAME = "score"
_PROBABILITY_TASKS = {"binary", "multiclass"}


class OnnxValidationError(ValueError):
    """The ONNX model cannot be loaded or does not behave as a scorer should."""


class OnnxScorer:
    """A single-input ONNX model that maps [n_rows, n_features] doubles to scores."""

    def __init__(self, onnx_bytes: bytes, threads: int | None = None):
        if not isinstance(onnx_bytes, (bytes, bytearray, memoryview)) or len(onnx_bytes) == 0:
            raise OnnxValidationError(
                f"expected non-empty ONNX bytes, got {type(onnx_bytes).__name__}"
            )
        options = ort.SessionOptions()
        # No busy-waiting between ops: on a shared 2-core box spinning threads steal the
        # core the work needs (measured: many-fold slowdowns under background load).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                bytes(onnx_bytes), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises several private exception types
            raise OnnxValidationError(
                f"ONNX model could not be loaded by onnxruntime: {exc}"
            ) from exc

        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise OnnxValidationError(f"expected exactly one model input, found {len(inputs)}")
        self.input_name: str = inputs[0].name
        meta = self._session.get_modelmeta().custom_metadata_map
        self.task: str | None = meta.get("task")
        self.feature_names: list[str] | None = _parse_names(meta.get("feature_names"))
        self.n_features: int = self._input_width(inputs[0].shape)

        outputs = [o.name for o in self._session.get_outputs()]
        self.output_name: str = _OUTPUT_NAME if _OUTPUT_NAME in outputs else outputs[0]

    def _input_width(self, shape: list) -> int:
        if len(shape) != 2:
            raise OnnxValidationError(
                f"expected a 2-D model input [rows, features], got shape {shape}"
            )
        width = shape[1]
        if isinstance(width, int) and width > 0:
            return width
        if self.feature_names:  # symbolic width: fall back to the exported names
            return len(self.feature_names)
        raise OnnxValidationError(
            f"model input width is not fixed ({width!r}) and no feature_names metadata"
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(
                f"expected a 2-D array [rows, {self.n_features} features], got {X.ndim}-D"
            )
        if X.shape[1] != self.n_features:
            raise ValueError(f"model expects {self.n_features} feature columns, got {X.shape[1]}")
        X = np.ascontiguousarray(X, dtype=np.float64)
        return self._session.run([self.output_name], {self.input_name: X})[0]


def _parse_names(raw: str | None) -> list[str] | None:
    if not raw:
        return None
    try:
        names = json.loads(raw)
    except ValueError:
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


@dataclass(frozen=True)
class ParityResult:
    max_abs_diff: float
    tolerance: float
    n_rows: int
    passed: bool


def check_parity(expected: np.ndarray, actual: np.ndarray, tolerance: float) -> ParityResult:
    """Compare two prediction arrays elementwise.

    Any NaN (or infinity) in either array is a failure with max_abs_diff = inf:
    a gate must never pass because NaN compares false against the tolerance.
    """
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if expected.shape != actual.shape:
        raise ValueError(f"shape mismatch: expected {expected.shape}, actual {actual.shape}")
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    if expected.size == 0:
        raise ValueError("no predictions to compare: parity on zero rows proves nothing")
    n_rows = int(expected.shape[0]) if expected.ndim else 1
    if not (np.isfinite(expected).all() and np.isfinite(actual).all()):
        return ParityResult(float("inf"), float(tolerance), n_rows, False)
    max_abs_diff = float(np.max(np.abs(expected - actual)))
    return ParityResult(max_abs_diff, float(tolerance), n_rows, max_abs_diff <= tolerance)


@dataclass(frozen=True)
class LatencyResult:
    single_row_p50_ms: float
    single_row_p99_ms: float
    batch_rows_per_s: float
    batch_rows: int


def measure_latency(
    scorer: OnnxScorer, X: np.ndarray, single_row_iters: int = 200, batch_rows: int = 10_000
) -> LatencyResult:
    """Time single-row calls (cycling through X) and one batch built by repeating X's rows."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"need a non-empty 2-D sample to time, got shape {X.shape}")
    if single_row_iters < 1 or batch_rows < 1:
        raise ValueError("single_row_iters and batch_rows must be >= 1")
    n = X.shape[0]
    rows = [X[i % n : i % n + 1] for i in range(single_row_iters)]
    for row in rows[:5]:  # warm-up: first runs allocate buffers and thread pools
        scorer.predict(row)
    single = []
    for row in rows:
        start = time.perf_counter_ns()
        scorer.predict(row)
        single.append((time.perf_counter_ns() - start) / 1e6)

    batch = X[np.arange(batch_rows) % n]
    scorer.predict(batch)
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        scorer.predict(batch)
        runs.append(time.perf_counter() - start)
    seconds = max(statistics.median(runs), 1e-9)
    return LatencyResult(
        single_row_p50_ms=float(np.percentile(single, 50)),
        single_row_p99_ms=float(np.percentile(single, 99)),
        batch_rows_per_s=batch_rows / seconds,
        batch_rows=batch_rows,
    )


def smoke_test(onnx_bytes: bytes, n_features: int) -> None:
    """Load the model in a fresh session and score one row and a 2-row batch.

    Raises OnnxValidationError naming what failed: unloadable model, wrong
    input width, inference error, wrong output shape or non-finite output.
    """
    try:
        scorer = OnnxScorer(onnx_bytes, threads=1)
    except OnnxValidationError as exc:
        raise OnnxValidationError(f"smoke test: model is unloadable: {exc}") from exc
    if scorer.n_features != n_features:
        raise OnnxValidationError(
            f"smoke test: wrong input width: model takes {scorer.n_features} features, "
            f"expected {n_features}"
        )
    # Deterministic synthetic rows: all zeros, then a spread of signed values.
    one = np.zeros((1, n_features))
    two = np.vstack([one, np.linspace(-2.0, 2.0, n_features)[None, :]])
    shapes = []
    for label, X in (("single row", one), ("2-row batch", two)):
        try:
            out = np.asarray(scorer.predict(X))
        except Exception as exc:
            raise OnnxValidationError(
                f"smoke test: inference failed on the {label}: {exc}"
            ) from exc
        _check_output_shape(out, X.shape[0], scorer.task, label)
        if not np.isfinite(out).all():
            raise OnnxValidationError(
                f"smoke test: non-finite output on the {label}: {out.tolist()}"
            )
        if scorer.task in _PROBABILITY_TASKS and ((out < 0).any() or (out > 1).any()):
            raise OnnxValidationError(
                f"smoke test: {scorer.task} output outside [0, 1] on the {label}"
            )
        shapes.append(out.shape[1:])
    if shapes[0] != shapes[1]:
        raise OnnxValidationError(
            f"smoke test: wrong output shape: per-row shape {shapes[0]} vs {shapes[1]}"
        )


def _check_output_shape(out: np.ndarray, n_rows: int, task: str | None, label: str) -> None:
    expected_ndim = {"binary": 1, "regression": 1, "multiclass": 2}.get(task or "")
    ok = out.ndim >= 1 and out.shape[0] == n_rows and out.ndim <= 2
    if expected_ndim is not None:
        ok = ok and out.ndim == expected_ndim
    if not ok:
        want = f"{expected_ndim}-D with {n_rows} rows" if expected_ndim else f"{n_rows} rows"
        raise OnnxValidationError(
            f"smoke test: wrong output shape on the {label}: got {out.shape}, want {want}"
        )
