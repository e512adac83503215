"""Sensor decisions, evaluated with build_sensor_context on a real (temporary) instance."""

import datetime as dt

import dagster as dg
import pytest

from mlops_assets.automation.retrain import retrain_run_key
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


def test_new_data_sensor_bootstraps_on_newest_file_and_prepares_the_rest(setup):
    spec, names, defs, instance = setup
    for i in range(3):
        write_day(spec.source.path, dt.date(2026, 1, 1 + i), n_rows=300, day_index=i)
    result = _tick(defs, instance, names.sensor("new_data"))
    keys = [r.partition_key for r in result.run_requests]
    assert keys == ["loans_2026-01-01.parquet", "loans_2026-01-02.parquet", "loans_2026-01-03.parquet"]
    jobs = [r.job_name for r in result.run_requests]
    assert jobs == [names.job("ingest"), names.job("ingest"), names.job("bootstrap")]
    assert result.run_requests[0].asset_selection == [names.key("raw_data"), names.key("validated_features")]
    assert result.dynamic_partitions_requests[0].partition_keys == keys
    assert len({r.run_key for r in result.run_requests}) == 3


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


def _drift_event(names, partition, signal, data_version):
    return dg.AssetMaterialization(
        asset_key=names.key("drift_report"), partition=partition,
        metadata={"retrain_signal": signal, "input_data_version": data_version, "drift_share": 0.6},
    )


def test_drift_sensor_fires_once_per_data_version(setup):
    spec, names, defs, instance = setup
    instance.add_dynamic_partitions(names.partitions_name, ["p1", "p2"])
    instance.report_runless_asset_event(_drift_event(names, "p1", True, "dv-1"))
    instance.report_runless_asset_event(_drift_event(names, "p1", True, "dv-1"))   # recomputed report
    instance.report_runless_asset_event(_drift_event(names, "p2", False, "dv-2"))
    result = _tick(defs, instance, names.sensor("retrain"))
    assert [r.run_key for r in result.run_requests] == [retrain_run_key("drift", "dv-1")]
    assert result.run_requests[0].tags["mlops/trigger"] == "drift"
    # Next tick from the returned cursor: nothing new, and it says so.
    nothing = _tick(defs, instance, names.sensor("retrain"), cursor=result.cursor)
    assert not nothing.run_requests and "no retrain signal" in nothing.skip_reason.skip_message


def test_retrain_run_key_is_stable_and_kind_specific():
    assert retrain_run_key("drift", "abc") == retrain_run_key("drift", "abc")
    assert retrain_run_key("drift", "abc") != retrain_run_key("performance", "abc")


def _launch_retrain_run(instance, names, run_key, sensor_name):
    from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

    return instance.create_run_for_job(
        job_def=dg.GraphDefinition(name="noop", node_defs=[]).to_job(name=names.job("retrain")),
        tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: sensor_name},
    )


def test_retrain_sensor_loop_protection_cooldown_and_budget(setup):
    spec, names, defs, instance = setup
    sensor = names.sensor("retrain")
    instance.add_dynamic_partitions(names.partitions_name, ["p1", "p2", "p3"])
    instance.report_runless_asset_event(_drift_event(names, "p1", True, "dv-1"))
    first = _tick(defs, instance, sensor)
    key = retrain_run_key("drift", "dv-1")
    assert [r.run_key for r in first.run_requests] == [key]
    _launch_retrain_run(instance, names, key, sensor)         # the daemon launches it

    # Loop protection: the same data version shows drift again (e.g. recomputed against
    # the new champion) -> no new retrain, and the skip says why.
    instance.report_runless_asset_event(_drift_event(names, "p1", True, "dv-1"))
    again = _tick(defs, instance, sensor, cursor=first.cursor)
    assert not again.run_requests and "already handled" in again.skip_reason.skip_message

    # New drifted data inside the cooldown window: held back, cursor kept for later.
    instance.report_runless_asset_event(_drift_event(names, "p2", True, "dv-2"))
    cooled = _tick(defs, instance, sensor, cursor=again.cursor)
    assert not cooled.run_requests and "cooldown" in cooled.skip_reason.skip_message
    assert cooled.cursor == again.cursor


def test_retrain_budget_blocks_past_the_limit(spec):
    from mlops_assets.spec import PipelineSpec

    data = spec.model_dump(mode="json")
    data["automation"].update(retrain_cooldown_minutes=0, retrain_budget=2)
    tight = PipelineSpec.from_dict(data)
    names, defs = Pipeline(tight), build_mlops_defs(tight)
    sensor = names.sensor("retrain")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(names.partitions_name, ["p1", "p2", "p3"])
        cursor = None
        for i in range(3):
            instance.report_runless_asset_event(_drift_event(names, f"p{i + 1}", True, f"dv-{i}"))
            result = _tick(defs, instance, sensor, cursor=cursor)
            if i < 2:
                assert len(result.run_requests) == 1
                _launch_retrain_run(instance, names, result.run_requests[0].run_key, sensor)
            else:
                assert not result.run_requests and "budget spent: 2 retrains" in result.skip_reason.skip_message
            cursor = result.cursor


def test_several_pending_signals_start_one_retrain(setup):
    spec, names, defs, instance = setup
    instance.add_dynamic_partitions(names.partitions_name, ["p1", "p2"])
    instance.report_runless_asset_event(_drift_event(names, "p1", True, "dv-a"))
    instance.report_runless_asset_event(_drift_event(names, "p2", True, "dv-b"))
    result = _tick(defs, instance, names.sensor("retrain"))
    assert len(result.run_requests) == 1
    assert "," in result.run_requests[0].tags["mlops/signals"]
    # Both signals are consumed: nothing is left to start a second retrain.
    nothing = _tick(defs, instance, names.sensor("retrain"), cursor=result.cursor)
    assert not nothing.run_requests


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
