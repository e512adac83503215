"""The lifecycle against a real S3-compatible HTTP server (moto), not a mocked client.

Source files land under s3://<bucket>/landing/demo/; every artifact (datasets, predictions,
reports, profiles) goes to s3://<bucket>/artifacts and MLflow's artifacts to
s3://<bucket>/mlflow. Day 1 -> the new-data sensor bootstraps all seven assets; day 2 ->
the sensor's S3 cursor picks only the new object; nothing new -> the tick skips.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from mlops_assets.automation.inline import InlineAutomation
from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import generate_loans
from mlops_assets.pipeline import LIFECYCLE as STAGES
from mlops_assets.pipeline import Pipeline
from mlops_assets.resources import ArtifactStore, MLflowRegistry
from mlops_assets.resources.storage import StorageError
from mlops_assets.signals import SOURCE_FILE_TAG
from mlops_assets.sources.s3 import parse_s3_cursor, scan_s3_arrivals
from mlops_assets.spec import PipelineSpec
from mlops_assets_tests.services.conftest import (
    S3Server,
    create_bucket,
    delete_bucket,
    free_port,
    services_spec,
)

ROWS = 2_500
DAY1, DAY2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
PART1, PART2 = "loans_2026-01-01.parquet", "loans_2026-01-02.parquet"
FAIL_FAST_SECONDS = 15


def upload_day(s3: S3Server, bucket: str, day: dt.date, *, day_index: int, rows: int = ROWS) -> str:
    """One day's file, PUT in one request (an S3 PUT is atomic: no temp name needed)."""
    frame = generate_loans(rows, day=day, seed=1, id_offset=day_index * 10_000_000)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    key = f"landing/demo/loans_{day.isoformat()}.parquet"
    s3.client().put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
    return key


