"""`model_performance`: delayed labels joined to served predictions, metrics per day.

Optional: built when the spec declares `ground_truth`. Its `retrain_signal` metadata is read
by the retrain sensor, like the drift report's.
"""


import dagster as dg
import polars as pl

from mlops_assets.core.features import data_hash
from mlops_assets.core.performance import (
    DAY,
    LABEL,
    daily_performance,
    join_labels,
    performance_signal,
)
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import (
    CHAMPION_VERSION,
    INPUT_DATA_VERSION,
    LABELLED_ROWS,
    RETRAIN_SIGNAL,
    STATUS,
)
from mlops_assets.sources.labels import read_label_files
from mlops_assets.stages.base import champion_version, stage_asset
from mlops_assets.stages.metadata import markdown_table


def build_model_performance_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec
    gt = spec.ground_truth

    @stage_asset(pipeline, Stage.MODEL_PERFORMANCE,
                 resources={pipeline.storage_key, pipeline.registry_key, pipeline.notifier_key})
    def model_performance(context: dg.AssetExecutionContext):
        res = pipeline.resources(context)
        champion = champion_version(context, pipeline)
        labels = read_label_files(gt.path)
        prefix = pipeline.layout.predictions_prefix()
        pred_files = [p for p in res.storage.list(prefix) if p.endswith(".parquet")]
        preds = pl.concat([res.storage.read_parquet(p) for p in pred_files], how="vertical_relaxed") \
            if pred_files else pl.DataFrame()
        if labels.height == 0 or preds.height == 0:
            return dg.MaterializeResult(metadata={
                STATUS: "no labels yet" if labels.height == 0 else "no predictions yet",
                RETRAIN_SIGNAL: False, LABELLED_ROWS: 0,
            })
        joined = join_labels(preds, labels, id_column=spec.id_column, label_column=gt.label_column or spec.target,
                             time_column=gt.time_column)
        series = daily_performance(joined, spec.task, threshold=spec.model.decision_threshold,
                                   classes=spec.classes, min_rows=spec.performance.min_rows_per_day)
        uri = res.storage.write_parquet(pipeline.layout.performance_series(), series)
        baseline = float(res.storage.read_json(pipeline.layout.evaluation(champion))["metrics"][spec.main_metric])
        signal = performance_signal(series, metric=spec.main_metric, baseline=baseline, champion_version=champion,
                                    max_drop=spec.performance.max_drop, window_days=spec.performance.window_days)
        if signal.triggered:
            res.notifier.send("performance_drop", f"{spec.name}: champion v{champion} is underperforming",
                              signal.message, {"metric": signal.metric, "drop": round(signal.drop or 0, 4)})
        # Identifies "this condition on this data": the labels seen and the champion judged.
        input_version = f"{data_hash(joined.select(spec.id_column, LABEL))}-v{champion}"
        return dg.MaterializeResult(metadata=performance_metadata(signal, series, joined, champion, input_version, uri))

    return model_performance


def performance_metadata(signal, series: pl.DataFrame, joined: pl.DataFrame, champion: str,
                         input_version: str, uri: str) -> dict:
    shown = series.sort(DAY).tail(14).with_columns(pl.col(DAY).cast(pl.String)).to_dicts()
    return {
        STATUS: "ok",
        CHAMPION_VERSION: champion,
        LABELLED_ROWS: joined.height,
        "days": series.height,
        "metric": signal.metric,
        "baseline": signal.baseline,
        "current": signal.current if signal.current is not None else float("nan"),
        "drop": signal.drop if signal.drop is not None else float("nan"),
        "summary": signal.message,
        RETRAIN_SIGNAL: signal.triggered,
        INPUT_DATA_VERSION: input_version,
        "daily": dg.MetadataValue.md(markdown_table(shown)),
        "series_uri": dg.MetadataValue.path(uri),
    }
