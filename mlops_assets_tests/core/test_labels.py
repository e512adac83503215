"""Label sanity: poisoned labels are refused, a real population shift is not (pure, no Dagster)."""

import numpy as np
import polars as pl

from mlops_assets.core.labels import check_labels, expected_label_profile, label_profile

RULES = {"min_rows": 30, "reject_single_class": True, "max_rate_ratio": 3.0, "max_mean_shift_sd": 1.0,
         "alpha": 1e-3}
TRAINING = label_profile(np.r_[np.ones(1_100), np.zeros(8_900)], "binary")       # 11% positives


def _labels(rate: float, n: int = 5_000, seed: int = 0) -> pl.Series:
    return pl.Series("defaulted", (np.random.default_rng(seed).random(n) < rate).astype(np.int64))


def test_one_class_is_refused_by_the_single_class_rule():
    problems = check_labels(pl.Series("defaulted", np.zeros(200, dtype=np.int64)), "binary", None, **RULES)
    assert problems == ["all 200 labels are class '0': a classifier cannot learn from one class (single-class rule)"]


def test_a_rate_many_times_the_training_rate_is_refused_naming_the_class_and_numbers():
    problems = check_labels(_labels(0.40), "binary", TRAINING, **RULES)
    assert len(problems) == 1 and problems[0].startswith("class '1' is 40.")
    assert "vs 11.0% in the training labels" in problems[0] and "max 3x either way" in problems[0]


def test_ordinary_variation_and_small_batches_pass():
    assert check_labels(_labels(0.13), "binary", TRAINING, **RULES) == []
    assert check_labels(_labels(0.40, n=25), "binary", TRAINING, **RULES) == []      # below min_rows


def test_a_shift_the_champion_predicts_passes_and_poison_still_fails():
    # A population shift: 36% defaults, and the champion's scores on those rows average 35%.
    shifted = _labels(0.36)
    assert check_labels(shifted, "binary", TRAINING, **RULES) != []               # vs training: refused
    scores = np.random.default_rng(1).beta(3.5, 6.5, 5_000)                        # mean 0.35
    expected = expected_label_profile(TRAINING, scores, "binary")
    assert abs(expected["shares"]["1"] - scores.mean()) < 1e-12 and expected["n"] == TRAINING["n"]
    assert check_labels(shifted, "binary", expected, **RULES) == []
    # The same rows labelled 97% positive by a broken job: refused against the prediction.
    problems = check_labels(_labels(0.97), "binary", expected, **RULES)
    assert len(problems) == 1 and problems[0].startswith("class '0' is 3.0% of the labels vs 64.8% in the "
                                                         "champion's predictions for these rows")


def test_multiclass_and_regression_expectations():
    classes = label_profile(np.r_[np.zeros(50), np.ones(30), np.full(20, 2)], "multiclass", ["a", "b", "c"])
    probs = np.tile([0.2, 0.3, 0.5], (10, 1))
    shares = expected_label_profile(classes, probs, "multiclass")["shares"]
    assert list(shares) == ["a", "b", "c"] and np.allclose(list(shares.values()), [0.2, 0.3, 0.5], atol=1e-12)
    reg = label_profile(np.linspace(0, 10, 101), "regression")
    moved = expected_label_profile(reg, np.full(40, 20.0), "regression")
    assert moved["mean"] == 20.0 and moved["std"] == reg["std"]
    y = pl.Series("y", np.full(500, 20.0) + np.random.default_rng(2).normal(0, 1, 500))
    assert check_labels(y, "regression", reg, **RULES) != []
    assert check_labels(y, "regression", moved, **RULES) == []
