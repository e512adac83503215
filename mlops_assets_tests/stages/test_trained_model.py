"""`trained_model`: trains on accepted labelled partitions only and logs one MLflow candidate."""

import json

import polars as pl

from mlops_assets.pipeline import TRAINING_POOL, Stage
from mlops_assets.state import version_records
from mlops_assets_tests.stages.harness import assert_definition


def test_definition(world):
    assert_definition(world, Stage.TRAINED_MODEL, deps=[Stage.VALIDATED_FEATURES],
                      kinds={"lightgbm", "mlflow", "onnx"}, partitioned=False)
    node = world.defs.resolve_asset_graph().get(world.pipeline.key(Stage.TRAINED_MODEL))
    assert node.pools == {TRAINING_POOL}


def test_trains_on_accepted_labelled_partitions_and_logs_a_candidate(world):
    labelled = world.land(day=1, n_rows=3_000)
    unlabelled = world.land(day=2, n_rows=600, seed=2)
    path = f"{world.spec.source.path}/{unlabelled}"
    pl.read_parquet(path).drop(world.spec.target).write_parquet(path)
    rejected = world.land(day=3, n_rows=50, seed=3)              # below min_rows
    for partition in (labelled, unlabelled, rejected):
        world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES], partition, raise_on_error=False)

    result = world.materialize([Stage.TRAINED_MODEL])
    assert result.success
    md = world.metadata(Stage.TRAINED_MODEL)
    assert md["training_partitions"] == {labelled: 3_000}
    assert md["model_version"] == "1"
    registry = world.resource("registry")
    version = registry.get_version("demo", "1")
    assert version.run_id == md["mlflow_run_id"]
    assert version.tags["approval"] == "pending"
    assert version.tags["dagster_run_id"] == result.run_id
    assert version.tags["data_version"] == md["training_data_version"]
    assert version.tags["spec_hash"] == world.spec.spec_hash
    assert set(json.loads(version.tags["bundle_manifest"])) == {
        "bundle.json", "encoder.json", "model.onnx", "model.txt", "reference_profile.json",
        "reference_sample.parquet"}
    assert registry.version_by_alias("demo", "challenger").version == "1"
    assert registry.champion("demo") is None
    storage = world.resource("storage")
    assert storage.exists(world.pipeline.layout.holdout("1"))
    assert storage.exists(world.pipeline.layout.bundle_file("1", "model.onnx"))
    assert md["holdout_rows"] == pl.read_parquet(md["holdout_uri"]).height > 0


def test_edge_variants_ship_inside_the_bundle_and_are_reported(tmp_path, instance):
    from mlops_assets_tests.conftest import small_spec
    from mlops_assets_tests.stages.harness import StageWorld

    base = small_spec(tmp_path)
    world = StageWorld(tmp_path, instance, edge={"enabled": True},
                       gate={**base.gate.model_dump(mode="json"), "min_main_metric": 0.55, "max_fairness_gap": None})
    world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES], world.land(day=1))
    assert world.materialize([Stage.TRAINED_MODEL, Stage.EVALUATION_REPORT]).success
    manifest = json.loads(world.resource("registry").get_version("demo", "1").tags["bundle_manifest"])
    assert {"edge/float32.json", "edge/float32.onnx"} <= set(manifest)
    md = world.metadata(Stage.EVALUATION_REPORT)
    assert md["edge_shipped"] == "float32"
    assert [c.name for c in md["edge_variants"].schema.columns][:4] == ["variant", "shipped", "size_bytes", "size_ratio"]
    from mlops_assets.core.edge import load_variants

    shipped = load_variants(world.resource("registry").bundle_dir("demo", "1"))["float32"]
    assert shipped.shipped and shipped.scorer() is not None


def test_rows_labelled_late_train_and_their_partition_is_recorded(tmp_path, instance):
    """A partition that arrived without labels trains once its labels arrive, beside labelled ones
    (the frames line up whatever their column order), and its name is recorded so its own
    drift signal no longer counts against the model trained on it."""
    from mlops_assets_tests.stages.harness import StageWorld

    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    world = StageWorld(tmp_path, instance, ground_truth={"path": str(labels_dir)})
    labelled = world.land(day=1, n_rows=3_000)
    unlabelled = world.land(day=2, n_rows=1_000, seed=2)
    path = f"{world.spec.source.path}/{unlabelled}"
    day2 = pl.read_parquet(path)
    day2.drop(world.spec.target).write_parquet(path)
    day2.head(700).select(world.spec.id_column, world.spec.target).with_columns(
        pl.lit("2026-01-05T00:00:00").alias("labelled_at")).write_parquet(labels_dir / "labels_1.parquet")
    for partition in (labelled, unlabelled):
        assert world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES], partition).success

    assert world.materialize([Stage.TRAINED_MODEL]).success
    md = world.metadata(Stage.TRAINED_MODEL)
    assert md["training_partitions"] == {labelled: 3_000}
    assert md["late_labelled_partitions"] == {unlabelled: 700} and md["delayed_label_rows"] == 700
    records = {r.version: r for r in version_records(world.instance, world.pipeline)}
    assert records["1"].training_set.partitions == {labelled, unlabelled}
