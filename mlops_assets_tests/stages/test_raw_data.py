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
from mlops_assets_tests.stages.harness import assert_definition, failure_text


def test_definition(world):
    assert_definition(world, Stage.RAW_DATA, deps=[], kinds={"polars", "parquet"}, partitioned=True)


def test_ingests_one_file_as_parquet_with_lineage_metadata(world):
    partition = world.land(day=1, n_rows=400)
    result = world.materialize([Stage.RAW_DATA], partition)
    assert result.success
    md = world.metadata(Stage.RAW_DATA, partition)
    assert md["dagster/row_count"] == 400
    assert md["column_count"] == 18 and len(md["dagster/column_schema"].columns) == 18   # all shown
    assert "schema_columns_omitted" not in md
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


# -- every entry path: keys added by hand (UI, API, CLI) meet the same checks ------------------
def _add(world, key):
    """What "add partition" in the UI and `instance.add_dynamic_partitions` do: Dagster takes any string."""
    world.instance.add_dynamic_partitions(world.pipeline.partitions_name, [key])
    return key


def _landing(world) -> Path:
    path = Path(world.spec.source.path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_a_key_added_by_hand_that_climbs_out_is_refused_before_any_file_is_touched(world, tmp_path):
    landing = _landing(world)
    victim = tmp_path / "x" / "victim.conf"
    victim.parent.mkdir()
    victim.write_text("precious")
    key = _add(world, os.path.relpath(victim, landing))          # ../x/victim.conf
    for stage in (Stage.RAW_DATA, Stage.VALIDATED_FEATURES):
        result = world.materialize([stage], key, raise_on_error=False)
        assert not result.success
        assert f"partition key {key!r} is refused: it must be a plain file name" in failure_text(result)
    assert victim.read_text() == "precious" and sorted(os.listdir(victim.parent)) == ["victim.conf"]
    assert not (landing / "_quarantine").exists()
    store = world.resource("storage")
    assert not store.list(f"{world.spec.name}/quarantine")


def test_a_key_naming_a_file_that_is_not_an_arrival_is_refused_and_the_file_left_alone(world):
    notes = _landing(world) / "notes.txt"
    notes.write_text("not data")
    result = world.materialize([Stage.RAW_DATA], _add(world, "notes.txt"), raise_on_error=False)
    assert not result.success
    assert "partition key 'notes.txt' is refused: it must be a landing file name ending in .parquet" in \
        failure_text(result)
    assert notes.read_text() == "not data" and not (notes.parent / "_quarantine").exists()


def test_a_symbolic_link_is_quarantined_as_a_link_and_its_target_never_read(world, tmp_path):
    outside = tmp_path / "elsewhere.parquet"
    pl.DataFrame({"a": [1, 2]}).write_parquet(outside)
    before = outside.read_bytes()
    link = _landing(world) / "loans_2026-01-03.parquet"
    os.symlink(outside, link)
    result = world.materialize([Stage.RAW_DATA], _add(world, link.name), raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert f"arrival file {link} is a symbolic link (to {outside})" in text and "source.allow_symlinks" in text
    moved = link.parent / "_quarantine" / link.name
    assert moved.is_symlink() and os.readlink(moved) == str(outside) and not os.path.lexists(link)
    assert outside.read_bytes() == before
    assert world.latest(Stage.RAW_DATA, link.name) is None


def test_links_are_followed_when_the_spec_allows_them(tmp_path, instance):
    from mlops_assets_tests.stages.harness import StageWorld

    base = small_spec_source(tmp_path, allow_symlinks=True)
    world = StageWorld(tmp_path, instance, spec=base)
    outside = tmp_path / "elsewhere.parquet"
    pl.DataFrame({"a": [1, 2]}).write_parquet(outside)
    os.symlink(outside, _landing(world) / "linked.parquet")
    assert world.materialize([Stage.RAW_DATA], _add(world, "linked.parquet")).success
    assert world.metadata(Stage.RAW_DATA, "linked.parquet")["dagster/row_count"] == 2


@pytest.mark.timeout(120, method="thread")
def test_a_fifo_is_refused_without_being_opened(world):
    fifo = _landing(world) / "pipe.parquet"
    os.mkfifo(fifo)                   # reading it would block the run for ever
    result = world.materialize([Stage.RAW_DATA], _add(world, fifo.name), raise_on_error=False)
    assert not result.success
    assert f"arrival file {fifo} is not a regular file (a FIFO)" in failure_text(result)


def small_spec_source(root, **source):
    from mlops_assets.spec import PipelineSpec
    from mlops_assets_tests.conftest import small_spec

    data = small_spec(root).model_dump(mode="json")
    data["source"].update(source)
    return PipelineSpec.from_dict(data)


# -- limits: checked before the file is decoded --------------------------------------------
def _limited(tmp_path, instance, **limits):
    from mlops_assets.spec import LimitsSpec
    from mlops_assets_tests.stages.harness import StageWorld

    return StageWorld(tmp_path, instance, limits={**LimitsSpec().model_dump(), **limits})


def test_default_limits():
    from mlops_assets.spec import LimitsSpec

    assert LimitsSpec().model_dump() == {"max_file_bytes": 2 * 1024**3, "max_rows": 50_000_000,
                                         "max_columns": 2_000, "max_cells": 500_000_000}


def test_row_limit_is_read_from_the_parquet_footer_not_the_data(tmp_path, instance):
    world = _limited(tmp_path, instance, max_rows=1_000)
    path = _landing(world) / "loans_2026-01-04.parquet"
    pl.DataFrame({"a": list(range(5_000)), "b": [1.5] * 5_000}).write_parquet(path, compression="uncompressed")
    data = bytearray(path.read_bytes())
    data[100:400] = b"\xff" * 300        # wreck the data pages, keep the footer: decoding would fail
    path.write_bytes(bytes(data))
    result = world.materialize([Stage.RAW_DATA], _add(world, path.name), raise_on_error=False)
    text = failure_text(result)
    assert f"arrival file {path} has 5000 rows, over limits.max_rows (1000)" in text
    assert "unreadable" not in text                       # refused from the footer alone
    assert (path.parent / "_quarantine" / path.name).exists()


@pytest.mark.parametrize("limits, frame, expected", [
    ({"max_columns": 10}, pl.DataFrame({f"c{i}": [1] for i in range(30)}), "has 30 columns, over limits.max_columns (10)"),
    ({"max_cells": 4_000}, pl.DataFrame({f"c{i}": list(range(1_000)) for i in range(5)}),
     "has 5000 cells (1000 x 5), over limits.max_cells (4000)"),
    ({"max_file_bytes": 100}, pl.DataFrame({"a": list(range(100))}), "bytes, over limits.max_file_bytes (100)"),
])
def test_limits_refuse_a_parquet_file_and_name_the_limit_and_file(tmp_path, instance, limits, frame, expected):
    world = _limited(tmp_path, instance, **limits)
    path = _landing(world) / "wide.parquet"
    frame.write_parquet(path)
    result = world.materialize([Stage.RAW_DATA], _add(world, path.name), raise_on_error=False)
    assert not result.success and f"arrival file {path} " in failure_text(result)
    assert expected in failure_text(result)


def test_limits_refuse_a_csv_by_its_line_count_and_header(tmp_path, instance):
    world = _limited(tmp_path, instance, max_rows=10, max_columns=3)
    landing = _landing(world)
    (landing / "long.csv").write_text("a,b\n" + "1,2\n" * 50)
    (landing / "wide.csv").write_text("a,b,c,d\n1,2,3,4\n")
    long = world.materialize([Stage.RAW_DATA], _add(world, "long.csv"), raise_on_error=False)
    assert "long.csv has 50 lines, over limits.max_rows (10)" in failure_text(long)
    wide = world.materialize([Stage.RAW_DATA], _add(world, "wide.csv"), raise_on_error=False)
    assert "wide.csv has 4 columns, over limits.max_columns (3)" in failure_text(wide)


def test_a_10k_column_file_keeps_every_event_a_few_kb(tmp_path, instance):
    from dagster._serdes import serialize_value

    world = _limited(tmp_path, instance, max_columns=20_000)
    frame = pl.DataFrame({f"feature_with_a_rather_long_name_{i:05d}": [1.0, 2.0] for i in range(10_000)})
    frame.write_parquet(_landing(world) / "wide.parquet")
    result = world.materialize([Stage.RAW_DATA], _add(world, "wide.parquet"))
    sizes = {(e.dagster_event.event_type_value if e.dagster_event else e.message[:40]): len(serialize_value(e))
             for e in world.instance.all_logs(result.run_id)}
    assert "ASSET_MATERIALIZATION" in sizes
    assert max(sizes.values()) < 8_000, sizes
    md = world.metadata(Stage.RAW_DATA, "wide.parquet")
    shown = md["dagster/column_schema"].columns
    assert md["column_count"] == 10_000 and md["schema_columns_omitted"] == 10_000 - len(shown)
    assert 10 <= len(shown) <= 20 and shown[0].name == "feature_with_a_rather_long_name_00000"


# -- identity: what the sensor saw is what is ingested ----------------------------------------
def test_metadata_records_the_file_identity(world):
    import hashlib

    partition = world.land(day=1, n_rows=300)
    path = Path(world.spec.source.path) / partition
    assert world.materialize([Stage.RAW_DATA], partition).success
    md = world.metadata(Stage.RAW_DATA, partition)
    assert md["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert md["source_size"] == path.stat().st_size and md["source_mtime_ns"] == str(path.stat().st_mtime_ns)


def test_a_file_changed_since_the_sensor_picked_it_up_is_refused_but_not_quarantined(world):
    from mlops_assets.sources.files import hash_local_file

    partition = world.land(day=1, n_rows=300)
    path = Path(world.spec.source.path) / partition
    seen = hash_local_file(str(path))
    write_day(path.parent, dt.date(2026, 1, 1), n_rows=500)           # rewritten after the tick
    result = world.materialize([Stage.RAW_DATA], partition, raise_on_error=False, tags=seen.to_tags())
    assert not result.success and "changed since the sensor picked it up" in failure_text(result)
    assert path.exists() and not (path.parent / "_quarantine").exists()
    assert world.latest(Stage.RAW_DATA, partition) is None


def test_same_size_and_mtime_but_other_bytes_is_refused(world):
    from mlops_assets.sources.files import hash_local_file

    partition = world.land(day=1, n_rows=300)
    path = Path(world.spec.source.path) / partition
    seen = hash_local_file(str(path))
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(seen.mtime_ns, seen.mtime_ns))                  # the mtime put back
    result = world.materialize([Stage.RAW_DATA], partition, raise_on_error=False, tags=seen.to_tags())
    assert "has other content than the sensor picked up" in failure_text(result)


# -- quarantine: nothing earlier is overwritten, nothing leaves the landing folder -------------
def test_quarantine_keeps_an_earlier_file_of_the_same_name(world):
    landing = _landing(world)
    key = _add(world, "broken.parquet")
    for payload in (b"first broken", b"second broken"):
        (landing / key).write_bytes(payload)
        assert not world.materialize([Stage.RAW_DATA], key, raise_on_error=False).success
    qdir = landing / "_quarantine"
    assert (qdir / "broken.parquet").read_bytes() == b"first broken"
    assert (qdir / "broken.parquet.1").read_bytes() == b"second broken"
    assert (qdir / "broken.parquet.1.reason.txt").exists()


def test_a_quarantine_folder_that_is_a_link_is_not_followed(world, tmp_path):
    landing = _landing(world)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, landing / "_quarantine")
    (landing / "broken.parquet").write_bytes(b"not parquet")
    result = world.materialize([Stage.RAW_DATA], _add(world, "broken.parquet"), raise_on_error=False)
    assert not result.success and list(elsewhere.iterdir()) == []
    assert (landing / "broken.parquet").exists()
    (failure,) = result.get_step_failure_events()
    moved_to = failure.step_failure_data.user_failure_data.metadata["moved_to"].value
    assert moved_to.startswith(f"(left in place: {landing / '_quarantine'} is not a directory (a symbolic link")
    record = world.resource("storage").read_json(world.pipeline.layout.quarantine_record("broken.parquet"))
    assert record["moved_to"] is None and "unreadable as parquet" in record["reason"]


def test_quarantine_sends_an_alert_with_the_reason(world, webhook):
    from mlops_assets.resources import Notifier

    world.defs = build_mlops_defs(world.spec, notifier=Notifier(backend="webhook", webhook_url=webhook["url"],
                                                                 backoff_s=0))
    (_landing(world) / "empty.parquet").write_bytes(b"")
    assert not world.materialize([Stage.RAW_DATA], _add(world, "empty.parquet"), raise_on_error=False).success
    (alert,) = [body for _, body in webhook["bodies"]]
    assert alert["kind"] == "quarantine" and alert["fields"]["partition"] == "empty.parquet"
    assert alert["message"].endswith("empty.parquet is empty (0 bytes)")
