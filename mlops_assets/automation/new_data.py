"""The new-data sensor: each new complete file (or upstream materialization) -> one partition and run.

What one tick does with each data file of the landing folder or S3 prefix:
- new and complete: its content identity is taken (local: size, mtime and a streamed SHA-256;
  S3: size, LastModified and ETag), its partition is registered and one run is requested whose
  tags carry that identity, so raw_data can refuse a file that changed in between;
- as the cursor remembers it (same size and mtime): nothing, without a database call;
- its partition exists but its content differs from what the partition ingested: per
  `source.on_change`, an alert and a line in the tick naming the file (`report`), or a new run
  for the same partition (`reingest`); a file whose earlier run ingested nothing is always run again;
- a name that cannot be a partition key: moved to `_quarantine/` with a reason (local) and an alert;
- not complete yet (settling, no marker, no Parquet footer, no final CSV line break, empty):
  it waits, the tick says why, and after `source.complete_within_seconds` it goes to raw_data
  as it is, which quarantines it if it cannot be read. Nothing is skipped without a word.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from mlops_assets.automation.jobs import PREPARE_STAGES, PipelineJobs
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import PARTITION_KEY_TAG, SENSOR_NAME_TAG, SOURCE_FILE_TAG, TRIGGER_TAG
from mlops_assets.sources.files import (
    ArrivalChanged,
    ArrivalReadError,
    FileIdentity,
    QuarantineError,
    hash_local_file,
    quarantine_local_file,
)
from mlops_assets.sources.keys import KEY_RULE, upstream_partition_key
from mlops_assets.sources.local import Arrival, ArrivalCursor, ArrivalScan, scan_arrivals
from mlops_assets.sources.s3 import dump_s3_cursor, parse_s3_cursor, s3_client, scan_s3_arrivals
from mlops_assets.state import champion_of_record, latest_materialization

# Hashing is the one part of a tick that reads whole files: bound it, so a burst of large
# arrivals spreads over ticks instead of running into the tick's timeout. At least one file
# is hashed per tick, so progress never stops.
HASH_BUDGET_BYTES = 4 * 1024**3
SHOWN = 5   # names listed in one tick message


@dataclass(frozen=True)
class Take:
    """One run to request: a partition, the file behind it and why."""

    key: str
    arrival: Arrival
    identity: FileIdentity | None
    trigger: str = "new_data"


@dataclass
class Tick:
    """What one tick decided, file by file; `handled` feeds the cursor."""

    takes: list[Take] = field(default_factory=list)
    handled: list[tuple[Arrival, str]] = field(default_factory=list)
    waiting: list[tuple[Arrival, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _upstream_arrivals(context: dg.SensorEvaluationContext, upstream: dg.AssetKey):
    """Bring-your-own raw data: each new materialization of the user's asset is an arrival."""
    found = context.instance.fetch_materializations(upstream, limit=100, cursor=context.cursor, ascending=True)
    scan = ArrivalScan(scanned=len(found.records))
    for record in found.records:
        key = upstream_partition_key(upstream.path[-1], record.storage_id)
        scan.ready.append(Arrival(key, upstream.to_user_string(), 0, record.storage_id))
    return scan, (found.cursor if found.records else context.cursor)


