"""`batch_predictions`: score one partition with the champion's ONNX model."""


import datetime as dt

import dagster as dg
import polars as pl

from mlops_assets.core.bundle import ModelBundle
from mlops_assets.resources.registry import CHAMPION
from mlops_assets.stages.common import Names, Paths, table_schema


class NoChampionError(RuntimeError):
    pass


def load_champion(names: Names, registry) -> tuple[str, ModelBundle]:
    champion = registry.version_by_alias(names.model_name, CHAMPION)
    if champion is None:
        raise NoChampionError(
            f"model '{names.model_name}' has no '{CHAMPION}' yet: materialize the training assets first"
        )
    return champion.version, ModelBundle.load(registry.download_bundle(names.model_name, champion.version))


def read_validated(storage, paths: Paths, partition: str) -> pl.DataFrame:
    rel = paths.features(partition)
    if not storage.exists(rel):
        raise FileNotFoundError(
            f"partition '{partition}' has no validated features at {storage.uri(rel)}; "
            "it was rejected by validation or not materialized yet"
        )
    return storage.read_parquet(rel)


def build_batch_predictions_asset(names: Names, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    spec = names.spec
    paths = Paths(spec.name)

    @dg.asset(
        key=names.key("batch_predictions"),
        group_name=spec.name,
        partitions_def=partitions,
        deps=[names.key("validated_features"), names.key("registered_model")],
        kinds={"onnx", "parquet"},
        code_version=names.code_version,
        automation_condition=names.eager_condition,
        required_resource_keys={names.storage, names.registry},
        description="Scores of one partition by the champion model, through onnxruntime.",
    )
    def batch_predictions(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        storage = getattr(context.resources, names.storage)
        registry = getattr(context.resources, names.registry)
        partition = context.partition_key
        version, bundle = load_champion(names, registry)
        features = read_validated(storage, paths, partition)
        scored = bundle.score_frame(features)
        out = pl.concat(
            [features.select(spec.id_column), scored], how="horizontal"
        ).with_columns(
            pl.lit(version).alias("model_version"),
            pl.lit(dt.datetime.now(dt.UTC)).alias("scored_at"),
        )
        uri = storage.write_parquet(paths.predictions(partition, version), out)
        metadata = {
            "dagster/row_count": out.height,
            "dagster/column_schema": table_schema(out),
            "model_version": version,
            "uri": dg.MetadataValue.path(uri),
        }
        if spec.task == "binary":
            metadata["mean_score"] = float(out["score"].mean())
            metadata["positive_rate"] = float(out["prediction"].mean())
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(f"{partition}-v{version}"))

    return batch_predictions
