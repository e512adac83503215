"""`drift_report`: one partition against the champion's pinned reference profile.

The statistics come from our full-data engine; Evidently renders the familiar HTML on a
capped sample next to it. The reference is the champion's own training profile, stored in
its bundle, so drift is always measured against what the model learned.
"""


import datetime as dt
import tempfile
import warnings
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from mlops_assets.core.predictions import (
    MONITORED_COLUMN,
    PREDICTION,
    PROBA_PREFIX,
    SCORE,
    monitored_from_scores,
    monitored_from_table,
)
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.resources.registry import CandidateRef
from mlops_assets.signals import (
    CHAMPION_VERSION,
    DATASET_DRIFT,
    DRIFT_SHARE,
    INPUT_DATA_VERSION,
    KEY_FEATURES_DRIFTED,
    RETRAIN_SIGNAL,
)
from mlops_assets.stages.base import champion_version, read_validated_versioned, stage_asset
from mlops_assets.stages.metadata import (
    mlflow_artifact_url,
    model_training_view,
    plot_metadata,
    table,
)

MAX_TREND_RUNS = 200
DRIFT_SIGNAL_CHECK = "drift_signal"
NEAR_THRESHOLD = 0.8     # the check warns from this fraction of the share threshold on
PLOT_TITLES = {"drift_severity": "Drift severity per feature", "trend": "Top drifting features over recent runs"}


def drift_config(spec):
    from mlops_assets.core.drift import DriftConfig, FeatureDriftConfig

    return DriftConfig(
        share_threshold=spec.drift.share_threshold,
        psi_bins=spec.drift.psi_bins,
        novelty_ratio=spec.drift.novelty_density_ratio,
        per_feature={name: FeatureDriftConfig(method=o.method, threshold=o.threshold)
                     for name, o in spec.drift.per_feature.items()},
    )


