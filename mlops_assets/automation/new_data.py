"""The new-data sensor: each new complete file (or upstream materialization) -> one partition and run."""


import time

import dagster as dg

from mlops_assets.automation.jobs import PREPARE_STAGES, PipelineJobs
from mlops_assets.pipeline import Pipeline
from mlops_assets.signals import SOURCE_FILE_TAG, TRIGGER_TAG
from mlops_assets.sources.keys import partition_key_for_file
from mlops_assets.sources.local import Arrival, ArrivalCursor, ArrivalScan, scan_arrivals
from mlops_assets.sources.s3 import dump_s3_cursor, parse_s3_cursor, s3_client, scan_s3_arrivals
from mlops_assets.state import champion_of_record

NAME_CACHE_SECONDS = 600


def _upstream_arrivals(context: dg.SensorEvaluationContext, upstream: dg.AssetKey):
    """Bring-your-own raw data: each new materialization of the user's asset is an arrival."""
    found = context.instance.fetch_materializations(upstream, limit=100, cursor=context.cursor, ascending=True)
    scan = ArrivalScan(scanned=len(found.records))
    for record in found.records:
        key = f"{upstream.path[-1]}-{record.storage_id}"
        scan.ready.append(Arrival(key, upstream.to_user_string(), 0, record.storage_id))
    return scan, (found.cursor if found.records else context.cursor)


def build_new_data_sensor(pipeline: Pipeline, jobs: PipelineJobs) -> dg.SensorDefinition:
    spec = pipeline.spec
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
        name=pipeline.sensor("new_data"),
        jobs=[jobs.ingest, jobs.bootstrap],
        minimum_interval_seconds=spec.automation.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={pipeline.s3_key} if s3_source else None,
        description=(f"New materializations of {upstream.to_user_string()}" if upstream
                     else f"New complete files in {source.path}") + " -> one partition and run each.",
    )
    def new_data_sensor(context: dg.SensorEvaluationContext, **_bound) -> dg.SensorResult:
        # `**_bound`: calling the sensor directly (tests, InlineAutomation) passes the required
        # resources as keyword arguments; the daemon does not. Both read context.resources.
        if upstream is not None:
            scan, next_cursor = _upstream_arrivals(context, upstream)
        elif s3_source:
            client = s3_client(getattr(context.resources, pipeline.s3_key))
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
            if instance.has_dynamic_partition(pipeline.partitions_name, key):
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

        requests = arrival_requests(pipeline, jobs, fresh, has_champion=champion_of_record(instance, pipeline)
                                    is not None, first_ever=not instance.get_dynamic_partitions(pipeline.partitions_name))
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[pipeline.partitions_def.build_add_request([k for k, _ in fresh])],
            cursor=next_cursor,
        )

    return new_data_sensor


def arrival_requests(pipeline: Pipeline, jobs: PipelineJobs, fresh: list, *, has_champion: bool,
                     first_ever: bool) -> list[dg.RunRequest]:
    """One run per new arrival. With a champion: the ingest job (validate, score, check drift).
    Before the first champion: a lone first file runs the whole lifecycle at once; several
    files are only prepared (validated), and the retrain sensor bootstraps once every one of
    them is validated, so no partition misses the first training set."""
    requests = []
    for key, arrival in fresh:
        tags = {SOURCE_FILE_TAG: arrival.path, TRIGGER_TAG: "new_data"}
        run_key = f"{key}:{arrival.size}:{arrival.arrived_ns}"
        if has_champion:
            requests.append(dg.RunRequest(run_key=run_key, partition_key=key, job_name=jobs.ingest.name, tags=tags))
        elif first_ever and len(fresh) == 1:
            requests.append(dg.RunRequest(run_key=run_key, partition_key=key, job_name=jobs.bootstrap.name,
                                          tags={**tags, TRIGGER_TAG: "bootstrap"}))
        else:
            requests.append(dg.RunRequest(run_key=run_key, partition_key=key, job_name=jobs.ingest.name, tags=tags,
                                          asset_selection=pipeline.keys(PREPARE_STAGES)))
    return requests
