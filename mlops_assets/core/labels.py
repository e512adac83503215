"""Label sanity: is a labelled batch's label distribution plausible for its rows?

A batch whose labels are all one class, or whose positive rate is many times the champion's,
is far more often a broken labelling job than a real change; training on it would poison
the next model (and its holdout, so the gate would not notice). The rule needs both a large
ratio and statistical significance, so small batches and ordinary variation pass.

The comparison is with what the champion *predicts for these rows* when it can score them
(`expected_label_profile`), not with its training labels: a genuine population shift moves the
base rate too (more risky applicants, more defaults), and the champion's predictions move with
it, while a broken labelling job moves the labels alone. Compared with the training labels, a
1-sd shift of the demo's key feature (default rate 11% -> 33%) read as poisoned labels and the
loop never retrained on the shift.
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


def expected_label_profile(training: dict, scores: np.ndarray, task: str) -> dict:
    """The label distribution the champion expects for a batch, from its scores on the batch's
    rows (binary: P(class 1) per row; multiclass: a probability per class; regression: the
    prediction). The training profile's size and spread are kept; only the centre moves."""
    scores = np.asarray(scores, dtype=np.float64)
    if task == "regression":
        return {**training, "mean": float(np.nanmean(scores)), "basis": "the champion's predictions for these rows"}
    labels = list(training["shares"])
    if task == "binary":
        positive = float(np.nanmean(scores))
        shares = {labels[0]: 1.0 - positive, labels[1]: positive}
    else:
        shares = dict(zip(labels, (float(v) for v in np.nanmean(scores, axis=0))))
    return {**training, "shares": shares, "basis": "the champion's predictions for these rows"}


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
            problems += _share_problems(present, n, reference["shares"], max_rate_ratio, alpha, _basis(reference))
    elif reference and n >= min_rows and reference.get("std"):
        y = values.cast(pl.Float64).to_numpy()
        shift = (float(np.mean(y)) - reference["mean"]) / reference["std"]
        p = 2 * stats.norm.sf(abs(shift) * math.sqrt(n))
        if abs(shift) > max_mean_shift_sd and p < alpha:
            problems.append(f"label mean {np.mean(y):.4g} is {shift:+.2f} training std from the mean "
                            f"{reference['mean']:.4g} of {_basis(reference)} (max {max_mean_shift_sd}; p={p:.1e})")
    return problems


def _basis(reference: dict) -> str:
    return reference.get("basis", "the training labels")


def _share_problems(present: dict, n: int, shares: dict, max_ratio: float, alpha: float,
                    basis: str) -> list[str]:
    problems = []
    for label, expected in shares.items():
        if not 0 < expected < 1:
            continue
        observed = present.get(label, 0) / n
        # Laplace-smoothed ratio: 0 of 160 against 7% reads as ~14x lower, not infinitely.
        ratio = (observed + 1 / n) / (expected + 1 / n)
        p = stats.binomtest(present.get(label, 0), n, expected).pvalue
        if (ratio > max_ratio or ratio < 1 / max_ratio) and p < alpha:
            problems.append(f"class {label!r} is {observed:.1%} of the labels vs {expected:.1%} in {basis} "
                            f"({ratio:.2g}x; max {max_ratio:g}x either way; p={p:.1e})")
    return problems
