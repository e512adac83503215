"""`batch_predictions`: the champion's verified bundle scores one partition, alone."""

import shutil

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.bundle import BundleIntegrityError
from mlops_assets.pipeline import Stage
from mlops_assets_tests.stages.harness import assert_definition


def test_definition(world):
    assert_definition(world, Stage.BATCH_PREDICTIONS, deps=[Stage.VALIDATED_FEATURES, Stage.REGISTERED_MODEL],
                      kinds={"onnx", "parquet"}, partitioned=True)


def test_scores_a_partition_with_the_champion(world):
    first = world.land(day=1)
    world.bootstrap(first)
    second = world.land(day=2, n_rows=700, seed=5)
    world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES], second)
    assert world.materialize([Stage.BATCH_PREDICTIONS], second).success
    md = world.metadata(Stage.BATCH_PREDICTIONS, second)
    assert md["model_version"] == "1" and md["dagster/row_count"] == 700
    out = pl.read_parquet(md["uri"])
    assert out.columns == ["loan_id", "score", "prediction", "model_version", "scored_at"]
    features = world.resource("storage").read_parquet(world.pipeline.layout.features(second))
    bundle = world.resource("registry").load_bundle("demo", "1")
    # The same ONNX model; onnxruntime sums trees in an order that depends on the batch size.
    np.testing.assert_allclose(out["score"].to_numpy(), bundle.score(features), rtol=0, atol=1e-12)
    assert out["loan_id"].equals(features["loan_id"])
    assert md["mean_score"] == pytest.approx(float(out["score"].mean()))


def test_a_tampered_registry_artifact_is_refused_before_scoring(world):
    partition = world.land(day=1)
    world.bootstrap(partition)
    registry = world.resource("registry")
    cached = registry.bundle_dir("demo", "1")
    (cached / "model.onnx").write_bytes(b"\x08\x07 not the model")
    # The cache entry no longer verifies: it is fetched again from the registry and still scores.
    assert world.materialize([Stage.BATCH_PREDICTIONS], partition).success
    # Now tamper with the registry's own copy: nothing is scored, the run fails naming the file.
    artifact_root = world.spec.state_path("mlartifacts")
    onnx_files = [p for p in artifact_root.rglob("model.onnx") if "bundle" in p.parts]
    assert onnx_files, "the registry stores the bundle's files"
    for path in onnx_files:
        path.write_bytes(b"\x08\x07 replaced")
    shutil.rmtree(registry.cache_dir)
    with pytest.raises(BundleIntegrityError, match=r"changed: \['model.onnx'\]"):
        registry.load_bundle("demo", "1")
    before = world.latest(Stage.BATCH_PREDICTIONS, partition)
    result = world.materialize([Stage.BATCH_PREDICTIONS], partition, raise_on_error=False)
    assert not result.success
    assert world.latest(Stage.BATCH_PREDICTIONS, partition).metadata == before.metadata
