"""New objects under an S3 prefix, listed with dagster-aws `get_objects(since_key=...)`.

S3 PUTs are atomic, so an object is complete as soon as it is listed; only the optional
`_SUCCESS` marker mode can make one wait. The cursor is the last key taken such that
every object listed before it was taken too, so a waiting object is never skipped.
"""

from __future__ import annotations

import json
import os

from mlops_assets.core.arrivals import (
    DATA_SUFFIXES,
    SUCCESS_SUFFIX,
    Arrival,
    ArrivalScan,
    is_temporary,
)


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, (prefix.rstrip("/") + "/") if prefix else ""


def parse_s3_cursor(raw: str | None) -> str | None:
    return json.loads(raw).get("since_key") if raw else None


def dump_s3_cursor(since_key: str | None) -> str:
    return json.dumps({"since_key": since_key})


def scan_s3_arrivals(client, uri: str, since_key: str | None, *, require_success_marker: bool = False) -> tuple[ArrivalScan, str | None]:
    from dagster_aws.s3.sensor import get_objects

    bucket, prefix = split_s3_uri(uri)
    try:
        objects = get_objects(bucket, prefix, since_key=since_key, client=client)
    except Exception as exc:  # the cursor's key was deleted or moved: fall back to a full listing
        if "since_key" not in str(exc):
            raise
        objects = get_objects(bucket, prefix, client=client)
    scan = ArrivalScan(scanned=len(objects))
    keys = {o["Key"] for o in objects}
    next_key = since_key
    blocked = False
    for obj in objects:
        key = obj["Key"]
        name = os.path.basename(key)
        if "/" in key[len(prefix):] or is_temporary(name) or not name.lower().endswith(DATA_SUFFIXES):
            if not name.endswith(SUCCESS_SUFFIX):
                scan.ignored.append(key)
            if not blocked:
                next_key = key
            continue
        arrival = Arrival(name, f"s3://{bucket}/{key}", int(obj.get("Size", 0)),
                          int(obj["LastModified"].timestamp() * 1e9))
        if require_success_marker and (key + SUCCESS_SUFFIX) not in keys:
            scan.waiting.append(arrival)
            blocked = True
            continue
        scan.ready.append(arrival)
        if not blocked:
            next_key = key
    return scan, next_key


def s3_client(resource):
    """The boto3 client behind a pipeline's S3 resource key.

    Sensors and assets declare that key in `required_resource_keys`; dagster-aws's S3Resource
    then attaches its boto3 client, not itself, to the context. A plain S3Resource is accepted too.
    """
    return resource.get_client() if hasattr(type(resource), "get_client") else resource
