"""The landing zone end to end: the new-data sensor's ticks and the runs they start, on a real
instance (InlineAutomation executes each requested run in-process, as the daemon would).

Files that change after they were ingested, files that change while their run waits, links,
and the same on S3 (a moto server on 127.0.0.1).
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.automation.inline import InlineAutomation
from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import generate_loans, write_day
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.resources import Notifier
from mlops_assets.signals import RUN_KEY_TAG, SENSOR_NAME_TAG
from mlops_assets.spec import PipelineSpec
from mlops_assets.state import latest_materialization
from mlops_assets_tests.conftest import small_spec
from mlops_assets_tests.services.conftest import aws_credentials, s3_bucket, s3_server  # noqa: F401

DAY1, DAY2 = "loans_2026-01-01.parquet", "loans_2026-01-02.parquet"


class Landing:
    """A pipeline whose alerts go to a real webhook receiver, its instance and inline automation."""

    def __init__(self, root: Path, instance, webhook, s3=None, **source):
        data = small_spec(root).model_dump(mode="json")
        data["source"].update(source)
        self.spec = PipelineSpec.from_dict(data)
        self.names = Pipeline(self.spec)
        self.defs = build_mlops_defs(self.spec, s3=s3, notifier=Notifier(
            backend="webhook", webhook_url=webhook["url"], backoff_s=0))
        self.instance, self.webhook = instance, webhook
        self.auto = InlineAutomation(self.defs, instance, log_level="WARNING")
        self.sensor = self.names.sensor("new_data")

    def tick(self):
        return self.auto.tick_sensor(self.sensor)

    def alerts(self, kind: str) -> list[dict]:
        return [body for _, body in self.webhook["bodies"] if body["kind"] == kind]

    def data_version(self, stage: Stage, partition: str) -> str | None:
        found = latest_materialization(self.instance, self.names.key(stage), partition)
        return None if found is None else found.metadata["data_version"].value

    def ingest_two_days(self):
        """Two first files: both validated (no training before the first champion)."""
        landing = Path(self.spec.source.path)
        write_day(landing, dt.date(2026, 1, 1), n_rows=300)
        write_day(landing, dt.date(2026, 1, 2), n_rows=300, day_index=1)
        tick = self.tick()
        assert [r.success for r in tick.launched] == [True, True], tick.skip_reason
        return landing


def _rewrite_in_place(path: Path, n_rows: int = 400, seed: int = 5) -> None:
    """An in-place overwrite: same inode, new bytes (no temporary name, no rename)."""
    buf = io.BytesIO()
    generate_loans(n_rows, day=dt.date(2026, 1, 1), seed=seed).to_parquet(buf, index=False)
    with open(path, "r+b") as fh:
        fh.truncate(0)
        fh.write(buf.getvalue())


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        yield instance


def test_an_overwrite_after_ingestion_is_reported_once_and_the_partition_kept(tmp_path, instance, webhook):
    zone = Landing(tmp_path, instance, webhook)
    landing = zone.ingest_two_days()
    before = zone.data_version(Stage.RAW_DATA, DAY1)
    _rewrite_in_place(landing / DAY1)
    tick = zone.tick()
    assert not tick.launched
    assert f"{DAY1} changed after it was ingested" in tick.skip_reason
    assert "keeps what it ingested (source.on_change: report)" in tick.skip_reason
    (alert,) = zone.alerts("source_changed")
    assert alert["fields"]["partition"] == DAY1 and alert["fields"]["file"] == str(landing / DAY1)
    assert zone.data_version(Stage.RAW_DATA, DAY1) == before
    again = zone.tick()
    assert not again.launched and again.skip_reason == "no new files" and len(zone.alerts("source_changed")) == 1


def test_reingest_runs_the_partition_again_and_its_assets_get_new_data_versions(tmp_path, instance, webhook):
    zone = Landing(tmp_path, instance, webhook, on_change="reingest")
    landing = zone.ingest_two_days()
    raw_before = zone.data_version(Stage.RAW_DATA, DAY1)
    features_before = zone.data_version(Stage.VALIDATED_FEATURES, DAY1)
    other_before = zone.data_version(Stage.RAW_DATA, DAY2)
    _rewrite_in_place(landing / DAY1)
    tick = zone.tick()
    (run,) = tick.launched
    assert run.success and run.dagster_run.tags["dagster/partition"] == DAY1
    assert run.dagster_run.tags["mlops/trigger"] == "changed"
    import hashlib

    assert run.dagster_run.tags["mlops/source_sha256"] == hashlib.sha256((landing / DAY1).read_bytes()).hexdigest()
    assert zone.data_version(Stage.RAW_DATA, DAY1) not in (None, raw_before)
    assert zone.data_version(Stage.VALIDATED_FEATURES, DAY1) not in (None, features_before)
    assert zone.data_version(Stage.RAW_DATA, DAY2) == other_before           # the other partition untouched
    assert not zone.tick().launched and not zone.alerts("source_changed")


def test_touching_a_file_or_resetting_the_cursor_is_no_change(tmp_path, instance, webhook):
    import os

    zone = Landing(tmp_path, instance, webhook)
    landing = zone.ingest_two_days()
    os.utime(landing / DAY1)                         # same bytes, new mtime
    touched = zone.tick()
    assert not touched.launched and touched.skip_reason == "no new files"
    zone.auto.cursors[zone.sensor] = None            # a lost cursor: every file looks new again
    reset = zone.tick()
    assert not reset.launched and reset.skip_reason == "no new files"
    assert not zone.alerts("source_changed") and not zone.alerts("quarantine")


def test_a_file_that_changes_while_its_run_waits_is_refused_then_run_again(tmp_path, instance, webhook):
    """Report mode too: the first run ingested nothing, so the new content is simply new data."""
    zone = Landing(tmp_path, instance, webhook)
    landing = Path(zone.spec.source.path)
    write_day(landing, dt.date(2026, 1, 1), n_rows=300)
    write_day(landing, dt.date(2026, 1, 2), n_rows=300, day_index=1)
    sensor = zone.defs.resolve_sensor_def(zone.sensor)
    context = dg.build_sensor_context(instance=instance, definitions=zone.defs, sensor_name=zone.sensor,
                                      resources={k: zone.defs.resources[k] for k in sensor.required_resource_keys})
    result = sensor(context)
    instance.add_dynamic_partitions(zone.names.partitions_name, [DAY1, DAY2])
    _rewrite_in_place(landing / DAY1)                # between the tick and the run
    request = next(r for r in result.run_requests if r.partition_key == DAY1)
    job = zone.defs.resolve_job_def(request.job_name)
    stale = job.execute_in_process(instance=instance, partition_key=DAY1, raise_on_error=False,
                                   asset_selection=list(request.asset_selection),
                                   tags={**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: zone.sensor})
    assert not stale.success and (landing / DAY1).exists() and not (landing / "_quarantine").exists()
    zone.auto.cursors[zone.sensor] = result.cursor
    (rerun,) = zone.tick().launched
    assert rerun.success and rerun.dagster_run.tags["dagster/partition"] == DAY1
    assert zone.data_version(Stage.RAW_DATA, DAY1) is not None and not zone.alerts("source_changed")


def test_a_link_in_the_landing_folder_is_run_refused_and_quarantined_unread(tmp_path, instance, webhook):
    import os

    zone = Landing(tmp_path, instance, webhook)
    landing = Path(zone.spec.source.path)
    outside = write_day(tmp_path / "outside", dt.date(2026, 1, 3), n_rows=300)
    os.symlink(outside, landing / "loans_2026-01-03.parquet")
    (run,) = zone.tick().launched
    assert not run.success
    assert "mlops/source_sha256" not in run.dagster_run.tags          # the sensor never read the target
    moved = landing / "_quarantine" / "loans_2026-01-03.parquet"
    assert moved.is_symlink() and outside.exists()
    (alert,) = zone.alerts("quarantine")
    assert "is a symbolic link" in alert["message"]
    assert zone.data_version(Stage.RAW_DATA, "loans_2026-01-03.parquet") is None


# -- S3 ----------------------------------------------------------------------------------------
def _put(s3, bucket: str, name: str, body: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=f"landing/{name}", Body=body)


def _parquet(n_rows: int, seed: int = 1, day_index: int = 0) -> bytes:
    buf = io.BytesIO()
    generate_loans(n_rows, day=dt.date(2026, 1, 1 + day_index), seed=seed,
                   id_offset=day_index * 10_000_000).to_parquet(buf, index=False)
    return buf.getvalue()


def _s3_zone(tmp_path, instance, webhook, s3_server, bucket, **source) -> Landing:  # noqa: F811
    from dagster_aws.s3 import S3Resource

    return Landing(tmp_path, instance, webhook, s3=S3Resource(endpoint_url=s3_server.endpoint_url),
                   path=f"s3://{bucket}/landing", **source)


def test_s3_an_overwritten_object_is_reported_and_read_only_as_the_version_seen(
        tmp_path, instance, webhook, s3_server, s3_bucket):  # noqa: F811
    zone = _s3_zone(tmp_path, instance, webhook, s3_server, s3_bucket)
    _put(s3_server, s3_bucket, DAY1, _parquet(300))
    _put(s3_server, s3_bucket, DAY2, _parquet(300, day_index=1))
    first = zone.tick()
    assert [r.success for r in first.launched] == [True, True], first.skip_reason
    run = next(r for r in first.launched if r.dagster_run.tags["dagster/partition"] == DAY1)
    seen_tags = dict(run.dagster_run.tags)
    assert seen_tags["mlops/source_etag"] and "mlops/source_sha256" not in seen_tags   # not downloaded
    md = latest_materialization(instance, zone.names.key(Stage.RAW_DATA), DAY1).metadata
    assert md["source_etag"].value == seen_tags["mlops/source_etag"] and len(md["source_sha256"].value) == 64

    import time

    time.sleep(1.1)                                   # S3's LastModified has one-second resolution
    _put(s3_server, s3_bucket, DAY1, _parquet(500, seed=9))
    tick = zone.tick()
    assert not tick.launched and f"{DAY1} changed after it was ingested" in tick.skip_reason
    assert len(zone.alerts("source_changed")) == 1

    # A run that still carries the old ETag (e.g. a re-execution) never reads the new object as it.
    job = zone.defs.resolve_job_def(zone.names.job("ingest"))
    stale = job.execute_in_process(instance=instance, partition_key=DAY1, raise_on_error=False,
                                   asset_selection=[zone.names.key(Stage.RAW_DATA)], tags=seen_tags)
    assert not stale.success
    failure = stale.get_step_failure_events()[0].event_specific_data.error.message
    assert "was overwritten since the sensor picked it up" in failure


def test_s3_empty_and_unkeyable_objects_are_reported_never_skipped(
        tmp_path, instance, webhook, s3_server, s3_bucket):  # noqa: F811
    zone = _s3_zone(tmp_path, instance, webhook, s3_server, s3_bucket)
    _put(s3_server, s3_bucket, "empty.parquet", b"")
    _put(s3_server, s3_bucket, "bad name!.parquet", _parquet(300))
    tick = zone.tick()
    (run,) = tick.launched                            # the empty object: raw_data refuses it
    assert not run.success and run.dagster_run.tags["dagster/partition"] == "empty.parquet"
    kinds = sorted((a["title"], a["fields"].get("where", "")) for a in zone.alerts("quarantine"))
    assert kinds == [("demo: 'bad name!.parquet' quarantined", "left in place (an S3 object is never moved)"),
                     ("demo: empty.parquet quarantined", "(left in place)")]
    record = zone.defs.resources[zone.names.storage_key].read_json(zone.names.layout.quarantine_record("empty.parquet"))
    assert record["reason"] == f"arrival file s3://{s3_bucket}/landing/empty.parquet is empty (0 bytes)"
    again = zone.tick()
    assert not again.launched and len(zone.alerts("quarantine")) == 2
