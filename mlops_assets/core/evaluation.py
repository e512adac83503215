"""Evaluate a candidate bundle on its holdout, against the champion, and apply the gate.

Everything is measured on the artifact that would be served: the ONNX model from the
registry, in a fresh onnxruntime session, compared with the stored native model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from mlops_assets.core.bundle import ModelBundle
from mlops_assets.core.features import encode_target
from mlops_assets.core.gate import GateDecision, HoldoutEvidence, evaluate_gate
from mlops_assets.core.metrics import FairnessReport, compute_metrics, slice_metrics
from mlops_assets.spec import PipelineSpec


@dataclass
class EvaluationResult:
    n_holdout: int
    metrics: dict[str, float]
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    fairness: FairnessReport | None
    latency: dict[str, float] | None
    parity_max_abs_diff: float
    smoke_test_error: str | None
    decision: GateDecision
    importance: dict[str, float] = field(default_factory=dict)
    # (candidate, champion) metrics on the champion's own frozen holdout rows, when it has one.
    reference_slice: tuple[dict[str, float], dict[str, float]] | None = None
    # Kept for plots, not serialised.
    y: np.ndarray | None = field(default=None, repr=False)
    scores: np.ndarray | None = field(default=None, repr=False)
    champion_scores: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {
            "n_holdout": self.n_holdout, "metrics": self.metrics,
            "champion_version": self.champion_version, "champion_metrics": self.champion_metrics,
            "fairness": asdict(self.fairness) if self.fairness else None, "latency": self.latency,
            "parity_max_abs_diff": self.parity_max_abs_diff, "smoke_test_error": self.smoke_test_error,
            "gate": self.decision.to_dict(), "permutation_importance": self.importance,
            "champion_holdout": None if self.reference_slice is None else
            {"candidate": self.reference_slice[0], "champion": self.reference_slice[1]},
        }


def evaluate_candidate(
    spec: PipelineSpec,
    bundle: ModelBundle,
    holdout: pl.DataFrame,
    champion: ModelBundle | None = None,
    champion_version: str | None = None,
    latency_iters: int = 200,
    champion_holdout: pl.DataFrame | None = None,
    rolled_back_version: str | None = None,
) -> EvaluationResult:
    """`champion_holdout`: the champion's own (frozen) holdout rows; the candidate must not be
    worse than the champion there either, whatever its new holdout says."""
    from mlops_assets.core.scoring import (
        OnnxValidationError,
        check_parity,
        measure_latency,
        smoke_test,
    )
    from mlops_assets.core.trainers.registry import native_predict, parity_tolerance

    X = bundle.encoder.transform(holdout)
    y = encode_target(holdout[spec.target], spec, bundle.classes or None)
    threshold = bundle.threshold
    native = native_predict(bundle.trainer, bundle.native_bytes, X)
    tolerance = parity_tolerance(bundle.trainer, spec.gate.onnx_parity_tolerance)

    smoke_error: str | None = None
    latency = None
    try:
        smoke_test(bundle.onnx_bytes, X.shape[1])
        onnx_scores = bundle.scorer.predict(X)
        parity = check_parity(native, onnx_scores, tolerance).max_abs_diff
        lat = measure_latency(bundle.scorer, X, single_row_iters=latency_iters, batch_rows=min(len(X), 10_000))
        latency = {"single_row_p50_ms": lat.single_row_p50_ms, "single_row_p99_ms": lat.single_row_p99_ms,
                   "batch_rows_per_s": lat.batch_rows_per_s}
        scores = onnx_scores
    except (OnnxValidationError, ValueError) as exc:
        smoke_error = f"ONNX infra-validation failed: {exc}"
        parity = float("inf")
        scores = native  # still report quality, but the gate cannot pass

    metrics = compute_metrics(spec.task, y, scores, threshold)
    champion_metrics = None
    champion_scores = None
    if champion is not None:
        champion_scores = champion.score(holdout)
        champion_metrics = compute_metrics(
            spec.task, y, champion_scores, champion.meta.get("threshold", threshold)
        )

    reference_slice = None
    if champion is not None and champion_holdout is not None and champion_holdout.height:
        y_ref = encode_target(champion_holdout[spec.target], spec, bundle.classes or None)
        reference_slice = (
            compute_metrics(spec.task, y_ref, bundle.score(champion_holdout), threshold),
            compute_metrics(spec.task, y_ref, champion.score(champion_holdout), champion.threshold),
        )

    fairness = None
    groups = None
    if spec.group_column:
        groups = holdout[spec.group_column].cast(pl.String).to_numpy().astype(str)
        fairness = slice_metrics(
            spec.task, y, scores, groups, spec.main_metric, threshold,
            min_group_rows=spec.gate.fairness_min_group_rows,
            min_group_positives=spec.gate.fairness_min_group_positives,
        )
    evidence = holdout_evidence(spec, y, scores, threshold, fairness, groups)
    decision = evaluate_gate(
        spec.gate,
        main_metric=spec.main_metric,
        challenger=metrics,
        champion=champion_metrics,
        parity_max_abs_diff=parity,
        smoke_test_error=smoke_error,
        fairness_gap=fairness.main_metric_gap if fairness else None,
        p99_latency_ms=latency["single_row_p99_ms"] if latency else None,
        parity_tolerance=tolerance,
        reference_slice=reference_slice,
        rolled_back_version=rolled_back_version,
        evidence=evidence,
    )
    return EvaluationResult(
        n_holdout=holdout.height, metrics=metrics, champion_version=champion_version,
        champion_metrics=champion_metrics, fairness=fairness, latency=latency,
        parity_max_abs_diff=float(parity), smoke_test_error=smoke_error, decision=decision,
        importance=permutation_importance(spec, bundle, X, y, metrics[spec.main_metric], threshold)
        if smoke_error is None else {},
        y=y, scores=scores, champion_scores=champion_scores, reference_slice=reference_slice,
    )


def holdout_evidence(spec: PipelineSpec, y: np.ndarray, scores: np.ndarray, threshold: float,
                     fairness: FairnessReport | None, groups: np.ndarray | None) -> HoldoutEvidence:
    """The holdout's size and the bootstrap intervals the gate's sample-size-aware rules need."""
    from mlops_assets.core.uncertainty import gap_interval, metric_interval

    gate, seed = spec.gate, spec.model.seed
    rarest = None
    if spec.task != "regression":
        k = scores.shape[1] if spec.task == "multiclass" else 2
        rarest = int(np.bincount(y.astype(np.int64), minlength=k).min())
    metric_iv = None
    if gate.min_main_metric is not None:
        metric_iv = metric_interval(spec.task, y, scores, spec.main_metric, threshold,
                                    confidence=gate.confidence, seed=seed)
    gap_iv, ungated = None, ()
    if fairness is not None:
        ungated = tuple(g["group"] for g in fairness.groups if not g.get("gated"))
        if gate.max_fairness_gap is not None and len(fairness.gated) >= 2:
            gap_iv = gap_interval(spec.task, y, scores, groups, list(fairness.gated), spec.main_metric, threshold,
                                  confidence=gate.confidence, seed=seed)
    return HoldoutEvidence(len(y), rarest, metric_iv, gap_iv, ungated, gate.confidence)


def permutation_importance(spec: PipelineSpec, bundle: ModelBundle, X: np.ndarray, y: np.ndarray,
                           baseline: float, threshold: float, max_rows: int = 5_000) -> dict[str, float]:
    """Drop in the main metric when one feature is shuffled: model-agnostic, so the same
    table describes LightGBM and MLP models."""
    from mlops_assets.core.metrics import HIGHER_IS_BETTER

    rng = np.random.default_rng(spec.model.seed)
    rows = rng.choice(len(X), size=min(len(X), max_rows), replace=False)
    Xs, ys = X[rows], y[rows]
    base = compute_metrics(spec.task, ys, bundle.scorer.predict(Xs), threshold)[spec.main_metric]
    sign = 1.0 if HIGHER_IS_BETTER.get(spec.main_metric, True) else -1.0
    out: dict[str, float] = {}
    for j, name in enumerate(bundle.encoder.feature_names):
        shuffled = Xs.copy()
        shuffled[:, j] = rng.permutation(shuffled[:, j])
        value = compute_metrics(spec.task, ys, bundle.scorer.predict(shuffled), threshold)[spec.main_metric]
        out[name] = float(sign * (base - value))
    return out
