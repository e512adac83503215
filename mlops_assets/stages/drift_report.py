"""`drift_report`: one partition against the champion's pinned reference profile.

The statistics come from our full-data engine; Evidently renders the familiar HTML on a
capped sample next to it. The reference is the champion's own training profile, stored in
its bundle, so drift is always measured against what the model learned.
"""


import datetime as dt
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from mlops_assets.core.features import data_hash
from mlops_assets.core.predictions import (
    MONITORED_COLUMN,
    monitored_from_scores,
    monitored_from_table,
)
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import (
    CHAMPION_VERSION,
    DATASET_DRIFT,
    DRIFT_SHARE,
    INPUT_DATA_VERSION,
    KEY_FEATURES_DRIFTED,
    RETRAIN_SIGNAL,
)
from mlops_assets.stages.base import champion_version, read_validated, stage_asset

MAX_TREND_RUNS = 200


def drift_config(spec):
    from mlops_assets.core.drift import DriftConfig, FeatureDriftConfig

    return DriftConfig(
        share_threshold=spec.drift.share_threshold,
        psi_bins=spec.drift.psi_bins,
        per_feature={name: FeatureDriftConfig(method=o.method, threshold=o.threshold)
                     for name, o in spec.drift.per_feature.items()},
    )


def build_drift_report_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @stage_asset(pipeline, Stage.DRIFT_REPORT,
                 resources={pipeline.storage_key, pipeline.registry_key, pipeline.notifier_key})
    def drift_report(context: dg.AssetExecutionContext):
        from mlops_assets.core.drift import (
            build_profile,
            check_current_schema,
            compare_profiles,
            drift_signal,
            policy_from_spec,
        )

        res = pipeline.resources(context)
        partition = context.partition_key
        version = champion_version(context, pipeline)
        bundle = res.registry.load_bundle(pipeline.model_name, version)
        reference = bundle.profile()
        features = read_validated(res.storage, pipeline, partition)
        current = features.select(spec.feature_names)
        check_current_schema(reference, current)
        prediction_column = None
        if reference.prediction is not None:
            served = served_predictions(res.storage, pipeline, partition, version, features, bundle)
            current = current.with_columns(pl.Series(MONITORED_COLUMN, served))
            prediction_column = MONITORED_COLUMN
        profile = build_profile(current, dict(spec.feature_types), reference=reference,
                                prediction_column=prediction_column)
        result = compare_profiles(reference, profile, drift_config(spec))
        signal = drift_signal(result, policy_from_spec(spec.drift, bundle.feature_importance))
        files = write_outputs(context, pipeline, res.storage, result, signal, version, bundle, features)
        metadata = drift_metadata(result, signal, version, data_hash(features), files)
        if signal.triggered:
            res.notifier.send(
                "drift", f"{spec.name}: drift in {partition} against champion v{version}", "; ".join(signal.reasons),
                {DRIFT_SHARE: round(float(result.drift_share), 3),
                 "key_features": ",".join(signal.key_features_drifted) or "-", "champion": version},
            )
        context.log.info(f"drift share {result.drift_share:.2f}: {result.message}")
        return dg.MaterializeResult(
            metadata=metadata, data_version=dg.DataVersion(f"{metadata[INPUT_DATA_VERSION]}-v{version}"))

    return drift_report


def served_predictions(storage, pipeline: Pipeline, partition: str, version: str, features: pl.DataFrame,
                       bundle) -> np.ndarray:
    """The monitored value of what the champion served for these rows (its stored batch
    predictions); rescoring is only the fallback, when the stored file no longer matches."""
    rel = pipeline.layout.predictions(partition, version)
    id_column = pipeline.spec.id_column
    if storage.exists(rel):
        preds = storage.read_parquet(rel)
        if preds.height == features.height and preds[id_column].equals(features[id_column]):
            return monitored_from_table(preds, pipeline.spec.task)
    return monitored_from_scores(pipeline.spec.task, bundle.score(features))


