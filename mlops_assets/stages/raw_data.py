"""`raw_data`: one partition per arriving file, copied into storage as Parquet.

Partitioning choice: dynamic partitions, one per arrival file (key = file name). Files
arrive irregularly (several a day, or late), a file is the unit a producer completes,
and a per-file key makes "process this file exactly once" a property of the partition
itself rather than of sensor bookkeeping. Daily partitions would force re-ingesting a
whole day when one more file lands.
"""


import dagster as dg
import polars as pl

from mlops_assets.core.features import data_hash
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import DATA_VERSION
from mlops_assets.sources.files import (
    ArrivalReadError,
    arrival_uri,
    quarantine_local_file,
    read_arrival,
)
from mlops_assets.sources.s3 import s3_client
from mlops_assets.stages.base import stage_asset
from mlops_assets.stages.metadata import table_schema


def build_raw_data_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    source = pipeline.spec.source
    resources = {pipeline.storage_key, pipeline.s3_key}
    if source.asset_key:
        # Bring-your-own raw data: the user's asset is loaded through its own IO manager, and
        # the lineage graph shows it upstream of raw_data.
        upstream = dg.AssetKey(source.asset_key)

        @stage_asset(pipeline, Stage.RAW_DATA, resources=resources, ins={"upstream": dg.AssetIn(key=upstream)})
        def raw_data_from_asset(context: dg.AssetExecutionContext, upstream):
            frame = as_polars(upstream, upstream_key=source.asset_key)
            return store_raw(context, pipeline, frame, origin=f"asset {dg.AssetKey(source.asset_key).to_user_string()}")

        return raw_data_from_asset

    @stage_asset(pipeline, Stage.RAW_DATA, resources=resources)
    def raw_data(context: dg.AssetExecutionContext):
        res = pipeline.resources(context)
        origin = arrival_uri(source.path, context.partition_key)
        try:
            frame = read_arrival(origin, source.format, s3_client=s3_client(res.s3) if origin.startswith("s3://") else None)
        except ArrivalReadError as exc:
            raise quarantine(pipeline, res.storage, context.partition_key, origin, str(exc)) from exc
        return store_raw(context, pipeline, frame, origin=origin)

    return raw_data


def store_raw(context: dg.AssetExecutionContext, pipeline: Pipeline, frame: pl.DataFrame, origin: str):
    storage = pipeline.resources(context).storage
    uri = storage.write_parquet(pipeline.layout.raw(context.partition_key), frame)
    version = data_hash(frame)
    context.log.info(f"ingested {frame.height} rows from {origin} -> {uri}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "dagster/column_schema": table_schema(frame),
            "source": origin,
            "uri": dg.MetadataValue.path(uri),
            DATA_VERSION: version,
        },
        data_version=dg.DataVersion(version),
    )


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


def quarantine(pipeline: Pipeline, storage, partition: str, origin: str, reason: str) -> dg.Failure:
    """Move an unreadable file aside, record why, and return the Failure that marks this
    partition failed. Files after it are unaffected."""
    moved_to = quarantine_local_file(origin, reason)
    record = storage.write_json(pipeline.layout.quarantine_record(partition),
                                {"partition": partition, "source": origin, "moved_to": moved_to, "reason": reason})
    return dg.Failure(
        description=f"quarantined {origin}: {reason}",
        metadata={"reason": reason, "moved_to": moved_to or "(left in place)",
                  "quarantine_record": dg.MetadataValue.path(record)},
        allow_retries=False,
    )