def build_new_data_sensor(pipeline: Pipeline, jobs: PipelineJobs) -> dg.SensorDefinition:
    spec = pipeline.spec
    source = spec.source
    s3_source = bool(source.path and source.path.startswith("s3://"))
    upstream = dg.AssetKey(source.asset_key) if source.asset_key else None
    resource_keys = {pipeline.notifier_key} | ({pipeline.s3_key} if s3_source else set())

    @dg.sensor(
        name=pipeline.sensor("new_data"),
        jobs=[jobs.ingest, jobs.bootstrap],
        minimum_interval_seconds=spec.automation.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        required_resource_keys=resource_keys,
        description=(f"New materializations of {upstream.to_user_string()}" if upstream
                     else f"New complete files in {source.path}") + " -> one partition and run each.",
    )
    def new_data_sensor(context: dg.SensorEvaluationContext, **_bound) -> dg.SensorResult:
        # `**_bound`: calling the sensor directly (tests, InlineAutomation) passes the required
        # resources as keyword arguments; the daemon does not. Both read context.resources.
        notifier = getattr(context.resources, pipeline.notifier_key)
        tick = Tick()
        if upstream is not None:
            scan, next_cursor = _upstream_arrivals(context, upstream)
            for arrival in scan.ready:
                if not context.instance.has_dynamic_partition(pipeline.partitions_name, arrival.name):
                    tick.takes.append(Take(arrival.name, arrival, None))
            return _result(context, pipeline, jobs, tick, scan, next_cursor)

        if s3_source:
            client = s3_client(getattr(context.resources, pipeline.s3_key))
            scan, s3_cursor = scan_s3_arrivals(client, source.path, parse_s3_cursor(context.cursor),
                                               require_success_marker=source.require_success_marker)
            _quarantine_names(pipeline, scan.unkeyable, tick, notifier, local=False)
            for arrival in scan.ready:
                identity = FileIdentity(arrival.size, arrival.mtime_ns, etag=arrival.etag)
                _consider(context, pipeline, tick, notifier, arrival, identity)
            return _result(context, pipeline, jobs, tick, scan, dump_s3_cursor(s3_cursor))

        cursor = ArrivalCursor.parse(context.cursor)
        scan = scan_arrivals(source.path, cursor, settle_seconds=source.settle_seconds,
                             require_success_marker=source.require_success_marker,
                             complete_within_seconds=source.complete_within_seconds,
                             allow_symlinks=source.allow_symlinks, fmt=source.format)
        tick.waiting.extend((w.arrival, w.why) for w in scan.waiting)
        _quarantine_names(pipeline, scan.unkeyable, tick, notifier, local=True)
        budget = HASH_BUDGET_BYTES
        for arrival in scan.ready:
            if arrival.refused:   # a link or a special file: raw_data refuses it; never read it here
                identity = FileIdentity(arrival.size, arrival.mtime_ns)
            elif arrival.size > budget and budget < HASH_BUDGET_BYTES:
                tick.waiting.append((arrival, "to be hashed next tick (this tick's hashing budget is spent)"))
                continue
            else:
                try:
                    identity = hash_local_file(arrival.path, allow_symlinks=source.allow_symlinks)
                except (ArrivalChanged, ArrivalReadError) as exc:   # written to, or swapped, as we read
                    tick.waiting.append((arrival, f"changing while hashed ({exc})"))
                    continue
                budget -= arrival.size
            _consider(context, pipeline, tick, notifier, arrival, identity,
                      remembered=cursor.seen.get(arrival.name, (0, 0, ""))[2])
        handled = tick.handled + [(a, cursor.seen[a.name][2]) for a in scan.unchanged]
        next_cursor = cursor.advance(handled, [a.arrived_ns for a, _ in tick.waiting]).dump()
        return _result(context, pipeline, jobs, tick, scan, next_cursor)

    return new_data_sensor


def _consider(context, pipeline: Pipeline, tick: Tick, notifier, arrival: Arrival, identity: FileIdentity,
              remembered: str = "") -> None:
    """New file -> a run; a known file -> compare its content with what its partition recorded."""
    key, instance = arrival.name, context.instance
    tick.handled.append((arrival, identity.sha256))
    if not instance.has_dynamic_partition(pipeline.partitions_name, key):
        tick.takes.append(Take(key, arrival, identity))
        return
    if remembered and identity.sha256.startswith(remembered):
        return                                  # touched, or copied over with the same bytes
    ingested, requested = recorded_identities(instance, pipeline, key)
    if ingested is None and requested is None:
        return                                  # taken by hand (UI, API): nothing to compare with
    if identity.same_content(ingested) or identity.same_content(requested):
        return
    if ingested is None or pipeline.spec.source.on_change == "reingest":
        tick.takes.append(Take(key, arrival, identity, trigger="changed"))
        tick.notes.append(f"{key} changed ({identity.describe()}): running its partition again")
        return
    tick.notes.append(f"{key} changed after it was ingested ({ingested.describe()} -> {identity.describe()}); "
                      "its partition keeps what it ingested (source.on_change: report)")
    notifier.send(
        "source_changed", f"{pipeline.name}: {key} changed after it was ingested",
        "The partition keeps the content it ingested (source.on_change: report). To take the new content, "
        "materialize raw_data for this partition again, or set source.on_change: reingest.",
        {"partition": key, "file": arrival.path, "ingested": ingested.describe(), "now": identity.describe()},
    )


