"""Sensor decisions, evaluated with build_sensor_context on a real (temporary) instance."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import Pipeline


@pytest.fixture
def setup(spec):
    defs = build_mlops_defs(spec)
    with dg.instance_for_test() as instance:
        yield spec, Pipeline(spec), defs, instance


def _tick(defs, instance, name, cursor=None):
    sensor = defs.get_sensor_def(name)
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, sensor_name=name))


def test_new_data_sensor_empty_directory_says_why(setup):
    spec, names, defs, instance = setup
    result = _tick(defs, instance, names.sensor("new_data"))
    assert not result.run_requests and "no new files" in result.skip_reason.skip_message


def test_several_first_files_are_prepared_and_none_bootstraps_alone(setup):
    """Before the first champion, several files are only validated: the retrain sensor then
    bootstraps on all of them at once, so no partition misses the first training set."""
    spec, names, defs, instance = setup
    for i in range(3):
        write_day(spec.source.path, dt.date(2026, 1, 1 + i), n_rows=300, day_index=i)
    result = _tick(defs, instance, names.sensor("new_data"))
    keys = [r.partition_key for r in result.run_requests]
    assert keys == ["loans_2026-01-01.parquet", "loans_2026-01-02.parquet", "loans_2026-01-03.parquet"]
    assert {r.job_name for r in result.run_requests} == {names.job("ingest")}
    assert all(r.asset_selection == [names.key("raw_data"), names.key("validated_features")]
               for r in result.run_requests)
    assert result.dynamic_partitions_requests[0].partition_keys == keys
    assert len({r.run_key for r in result.run_requests}) == 3


def test_a_lone_first_file_runs_the_whole_lifecycle(setup):
    spec, names, defs, instance = setup
    write_day(spec.source.path, dt.date(2026, 1, 1), n_rows=300)
    (request,) = _tick(defs, instance, names.sensor("new_data")).run_requests
    assert request.job_name == names.job("bootstrap") and request.tags["mlops/trigger"] == "bootstrap"


def test_names_that_cannot_be_partition_keys_are_reported(setup, caplog):
    spec, names, defs, instance = setup
    write_day(spec.source.path, dt.date(2026, 1, 1), n_rows=300)
    (Path(spec.source.path) / "bad name!.parquet").write_bytes(b"x")
    result = _tick(defs, instance, names.sensor("new_data"))
    assert [r.partition_key for r in result.run_requests] == ["loans_2026-01-01.parquet"]


def test_new_data_sensor_never_requests_a_partition_twice(setup):
    spec, names, defs, instance = setup
    write_day(spec.source.path, dt.date(2026, 1, 1), n_rows=300)
    first = _tick(defs, instance, names.sensor("new_data"))
    instance.add_dynamic_partitions(names.partitions_name, first.dynamic_partitions_requests[0].partition_keys)
    # Same cursor again (e.g. the tick's cursor update was lost): still no duplicate.
    again = _tick(defs, instance, names.sensor("new_data"), cursor=None)
    assert not again.run_requests
    after = _tick(defs, instance, names.sensor("new_data"), cursor=first.cursor)
    assert not after.run_requests


def test_file_arriving_mid_tick_is_taken_next_tick(setup, tmp_path):
    spec, names, defs, instance = setup
    data = spec.model_dump(mode="json")
    data["source"]["settle_seconds"] = 3600.0           # nothing settles during this tick
    from mlops_assets.spec import PipelineSpec

    slow = PipelineSpec.from_dict(data)
    slow_defs = build_mlops_defs(slow)
    write_day(slow.source.path, dt.date(2026, 1, 5), n_rows=300)
    first = _tick(slow_defs, instance, names.sensor("new_data"))
    assert not first.run_requests and "waiting to settle" in first.skip_reason.skip_message
    # The file settles; the stored cursor did not move past it, so it is picked up.
    data["source"]["settle_seconds"] = 0.0
    settled_defs = build_mlops_defs(PipelineSpec.from_dict(data))
    second = _tick(settled_defs, instance, names.sensor("new_data"), cursor=first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["loans_2026-01-05.parquet"]


def test_declarative_option_attaches_automation_conditions(spec):
    from mlops_assets.spec import PipelineSpec

    data = spec.model_dump(mode="json")
    data["automation"]["declarative"] = True
    declarative = PipelineSpec.from_dict(data)
    graph = build_mlops_defs(declarative).resolve_asset_graph()
    names = Pipeline(declarative)
    eager = {s for s in ("raw_data", "validated_features", "trained_model", "batch_predictions", "drift_report")
             if graph.get(names.key(s)).automation_condition is not None}
    assert eager == {"validated_features", "batch_predictions", "drift_report"}
    plain = build_mlops_defs(spec).resolve_asset_graph()
    assert all(plain.get(names.key(s)).automation_condition is None for s in ("validated_features", "drift_report"))
