"""`drift_report`: one partition against the champion's reference profile, alone."""

import json
from pathlib import Path

import polars as pl

from mlops_assets.pipeline import Stage
from mlops_assets_tests.stages.harness import assert_definition


def test_definition(world):
    assert_definition(world, Stage.DRIFT_REPORT, deps=[Stage.VALIDATED_FEATURES, Stage.BATCH_PREDICTIONS],
                      kinds={"evidently", "polars", "html"}, partitioned=True, checks=["drift_signal"],
                      non_blocking=["drift_signal"])


def test_drifted_partition_is_reported_against_the_champion_with_served_predictions(world):
    first = world.land(day=1)
    world.bootstrap(first)
    shifted = world.land(day=2, n_rows=2_000, seed=5, drift=0.9)
    world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES, Stage.BATCH_PREDICTIONS], shifted)
    assert world.materialize([Stage.DRIFT_REPORT], shifted).success
    md = world.metadata(Stage.DRIFT_REPORT, shifted)
    assert md["champion_version"] == "1" and md["n_current"] == 2_000
    assert md["dataset_drift"] is True and md["retrain_signal"] is True
    report = json.loads(Path(md["report_uri"]).read_text())
    assert report["n_current"] == 2_000 and len(report["features"]) == len(world.spec.features)
    # The prediction drift is measured on the scores the champion actually served.
    served = pl.read_parquet(world.metadata(Stage.BATCH_PREDICTIONS, shifted)["uri"])
    assert report["prediction"]["n_current"] == served.height
    table = pl.read_parquet(md["scores_uri"])
    assert sorted(table["name"].to_list()) == sorted([*world.spec.feature_names, "__prediction"])
    assert str(md["evidently_html"]).endswith(f"drift/{shifted}/v1/evidently.html")
