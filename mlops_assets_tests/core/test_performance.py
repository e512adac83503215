"""Delayed labels: the join, daily metrics and the performance signal (pure)."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.performance import (
    LabelDataError,
    daily_performance,
    join_labels,
    performance_signal,
)


def _preds(n=400, version="1"):
    rng = np.random.default_rng(0)
    score = rng.random(n)
    return pl.DataFrame({"loan_id": np.arange(n), "score": score, "prediction": (score > 0.5).astype(int),
                         "model_version": version,
                         "scored_at": [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * n})


def test_join_and_daily_metrics():
    preds = _preds()
    labels = pl.DataFrame({
        "loan_id": np.arange(0, 400, 2), "defaulted": (preds["score"].to_numpy()[::2] > 0.5).astype(int),
        "labelled_at": [dt.datetime(2026, 1, 5 + (i % 2)) for i in range(200)],
    })
    joined = join_labels(preds, labels, id_column="loan_id", label_column="defaulted", time_column="labelled_at")
    assert joined.height == 200
    series = daily_performance(joined, "binary", min_rows=50)
    assert series["n"].to_list() == [100, 100] and (series["accuracy"] == 1.0).all()
    thin = daily_performance(joined, "binary", min_rows=150)
    assert "accuracy" not in thin.columns


def test_missing_label_columns_are_named():
    with pytest.raises(LabelDataError, match="missing column 'labelled_at'"):
        join_labels(_preds(), pl.DataFrame({"loan_id": [1], "defaulted": [0]}), id_column="loan_id",
                    label_column="defaulted", time_column="labelled_at")


def test_signal_compares_recent_days_with_baseline():
    series = pl.DataFrame({"day": [dt.date(2026, 1, d) for d in (1, 2, 3, 4)], "model_version": "1",
                           "n": [100] * 4, "roc_auc": [0.80, 0.79, 0.70, 0.68]})
    s = performance_signal(series, metric="roc_auc", baseline=0.80, champion_version="1", max_drop=0.05, window_days=2)
    assert s.triggered and abs(s.drop - 0.11) < 1e-9 and "exceeds" in s.message
    ok = performance_signal(series, metric="roc_auc", baseline=0.80, champion_version="1", max_drop=0.2)
    assert not ok.triggered
    none = performance_signal(series, metric="roc_auc", baseline=0.8, champion_version="2", max_drop=0.05)
    assert not none.triggered and "no labelled days" in none.message
