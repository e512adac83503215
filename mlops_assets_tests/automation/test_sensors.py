"""Sensor decisions, evaluated with build_sensor_context on a real (temporary) instance."""

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl
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
    # The resources the sensor requires (the notifier, an S3 client) are bound as the daemon does.
    sensor = defs.resolve_sensor_def(name)
    resources = {k: v for k, v in (defs.resources or {}).items() if k in sensor.required_resource_keys}
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, sensor_name=name,
                                          resources=resources))


def _with_source(spec, webhook=None, **source):
    """Definitions for `spec` with some source fields changed, alerting to `webhook` if given."""
    from mlops_assets.resources import Notifier
    from mlops_assets.spec import PipelineSpec

    data = spec.model_dump(mode="json")
    data["source"].update(source)
    changed = PipelineSpec.from_dict(data)
    notifier = Notifier(backend="webhook", webhook_url=webhook["url"], backoff_s=0) if webhook else None
    return changed, build_mlops_defs(changed, notifier=notifier)


def test_new_data_sensor_empty_directory_says_why(setup):
    _, names, defs, instance = setup
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


def test_names_that_cannot_be_partition_keys_are_quarantined_with_an_alert(spec, webhook):
    spec, defs = _with_source(spec, webhook)
    names = Pipeline(spec)
    landing = Path(spec.source.path)
    write_day(landing, dt.date(2026, 1, 1), n_rows=300)
    bad = landing / "bad name!.parquet"
    bad.write_bytes(b"payload")
    with dg.instance_for_test() as instance:
        result = _tick(defs, instance, names.sensor("new_data"))
        assert [r.partition_key for r in result.run_requests] == ["loans_2026-01-01.parquet"]
        moved = landing / "_quarantine" / bad.name
        assert not bad.exists() and moved.read_bytes() == b"payload"
        reason = (landing / "_quarantine" / (bad.name + ".reason.txt")).read_text()
        assert "file name 'bad name!.parquet' cannot be a partition key" in reason and "rename it" in reason
        (alert,) = [body for _, body in webhook["bodies"]]
        assert alert["kind"] == "quarantine" and "bad name!.parquet" in alert["title"]
        assert alert["fields"]["where"] == f"moved to {moved}"
        # Gone from the landing folder: never reported twice.
        _tick(defs, instance, names.sensor("new_data"), cursor=result.cursor)
        assert len(webhook["bodies"]) == 1


def test_an_unkeyable_file_that_cannot_be_moved_is_reported_once(spec, webhook):
    spec, defs = _with_source(spec, webhook)
    names = Pipeline(spec)
    landing = Path(spec.source.path)
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "_quarantine").write_text("a file where the quarantine folder should be")
    (landing / "bad name!.csv").write_text("a\n1\n")
    with dg.instance_for_test() as instance:
        first = _tick(defs, instance, names.sensor("new_data"))
        assert "quarantined 'bad name!.csv'" in first.skip_reason.skip_message
        assert "left in place" in first.skip_reason.skip_message
        assert (landing / "bad name!.csv").exists()
        second = _tick(defs, instance, names.sensor("new_data"), cursor=first.cursor)
        assert second.skip_reason.skip_message == "no new files"
        assert len(webhook["bodies"]) == 1


def test_an_empty_file_is_named_while_it_waits_and_handed_on_after_complete_within_seconds(spec):
    patient, patient_defs = _with_source(spec, complete_within_seconds=3600)
    names = Pipeline(patient)
    empty = Path(patient.source.path) / "loans_2026-01-09.parquet"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_bytes(b"")
    with dg.instance_for_test() as instance:
        first = _tick(patient_defs, instance, names.sensor("new_data"))
        assert not first.run_requests
        assert "loans_2026-01-09.parquet: empty (0 bytes)" in first.skip_reason.skip_message
        # Past the bound it goes to raw_data (which quarantines it): it never holds the cursor for ever.
        _, eager_defs = _with_source(spec, complete_within_seconds=0)
        second = _tick(eager_defs, instance, names.sensor("new_data"), cursor=first.cursor)
        assert [r.partition_key for r in second.run_requests] == [empty.name]
        assert second.run_requests[0].tags["mlops/source_size"] == "0"


def test_a_paused_producer_s_half_written_parquet_file_is_not_taken(setup):
    """Settled by its mtime (settle_seconds is 0 here) but without its footer: it waits."""
    import hashlib
    import io

    spec, names, defs, instance = setup
    frame = pl.DataFrame({"id": list(range(5_000)), "x": [float(i) for i in range(5_000)]})
    buf = io.BytesIO()
    frame.write_parquet(buf)
    data = buf.getvalue()
    path = Path(spec.source.path) / "loans_2026-01-07.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 3])
    first = _tick(defs, instance, names.sensor("new_data"))
    assert not first.run_requests
    assert "loans_2026-01-07.parquet: no Parquet footer yet" in first.skip_reason.skip_message
    with open(path, "ab") as fh:                          # the producer resumes and finishes
        fh.write(data[len(data) // 3:])
    (request,) = _tick(defs, instance, names.sensor("new_data"), cursor=first.cursor).run_requests
    assert request.tags["mlops/source_sha256"] == hashlib.sha256(data).hexdigest()
    assert request.tags["mlops/source_size"] == str(len(data))


def test_hashing_is_bounded_per_tick_and_the_rest_waits(setup, monkeypatch):
    from mlops_assets.automation import new_data

    spec, names, defs, instance = setup
    first_file = write_day(spec.source.path, dt.date(2026, 1, 1), n_rows=300)
    write_day(spec.source.path, dt.date(2026, 1, 2), n_rows=300)
    monkeypatch.setattr(new_data, "HASH_BUDGET_BYTES", first_file.stat().st_size)
    first = _tick(defs, instance, names.sensor("new_data"))
    assert [r.partition_key for r in first.run_requests] == ["loans_2026-01-01.parquet"]
    instance.add_dynamic_partitions(names.partitions_name, ["loans_2026-01-01.parquet"])
    second = _tick(defs, instance, names.sensor("new_data"), cursor=first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["loans_2026-01-02.parquet"]


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
    spec, names, _, instance = setup
    data = spec.model_dump(mode="json")
    data["source"]["settle_seconds"] = 3600.0           # nothing settles during this tick
    from mlops_assets.spec import PipelineSpec

    slow = PipelineSpec.from_dict(data)
    slow_defs = build_mlops_defs(slow)
    write_day(slow.source.path, dt.date(2026, 1, 5), n_rows=300)
    first = _tick(slow_defs, instance, names.sensor("new_data"))
    assert not first.run_requests and "waiting to settle" in first.skip_reason.skip_message
    assert "loans_2026-01-05.parquet: settling" in first.skip_reason.skip_message
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
