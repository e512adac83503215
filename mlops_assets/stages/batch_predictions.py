"""`batch_predictions`: score one partition with the champion's verified ONNX bundle.

The champion is the one `registered_model` recorded (a promotion or a rollback), read from
its materialization; the bundle's file hashes are checked before anything is scored.
"""


import dagster as dg

from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import MODEL_VERSION
from mlops_assets.stages.base import champion_version, read_validated, stage_asset


def build_batch_predictions_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @stage_asset(pipeline, Stage.BATCH_PREDICTIONS, resources={pipeline.storage_key, pipeline.registry_key})
    def batch_predictions(context: dg.AssetExecutionContext):
        from mlops_assets.core.batch import score_parquet

        res = pipeline.resources(context)
        partition = context.partition_key
        version = champion_version(context, pipeline)
        bundle = res.registry.load_bundle(pipeline.model_name, version)
        source, target = pipeline.layout.features(partition), pipeline.layout.predictions(partition, version)
        if not res.storage.exists(source):
            read_validated(res.storage, pipeline, partition)   # raises, naming why it is missing
        # Streamed row groups in, row groups out: memory does not grow with the partition.
        with res.storage.reading_path(source) as src, res.storage.writing_path(target) as dst:
            result = score_parquet(bundle, src, dst, id_column=spec.id_column, model_version=version)
        context.log.info(f"scored {result.rows} rows in {result.seconds:.2f} s ({result.rows_per_s:,.0f} rows/s) "
                         f"with champion v{version}")
        return dg.MaterializeResult(metadata=predictions_metadata(result, version, res.storage.uri(target)),
                                    data_version=dg.DataVersion(f"{partition}-v{version}"))

    return batch_predictions


def predictions_metadata(result, version: str, uri: str) -> dict:
    metadata = {
        "dagster/row_count": result.rows,
        "dagster/column_schema": dg.TableSchema(columns=[
            dg.TableColumn(name=name, type=dtype) for name, dtype in result.column_schema.items()]),
        MODEL_VERSION: version,
        "uri": dg.MetadataValue.path(uri),
        "rows_per_second": round(result.rows_per_s, 1),
    }
    for key in ("mean_score", "positive_rate"):
        if getattr(result, key, None) is not None:
            metadata[key] = float(getattr(result, key))
    return metadata
