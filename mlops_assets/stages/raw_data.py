"""`raw_data`: one partition per arriving file, copied into storage as Parquet.

Partitioning choice: dynamic partitions, one per arrival file (key = file name). Files
arrive irregularly (several a day, or late), a file is the unit a producer completes,
and a per-file key makes "process this file exactly once" a property of the partition
itself rather than of sensor bookkeeping. Daily partitions would force re-ingesting a
whole day when one more file lands.
"""


import os
from pathlib import Path

import dagster as dg
import polars as pl

from mlops_assets.automation.s3_listing import s3_client
from mlops_assets.core.features import data_hash
from mlops_assets.stages.common import Names, Paths, table_schema


class RawDataError(ValueError):
    pass


def read_arrival_file(path: str, fmt: str = "auto") -> pl.DataFrame:
    """Read one arrival file; a clear error names the file when it cannot be read."""
    kind = fmt if fmt != "auto" else Path(path).suffix.lstrip(".").lower()
    try:
        if kind in ("parquet", "pq"):
            return pl.read_parquet(path)
        if kind == "csv":
            return pl.read_csv(path, try_parse_dates=True, infer_schema_length=10_000)
    except FileNotFoundError as exc:
        raise RawDataError(f"arrival file {path} does not exist") from exc
    except Exception as exc:  # polars raises many types for corrupt input
        raise RawDataError(f"arrival file {path} is unreadable as {kind}: {exc}") from exc
    raise RawDataError(f"arrival file {path}: unsupported format '{kind}' (parquet or csv)")


def source_file_path(source_path: str, partition_key: str) -> str:
    if source_path.startswith("s3://"):
        return source_path.rstrip("/") + "/" + partition_key
    return os.path.join(source_path, partition_key)


def build_raw_data_asset(names: Names, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    spec = names.spec
    paths = Paths(spec.name)
    upstream = dg.AssetKey(spec.source.asset_key) if spec.source.asset_key else None

    def ingest(context: dg.AssetExecutionContext, upstream_value=None) -> dg.MaterializeResult:
        storage = getattr(context.resources, names.storage)
        partition = context.partition_key
        if upstream is not None:
            df = _as_polars(upstream_value, upstream)
            origin = f"asset {upstream.to_user_string()}"
        else:
            origin = source_file_path(spec.source.path, partition)
            try:
                if origin.startswith("s3://"):
                    df = _read_s3_file(s3_client(getattr(context.resources, names.s3)), origin, spec.source.format)
                else:
                    df = read_arrival_file(origin, spec.source.format)
            except RawDataError as exc:
                raise quarantine(storage, spec.name, partition, origin, str(exc)) from exc
        uri = storage.write_parquet(paths.raw(partition), df)
        version = data_hash(df)
        context.log.info(f"ingested {df.height} rows from {origin} -> {uri}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": df.height,
                "dagster/column_schema": table_schema(df),
                "source": origin,
                "uri": dg.MetadataValue.path(uri),
                "data_version": version,
            },
            data_version=dg.DataVersion(version),
        )

    common = {
        "key": names.key("raw_data"),
        "group_name": spec.name,
        "partitions_def": partitions,
        "kinds": {"polars", "parquet"},
        "code_version": names.code_version,
        "required_resource_keys": {names.storage, names.s3},
        "description": "Raw arrivals, one partition per file (or per upstream materialization), as Parquet.",
    }
    if upstream is not None:
        # Bring-your-own raw data: the user's asset is loaded through its own IO manager,
        # and the lineage graph shows it upstream of raw_data.
        @dg.asset(**common, ins={"upstream": dg.AssetIn(key=upstream)})
        def raw_data(context: dg.AssetExecutionContext, upstream) -> dg.MaterializeResult:
            return ingest(context, upstream)
    else:
        @dg.asset(**common)
        def raw_data(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            return ingest(context)

    return raw_data


def _as_polars(value, key: dg.AssetKey) -> pl.DataFrame:
    if isinstance(value, pl.DataFrame):
        return value
    if isinstance(value, pl.LazyFrame):
        return value.collect()
    try:
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            return pl.from_pandas(value)
    except ImportError:
        pass
    raise RawDataError(
        f"upstream asset {key.to_user_string()} loaded a {type(value).__name__}; "
        "raw_data needs a pandas or polars DataFrame"
    )


QUARANTINE_DIR = "_quarantine"


def quarantine(storage, pipeline: str, partition: str, origin: str, reason: str) -> dg.Failure:
    """Move an unreadable local file aside (never delete it), record why, and return the
    Failure that marks this partition failed. Files after it are unaffected."""
    moved_to = None
    if not origin.startswith("s3://") and os.path.exists(origin):
        qdir = os.path.join(os.path.dirname(origin), QUARANTINE_DIR)
        os.makedirs(qdir, exist_ok=True)
        moved_to = os.path.join(qdir, os.path.basename(origin))
        os.replace(origin, moved_to)
        Path(moved_to + ".reason.txt").write_text(reason + "\n")
    record = storage.write_json(f"{pipeline}/quarantine/{partition}.json",
                                {"partition": partition, "source": origin, "moved_to": moved_to, "reason": reason})
    return dg.Failure(
        description=f"quarantined {origin}: {reason}",
        metadata={"reason": reason, "moved_to": moved_to or "(left in place)",
                  "quarantine_record": dg.MetadataValue.path(record)},
        allow_retries=False,
    )


def _read_s3_file(client, uri: str, fmt: str) -> pl.DataFrame:
    import io

    bucket, _, key = uri[len("s3://"):].partition("/")
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    kind = fmt if fmt != "auto" else Path(key).suffix.lstrip(".").lower()
    try:
        return pl.read_parquet(io.BytesIO(body)) if kind in ("parquet", "pq") else pl.read_csv(io.BytesIO(body))
    except Exception as exc:
        raise RawDataError(f"arrival file {uri} is unreadable as {kind}: {exc}") from exc
