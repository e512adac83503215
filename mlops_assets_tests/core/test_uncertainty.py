import numpy as np

from mlops_assets.core.metrics import compute_metrics
from mlops_assets.core.uncertainty import gap_interval, metric_interval


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)


def test_the_interval_holds_the_point_estimate_and_narrows_with_more_rows():
    small, large = _data(200), _data(5_000)
    point = compute_metrics("binary", *small)["roc_auc"]
    lo, hi = metric_interval("binary", *small, "roc_auc", confidence=0.9, seed=1)
    assert lo < point < hi
    lo2, hi2 = metric_interval("binary", *large, "roc_auc", confidence=0.9, seed=1)
    assert hi2 - lo2 < (hi - lo) / 3
    assert metric_interval("binary", *small, "roc_auc", seed=1) == (lo, hi)      # deterministic


def test_a_gap_between_two_same_groups_has_an_interval_starting_near_zero():
    y, score = _data(600)
    groups = np.array(["a", "b"] * 300)
    lo, hi = gap_interval("binary", y, score, groups, ["a", "b"], "roc_auc", seed=2)
    assert 0 <= lo < 0.02 and hi > lo


def test_the_fast_metrics_equal_sklearn():
    from mlops_assets.core.uncertainty import _fast

    y, score = _data(500, seed=3)
    score = np.round(score, 2)     # ties
    assert abs(_fast("binary", y, score, "roc_auc") - compute_metrics("binary", y, score)["roc_auc"]) < 1e-12
    yr = np.random.default_rng(4).normal(size=300)
    pr = yr + np.random.default_rng(5).normal(size=300)
    reg = compute_metrics("regression", yr, pr)
    assert abs(_fast("regression", yr, pr, "rmse") - reg["rmse"]) < 1e-12
    assert abs(_fast("regression", yr, pr, "mae") - reg["mae"]) < 1e-12
