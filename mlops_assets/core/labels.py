"""Label sanity: is a labelled batch's label distribution plausible next to the training labels?

A batch whose labels are all one class, or whose positive rate is many times the champion's,
is far more often a broken labelling job than a real change; training on it would poison
the next model (and its holdout, so the gate would not notice). The rule needs both a large
ratio and statistical significance, so small batches and ordinary variation pass.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy import stats

CHECK = "label_distribution"


def label_profile(y: np.ndarray, task: str, classes: list | None = None) -> dict:
    """What the champion's training labels looked like (stored in its bundle)."""
    y = np.asarray(y, dtype=np.float64)
    if task == "regression":
        return {"n": len(y), "mean": float(np.mean(y)), "std": float(np.std(y)),
                "quantiles": [float(q) for q in np.quantile(y, [0.05, 0.5, 0.95])]}
    labels = [str(c) for c in classes] if classes else ["0", "1"]
    counts = np.bincount(y.astype(int), minlength=len(labels))
    return {"n": len(y), "shares": {c: float(n / max(len(y), 1)) for c, n in zip(labels, counts)}}


def _class_labels(target: pl.Series, task: str) -> pl.Series:
    if task == "binary":
        return target.cast(pl.Float64).cast(pl.Int64).cast(pl.String)
    from mlops_assets.core.features import canonical_series

    return canonical_series(target)


def check_labels(target: pl.Series, task: str, reference: dict | None, *, min_rows: int, reject_single_class: bool,
                 max_rate_ratio: float, max_mean_shift_sd: float, alpha: float) -> list[str]:
    """Problems with a batch's labels, each naming the rule and the numbers; [] when plausible."""
    values = target.drop_nulls()
    n = values.len()
    if n == 0:
        return []
    problems = []
    if task in ("binary", "multiclass"):
        labels = _class_labels(values, task)
        counts = labels.value_counts()
        present = dict(zip(counts[labels.name].to_list(), counts["count"].to_list()))
        if reject_single_class and n >= min_rows and len(present) == 1:
            only = next(iter(present))
            problems.append(f"all {n} labels are class {only!r}: a classifier cannot learn from one class "
                            "(single-class rule)")
        if reference and n >= min_rows:
            problems += _share_problems(present, n, reference["shares"], max_rate_ratio, alpha)
    elif reference and n >= min_rows and reference.get("std"):
        y = values.cast(pl.Float64).to_numpy()
        shift = (float(np.mean(y)) - reference["mean"]) / reference["std"]
        p = 2 * stats.norm.sf(abs(shift) * math.sqrt(n))
        if abs(shift) > max_mean_shift_sd and p < alpha:
            problems.append(f"label mean {np.mean(y):.4g} is {shift:+.2f} training std from the training mean "
                            f"{reference['mean']:.4g} (max {max_mean_shift_sd}; p={p:.1e})")
    return problems


def _share_problems(present: dict, n: int, shares: dict, max_ratio: float, alpha: float) -> list[str]:
    problems = []
    for label, expected in shares.items():
        if not 0 < expected < 1:
            continue
        observed = present.get(label, 0) / n
        # Laplace-smoothed ratio: 0 of 160 against 7% reads as ~14x lower, not infinitely.
        ratio = (observed + 1 / n) / (expected + 1 / n)
        p = stats.binomtest(present.get(label, 0), n, expected).pvalue
        if (ratio > max_ratio or ratio < 1 / max_ratio) and p < alpha:
            problems.append(f"class {label!r} is {observed:.1%} of the labels vs {expected:.1%} in the training "
                            f"labels ({ratio:.2g}x; max {max_ratio:g}x either way; p={p:.1e})")
    return problems
