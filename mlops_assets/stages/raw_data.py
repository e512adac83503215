"""`raw_data`: one partition per arriving file, copied into storage as Parquet.

Partitioning choice: dynamic partitions, one per arrival file (key = file name). Files
arrive irregularly (several a day, or late), a file is the unit a producer completes,
and a per-file key makes "process this file exactly once" a property of the partition
itself rather than of sensor bookkeeping. Daily partitions would force re-ingesting a
whole day when one more file lands.

Every way a partition key reaches this asset (the new-data sensor, "add partition" in the UI,
the API, `dagster asset materialize --partition`) meets the same checks here, before any
file is touched: the key policy (sources/keys.py), the landing policy (no links unless
allowed, regular files only), the spec's limits (from the Parquet footer before any data
page is decoded), and, for a sensor run, the file identity the sensor recorded.
"""

import dagster as dg
import polars as pl

from mlops_assets.core.features import data_hash
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import DATA_VERSION
from mlops_assets.sources.files import (
    ArrivalChanged,
    ArrivalReadError,
    ArrivalRefused,
    FileIdentity,
    QuarantineError,
    arrival_uri,
    cap_text,
    check_shape,
    load_arrival,
    quarantine_local_file,
)
from mlops_assets.sources.keys import PartitionKeyError
from mlops_assets.sources.local import check_source_path
from mlops_assets.sources.s3 import s3_client
from mlops_assets.stages.base import stage_asset

# `dagster/column_schema` goes into the event log with every materialization: a 10k-column
# file would make each event megabytes (about 220 bytes per column once serialized). The
# schema shows the first columns within a character budget, so the event stays under ~8 KB;
# `column_count` and `schema_columns_omitted` say how many there are, the Parquet file has all.
SCHEMA_MAX_COLUMNS = 20
SCHEMA_BUDGET_CHARS = 800
NAME_CHARS, TYPE_CHARS = 64, 32


def build_raw_data_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    source = pipeline.spec.source
    resources = {pipeline.storage_key, pipeline.s3_key, pipeline.notifier_key}
    if source.asset_key:
        # Bring-your-own raw data: the user's asset is loaded through its own IO manager, and
        # the lineage graph shows it upstream of raw_data.
        upstream = dg.AssetKey(source.asset_key)

        @stage_asset(pipeline, Stage.RAW_DATA, resources=resources, ins={"upstream": dg.AssetIn(key=upstream)})
        def raw_data_from_asset(context: dg.AssetExecutionContext, upstream):
            frame = as_polars(upstream, upstream_key=source.asset_key)
            origin = f"asset {dg.AssetKey(source.asset_key).to_user_string()}"
            try:
                check_shape(origin, frame.height, frame.width, pipeline.spec.limits)
            except ArrivalRefused as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from exc
            return store_raw(context, pipeline, frame, origin=origin)

        return raw_data_from_asset

    check_source_path(source.path)   # when the definitions load: a wrong path names source.path

    @stage_asset(pipeline, Stage.RAW_DATA, resources=resources)
    def raw_data(context: dg.AssetExecutionContext):
        res = pipeline.resources(context)
        partition = context.partition_key
        try:
            origin = arrival_uri(source.path, partition)
        except PartitionKeyError as exc:    # e.g. a key added by hand in the UI or through the API
            raise dg.Failure(description=f"raw_data refuses this partition: {exc}", allow_retries=False) from exc
        try:
            loaded = load_arrival(
                origin, source.format, s3_client=s3_client(res.s3) if origin.startswith("s3://") else None,
                limits=pipeline.spec.limits, allow_symlinks=source.allow_symlinks,
                expected=FileIdentity.from_tags(context.run.tags),
            )
        except ArrivalChanged as exc:
            raise dg.Failure(
                description=f"{exc}. Not quarantined: the new-data sensor picks up the finished file; to ingest "
                "what is there now by hand, launch a new materialization (a re-execution repeats the old identity).",
                allow_retries=False,
            ) from exc
        except ArrivalReadError as exc:
            raise quarantine(pipeline, res, partition, origin, str(exc)) from exc
        # A Parquet arrival is stored as the very bytes it was decoded (and sha256-identified)
        # from: reading them back gives the same frame, so re-encoding it would only cost time
        # (as much as the read itself). A CSV becomes Parquet.
        return store_raw(context, pipeline, loaded.frame, origin=origin, identity=loaded.identity,
                         parquet_bytes=loaded.data if loaded.is_parquet else None)

    return raw_data


