"""New objects under an S3 prefix, listed with dagster-aws `get_objects`.

S3 PUTs are atomic, so an object is complete as soon as it is listed; only the optional
`_SUCCESS` marker mode can make one wait. An object's identity is its size, LastModified and
ETag: the sensor does not download it; raw_data reads it with If-Match on that ETag and
records the SHA-256 of what it read.

Why not `get_objects(since_key=...)` alone: it slices a listing sorted by LastModified,
which S3 reports to the second, so an object written in the same second as the cursor's
key but listed before it would be skipped forever (and a deleted cursor key raises).
We list with `since_last_modified` one second before the watermark and drop the keys
already taken at the watermark second, which the cursor remembers. A waiting object
(no marker yet) holds the watermark back, so nothing is ever skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field

from mlops_assets.sources.keys import (
    DATA_SUFFIXES,
    SUCCESS_SUFFIX,
    is_temporary,
    partition_key_for_file,
)
from mlops_assets.sources.local import Arrival, ArrivalScan, Waiting


@dataclass(frozen=True)
class S3Cursor:
    since_key: str | None = None               # the newest key taken (informational)
    last_modified: dt.datetime | None = None   # watermark: everything before it was taken
    taken_at_watermark: tuple[str, ...] = field(default_factory=tuple)


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, (prefix.rstrip("/") + "/") if prefix else ""


def parse_s3_cursor(raw: str | None) -> S3Cursor:
    if not raw:
        return S3Cursor()
    data = json.loads(raw)
    lm = data.get("last_modified")
    return S3Cursor(data.get("since_key"), dt.datetime.fromisoformat(lm) if lm else None,
                    tuple(data.get("taken_at_watermark", [])))


def dump_s3_cursor(cursor: S3Cursor) -> str:
    return json.dumps({
        "since_key": cursor.since_key,
        "last_modified": cursor.last_modified.isoformat() if cursor.last_modified else None,
        "taken_at_watermark": list(cursor.taken_at_watermark),
    })


def scan_s3_arrivals(client, uri: str, cursor: S3Cursor, *, require_success_marker: bool = False
                     ) -> tuple[ArrivalScan, S3Cursor]:
    from dagster_aws.s3.sensor import get_objects

    bucket, prefix = split_s3_uri(uri)
    since = cursor.last_modified - dt.timedelta(seconds=1) if cursor.last_modified else None
    objects = get_objects(bucket, prefix, since_last_modified=since, client=client)
    listed = {o["Key"] for o in objects}
    taken_before = set(cursor.taken_at_watermark)
    scan = ArrivalScan(scanned=len(objects))
    taken: list[tuple[dt.datetime, str]] = []
    oldest_waiting: dt.datetime | None = None
    for obj in objects:   # sorted by LastModified
        key, modified = obj["Key"], obj["LastModified"]
        if cursor.last_modified and (modified < cursor.last_modified or
                                     (modified == cursor.last_modified and key in taken_before)):
            continue
        name = os.path.basename(key)
        if "/" in key[len(prefix):] or is_temporary(name) or not name.lower().endswith(DATA_SUFFIXES):
            if not name.endswith(SUCCESS_SUFFIX):
                scan.ignored.append(key)
            taken.append((modified, key))
            continue
        modified_ns = int(modified.timestamp() * 1e9)
        arrival = Arrival(name, f"s3://{bucket}/{key}", int(obj.get("Size", 0)), modified_ns, modified_ns,
                          etag=str(obj.get("ETag", "")).strip('"'))
        if require_success_marker and (key + SUCCESS_SUFFIX) not in listed:
            scan.waiting.append(Waiting(arrival, f"no {name + SUCCESS_SUFFIX} marker yet"))
            oldest_waiting = modified if oldest_waiting is None else min(oldest_waiting, modified)
            continue
        # An overwritten object is listed again (a new LastModified): the sensor compares it
        # with what the partition recorded. An empty object is complete (PUTs are atomic) and
        # goes to raw_data, which quarantines it with its reason.
        (scan.ready if partition_key_for_file(name) else scan.unkeyable).append(arrival)
        taken.append((modified, key))
    if oldest_waiting is not None:
        taken = [(m, k) for m, k in taken if m < oldest_waiting]
    if not taken:
        return scan, cursor
    watermark = max(m for m, _ in taken)
    at_mark = [k for m, k in taken if m == watermark]
    if watermark == cursor.last_modified:
        at_mark = sorted(set(at_mark) | taken_before)
    newest_key = max(taken)[1]
    return scan, S3Cursor(newest_key, watermark, tuple(sorted(at_mark)))


def s3_client(resource):
    """The boto3 client behind a pipeline's S3 resource key.

    Sensors and assets declare that key in `required_resource_keys`; dagster-aws's S3Resource
    then attaches its boto3 client, not itself, to the context. A plain S3Resource is accepted too.
    """
    return resource.get_client() if hasattr(type(resource), "get_client") else resource
