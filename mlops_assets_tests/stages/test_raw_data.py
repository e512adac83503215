"""`raw_data`: its definition, and ingesting one arrival on its own."""

import datetime as dt
import os
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.sources.keys import PartitionKeyError
from mlops_assets_tests.stages.harness import assert_definition


def test_definition(world):
    assert_definition(world, Stage.RAW_DATA, deps=[], kinds={"polars", "parquet"}, partitioned=True)


def test_ingests_one_file_as_parquet_with_lineage_metadata(world):
    partition = world.land(day=1, n_rows=400)
    result = world.materialize([Stage.RAW_DATA], partition)
    assert result.success
    md = world.metadata(Stage.RAW_DATA, partition)
    assert md["dagster/row_count"] == 400
    assert md["source"] == os.path.join(world.spec.source.path, partition)
    assert str(md["uri"]).endswith(f"demo/raw/{partition}/data.parquet")
    stored = pl.read_parquet(md["uri"])
    assert stored.equals(pl.read_parquet(os.path.join(world.spec.source.path, partition)))
    from mlops_assets.core.features import data_hash

    assert md["data_version"] == data_hash(stored)


def test_unreadable_file_is_quarantined_with_a_reason(world):
    landing = world.spec.source.path
    os.makedirs(landing, exist_ok=True)
    with open(os.path.join(landing, "broken.parquet"), "wb") as fh:
        fh.write(b"not parquet at all")
    world.instance.add_dynamic_partitions(world.pipeline.partitions_name, ["broken.parquet"])
    result = world.materialize([Stage.RAW_DATA], "broken.parquet", raise_on_error=False)
    assert not result.success
    moved = os.path.join(landing, "_quarantine", "broken.parquet")
    assert os.path.exists(moved) and not os.path.exists(os.path.join(landing, "broken.parquet"))
    assert "unreadable as parquet" in Path(moved + ".reason.txt").read_text()
    record = world.resource("storage").read_json(world.pipeline.layout.quarantine_record("broken.parquet"))
    assert record["moved_to"] == moved and record["partition"] == "broken.parquet"


def test_a_partition_key_that_climbs_out_is_refused_before_any_file_is_touched(world, tmp_path):
    victim = tmp_path / "victim.conf"
    victim.write_text("precious")
    key = "../victim.conf"
    with pytest.raises(PartitionKeyError, match="plain file name"):
        world.pipeline.layout.raw(key)
    from mlops_assets.sources.files import arrival_uri

    with pytest.raises(PartitionKeyError):
        arrival_uri(world.spec.source.path, key)
    assert victim.read_text() == "precious"


def test_an_unreadable_file_does_not_block_the_next(spec):
    defs = build_mlops_defs(spec)
    names = Pipeline(spec)
    landing = spec.source.path
    good = write_day(landing, dt.date(2026, 1, 2), n_rows=300)
    bad = good.with_name("loans_2026-01-01.parquet")
    bad.write_bytes(b"PAR1 this is not parquet")
    job = defs.resolve_job_def(names.job("ingest"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(names.partitions_name, [bad.name, good.name])
        failed = job.execute_in_process(instance=instance, partition_key=bad.name, raise_on_error=False,
                                        asset_selection=[names.key("raw_data")])
        assert not failed.success
        failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
        assert "quarantined" in failure.event_specific_data.error.message
        moved = bad.parent / "_quarantine" / bad.name
        assert moved.exists() and not bad.exists()
        assert "unreadable" in (moved.parent / (bad.name + ".reason.txt")).read_text()
        record = defs.resources[names.storage_key].read_json(names.layout.quarantine_record(bad.name))
        assert record["moved_to"] == str(moved)
        ok = job.execute_in_process(instance=instance, partition_key=good.name,
                                    asset_selection=[names.key("raw_data"), names.key("validated_features")])
        assert ok.success
