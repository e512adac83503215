"""`drift_report`: one partition against the champion's pinned reference profile.

The statistics come from our full-data engine; Evidently renders the familiar HTML on a
capped sample next to it. The reference is the champion's own training profile (stored
with its model version), so drift is always measured against what the model learned.
"""


import datetime as dt
import json
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from mlops_assets.core.bundle import PROFILE_FILE, SAMPLE_FILE
from mlops_assets.core.features import data_hash
from mlops_assets.core.training import PREDICTION_COLUMN, prediction_for_drift
from mlops_assets.stages.batch_predictions import load_champion, read_validated
from mlops_assets.stages.common import Names, Paths

# Metadata keys the retrain sensor reads; keep them stable.
DRIFT_SHARE = "drift_share"
DATASET_DRIFT = "dataset_drift"
KEY_FEATURES_DRIFTED = "key_features_drifted"
INPUT_DATA_VERSION = "input_data_version"
RETRAIN_SIGNAL = "retrain_signal"


def drift_config(spec):
    from mlops_assets.core.drift import DriftConfig, FeatureDriftConfig

    return DriftConfig(
        share_threshold=spec.drift.share_threshold,
        psi_bins=spec.drift.psi_bins,
        per_feature={name: FeatureDriftConfig(method=o.method, threshold=o.threshold)
                     for name, o in spec.drift.per_feature.items()},
    )


