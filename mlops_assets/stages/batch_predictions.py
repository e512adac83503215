"""`batch_predictions`: score one partition with the champion's verified ONNX bundle.

The champion is the one `registered_model` recorded (a promotion or a rollback), read from
its materialization; the bundle's file hashes are checked before anything is scored.
"""


import dagster as dg
import polars as pl

from mlops_assets.core.predictions import predictions_table
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import MODEL_VERSION
from mlops_assets.stages.base import champion_version, read_validated, stage_asset
from mlops_assets.stages.metadata import table_schema


def build_batch_predictions_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @stage_asset(pipeline, Stage.BATCH_PREDICTIONS, resources={pipeline.storage_key, pipeline.registry_key})
    def batch_predictions(context: dg.AssetExecutionContext):
        res = pipeline.resources(context)
        partition = context.partition_key
        version = champion_version(context, pipeline)
        bundle = res.registry.load_bundle(pipeline.model_name, version)
        features = read_validated(res.storage, pipeline, partition)
        out = predictions_table(features[spec.id_column], bundle.score_frame(features), version)
        uri = res.storage.write_parquet(pipeline.layout.predictions(partition, version), out)
        return dg.MaterializeResult(metadata=predictions_metadata(out, spec.task, version, uri),
                                    data_version=dg.DataVersion(f"{partition}-v{version}"))

    return batch_predictions


def predictions_metadata(out: pl.DataFrame, task: str, version: str, uri: str) -> dict:
    metadata = {
        "dagster/row_count": out.height,
        "dagster/column_schema": table_schema(out),
        MODEL_VERSION: version,
        "uri": dg.MetadataValue.path(uri),
    }
    if task == "binary" and out.height:
        metadata["mean_score"] = float(out["score"].mean())
        metadata["positive_rate"] = float(out["prediction"].mean())
    return metadata
