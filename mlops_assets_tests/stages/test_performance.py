"""Delayed labels -> model_performance -> a performance-drop retrain signal."""

import datetime as dt

import dagster as dg
import numpy as np
import polars as pl
import pytest

from mlops_assets.automation.inline import InlineAutomation
from mlops_assets.core.performance import (
    LabelDataError,
    daily_performance,
    join_labels,
    performance_signal,
)
from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import Pipeline
from mlops_assets_tests.conftest import small_spec


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


def test_late_labels_trigger_one_performance_retrain(tmp_path):
    labels_dir = tmp_path / "labels"
    base = small_spec(tmp_path).model_dump(mode="json")
    base["ground_truth"] = {"path": str(labels_dir), "time_column": "labelled_at"}
    base["performance"] = {"max_drop": 0.05, "window_days": 2, "min_rows_per_day": 50}
    from mlops_assets.spec import PipelineSpec

    spec = PipelineSpec.from_dict(base)
    names, defs = Pipeline(spec), build_mlops_defs(spec)
    assert names.key("model_performance") in defs.resolve_asset_graph().get_all_asset_keys()
    day1 = write_day(spec.source.path, dt.date(2026, 1, 1), n_rows=4_000, seed=1)
    with dg.instance_for_test() as instance:
        auto = InlineAutomation(defs, instance)
        assert auto.tick_sensor(names.sensor("new_data")).launched[0].success
        # The outcome arrives later, and the world changed: a third of labels flipped.
        truth = pl.read_parquet(day1).select("loan_id", "defaulted")
        rng = np.random.default_rng(2)
        flip = rng.random(truth.height) < 0.35
        truth = truth.with_columns(
            pl.Series("defaulted", np.where(flip, 1 - truth["defaulted"].to_numpy(), truth["defaulted"].to_numpy())),
            pl.Series("labelled_at", [dt.datetime(2026, 2, 1 + (i % 3)) for i in range(truth.height)]),
        )
        labels_dir.mkdir()
        truth.write_parquet(labels_dir / "labels_2026-02.parquet")
        run = defs.resolve_job_def(names.job("performance")).execute_in_process(instance=instance)
        assert run.success
        md = instance.get_latest_materialization_event(names.key("model_performance")).asset_materialization.metadata
        assert md["retrain_signal"].value is True and md["drop"].value > 0.05
        assert md["days"].value == 3
        tick = auto.tick_sensor(names.sensor("retrain"))
        assert len(tick.launched) == 1
        assert instance.get_run_by_id(tick.run_ids[0]).tags["mlops/trigger"] == "performance"
        # Recomputing on the same labels is the same condition on the same data: no new retrain.
        defs.resolve_job_def(names.job("performance")).execute_in_process(instance=instance)
        assert not auto.tick_sensor(names.sensor("retrain")).launched