def store_raw(context: dg.AssetExecutionContext, pipeline: Pipeline, frame: pl.DataFrame, origin: str,
              identity: FileIdentity | None = None, parquet_bytes: bytes | None = None):
    storage = pipeline.resources(context).storage
    rel = pipeline.layout.raw(context.partition_key)
    uri = storage.write_bytes(rel, parquet_bytes) if parquet_bytes is not None else storage.write_parquet(rel, frame)
    version = data_hash(frame)
    context.log.info(f"ingested {frame.height} rows from {origin} -> {uri}")
    return dg.MaterializeResult(
        metadata=raw_metadata(frame, origin, uri, version, identity),
        data_version=dg.DataVersion(version),
    )


def raw_metadata(frame: pl.DataFrame, origin: str, uri: str, version: str,
                 identity: FileIdentity | None = None) -> dict:
    """What a raw_data materialization reports; a few KB whatever the file's width."""
    schema, omitted = capped_schema(frame)
    metadata = {
        "dagster/row_count": frame.height,
        "dagster/column_schema": schema,
        "column_count": frame.width,
        "source": origin,
        "uri": dg.MetadataValue.path(uri),
        DATA_VERSION: version,
    }
    if omitted:
        metadata["schema_columns_omitted"] = omitted
    return {**metadata, **(identity.to_metadata() if identity else {})}


def capped_schema(frame: pl.DataFrame) -> tuple[dg.TableSchema, int]:
    """The first columns' names and types within SCHEMA_BUDGET_CHARS, and how many were left out."""
    columns, used = [], 0
    for name, dtype in frame.schema.items():
        shown, kind = _short(name, NAME_CHARS), _short(str(dtype), TYPE_CHARS)
        if len(columns) == SCHEMA_MAX_COLUMNS or used + len(shown) + len(kind) > SCHEMA_BUDGET_CHARS:
            break
        columns.append(dg.TableColumn(name=shown, type=kind))
        used += len(shown) + len(kind)
    return dg.TableSchema(columns=columns), frame.width - len(columns)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_polars(value, upstream_key) -> pl.DataFrame:
    if isinstance(value, pl.DataFrame):
        return value
    if isinstance(value, pl.LazyFrame):
        return value.collect()
    if type(value).__module__.startswith("pandas") and hasattr(value, "dtypes"):
        return pl.from_pandas(value)
    raise ArrivalReadError(
        f"upstream asset {dg.AssetKey(upstream_key).to_user_string()} loaded a {type(value).__name__}; "
        "raw_data needs a pandas or polars DataFrame"
    )


def quarantine(pipeline: Pipeline, res, partition: str, origin: str, reason: str) -> dg.Failure:
    """Move a refused file aside, record why, alert, and return the Failure that marks this
    partition failed. Files after it are unaffected."""
    reason = cap_text(reason)
    try:
        moved_to, where = quarantine_local_file(origin, reason), None
    except (QuarantineError, OSError) as exc:
        moved_to, where = None, f"(left in place: {cap_text(str(exc), 300)})"
    where = where or moved_to or "(left in place)"
    record = res.storage.write_json(pipeline.layout.quarantine_record(partition),
                                    {"partition": partition, "source": origin, "moved_to": moved_to, "reason": reason})
    if res.notifier is not None:
        res.notifier.send("quarantine", f"{pipeline.name}: {partition} quarantined", reason,
                          {"partition": partition, "file": origin, "where": where})
    return dg.Failure(
        description=f"quarantined {origin}: {reason}",
        metadata={"reason": reason, "moved_to": where, "quarantine_record": dg.MetadataValue.path(record)},
        allow_retries=False,
    )