def list_keys(s3: S3Server, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return sorted(keys)


def materializations(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None):
    flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
    return [r.asset_materialization for r in instance.fetch_materializations(flt, limit=100).records]


@dataclass
class World:
    s3: S3Server
    bucket: str
    root: Path
    spec: PipelineSpec
    names: Pipeline
    defs: dg.Definitions
    instance: dg.DagsterInstance
    auto: InlineAutomation

    @property
    def sensor(self) -> str:
        return self.names.sensor("new_data")


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3_server: S3Server) -> World:
    bucket = create_bucket(s3_server, "mlops-lifecycle")
    root = tmp_path_factory.mktemp("s3_lifecycle")
    endpoint = s3_server.endpoint_url
    spec = services_spec(root, f"s3://{bucket}/landing/demo")
    storage = ArtifactStore(base_uri=f"s3://{bucket}/artifacts", s3_endpoint_url=endpoint)
    registry = MLflowRegistry(tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                              artifact_location=f"s3://{bucket}/mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint)   # MLflow's own S3 client
        defs = build_mlops_defs(spec, storage=storage, registry=registry, s3=S3Resource(endpoint_url=endpoint))
        home = root / "dagster_home"
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            yield World(s3_server, bucket, root, spec, Pipeline(spec), defs, instance, InlineAutomation(defs, instance))
    delete_bucket(s3_server, bucket)


def test_day1_bootstraps_with_every_artifact_on_s3(world: World):
    key1 = upload_day(world.s3, world.bucket, DAY1, day_index=0)
    tick = world.auto.tick_sensor(world.sensor)
    assert len(tick.launched) == 1, tick.skip_reason
    run = tick.launched[0]
    assert run.success
    assert run.dagster_run.tags[SOURCE_FILE_TAG] == f"s3://{world.bucket}/{key1}"
    assert parse_s3_cursor(world.auto.cursors[world.sensor]).since_key == key1

    artifacts = f"s3://{world.bucket}/artifacts/"
    path_values = []
    for stage in STAGES:
        found = materializations(world.instance, world.names.key(stage))
        assert found, f"{stage} not materialized"
        for name, value in found[0].metadata.items():
            if isinstance(value, dg.PathMetadataValue):
                path_values.append((stage, name, value.path))
    assert len(path_values) >= 8, path_values
    local = [(s, n, p) for s, n, p in path_values if not str(p).startswith(artifacts)]
    assert not local, f"artifact metadata that is not an s3:// URI under {artifacts}: {local}"
    raw_md = materializations(world.instance, world.names.key("raw_data"))[0].metadata
    assert raw_md["source"].value == f"s3://{world.bucket}/{key1}"

    # The objects themselves, listed with boto3.
    keys = list_keys(world.s3, world.bucket, "artifacts/")
    expected = [
        f"artifacts/demo/raw/{PART1}/data.parquet",
        f"artifacts/demo/features/{PART1}/data.parquet",
        f"artifacts/demo/predictions/{PART1}/v1.parquet",
        "artifacts/demo/models/v1/evaluation.json",         # evaluation report + gate
        "artifacts/demo/models/v1/registration.json",
        f"artifacts/demo/drift/{PART1}/v1/report.json",     # drift report
        f"artifacts/demo/drift/{PART1}/v1/drift_summary.html",   # our own summary, always
        f"artifacts/demo/drift/{PART1}/v1/drift_severity.png",
    ]
    # No drift on day 1 (the champion's own population): Evidently's page is not rendered.
    assert f"artifacts/demo/drift/{PART1}/v1/evidently.html" not in keys
    missing = [k for k in expected if k not in keys]
    assert not missing, f"missing S3 objects {missing}; bucket has {keys}"
    assert sorted(k for k in keys if k.startswith("artifacts/demo/models/v1/bundle/")) == [
        f"artifacts/demo/models/v1/bundle/{name}" for name in (
            "bundle.json", "encoder.json", "model.onnx", "model.txt", "reference_profile.json",
            "reference_sample.parquet")]
    stored = world.defs.resources[world.names.storage_key].read_parquet(f"demo/predictions/{PART1}/v1.parquet")
    assert stored.height == ROWS and stored["score"].is_between(0, 1).all()

    # MLflow: the model version's artifacts are S3 objects too, and nothing went to local disk.
    registry = world.defs.resources[world.names.registry_key]
    champion = registry.version_by_alias("demo", "champion")
    assert champion is not None and champion.version == "1"
    run_info = registry.client().get_run(champion.run_id).info
    assert run_info.artifact_uri.startswith(f"s3://{world.bucket}/mlflow/demo/")
    mlflow_keys = list_keys(world.s3, world.bucket, "mlflow/")
    assert any(k.endswith("MLmodel") for k in mlflow_keys), mlflow_keys[:20]
    assert any("/bundle/" in k and k.endswith(".onnx") for k in mlflow_keys), mlflow_keys[:40]
    assert not (Path(world.spec.state_dir) / "mlartifacts").exists()
    assert not list(world.root.rglob("mlruns"))


def test_day2_the_s3_cursor_picks_only_the_new_object(world: World):
    key1 = f"landing/demo/{PART1}"
    day1_cursor = parse_s3_cursor(world.auto.cursors[world.sensor])
    assert day1_cursor.since_key == key1 and day1_cursor.taken_at_watermark == (key1,)
    key2 = upload_day(world.s3, world.bucket, DAY2, day_index=1)

    # What the cursor buys: listing from it returns the new object alone.
    client = world.defs.resources[world.names.s3_key].get_client()
    since, next_cursor = scan_s3_arrivals(client, world.spec.source.path, day1_cursor)
    assert [a.path for a in since.ready] == [f"s3://{world.bucket}/{key2}"] and next_cursor.since_key == key2
    full, _ = scan_s3_arrivals(client, world.spec.source.path, parse_s3_cursor(None))
    assert len(full.ready) == 2

    tick = world.auto.tick_sensor(world.sensor)
    assert len(tick.launched) == 1, tick.skip_reason
    run = tick.launched[0]
    assert run.success
    assert run.dagster_run.job_name == world.names.job("ingest")          # champion exists now
    assert run.dagster_run.tags["dagster/partition"] == PART2
    assert run.dagster_run.tags[SOURCE_FILE_TAG] == f"s3://{world.bucket}/{key2}"
    assert parse_s3_cursor(world.auto.cursors[world.sensor]).since_key == key2
    assert sorted(world.instance.get_dynamic_partitions(world.names.partitions_name)) == [PART1, PART2]
    assert f"artifacts/demo/predictions/{PART2}/v1.parquet" in list_keys(world.s3, world.bucket, "artifacts/")
    drift = materializations(world.instance, world.names.key("drift_report"), PART2)[0].metadata
    assert str(drift["report_uri"].value).startswith(f"s3://{world.bucket}/artifacts/")


def test_a_tick_with_nothing_new_skips(world: World):
    before = world.auto.cursors[world.sensor]
    runs_before = len(world.instance.get_runs())
    tick = world.auto.tick_sensor(world.sensor)
    assert not tick.launched and tick.skip_reason == "no new files"
    assert world.auto.cursors[world.sensor] == before
    assert len(world.instance.get_runs()) == runs_before


def test_credentials_never_reach_metadata_or_logs(world: World):
    """The secret key (from the environment) appears in no event, run, cursor, store or object."""
    from dagster._serdes import serialize_value

    secret = world.s3.credentials.secret_access_key
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == secret   # the runs did sign with it
    runs = world.instance.get_runs()
    assert len(runs) >= 2
    events = 0
    for run in runs:
        assert secret not in serialize_value(run)          # run config, tags, origins
        for entry in world.instance.all_logs(run.run_id):
            events += 1
            assert secret not in serialize_value(entry), f"secret in an event of run {run.run_id}"
    assert events > 50
    assert all(secret not in (c or "") for c in world.auto.cursors.values())

    # Every file the instance and MLflow wrote locally (sqlite stores, logs, checkpoints).
    files = [p for p in world.root.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files)
    leaked = [p for p in files if secret.encode() in p.read_bytes()]
    assert not leaked, f"secret key found in {leaked}"

    # Every object written to the bucket: artifacts, reports, MLflow models.
    client = world.s3.client()
    for key in list_keys(world.s3, world.bucket):
        body = client.get_object(Bucket=world.bucket, Key=key)["Body"].read()
        assert secret.encode() not in body, f"secret key found in s3://{world.bucket}/{key}"

    # MLflow run params and tags.
    registry = world.defs.resources[world.names.registry_key]
    for version in registry.list_versions("demo"):
        data = registry.client().get_run(version.run_id).data
        assert secret not in repr(data.params) + repr(data.tags)


# -- failure: an endpoint nothing listens on --------------------------------------------------
def _elapsed(fn) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the error itself is under test
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


def test_unreachable_s3_endpoint_fails_fast_and_names_the_host(tmp_path, s3_server: S3Server, s3_bucket: str):
    closed = f"127.0.0.1:{free_port()}"
    dead = f"http://{closed}"

    # The storage resource, call by call.
    store = ArtifactStore(base_uri=f"s3://{s3_bucket}/artifacts", s3_endpoint_url=dead)
    for what, call in [("write", lambda: store.write_bytes("a/b.json", b"{}")),
                       ("read", lambda: store.read_bytes("a/b.json")),
                       ("exists", lambda: store.exists("a/b.json")),
                       ("list", lambda: store.list("a"))]:
        seconds, exc = _elapsed(call)
        assert isinstance(exc, StorageError), f"{what}: {exc!r}"
        assert closed in str(exc), f"{what}: {exc}"
        assert seconds < FAIL_FAST_SECONDS, f"{what} took {seconds:.1f}s"

    # A run: the source is reachable (moto), the artifact store is not -> raw_data fails fast.
    upload_day(s3_server, s3_bucket, DAY1, day_index=0, rows=300)
    spec = services_spec(tmp_path, f"s3://{s3_bucket}/landing/demo")
    names = Pipeline(spec)
    defs = build_mlops_defs(spec, storage=store, s3=S3Resource(endpoint_url=s3_server.endpoint_url))
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        instance.add_dynamic_partitions(names.partitions_name, [PART1])
        job = defs.resolve_job_def(names.job("ingest"))
        start = time.monotonic()
        result = job.execute_in_process(instance=instance, partition_key=PART1, raise_on_error=False,
                                        asset_selection=[names.key("raw_data")])
        seconds = time.monotonic() - start
        assert not result.success
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert failures
        message = failures[0].step_failure_data.error.to_string()
        assert "StorageError" in message and closed in message, message
        assert seconds < FAIL_FAST_SECONDS, f"the failing run took {seconds:.1f}s"
        assert not materializations(instance, names.key("raw_data"))

    # The sensor: its S3 client points at the dead endpoint -> the tick raises, naming it.
    dead_defs = build_mlops_defs(spec, s3=S3Resource(endpoint_url=dead))
    (tmp_path / "home2").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home2")) as instance:
        auto = InlineAutomation(dead_defs, instance)
        seconds, exc = _elapsed(lambda: auto.tick_sensor(names.sensor("new_data")))
        assert exc is not None and closed in str(exc), repr(exc)
        assert seconds < FAIL_FAST_SECONDS, f"the sensor tick took {seconds:.1f}s"
        assert not instance.get_runs()

