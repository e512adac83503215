"""`batch_predictions`: score one partition with the champion's verified ONNX bundle.

The champion is the one `registered_model` recorded (a promotion or a rollback), read from
its materialization; the bundle's file hashes are checked before anything is scored.

While a candidate is under release (`release.mode`, core/release.py) it scores the partition
too, beside the champion:
  shadow  the champion's table as always, plus the candidate's in a shadow table
          (`shadow_predictions_path`, never read as served predictions), and their agreement;
  canary  one table where each row is scored by its id's arm, with `model_version` per row and
          an `arm` column (`canary_predictions_path`, next to the champion's tables, so
          delayed labels join to what each arm served). Both models score every row and the
          rows are then picked by arm: twice the scoring work, and agreement on every row.
"""


import datetime as dt
import tempfile
from pathlib import Path

import dagster as dg

from mlops_assets.core.release import ARM, CANARY, NONE, SHADOW, Release, canary_seed
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import MODEL_VERSION, RELEASE_MODE, RELEASE_VERSION
from mlops_assets.stages.base import champion_version, read_validated, stage_asset
from mlops_assets.state import release_of_record


def shadow_predictions_prefix(pipeline: Pipeline) -> str:
    return f"{pipeline.name}/shadow_predictions"


def shadow_predictions_path(pipeline: Pipeline, partition: str, candidate: str) -> str:
    """The candidate's shadow scores of a partition: outside the served predictions' prefix."""
    layout = pipeline.layout
    return shadow_predictions_prefix(pipeline) + layout.predictions(partition, candidate)[
        len(layout.predictions_prefix()):]


def canary_predictions_path(pipeline: Pipeline, partition: str, champion: str, candidate: str) -> str:
    """A canary table: beside the champion's plain table, never overwriting it."""
    plain = pipeline.layout.predictions(partition, champion)
    return plain.removesuffix(".parquet") + f"-canary-v{int(candidate)}.parquet"


def release_under_way(context, pipeline: Pipeline, champion: str) -> Release | None:
    """The active release judged against this champion, when the spec has releases on."""
    if pipeline.spec.release.mode == NONE:
        return None
    release = release_of_record(context.instance, pipeline)
    if release is None or not release.active or release.champion != champion:
        return None
    return release


def build_batch_predictions_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @stage_asset(pipeline, Stage.BATCH_PREDICTIONS, resources={pipeline.storage_key, pipeline.registry_key})
    def batch_predictions(context: dg.AssetExecutionContext):
        from mlops_assets.core.batch import score_parquet

        res = pipeline.resources(context)
        partition = context.partition_key
        version = champion_version(context, pipeline)
        release = release_under_way(context, pipeline, version)
        bundle = res.registry.load_bundle(pipeline.model_name, version)
        source = pipeline.layout.features(partition)
        if not res.storage.exists(source):
            read_validated(res.storage, pipeline, partition)   # raises, naming why it is missing
        if release is None:
            target = pipeline.layout.predictions(partition, version)
            # Streamed row groups in, row groups out: memory does not grow with the partition.
            with res.storage.reading_path(source) as src, res.storage.writing_path(target) as dst:
                result = score_parquet(bundle, src, dst, id_column=spec.id_column, model_version=version)
            context.log.info(f"scored {result.rows} rows in {result.seconds:.2f} s "
                             f"({result.rows_per_s:,.0f} rows/s) with champion v{version}")
            return dg.MaterializeResult(metadata=predictions_metadata(result, version, res.storage.uri(target)),
                                        data_version=dg.DataVersion(f"{partition}-v{version}"))
        candidate = res.registry.load_bundle(pipeline.model_name, release.version)
        result, agreement, target, extra = score_release(res.storage, pipeline, partition, release, bundle,
                                                         candidate, source)
        context.log.info(f"scored {result.rows} rows with champion v{version} and candidate v{release.version} "
                         f"({release.mode}): {agreement.rows} rows compared, mean |score diff| "
                         f"{agreement.mean_abs_diff if agreement.mean_abs_diff is not None else float('nan'):.4g}")
        metadata = {**predictions_metadata(result, version, res.storage.uri(target)),
                    **release_scoring_metadata(release, agreement, extra)}
        if release.mode == CANARY:
            metadata["dagster/column_schema"] = dg.TableSchema(columns=[
                *metadata["dagster/column_schema"].columns, dg.TableColumn(name=ARM, type="String")])
        return dg.MaterializeResult(
            metadata=metadata,
            data_version=dg.DataVersion(f"{partition}-v{version}+{release.mode}-v{release.version}"
                                        f"{f'-{release.canary_fraction:g}' if release.mode == CANARY else ''}"))

    return batch_predictions


def score_release(storage, pipeline: Pipeline, partition: str, release: Release, bundle, candidate, source: str):
    """Score the partition with both models; returns (champion's result, agreement, the served
    table's path, extra metadata)."""
    from mlops_assets.core.batch import score_parquet
    from mlops_assets.core.release import agreement_of_files, merge_canary

    spec = pipeline.spec
    scored_at = dt.datetime.now(dt.UTC)     # one time for both: the rows were scored together
    both = {"id_column": spec.id_column, "scored_at": scored_at}
    if release.mode == SHADOW:
        target = pipeline.layout.predictions(partition, release.champion)
        shadow = shadow_predictions_path(pipeline, partition, release.version)
        with storage.reading_path(source) as src, storage.writing_path(target) as dst, \
                storage.writing_path(shadow) as shadow_dst:
            result = score_parquet(bundle, src, dst, model_version=release.champion, **both)
            score_parquet(candidate, src, shadow_dst, model_version=release.version, **both)
            agreement = agreement_of_files(dst, shadow_dst, task=spec.task, id_column=spec.id_column)
        return result, agreement, target, {"shadow_uri": dg.MetadataValue.path(storage.uri(shadow))}
    target = canary_predictions_path(pipeline, partition, release.champion, release.version)
    with storage.reading_path(source) as src, storage.writing_path(target) as dst, \
            tempfile.TemporaryDirectory(prefix="mlops-canary-") as tmp:
        mine, theirs = Path(tmp) / "champion.parquet", Path(tmp) / "candidate.parquet"
        result = score_parquet(bundle, src, mine, model_version=release.champion, **both)
        score_parquet(candidate, src, theirs, model_version=release.version, **both)
        agreement = merge_canary(mine, theirs, dst, task=spec.task, id_column=spec.id_column,
                                 fraction=release.canary_fraction, seed=canary_seed(spec.split.seed))
    return result, agreement, target, {"canary_rows": agreement.candidate_rows,
                                       "champion_rows": agreement.rows - agreement.candidate_rows}


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


def release_scoring_metadata(release: Release, agreement, extra: dict) -> dict:
    """The release this partition was scored under and how the candidate agreed with the champion.
    (`mean_score`/`positive_rate` stay the champion's, over every row, in both modes.)"""
    return {
        RELEASE_VERSION: release.version,
        RELEASE_MODE: release.mode,
        **({"canary_fraction": release.canary_fraction} if release.mode == CANARY else {}),
        **agreement.metadata("agreement_"),
        "agreement": dg.MetadataValue.md(agreement.to_markdown()),
        "release_summary": release.describe(),
        **extra,
    }