def build_drift_report_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec
    check = dg.AssetCheckSpec(
        DRIFT_SIGNAL_CHECK, asset=pipeline.key(Stage.DRIFT_REPORT), blocking=False,
        description=f"Warns (never blocks) when the calibrated retrain signal fires, or when the drifted share "
                    f"reaches {NEAR_THRESHOLD:.0%} of drift.share_threshold.")

    @stage_asset(pipeline, Stage.DRIFT_REPORT, check_specs=[check],
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
        # The columns drift works on, and the data version validated_features stored with them
        # (hashing the 1M-row frame again would cost as much as profiling it).
        features, input_version = read_validated_versioned(res.storage, pipeline, partition,
                                                           [spec.id_column, *spec.feature_names])
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
        files, images, links = write_outputs(context, pipeline, res, result, signal, version, bundle, features)
        metadata = {**drift_metadata(result, signal, version, input_version, files), **images, **links}
        if signal.triggered:
            res.notifier.send(
                "drift", f"{spec.name}: drift in {partition} against champion v{version}", "; ".join(signal.reasons),
                {DRIFT_SHARE: round(float(result.drift_share), 3),
                 "key_features": ",".join(signal.key_features_drifted) or "-", "champion": version},
            )
        context.log.info(f"drift share {result.drift_share:.2f}: {result.message}")
        return dg.MaterializeResult(
            metadata=metadata, data_version=dg.DataVersion(f"{metadata[INPUT_DATA_VERSION]}-v{version}"),
            check_results=[drift_signal_check(result, signal, images)])

    return drift_report


def served_predictions(storage, pipeline: Pipeline, partition: str, version: str, features: pl.DataFrame,
                       bundle) -> np.ndarray:
    """The monitored value of what the champion served for these rows (its stored batch
    predictions); rescoring is only the fallback, when the stored file no longer matches."""
    rel = pipeline.layout.predictions(partition, version)
    id_column = pipeline.spec.id_column
    if storage.exists(rel):
        with storage.reading_path(rel) as path:
            # Only the ids and the monitored columns: the table also holds versions and times.
            columns = [c for c in pl.read_parquet_schema(path)
                       if c in (id_column, SCORE, PREDICTION) or c.startswith(PROBA_PREFIX)]
            preds = pl.read_parquet(path, columns=columns)
        if preds.height == features.height and preds[id_column].equals(features[id_column]):
            return monitored_from_table(preds, pipeline.spec.task)
    return monitored_from_scores(pipeline.spec.task, bundle.score(features))


def write_outputs(context, pipeline: Pipeline, res, result, signal, version: str, bundle,
                  features) -> tuple[dict, dict, dict]:
    """The JSON report and signal, the per-feature table, the day-partitioned score history, the
    trend plot, our own HTML/PNG summary, and Evidently's HTML when it is worth rendering; the
    plots and pages also go to the champion's MLflow run. Returns (file URIs, embedded plots,
    MLflow links)."""
    from mlops_assets.core.drift.summary import render_drift_summary

    spec, storage = pipeline.spec, res.storage
    partition = context.partition_key
    out_dir = pipeline.layout.drift_dir(partition, version)
    table_frame = result.to_frame()
    files = {"report_uri": storage.write_json(f"{out_dir}/report.json", result.to_dict()),
             "signal_uri": storage.write_json(f"{out_dir}/signal.json", signal.to_dict()),
             "scores_uri": storage.write_parquet(f"{out_dir}/features.parquet", table_frame)}
    now = dt.datetime.now(dt.UTC)
    history_rows = table_frame.with_columns(
        pl.lit(partition).alias("partition"), pl.lit(version).alias("champion_version"),
        pl.lit(context.run.run_id).alias("run_id"), pl.lit(now).alias("computed_at"),
    )
    storage.write_parquet(pipeline.layout.drift_scores(now.date().isoformat(), partition, context.run.run_id),
                          history_rows)
    with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
        tmp = Path(tmp)
        local: dict[str, Path] = {}
        trend = trend_plot(storage, pipeline, tmp / "trend.png")
        if trend is not None:
            local["trend"] = trend
            files["trend_plot"] = storage.write_file(f"{out_dir}/trend.png", trend)
        summary = render_drift_summary(result, tmp, title=f"{spec.name}: {partition} vs champion v{version}")
        local["drift_severity"] = summary.png
        files["summary_html"] = storage.write_file(f"{out_dir}/drift_summary.html", summary.html)
        files["summary_png"] = storage.write_file(f"{out_dir}/drift_severity.png", summary.png)
        pages = [summary.html]
        if wants_evidently(spec, result, signal) and bundle.reference_sample is not None:
            html = render_evidently(spec, result, signal, bundle, features, tmp)
            files["evidently_html"] = storage.write_file(f"{out_dir}/evidently.html", html)
            pages.append(html)
        uris = {"trend": files.get("trend_plot"), "drift_severity": files["summary_png"]}
        images = plot_metadata(local, PLOT_TITLES, uris)
        links = log_to_champion_run(res.registry, pipeline, version, partition, result,
                                    [*local.values(), *pages])
    return {k: v for k, v in files.items() if v}, images, links


def mlflow_folder(partition: str) -> str:
    return f"drift/{partition}"


def log_to_champion_run(registry, pipeline: Pipeline, version: str, partition: str, result,
                        files: list[Path]) -> dict:
    """The drift report, plots and HTML pages on the champion's training run, under
    drift/<partition>/ (MLflow previews PNG and HTML there); returns links to them."""
    info = registry.get_version(pipeline.model_name, version)
    if not info.run_id:
        return {}
    ref = CandidateRef(pipeline.model_name, version, info.run_id, registry.experiment_of(info.run_id))
    folder = mlflow_folder(partition)
    registry.record_evaluation(ref, report=result.to_dict(), report_path=f"{folder}/report.json",
                               artifacts=[(folder, p) for p in files])
    run_url = model_training_view(registry.run_url(ref.experiment_id, ref.run_id))
    names = {p.name for p in files}
    page = "evidently.html" if "evidently.html" in names else "drift_summary.html"
    return {"mlflow_run": dg.MetadataValue.url(run_url),
            "mlflow_drift_report": dg.MetadataValue.url(mlflow_artifact_url(run_url, f"{folder}/{page}"))}


def drift_signal_check(result, signal, images: dict) -> dg.AssetCheckResult:
    """WARN, never blocking: the retrain signal fired, or the drifted share is near its threshold."""
    share, threshold = float(result.drift_share), float(result.share_threshold)
    near = share >= NEAR_THRESHOLD * threshold
    if result.empty:
        passed, text = True, f"drift not computed: {result.message}"
    elif signal.triggered:
        passed, text = False, "retrain signal fired: " + "; ".join(signal.reasons)
    elif near:
        passed, text = False, (f"drifted share {share:.2f} is near the threshold {threshold:g} "
                               f"(warns from {NEAR_THRESHOLD * threshold:.2f}); no retrain signal yet")
    else:
        passed, text = True, f"drifted share {share:.2f} (threshold {threshold:g}); no retrain signal"
    return dg.AssetCheckResult(
        check_name=DRIFT_SIGNAL_CHECK, passed=passed, severity=dg.AssetCheckSeverity.WARN, description=text[:2000],
        metadata={DRIFT_SHARE: share, "share_threshold": threshold, RETRAIN_SIGNAL: bool(signal.triggered),
                  KEY_FEATURES_DRIFTED: ",".join(signal.key_features_drifted) or "none",
                  "drifted_features": ", ".join(result.drifted_features) or "none",
                  "drift_table": drift_table(result, CHECK_DRIFT_COLUMNS), **images},
    )


def wants_evidently(spec, result, signal) -> bool:
    """Evidently's page costs seconds per partition: by default only when there is drift to look at."""
    if result.empty or spec.drift.evidently_html == "never":
        return False
    return spec.drift.evidently_html == "always" or bool(result.dataset_drift or signal.triggered or
                                                          result.drifted_features)


def render_evidently(spec, result, signal, bundle, features, tmp: Path) -> Path:
    from mlops_assets.core.drift import render_evidently_report

    cap = spec.drift.evidently_sample_rows
    current = features.select(spec.feature_names)
    if current.height > cap:
        current = current.sample(n=cap, seed=spec.model.seed)
    # The drifted and key features in detail; the rest as the drifted-share summary.
    detail = sorted(set(result.drifted_features) | set(signal.key_features))
    html = tmp / "evidently.html"
    # Importing Evidently imports plotly, which replaces `warnings.formatwarning` for the whole
    # process (every later warning would print differently); keep the interpreter's.
    formatwarning = warnings.formatwarning
    try:
        render_evidently_report(bundle.reference_sample.to_pandas(), current.to_pandas(), dict(spec.feature_types),
                                str(html), sample_rows=cap, detail_columns=detail or None)
    finally:
        warnings.formatwarning = formatwarning
    return html


def trend_plot(storage, pipeline: Pipeline, out_path: Path) -> Path | None:
    """The trend over the last MAX_TREND_RUNS drift runs, as a local PNG (None before any)."""
    from mlops_assets.core.plots import drift_trend_plot

    prefix = pipeline.layout.drift_scores_prefix()
    files = [p for p in storage.list(prefix) if p.endswith(".parquet")][-MAX_TREND_RUNS:]
    if not files:
        return None
    history = pl.concat([storage.read_parquet(p) for p in files], how="vertical_relaxed")
    return drift_trend_plot(history, out_path)


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
        "drift_table": drift_table(result),
        "retrain_signal_table": signal_table(signal),
    }
    if result.prediction is not None:
        metadata["prediction_drift_score"] = float(result.prediction.score)
        metadata["prediction_drifted"] = bool(result.prediction.drifted)
    metadata.update({name: dg.MetadataValue.path(uri) for name, uri in files.items()})
    return metadata


