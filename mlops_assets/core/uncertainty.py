"""How sure a holdout metric is: percentile bootstrap intervals for a metric and a group gap.

A gate rule judged on a point estimate flips with sampling noise when the holdout is small:
an AUC floor on 1,000 rows, a fairness gap between groups of 30. These intervals let the gate
fail a rule only when the data show it is broken, and say how wide the uncertainty was.
"""

from __future__ import annotations

import numpy as np

from mlops_assets.core.metrics import compute_metrics

RESAMPLES = 200


def _fast(task: str, y: np.ndarray, score: np.ndarray, metric: str) -> float | None:
    """The common metrics in plain numpy: hundreds of resamples through sklearn cost seconds."""
    if task == "binary" and metric == "roc_auc":
        from scipy.stats import rankdata

        positives = y == 1
        n_pos = int(positives.sum())
        n_neg = len(y) - n_pos
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        ranks = rankdata(score)   # mid-ranks for ties: the Mann-Whitney form of the AUC
        return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    if task == "regression" and metric == "rmse":
        return float(np.sqrt(np.mean((y - score) ** 2)))
    if task == "regression" and metric == "mae":
        return float(np.mean(np.abs(y - score)))
    return None


def _metric(task, y, score, metric, threshold) -> float:
    fast = _fast(task, y, score, metric)
    if fast is not None:
        return fast
    try:
        return float(compute_metrics(task, y, score, threshold).get(metric, np.nan))
    except ValueError:
        return float("nan")


def metric_interval(task: str, y: np.ndarray, score: np.ndarray, metric: str, threshold: float = 0.5, *,
                    confidence: float = 0.9, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Two-sided percentile bootstrap interval of `metric` on these rows."""
    rng = np.random.default_rng(seed)
    n = len(y)
    values = [_metric(task, y[idx], score[idx], metric, threshold)
              for idx in (rng.integers(0, n, n) for _ in range(resamples))]
    return _percentiles(values, confidence)


def gap_interval(task: str, y: np.ndarray, score: np.ndarray, groups: np.ndarray, gated: list[str], metric: str,
                 threshold: float = 0.5, *, confidence: float = 0.9, resamples: int = RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Interval of (best - worst group value of `metric`) over the `gated` groups, resampling
    within each group so every resample keeps each group's size."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in gated]
    gaps = []
    for _ in range(resamples):
        values = []
        for idx in members:
            pick = idx[rng.integers(0, len(idx), len(idx))]
            values.append(_metric(task, y[pick], score[pick], metric, threshold))
        values = [v for v in values if not np.isnan(v)]
        gaps.append(max(values) - min(values) if len(values) >= 2 else np.nan)
    return _percentiles(gaps, confidence)


def _percentiles(values, confidence: float) -> tuple[float, float]:
    finite = np.asarray([v for v in values if np.isfinite(v)])
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)