def write_outputs(context, pipeline: Pipeline, storage, result, signal, version: str, bundle, features) -> dict:
    """The JSON report and signal, the per-feature table, the day-partitioned score history, the
    trend plot, our own HTML/PNG summary, and Evidently's HTML when it is worth rendering."""
    from mlops_assets.core.drift.summary import render_drift_summary

    spec = pipeline.spec
    partition = context.partition_key
    out_dir = pipeline.layout.drift_dir(partition, version)
    table = result.to_frame()
    files = {"report_uri": storage.write_json(f"{out_dir}/report.json", result.to_dict()),
             "signal_uri": storage.write_json(f"{out_dir}/signal.json", signal.to_dict()),
             "scores_uri": storage.write_parquet(f"{out_dir}/features.parquet", table)}
    now = dt.datetime.now(dt.UTC)
    history_rows = table.with_columns(
        pl.lit(partition).alias("partition"), pl.lit(version).alias("champion_version"),
        pl.lit(context.run.run_id).alias("run_id"), pl.lit(now).alias("computed_at"),
    )
    storage.write_parquet(pipeline.layout.drift_scores(now.date().isoformat(), partition, context.run.run_id),
                          history_rows)
    files["trend_plot"] = trend_plot(storage, pipeline, f"{out_dir}/trend.png")
    with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
        summary = render_drift_summary(result, tmp, title=f"{spec.name}: {partition} vs champion v{version}")
        files["summary_html"] = storage.write_file(f"{out_dir}/drift_summary.html", summary.html)
        files["summary_png"] = storage.write_file(f"{out_dir}/drift_severity.png", summary.png)
        if wants_evidently(spec, result, signal) and bundle.reference_sample is not None:
            files["evidently_html"] = render_evidently(spec, result, signal, bundle, features, Path(tmp), storage,
                                                       f"{out_dir}/evidently.html")
    return {k: v for k, v in files.items() if v}


def wants_evidently(spec, result, signal) -> bool:
    """Evidently's page costs seconds per partition: by default only when there is drift to look at."""
    if result.empty or spec.drift.evidently_html == "never":
        return False
    return spec.drift.evidently_html == "always" or bool(result.dataset_drift or signal.triggered or
                                                          result.drifted_features)


def render_evidently(spec, result, signal, bundle, features, tmp: Path, storage, rel: str) -> str:
    from mlops_assets.core.drift import render_evidently_report

    cap = spec.drift.evidently_sample_rows
    current = features.select(spec.feature_names)
    if current.height > cap:
        current = current.sample(n=cap, seed=spec.model.seed)
    # The drifted and key features in detail; the rest as the drifted-share summary.
    detail = sorted(set(result.drifted_features) | set(signal.key_features))
    html = tmp / "evidently.html"
    render_evidently_report(bundle.reference_sample.to_pandas(), current.to_pandas(), dict(spec.feature_types),
                            str(html), sample_rows=cap, detail_columns=detail or None)
    return storage.write_file(rel, html)


def trend_plot(storage, pipeline: Pipeline, rel: str) -> str | None:
    from mlops_assets.core.plots import drift_trend_plot

    prefix = pipeline.layout.drift_scores_prefix()
    files = [p for p in storage.list(prefix) if p.endswith(".parquet")][-MAX_TREND_RUNS:]
    if not files:
        return None
    history = pl.concat([storage.read_parquet(p) for p in files], how="vertical_relaxed")
    with tempfile.TemporaryDirectory(prefix="mlops-trend-") as tmp:
        path = drift_trend_plot(history, Path(tmp) / "trend.png")
        return storage.write_file(rel, path) if path else None


def drift_metadata(result, signal, version: str, input_version: str, files: dict) -> dict:
    metadata = {
        DRIFT_SHARE: float(result.drift_share),
        DATASET_DRIFT: bool(result.dataset_drift),
        KEY_FEATURES_DRIFTED: ",".join(signal.key_features_drifted),
        RETRAIN_SIGNAL: bool(signal.triggered),
        "signal_summary": "; ".join(signal.reasons) or "no retrain signal",
        "key_features": ",".join(signal.key_features),
        INPUT_DATA_VERSION: input_version,
        CHAMPION_VERSION: version,
        "n_reference": int(result.n_reference),
        "n_current": int(result.n_current),
        "drifted_features": ", ".join(result.drifted_features) or "none",
        "summary": result.message,
        "drift_table": dg.MetadataValue.md(result.to_markdown()),
        "retrain_signal_table": dg.MetadataValue.md(signal.to_markdown()),
    }
    if result.prediction is not None:
        metadata["prediction_drift_score"] = float(result.prediction.score)
        metadata["prediction_drifted"] = bool(result.prediction.drifted)
    metadata.update({name: dg.MetadataValue.path(uri) for name, uri in files.items()})
    return metadata
