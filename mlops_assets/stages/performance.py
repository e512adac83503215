"""`model_performance`: delayed labels joined to served predictions, metrics per day.

Optional: built when the spec declares `ground_truth`. Its `retrain_signal` metadata is
read by the retrain sensor, like the drift report's.
"""

import os
from pathlib import Path

import dagster as dg
import polars as pl

from mlops_assets.core.features import data_hash
from mlops_assets.core.performance import DAY, daily_performance, join_labels, performance_signal
from mlops_assets.resources.registry import CHAMPION
from mlops_assets.stages.common import Names, Paths, markdown_table
from mlops_assets.stages.drift import INPUT_DATA_VERSION, RETRAIN_SIGNAL
from mlops_assets.stages.raw_data import read_arrival_file


def read_label_files(directory: str) -> pl.DataFrame:
    files = sorted(
        p for p in Path(directory).glob("*")
        if p.is_file() and p.suffix.lower() in (".parquet", ".pq", ".csv") and not p.name.startswith((".", "_"))
    ) if os.path.isdir(directory) else []
    frames = [read_arrival_file(str(p)) for p in files]
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


def build_performance_asset(names: Names) -> dg.AssetsDefinition:
    spec = names.spec
    gt = spec.ground_truth
    paths = Paths(spec.name)
    label_col = gt.label_column or spec.target

    @dg.asset(
        key=names.key("model_performance"),
        group_name=spec.name,
        deps=[names.key("ground_truth"), names.key("batch_predictions")],
        kinds={"polars", "parquet"},
        code_version=names.code_version,
        required_resource_keys={names.storage, names.registry, names.notifier},
        description="The champion's real-world metrics per day, from delayed labels.",
    )
    def model_performance(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        storage = getattr(context.resources, names.storage)
        registry = getattr(context.resources, names.registry)
        champion = registry.version_by_alias(names.model_name, CHAMPION)
        if champion is None:
            raise RuntimeError(f"model '{names.model_name}' has no champion yet")
        labels = read_label_files(gt.path)
        pred_files = [p for p in storage.list(f"{spec.name}/predictions") if p.endswith(".parquet")]
        preds = pl.concat([storage.read_parquet(p) for p in pred_files], how="vertical_relaxed") \
            if pred_files else pl.DataFrame()
        if labels.height == 0 or preds.height == 0:
            return dg.MaterializeResult(metadata={
                "status": "no labels yet" if labels.height == 0 else "no predictions yet",
                RETRAIN_SIGNAL: False, "labelled_rows": 0,
            })
        joined = join_labels(preds, labels, id_column=spec.id_column, label_column=label_col,
                             time_column=gt.time_column)
        series = daily_performance(joined, spec.task, threshold=spec.model.decision_threshold,
                                   classes=spec.classes, min_rows=spec.performance.min_rows_per_day)
        uri = storage.write_parquet(f"{spec.name}/performance/daily.parquet", series)
        evaluation = storage.read_json(paths.evaluation(champion.version))
        baseline = float(evaluation["metrics"][spec.main_metric])
        signal = performance_signal(series, metric=spec.main_metric, baseline=baseline,
                                    champion_version=champion.version, max_drop=spec.performance.max_drop,
                                    window_days=spec.performance.window_days)
        if signal.triggered:
            getattr(context.resources, names.notifier).send(
                "performance_drop", f"{spec.name}: champion v{champion.version} is underperforming",
                signal.message, {"metric": signal.metric, "drop": round(signal.drop or 0, 4)},
            )
        shown = series.sort(DAY).tail(14).with_columns(pl.col(DAY).cast(pl.String)).to_dicts()
        return dg.MaterializeResult(metadata={
            "status": "ok",
            "champion_version": champion.version,
            "labelled_rows": joined.height,
            "days": series.height,
            "metric": signal.metric,
            "baseline": signal.baseline,
            "current": signal.current if signal.current is not None else float("nan"),
            "drop": signal.drop if signal.drop is not None else float("nan"),
            "summary": signal.message,
            RETRAIN_SIGNAL: signal.triggered,
            # Identifies "this condition on this data": the labels seen and the champion judged.
            INPUT_DATA_VERSION: f"{data_hash(joined.select(spec.id_column, '__label'))}-v{champion.version}",
            "daily": dg.MetadataValue.md(markdown_table(shown)),
            "series_uri": dg.MetadataValue.path(uri),
        })

    return model_performance