def build_drift_asset(names: Names, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    spec = names.spec
    paths = Paths(spec.name)

    @dg.asset(
        key=names.key("drift_report"),
        group_name=spec.name,
        partitions_def=partitions,
        deps=[names.key("validated_features"), names.key("batch_predictions")],
        kinds={"evidently", "polars", "html"},
        code_version=names.code_version,
        automation_condition=names.eager_condition,
        required_resource_keys={names.storage, names.registry, names.notifier},
        description="Per-feature drift (PSI, JS, Wasserstein, KS) vs the champion's reference profile.",
    )
    def drift_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from mlops_assets.core.drift import (
            DatasetProfile,
            build_profile,
            check_current_schema,
            compare_profiles,
            render_evidently_report,
        )

        storage = getattr(context.resources, names.storage)
        registry = getattr(context.resources, names.registry)
        partition = context.partition_key
        version, _bundle = load_champion(names, registry)
        bundle_dir = registry.download_bundle(names.model_name, version)
        reference = DatasetProfile.from_dict(json.loads((bundle_dir / PROFILE_FILE).read_text()))

        features = read_validated(storage, paths, partition)
        current = features.select(spec.feature_names)
        check_current_schema(reference, current)
        pred_rel = paths.predictions(partition, version)
        prediction_column = None
        if storage.exists(pred_rel) and reference.prediction is not None:
            current = current.with_columns(pl.Series(
                PREDICTION_COLUMN, _served_predictions(storage.read_parquet(pred_rel), features, spec, _bundle)
            ))
            prediction_column = PREDICTION_COLUMN
        profile = build_profile(current, dict(spec.feature_types), reference=reference,
                                prediction_column=prediction_column)
        result = compare_profiles(reference, profile, drift_config(spec))

        out_dir = paths.drift_dir(partition, version)
        report_uri = storage.write_json(f"{out_dir}/report.json", result.to_dict())
        table = result.to_frame()
        table_uri = storage.write_parquet(f"{out_dir}/features.parquet", table)
        _append_scores(storage, spec.name, partition, version, context.run_id, table)
        trend_uri = _trend_plot(storage, spec.name, f"{out_dir}/trend.png")
        html_uri = None
        if not result.empty:
            sample = pl.read_parquet(bundle_dir / SAMPLE_FILE)
            with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
                html = Path(tmp) / "evidently.html"
                render_evidently_report(
                    sample.to_pandas(), features.select(spec.feature_names).to_pandas(),
                    dict(spec.feature_types), str(html), sample_rows=spec.drift.evidently_sample_rows,
                )
                html_uri = storage.write_file(f"{out_dir}/evidently.html", html)

        drifted = [f.name for f in result.features if f.drifted]
        key_drifted = sorted(set(drifted) & set(spec.drift.key_features))
        signal = bool(result.dataset_drift or key_drifted)
        metadata = {
            DRIFT_SHARE: float(result.drift_share),
            DATASET_DRIFT: bool(result.dataset_drift),
            KEY_FEATURES_DRIFTED: ",".join(key_drifted),
            RETRAIN_SIGNAL: signal,
            INPUT_DATA_VERSION: data_hash(features),
            "champion_version": version,
            "n_reference": int(result.n_reference),
            "n_current": int(result.n_current),
            "drifted_features": ", ".join(drifted) or "none",
            "summary": result.message,
            "drift_table": dg.MetadataValue.md(result.to_markdown()),
            "report_uri": dg.MetadataValue.path(report_uri),
            "scores_uri": dg.MetadataValue.path(table_uri),
        }
        if result.prediction is not None:
            metadata["prediction_drift_score"] = float(result.prediction.score)
            metadata["prediction_drifted"] = bool(result.prediction.drifted)
        if html_uri:
            metadata["evidently_html"] = dg.MetadataValue.path(html_uri)
        if trend_uri:
            metadata["trend_plot"] = dg.MetadataValue.path(trend_uri)
        if signal:
            getattr(context.resources, names.notifier).send(
                "drift", f"{spec.name}: drift in {partition}", result.message,
                {"drift_share": round(float(result.drift_share), 3), "key_features": ",".join(key_drifted) or "-",
                 "champion": version},
            )
        context.log.info(f"drift share {result.drift_share:.2f} ({len(drifted)} features): {result.message}")
        return dg.MaterializeResult(
            metadata=metadata,
            data_version=dg.DataVersion(f"{metadata[INPUT_DATA_VERSION]}-v{version}"),
        )

    return drift_report


def _served_predictions(preds: pl.DataFrame, features: pl.DataFrame, spec, bundle) -> np.ndarray:
    """The champion's stored batch predictions for these rows, as monitored for drift.
    Rescoring is only the fallback, for when the stored file no longer matches the rows."""
    if preds.height == features.height and preds[spec.id_column].equals(features[spec.id_column]):
        if spec.task == "binary":
            return preds["score"].to_numpy()
        if spec.task == "multiclass":
            return preds.select(pl.max_horizontal(pl.col("^proba_.*$"))).to_series().to_numpy()
        return preds["prediction"].to_numpy()
    return prediction_for_drift(spec.task, bundle.score(features))


def _append_scores(storage, pipeline: str, partition: str, version: str, run_id: str, table: pl.DataFrame) -> None:
    """Raw per-feature scores, one file per run, partitioned by day for trend plots."""
    now = dt.datetime.now(dt.UTC)
    rows = table.with_columns(
        pl.lit(partition).alias("partition"), pl.lit(version).alias("champion_version"),
        pl.lit(run_id).alias("run_id"), pl.lit(now).alias("computed_at"),
    )
    storage.write_parquet(f"{pipeline}/drift_scores/day={now.date().isoformat()}/{partition}-{run_id[:8]}.parquet", rows)


def _trend_plot(storage, pipeline: str, rel: str, max_runs: int = 200) -> str | None:
    from mlops_assets.core.plots import drift_trend_plot

    files = [p for p in storage.list(f"{pipeline}/drift_scores") if p.endswith(".parquet")][-max_runs:]
    if not files:
        return None
    history = pl.concat([storage.read_parquet(p) for p in files], how="vertical_relaxed")
    with tempfile.TemporaryDirectory(prefix="mlops-trend-") as tmp:
        path = drift_trend_plot(history, Path(tmp) / "trend.png")
        return storage.write_file(rel, path) if path else None
