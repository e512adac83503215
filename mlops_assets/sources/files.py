"""Reading one arrival (a local or S3 file) and quarantining what cannot be read."""

from __future__ import annotations

import io
import os
from pathlib import Path

import polars as pl

from mlops_assets.sources.keys import check_partition_key

QUARANTINE_DIR = "_quarantine"


class ArrivalReadError(ValueError):
    """An arrival that cannot be read; the message names the file and the cause."""


def arrival_uri(source_path: str, partition_key: str) -> str:
    """The landing-zone location of a partition's file. The key is checked first, so a key
    such as `../../x` can never point outside the landing folder."""
    check_partition_key(partition_key)
    if source_path.startswith("s3://"):
        return source_path.rstrip("/") + "/" + partition_key
    return os.path.join(source_path, partition_key)


def _format_of(name: str, fmt: str) -> str:
    return fmt if fmt != "auto" else Path(name).suffix.lstrip(".").lower()


def _parse(payload, kind: str, where: str) -> pl.DataFrame:
    try:
        if kind in ("parquet", "pq"):
            return pl.read_parquet(payload)
        if kind == "csv":
            return pl.read_csv(payload, try_parse_dates=True, infer_schema_length=10_000)
    except FileNotFoundError as exc:
        raise ArrivalReadError(f"arrival file {where} does not exist") from exc
    except Exception as exc:  # polars raises many types for corrupt input
        raise ArrivalReadError(f"arrival file {where} is unreadable as {kind}: {exc}") from exc
    raise ArrivalReadError(f"arrival file {where}: unsupported format '{kind}' (parquet or csv)")


def read_arrival_file(path: str, fmt: str = "auto") -> pl.DataFrame:
    """Read one local arrival file; a clear error names the file when it cannot be read."""
    return _parse(path, _format_of(path, fmt), path)


def read_s3_arrival(client, uri: str, fmt: str = "auto") -> pl.DataFrame:
    bucket, _, key = uri[len("s3://"):].partition("/")
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return _parse(io.BytesIO(body), _format_of(key, fmt), uri)


def read_arrival(uri: str, fmt: str = "auto", s3_client=None) -> pl.DataFrame:
    if uri.startswith("s3://"):
        return read_s3_arrival(s3_client, uri, fmt)
    return read_arrival_file(uri, fmt)


def quarantine_local_file(origin: str, reason: str) -> str | None:
    """Move an unreadable local file aside (never delete it) with a note saying why.
    Returns where it went, or None when there is nothing local to move."""
    if origin.startswith("s3://") or not os.path.exists(origin):
        return None
    qdir = os.path.join(os.path.dirname(origin), QUARANTINE_DIR)
    os.makedirs(qdir, exist_ok=True)
    moved_to = os.path.join(qdir, os.path.basename(origin))
    os.replace(origin, moved_to)
    Path(moved_to + ".reason.txt").write_text(reason + "\n")
    return moved_to