def recorded_identities(instance: dg.DagsterInstance, pipeline: Pipeline, key: str
                        ) -> tuple[FileIdentity | None, FileIdentity | None]:
    """What the partition ingested (raw_data's latest materialization) and what this sensor
    last requested for it (its latest run's tags). Only asked for a file whose size or mtime
    differ from what the cursor remembers: an overwrite, or a cursor that was reset."""
    materialization = latest_materialization(instance, pipeline.key(Stage.RAW_DATA), key)
    ingested = FileIdentity.from_metadata(materialization.metadata) if materialization is not None else None
    runs = instance.get_runs(filters=dg.RunsFilter(
        tags={PARTITION_KEY_TAG: key, SENSOR_NAME_TAG: pipeline.sensor("new_data")}), limit=1)
    requested = FileIdentity.from_tags(runs[0].tags) if runs else None
    return ingested, requested


def _quarantine_names(pipeline: Pipeline, arrivals: list[Arrival], tick: Tick, notifier, *, local: bool) -> None:
    """A file whose name cannot be a partition key can never be ingested as it is: move it
    aside (local) with the reason, alert, and say so in the tick. Renaming it ingests it."""
    for arrival in arrivals:
        reason = f"file name {arrival.name!r} cannot be a partition key: it must be {KEY_RULE}; rename it to ingest it"
        where = "left in place (an S3 object is never moved)"
        if local:
            try:
                where = f"moved to {quarantine_local_file(arrival.path, reason)}"
            except (QuarantineError, OSError) as exc:
                where = f"left in place: {exc}"
                tick.handled.append((arrival, ""))     # remembered, so it is reported once
        tick.notes.append(f"quarantined {arrival.name!r}: name cannot be a partition key; {where}")
        notifier.send("quarantine", f"{pipeline.name}: {arrival.name!r} quarantined", reason,
                      {"file": arrival.path, "where": where})


def _result(context, pipeline: Pipeline, jobs: PipelineJobs, tick: Tick, scan: ArrivalScan,
            next_cursor: str | None) -> dg.SensorResult:
    for note in tick.notes:
        context.log.warning(note)
    if not tick.takes:
        return dg.SensorResult(skip_reason=_skip_message(tick, scan), cursor=next_cursor)
    new_keys = list(dict.fromkeys(t.key for t in tick.takes if t.trigger != "changed"))
    instance = context.instance
    requests = arrival_requests(pipeline, jobs, tick.takes, has_champion=champion_of_record(instance, pipeline)
                                is not None, first_ever=not instance.get_dynamic_partitions(pipeline.partitions_name))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[pipeline.partitions_def.build_add_request(new_keys)] if new_keys else None,
        cursor=next_cursor,
    )


def _skip_message(tick: Tick, scan: ArrivalScan) -> str:
    parts = []
    if tick.waiting:
        shown = "; ".join(f"{a.name}: {why}" for a, why in tick.waiting[:SHOWN])
        more = f"; and {len(tick.waiting) - SHOWN} more" if len(tick.waiting) > SHOWN else ""
        parts.append(f"no new complete files ({len(tick.waiting)} waiting to settle or complete: {shown}{more})")
    parts.extend(tick.notes[:SHOWN])
    if len(tick.notes) > SHOWN:
        parts.append(f"and {len(tick.notes) - SHOWN} more (see the tick's log)")
    return "; ".join(parts) or "no new files"


def _run_key(take: Take) -> str:
    identity = take.identity
    version = (identity.sha256[:16] or identity.etag[:16] or str(identity.size)) if identity else "-"
    return f"{take.key}:{version}:{take.arrival.arrived_ns}"


def arrival_requests(pipeline: Pipeline, jobs: PipelineJobs, takes: list[Take], *, has_champion: bool,
                     first_ever: bool) -> list[dg.RunRequest]:
    """One run per new arrival. With a champion: the ingest job (validate, score, check drift).
    Before the first champion: a lone first file runs the whole lifecycle at once; several
    files are only prepared (validated), and the retrain sensor bootstraps once every one of
    them is validated, so no partition misses the first training set."""
    requests = []
    for take in takes:
        tags = {SOURCE_FILE_TAG: take.arrival.path, TRIGGER_TAG: take.trigger,
                **(take.identity.to_tags() if take.identity else {})}
        key, run_key = take.key, _run_key(take)
        if has_champion:
            requests.append(dg.RunRequest(run_key=run_key, partition_key=key, job_name=jobs.ingest.name, tags=tags))
        elif first_ever and len(takes) == 1:
            requests.append(dg.RunRequest(run_key=run_key, partition_key=key, job_name=jobs.bootstrap.name,
                                          tags={**tags, TRIGGER_TAG: "bootstrap"}))
        else:
            requests.append(dg.RunRequest(run_key=run_key, partition_key=key, job_name=jobs.ingest.name, tags=tags,
                                          asset_selection=pipeline.keys(PREPARE_STAGES)))
    return requests