DRIFT_COLUMNS = ("name", "role", "kind", "drifted", "severity", "method", "score", "threshold", "psi", "js_distance",
                 "wasserstein_norm", "ks_pvalue", "chi2_pvalue", "unseen_share", "n_current", "note")


CHECK_DRIFT_COLUMNS = ("name", "role", "kind", "drifted", "severity", "method", "score", "threshold")


def drift_table(result, columns: tuple[str, ...] = DRIFT_COLUMNS) -> dg.TableMetadataValue:
    """Per feature (and the prediction), drifted first, then by severity (score / threshold)."""
    entries = [(f, "feature") for f in result.features]
    if result.prediction is not None:
        entries.append((result.prediction, "prediction"))
    entries.sort(key=lambda e: (not e[0].drifted, -e[0].severity, e[0].name))
    rows = [{**f.to_dict(), "role": role, "severity": f.severity} for f, role in entries]
    return table(rows, [c for c in columns if not rows or c in rows[0]])


SIGNAL_COLUMNS = ("name", "role", "kind", "drifted", "test", "pvalue", "adjusted_pvalue", "family", "effect_name",
                  "effect", "floor", "novel_mass", "novelty_floor", "novel_region", "significant", "material",
                  "category", "share_reference", "share_current", "note")


def signal_table(signal) -> dg.TableMetadataValue:
    """The retrain signal's tested family: drifted first, key features and the prediction first."""
    order = {"key": 0, "prediction": 1, "feature": 2}
    tests = sorted(signal.tests, key=lambda t: (not t.drifted, order.get(t.role, 3), t.adjusted_pvalue or 2.0, t.name))
    return table([{**t.to_dict(), "drifted": t.drifted} for t in tests], list(SIGNAL_COLUMNS))
