"""`model_performance`: its definition, and delayed labels -> a performance-drop retrain signal."""

import datetime as dt

import dagster as dg
import numpy as np
import polars as pl

from mlops_assets.automation.inline import InlineAutomation
from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets_tests.conftest import small_spec
from mlops_assets_tests.stages.harness import StageWorld, assert_definition


def test_definition(tmp_path, instance):
    world = StageWorld(tmp_path, instance, ground_truth={"path": str(tmp_path / "labels")})
    assert_definition(world, Stage.MODEL_PERFORMANCE, deps=[Stage.GROUND_TRUTH, Stage.BATCH_PREDICTIONS],
                      kinds={"polars", "parquet"}, partitioned=False)


def test_late_labels_trigger_one_performance_retrain(tmp_path):
    """Late labels judge the champion only on rows it did not train on: flipped labels for its
    own training rows raise nothing; flipped labels for a day it scored raise one retrain."""
    labels_dir = tmp_path / "labels"
    base = small_spec(tmp_path).model_dump(mode="json")
    base["ground_truth"] = {"path": str(labels_dir), "time_column": "labelled_at"}
    base["performance"] = {"max_drop": 0.05, "window_days": 2, "min_rows_per_day": 50}
    from mlops_assets.spec import PipelineSpec

    spec = PipelineSpec.from_dict(base)
    names, defs = Pipeline(spec), build_mlops_defs(spec)
    assert names.key("model_performance") in defs.resolve_asset_graph().get_all_asset_keys()
    day1 = write_day(spec.source.path, dt.date(2026, 1, 1), n_rows=4_000, seed=1)
    labels_dir.mkdir()
    performance = defs.resolve_job_def(names.job("performance"))
    with dg.instance_for_test() as instance:
        auto = InlineAutomation(defs, instance)
        assert auto.tick_sensor(names.sensor("new_data")).launched[0].success

        # The champion's own training rows, relabelled: no evidence about new data.
        _flipped_labels(day1, seed=2).write_parquet(labels_dir / "labels_day1.parquet")
        assert performance.execute_in_process(instance=instance).success
        md = _latest(instance, names)
        assert md["retrain_signal"].value is False and md["rows_the_champion_trained_on"].value == 4_000
        assert md["late_labels_for_training"].value == 0
        assert not auto.tick_sensor(names.sensor("retrain")).launched

        # A day that arrives unlabelled and is scored by the champion; its outcome arrives later,
        # and the world changed: a third of labels flipped.
        day2 = write_day(spec.source.path, dt.date(2026, 1, 2), n_rows=4_000, seed=3, day_index=1)
        pl.read_parquet(day2).drop("defaulted").write_parquet(day2)
        assert auto.tick_sensor(names.sensor("new_data")).launched[0].success
        _flipped_labels(day2, seed=4, truth_from=write_day(tmp_path / "truth", dt.date(2026, 1, 2), n_rows=4_000,
                                                           seed=3, day_index=1)).write_parquet(
            labels_dir / "labels_day2.parquet")
        assert performance.execute_in_process(instance=instance).success
        md = _latest(instance, names)
        assert md["retrain_signal"].value is True and md["drop"].value > 0.05
        assert md["days"].value == 3 and md["late_labels_for_training"].value == 4_000
        tick = auto.tick_sensor(names.sensor("retrain"))
        assert len(tick.launched) == 1
        assert instance.get_run_by_id(tick.run_ids[0]).tags["mlops/trigger"] == "performance"
        # Recomputing on the same labels is the same condition on the same data: no new retrain.
        performance.execute_in_process(instance=instance)
        assert not auto.tick_sensor(names.sensor("retrain")).launched


def _flipped_labels(day_file, seed: int, truth_from=None) -> pl.DataFrame:
    truth = pl.read_parquet(truth_from or day_file).select("loan_id", "defaulted")
    flip = np.random.default_rng(seed).random(truth.height) < 0.35
    labels = truth["defaulted"].to_numpy()
    return truth.with_columns(
        pl.Series("defaulted", np.where(flip, 1 - labels, labels)),
        pl.Series("labelled_at", [dt.datetime(2026, 2, 1 + (i % 3)) for i in range(truth.height)]),
    )


def _latest(instance, names) -> dict:
    return instance.get_latest_materialization_event(names.key("model_performance")).asset_materialization.metadata
