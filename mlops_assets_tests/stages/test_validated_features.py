"""`validated_features`: blocking checks, the accepted path and the rejected path, alone."""

import os
from pathlib import Path

import numpy as np
import polars as pl

from mlops_assets.core.validation import CHECK_NAMES
from mlops_assets.pipeline import Stage
from mlops_assets_tests.stages.harness import assert_definition


def test_definition(world):
    assert_definition(world, Stage.VALIDATED_FEATURES, deps=[Stage.RAW_DATA], kinds={"polars", "parquet"},
                      checks=CHECK_NAMES, partitioned=True)


def test_accepted_batch_writes_features_with_the_split(world):
    partition = world.land(day=1, n_rows=500)
    assert world.materialize([Stage.RAW_DATA], partition).success
    result = world.materialize([Stage.VALIDATED_FEATURES], partition)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {name: True for name in CHECK_NAMES}
    md = world.metadata(Stage.VALIDATED_FEATURES, partition)
    assert md["status"] == "accepted" and md["labelled"] is True and md["dagster/row_count"] == 500
    features = pl.read_parquet(md["uri"])
    assert features.columns[:3] == ["loan_id", "applied_at", "gender"]
    assert set(features["_split"].unique()) == {"train", "valid", "holdout"}
    # The data version is the content hash of what was written, and it is in the file's footer
    # (the hash is finished while polars encodes the file: it must not be a stale or empty one).
    from mlops_assets.core.features import data_hash
    from mlops_assets.stages.base import FEATURES_HASH_KEY

    assert md["data_version"] == data_hash(features)
    assert pl.read_parquet_metadata(md["uri"])[FEATURES_HASH_KEY] == md["data_version"]


def test_rejected_batch_names_the_column_and_keeps_the_good_file(world):
    partition = world.land(day=1, n_rows=500)
    assert world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES], partition).success
    good = world.metadata(Stage.VALIDATED_FEATURES, partition)["uri"]
    before = Path(good).read_bytes()
    # The same partition re-arrives without its income column.
    landed = os.path.join(world.spec.source.path, partition)
    pl.read_parquet(landed).drop("income").write_parquet(landed)
    assert world.materialize([Stage.RAW_DATA], partition).success
    result = world.materialize([Stage.VALIDATED_FEATURES], partition, raise_on_error=False)
    failed = {e.check_name: e.description for e in result.get_asset_check_evaluations() if not e.passed}
    assert list(failed) == ["schema"]
    assert failed["schema"].startswith("column 'income': missing column")
    md = world.metadata(Stage.VALIDATED_FEATURES, partition)
    assert md["status"] == "rejected"
    assert Path(good).read_bytes() == before


def test_labels_are_judged_against_what_the_champion_predicts_for_the_rows(world):
    """A planted population shift moves the default rate about 3x (11% -> 33%): the champion's
    own scores on those rows move with it, so the batch is accepted; the same kind of rows
    labelled 90% positive by a broken job are refused, naming the rule and the numbers."""
    world.bootstrap(world.land(day=1, n_rows=5_000))
    shifted = world.land(day=2, n_rows=5_000, seed=7, drift=1.0)
    assert world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES], shifted).success
    md = world.metadata(Stage.VALIDATED_FEATURES, shifted)
    assert md["status"] == "accepted" and md["label_rate"] > 0.25

    inverted = world.land(day=3, n_rows=5_000, seed=8, drift=1.0)
    landed = os.path.join(world.spec.source.path, inverted)
    frame = pl.read_parquet(landed)
    broken = (np.random.default_rng(9).random(frame.height) < 0.9).astype(np.int64)
    frame.with_columns(pl.Series(world.spec.target, broken)).write_parquet(landed)
    assert world.materialize([Stage.RAW_DATA], inverted).success
    result = world.materialize([Stage.VALIDATED_FEATURES], inverted, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["label_distribution"].passed is False
    md = world.metadata(Stage.VALIDATED_FEATURES, inverted)
    assert md["status"] == "rejected"
    assert md["violations"].startswith(f"column '{world.spec.target}': implausible labels (class '0' is ")
    assert "in the champion's predictions for these rows" in md["violations"]
