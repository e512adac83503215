"""Sensors: new files start ingestion; a drift signal starts one retrain per data version."""


import datetime as dt
import hashlib
import json
import time

import dagster as dg

from mlops_assets.automation.jobs import PREPARE_STAGES, PipelineJobs
from mlops_assets.automation.s3_listing import (
    dump_s3_cursor,
    parse_s3_cursor,
    s3_client,
    scan_s3_arrivals,
)
from mlops_assets.core.arrivals import Arrival, ArrivalCursor, ArrivalScan, scan_arrivals
from mlops_assets.stages.common import Names, partition_key_for_file
from mlops_assets.stages.drift import INPUT_DATA_VERSION, RETRAIN_SIGNAL

TRIGGER_TAG = "mlops/trigger"
MAX_HANDLED_KEYS = 2_000
NAME_CACHE_SECONDS = 600
SOURCE_FILE_TAG = "mlops/source_file"
DATA_VERSION_TAG = "mlops/data_version"


def retrain_run_key(trigger: str, data_version: str) -> str:
    """One trigger kind on one data version -> one run key -> at most one retrain."""
    return hashlib.sha256(f"{trigger}:{data_version}".encode()).hexdigest()[:24]


def _upstream_arrivals(context: dg.SensorEvaluationContext, upstream: dg.AssetKey):
    """Bring-your-own raw data: each new materialization of the user's asset is an arrival."""
    found = context.instance.fetch_materializations(upstream, limit=100, cursor=context.cursor, ascending=True)
    scan = ArrivalScan(scanned=len(found.records))
    for record in found.records:
        key = f"{upstream.path[-1]}-{record.storage_id}"
        scan.ready.append(Arrival(key, upstream.to_user_string(), 0, record.storage_id))
    return scan, (found.cursor if found.records else context.cursor)


def build_new_data_sensor(names: Names, jobs: PipelineJobs) -> dg.SensorDefinition:
    spec = names.spec
    source = spec.source

    s3_source = bool(source.path and source.path.startswith("s3://"))
    upstream = dg.AssetKey(source.asset_key) if source.asset_key else None
    # Names whose partition is confirmed to exist, kept by the long-lived code server.
    # Only ever a shortcut: losing it (a restart) costs one full stat pass, nothing else.
    # Forgotten every NAME_CACHE_SECONDS, so a file touched again after its partition was
    # deleted (to re-ingest it) is seen again within that time.
    ingested: set[str] = set()
    cache_started = [time.monotonic()]

    @dg.sensor(
        name=names.sensor("new_data"),
        jobs=[jobs.ingest, jobs.bootstrap],
        minimum_interval_seconds=spec.automation.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={names.s3} if s3_source else None,
        description=(f"New materializations of {upstream.to_user_string()}" if upstream
                     else f"New complete files in {source.path}") + " -> one partition and run each.",
    )
    def new_data_sensor(context: dg.SensorEvaluationContext, **_bound) -> dg.SensorResult:
        # `**_bound`: calling the sensor directly (tests, InlineAutomation) passes the required
        # resources as keyword arguments; the daemon does not. Both read context.resources.
        if upstream is not None:
            scan, next_cursor = _upstream_arrivals(context, upstream)
        elif s3_source:
            client = s3_client(getattr(context.resources, names.s3))
            scan, s3_cursor = scan_s3_arrivals(client, source.path, parse_s3_cursor(context.cursor),
                                               require_success_marker=source.require_success_marker)
            next_cursor = dump_s3_cursor(s3_cursor)
        else:
            cursor = ArrivalCursor.parse(context.cursor)
            if time.monotonic() - cache_started[0] > NAME_CACHE_SECONDS:
                ingested.clear()
                cache_started[0] = time.monotonic()
            scan = scan_arrivals(source.path, cursor, settle_seconds=source.settle_seconds,
                                 require_success_marker=source.require_success_marker, known=ingested)
            # Files behind the watermark were taken by earlier ticks (arrival time includes
            # ctime, which a new or moved-in file always refreshes): never stat them again.
            ingested.update(scan.history)
            next_cursor = ArrivalCursor(scan.watermark_ns).dump()
        instance = context.instance
        fresh: list[tuple[str, object]] = []
        bad_names: list[str] = []
        for arrival in scan.ready:
            key = partition_key_for_file(arrival.name)
            if key is None:
                bad_names.append(arrival.name)
                continue
            if instance.has_dynamic_partition(names.partitions, key):
                # Confirmed stored: later ticks in this process skip it without a stat.
                ingested.add(arrival.name)
                continue
            fresh.append((key, arrival))
        if bad_names:
            context.log.warning(f"file names that cannot be partition keys, not ingested: {bad_names}")
        if not fresh:
            reason = f"no new complete files ({len(scan.waiting)} waiting to settle)" if scan.waiting \
                else "no new files"
            return dg.SensorResult(skip_reason=reason, cursor=next_cursor)

        has_champion = instance.get_latest_materialization_event(names.key("registered_model")) is not None
        requests = []
        for i, (key, arrival) in enumerate(fresh):
            tags = {SOURCE_FILE_TAG: arrival.path, TRIGGER_TAG: "new_data"}
            run_key = f"{key}:{arrival.size}:{arrival.arrived_ns}"
            if has_champion:
                requests.append(dg.RunRequest(run_key=run_key, partition_key=key, job_name=jobs.ingest.name, tags=tags))
            elif i < len(fresh) - 1:
                # Before the first champion: prepare every file, bootstrap on the newest.
                requests.append(dg.RunRequest(
                    run_key=run_key, partition_key=key, job_name=jobs.ingest.name, tags=tags,
                    asset_selection=[names.key(s) for s in PREPARE_STAGES],
                ))
            else:
                requests.append(dg.RunRequest(run_key=run_key, partition_key=key, job_name=jobs.bootstrap.name,
                                              tags={**tags, TRIGGER_TAG: "bootstrap"}))
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[names.partitions_def.build_add_request([k for k, _ in fresh])],
            cursor=next_cursor,
        )

    return new_data_sensor


