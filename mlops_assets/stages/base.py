"""What every stage's asset shares: the decorator preamble and reading its upstream's result.

A stage body reads its inputs, calls the core, writes its outputs through the storage
resource, builds its metadata with a pure function and returns. The AssetSpec (key, deps,
kinds, code version, ...) always comes from the pipeline's translator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import dagster as dg
import polars as pl

from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import MODEL_VERSION
from mlops_assets.state import value


def stage_asset(pipeline: Pipeline, stage: Stage, *, resources: Iterable[str],
                check_specs: Iterable[dg.AssetCheckSpec] = (), ins: dict[str, dg.AssetIn] | None = None,
                pool: str | None = None):
    """`@dg.multi_asset` over the translator's one AssetSpec for `stage`."""
    return dg.multi_asset(
        name=f"{pipeline.name}__{Stage(stage).value}",   # op names must be unique per deployment
        specs=[pipeline.asset_spec(stage)],
        check_specs=list(check_specs) or None,
        ins=ins,
        required_resource_keys=set(resources),
        pool=pool,
    )


def upstream_materialization(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dg.AssetMaterialization | None:
    """The upstream result this step should work on: the one materialized in this run (or in
    the run it re-executes), else the latest. Two retrains in flight at once each read their
    own model this way; a mutable alias or "latest" would let them swap models."""
    instance = context.instance
    run = context.run
    for run_id in dict.fromkeys(r for r in (run.run_id, run.parent_run_id, run.root_run_id) if r):
        records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        for record in reversed(records):
            materialization = record.asset_materialization
            if materialization is not None and materialization.asset_key == key:
                return materialization
    latest = instance.get_latest_materialization_event(key)
    return latest.asset_materialization if latest is not None else None


class NoChampionError(RuntimeError):
    pass


def champion_version(context: dg.AssetExecutionContext, pipeline: Pipeline) -> str:
    version = value(upstream_materialization(context, pipeline.key(Stage.REGISTERED_MODEL)), MODEL_VERSION)
    if version is None:
        raise NoChampionError(
            f"model '{pipeline.model_name}' has no champion yet: materialize the training assets first"
        )
    return str(version)


# The footer key under which validated_features stores its file's content hash (data_hash).
FEATURES_HASH_KEY = "mlops_assets.data_hash"


def write_validated(storage, pipeline: Pipeline, partition: str, features: pl.DataFrame,
                    version: str | Callable[[], str]) -> str:
    """Write the features with their data version in the file's own footer: the hash travels
    with the content in one atomic file, so a reader never has to hash the frame again.
    `version` may be a callable (a pending hash's `result`): it is called once the data is
    encoded, when the footer is written."""
    def footer(_context) -> dict[str, str]:
        return {FEATURES_HASH_KEY: version() if callable(version) else version}

    return storage.write_parquet(pipeline.layout.features(partition), features, metadata=footer)


def _features_rel(storage, pipeline: Pipeline, partition: str) -> str:
    rel = pipeline.layout.features(partition)
    if not storage.exists(rel):
        raise FileNotFoundError(
            f"partition '{partition}' has no validated features at {storage.uri(rel)}; "
            "it was rejected by validation or not materialized yet"
        )
    return rel


def read_validated(storage, pipeline: Pipeline, partition: str) -> pl.DataFrame:
    return storage.read_parquet(_features_rel(storage, pipeline, partition))


def read_validated_versioned(storage, pipeline: Pipeline, partition: str,
                             columns: Iterable[str]) -> tuple[pl.DataFrame, str]:
    """Only `columns` of the partition's validated features, and the data version of the whole
    file: the hash in its footer, else (a file written before the footer held it) the data_hash
    of the file read whole, so the version is the same either way."""
    from mlops_assets.core.features import data_hash

    columns = list(dict.fromkeys(columns))
    with storage.reading_path(_features_rel(storage, pipeline, partition)) as path:
        version = pl.read_parquet_metadata(path).get(FEATURES_HASH_KEY)
        if version is None:
            whole = pl.read_parquet(path)
            return whole.select(columns), data_hash(whole)
        return pl.read_parquet(path, columns=columns), version
