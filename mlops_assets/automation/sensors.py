"""Sensors: new files start ingestion; a drift signal starts one retrain per data version."""


import hashlib

import dagster as dg

from mlops_assets.automation.jobs import PREPARE_STAGES, PipelineJobs
from mlops_assets.automation.s3_listing import dump_s3_cursor, parse_s3_cursor, scan_s3_arrivals
from mlops_assets.core.arrivals import ArrivalCursor, scan_arrivals
from mlops_assets.stages.common import Names, partition_key_for_file
from mlops_assets.stages.drift import INPUT_DATA_VERSION, RETRAIN_SIGNAL

TRIGGER_TAG = "mlops/trigger"
SOURCE_FILE_TAG = "mlops/source_file"
DATA_VERSION_TAG = "mlops/data_version"


def retrain_run_key(trigger: str, data_version: str) -> str:
    """One trigger kind on one data version -> one run key -> at most one retrain."""
    return hashlib.sha256(f"{trigger}:{data_version}".encode()).hexdigest()[:24]


def build_new_data_sensor(names: Names, jobs: PipelineJobs) -> dg.SensorDefinition:
    spec = names.spec
    source = spec.source

    s3_source = bool(source.path and source.path.startswith("s3://"))

    @dg.sensor(
        name=names.sensor("new_data"),
        jobs=[jobs.ingest, jobs.bootstrap],
        minimum_interval_seconds=spec.automation.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={names.s3} if s3_source else None,
        description=f"New complete files in {source.path} -> one partition and run each.",
    )
    def new_data_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if s3_source:
            client = getattr(context.resources, names.s3).get_client()
            scan, since_key = scan_s3_arrivals(client, source.path, parse_s3_cursor(context.cursor),
                                               require_success_marker=source.require_success_marker)
            next_cursor = dump_s3_cursor(since_key)
        else:
            cursor = ArrivalCursor.parse(context.cursor)
            scan = scan_arrivals(source.path, cursor, settle_seconds=source.settle_seconds,
                                 require_success_marker=source.require_success_marker)
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


def build_drift_retrain_sensor(names: Names, jobs: PipelineJobs) -> dg.SensorDefinition:
    spec = names.spec
    drift_key = names.key("drift_report")

    @dg.sensor(
        name=names.sensor("drift_retrain"),
        job=jobs.retrain,
        minimum_interval_seconds=spec.automation.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Drift report over threshold -> retrain, once per drifted data version.",
    )
    def drift_retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if not spec.automation.retrain_on_drift:
            return dg.SensorResult(skip_reason="retrain_on_drift is off in the spec", cursor=context.cursor)
        found = context.instance.fetch_materializations(drift_key, limit=200, cursor=context.cursor, ascending=True)
        requests: dict[str, dg.RunRequest] = {}
        for record in found.records:
            mat = record.asset_materialization
            md = mat.metadata
            if RETRAIN_SIGNAL not in md or not md[RETRAIN_SIGNAL].value:
                continue
            version = md[INPUT_DATA_VERSION].value
            run_key = retrain_run_key("drift", version)
            requests[run_key] = dg.RunRequest(
                run_key=run_key,
                tags={TRIGGER_TAG: "drift", DATA_VERSION_TAG: version, "mlops/partition": mat.partition or ""},
            )
        if not requests:
            reason = f"no drift signal in {len(found.records)} new drift reports"
            return dg.SensorResult(skip_reason=reason, cursor=found.cursor or context.cursor)
        return dg.SensorResult(run_requests=list(requests.values()), cursor=found.cursor)

    return drift_retrain_sensor