def _retrain_blocked(instance: dg.DagsterInstance, job_name: str, automation, now: float) -> str | None:
    """Why a retrain may not start now (cooldown, budget), or None."""
    window_start = now - automation.retrain_budget_window_hours * 3600
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name,
                              created_after=dt.datetime.fromtimestamp(window_start, dt.UTC)),
    )
    if len(records) >= automation.retrain_budget:
        return (f"retrain budget spent: {len(records)} retrains in the last "
                f"{automation.retrain_budget_window_hours:g} h (budget {automation.retrain_budget})")
    if records:
        last = max(r.create_timestamp.timestamp() for r in records)
        wait = automation.retrain_cooldown_minutes * 60 - (now - last)
        if wait > 0:
            return f"cooldown: last retrain {int((now - last) // 60)} min ago, next allowed in {int(wait // 60) + 1} min"
    return None


def build_retrain_sensor(names: Names, jobs: PipelineJobs) -> dg.SensorDefinition:
    """Drift share, a key feature's drift or a performance drop -> one retrain per data version."""
    spec = names.spec
    auto = spec.automation
    sources = []
    if auto.retrain_on_drift:
        sources.append(("drift", names.key("drift_report")))
    if auto.retrain_on_performance_drop and spec.ground_truth is not None:
        sources.append(("performance", names.key("model_performance")))

    @dg.sensor(
        name=names.sensor("retrain"),
        job=jobs.retrain,
        minimum_interval_seconds=auto.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Drift or a performance drop -> retrain, once per (trigger, data version), "
                    "within the spec's cooldown and budget.",
    )
    def retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if not sources:
            return dg.SensorResult(skip_reason="retraining on drift and on performance drops is off in the spec")
        cursors = json.loads(context.cursor) if context.cursor else {}
        new_cursors = dict(cursors)
        handled: list[str] = list(cursors.get("handled", []))
        requests: dict[str, dg.RunRequest] = {}
        seen = 0
        for kind, key in sources:
            found = context.instance.fetch_materializations(key, limit=200, cursor=cursors.get(kind), ascending=True)
            seen += len(found.records)
            if found.records:
                new_cursors[kind] = found.cursor
            for record in found.records:
                mat = record.asset_materialization
                md = mat.metadata
                if RETRAIN_SIGNAL not in md or not md[RETRAIN_SIGNAL].value:
                    continue
                version = str(md[INPUT_DATA_VERSION].value)
                run_key = retrain_run_key(kind, version)
                requests[run_key] = dg.RunRequest(
                    run_key=run_key,
                    tags={TRIGGER_TAG: kind, DATA_VERSION_TAG: version, "mlops/partition": mat.partition or ""},
                )
        if not requests:
            return dg.SensorResult(skip_reason=f"no retrain signal in {seen} new drift/performance results",
                                   cursor=json.dumps(new_cursors))
        fresh = [r for r in requests.values()
                 if r.run_key not in handled and not _launched(context.instance, names.sensor("retrain"), r.run_key)]
        if not fresh:
            return dg.SensorResult(skip_reason="signals already handled: a retrain ran for each (loop protection)",
                                   cursor=json.dumps(new_cursors))
        blocked = _retrain_blocked(context.instance, jobs.retrain.name, auto, time.time())
        if blocked:
            # Keep the old cursor: the signal is re-read once the cooldown or budget allows.
            return dg.SensorResult(skip_reason=blocked, cursor=context.cursor)
        # One retrain covers every pending signal (it trains on all data at once); the
        # others are remembered as handled so they never start a second one.
        first = fresh[0]
        first.tags["mlops/signals"] = ",".join(sorted(r.run_key for r in fresh))[:1000]
        new_cursors["handled"] = (handled + [r.run_key for r in fresh])[-MAX_HANDLED_KEYS:]
        return dg.SensorResult(run_requests=[first], cursor=json.dumps(new_cursors))

    return retrain_sensor


def _launched(instance: dg.DagsterInstance, sensor_name: str, run_key: str) -> bool:
    from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

    return bool(instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: sensor_name}),
                                  limit=1))


def build_run_failure_sensor(names: Names, jobs: PipelineJobs, notifier) -> dg.SensorDefinition:
    """Run-failure sensors take no namespaced resource keys, so the pipeline's notifier is
    bound here and its config (EnvVar secrets included) resolved when an alert is sent."""

    @dg.run_failure_sensor(
        name=names.sensor("run_failure"),
        monitored_jobs=jobs.all(),
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Alert on any failed run of this pipeline's jobs.",
    )
    def run_failure_sensor(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        error = context.failure_event.message or "run failed"
        notifier.process_config_and_initialize().send(
            "run_failure", f"{names.pipeline}: run of {run.job_name} failed", error[:1500],
            {"run_id": run.run_id, "partition": run.tags.get("dagster/partition", "")},
        )

    return run_failure_sensor
