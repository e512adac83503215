"""`model_performance`: delayed labels joined to served predictions, metrics per day.

Optional: built when the spec declares `ground_truth`. Its `retrain_signal` metadata is read
by the retrain sensor, like the drift report's.

While a candidate is under release, it also compares the two arms on the same labelled days
(canary: the rows each arm served; shadow: the champion's and the candidate's scores of the
same rows) and records the release rule's decision (`core/release.py: decide_release`), which
the release sensor acts on.
"""


import time

import dagster as dg
import polars as pl

from mlops_assets.core.features import data_hash
from mlops_assets.core.performance import (
    DAY,
    LABEL,
    ArmComparison,
    compare_arms,
    daily_performance,
    join_labels,
    performance_signal,
)
from mlops_assets.core.predictions import MODEL_VERSION
from mlops_assets.core.release import (
    ARM,
    CANARY,
    Release,
    ReleaseDecision,
    ReleasePolicy,
    decide_release,
)
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import (
    APPROVAL,
    CHAMPION_VERSION,
    INPUT_DATA_VERSION,
    LABELLED_ROWS,
    RELEASE_ACTION,
    RELEASE_ARMS,
    RELEASE_REASON,
    RELEASE_VERSION,
    RETRAIN_SIGNAL,
    STATUS,
    TRAINABLE_LATE_LABELS,
)
from mlops_assets.sources.labels import read_label_files
from mlops_assets.stages.base import champion_version, stage_asset
from mlops_assets.stages.batch_predictions import shadow_predictions_path, shadow_predictions_prefix
from mlops_assets.stages.metadata import table
from mlops_assets.state import evaluation_of, release_of_record, value


def build_model_performance_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec
    gt = spec.ground_truth

    @stage_asset(pipeline, Stage.MODEL_PERFORMANCE,
                 resources={pipeline.storage_key, pipeline.registry_key, pipeline.notifier_key})
    def model_performance(context: dg.AssetExecutionContext):
        res = pipeline.resources(context)
        champion = champion_version(context, pipeline)
        release = release_of_record(context.instance, pipeline)
        release = release if release is not None and release.active else None
        labels = read_label_files(gt.path, spec.limits)
        prefix = pipeline.layout.predictions_prefix()
        pred_files = [p for p in res.storage.list(prefix) if p.endswith(".parquet")]
        # Diagonal: canary tables carry an `arm` column the others do not.
        preds = pl.concat([res.storage.read_parquet(p).with_columns(pl.lit(served_partition(p)).alias(PARTITION))
                           for p in pred_files], how="diagonal_relaxed") if pred_files else pl.DataFrame()
        if labels.height == 0 or preds.height == 0:
            metadata = {STATUS: "no labels yet" if labels.height == 0 else "no predictions yet",
                        RETRAIN_SIGNAL: False, LABELLED_ROWS: 0, TRAINABLE_LATE_LABELS: 0}
            if release is not None:
                metadata.update(judge_release(context, pipeline, release, champion, None, None))
            return dg.MaterializeResult(metadata=metadata)
        joined = join_labels(preds, labels, id_column=spec.id_column, label_column=gt.label_column or spec.target,
                             time_column=gt.time_column)
        judged = unseen_by_champion(joined, champion, training_partitions(context.instance, pipeline, champion))
        series = daily_performance(judged, spec.task, threshold=spec.model.decision_threshold,
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
        metadata = performance_metadata(signal, series, joined, champion, input_version, uri)
        metadata["rows_the_champion_trained_on"] = joined.height - judged.height
        metadata[TRAINABLE_LATE_LABELS] = trainable_late_labels(context.instance, pipeline, joined)
        if release is not None:
            arms, by_day = release_arms(res.storage, pipeline, release, preds, labels)
            metadata.update(judge_release(context, pipeline, release, champion, arms, by_day))
        return dg.MaterializeResult(metadata=metadata)

    return model_performance


PARTITION = "_partition"   # the partition a prediction file scored (its folder name)


def served_partition(path: str) -> str:
    """`<pipeline>/predictions/<partition>/v<N>.parquet` -> `<partition>`."""
    return path.rsplit("/", 2)[-2]


def training_partitions(instance, pipeline: Pipeline, champion: str) -> frozenset[str]:
    from mlops_assets.state import version_records

    record = next((v for v in version_records(instance, pipeline) if v.version == str(champion)), None)
    return record.training_set.partitions if record is not None else frozenset()


def unseen_by_champion(joined: pl.DataFrame, champion: str, trained_on: frozenset[str]) -> pl.DataFrame:
    """The labelled rows that can judge the champion: its rows from partitions it did not train
    on (its score of a training row says little about new data, and a retrain on those rows
    would learn nothing new), plus every row other versions served (their history)."""
    if not trained_on:
        return joined
    seen = (pl.col(MODEL_VERSION).cast(pl.String) == str(champion)) & pl.col(PARTITION).is_in(sorted(trained_on))
    return joined.filter(~seen)


def trainable_late_labels(instance, pipeline: Pipeline, joined: pl.DataFrame) -> int:
    """Labelled rows training would attach (stages/trained_model.py): those of accepted partitions
    that arrived without labels."""
    from mlops_assets.state import partition_facts

    unlabelled = sorted(f.key for f in partition_facts(instance, pipeline) if f.accepted and not f.labelled)
    return joined.filter(pl.col(PARTITION).is_in(unlabelled)).height if unlabelled else 0


def release_arms(storage, pipeline: Pipeline, release: Release, preds: pl.DataFrame,
                 labels: pl.DataFrame) -> tuple[ArmComparison, pl.DataFrame]:
    """Both arms joined to the labels: canary, the rows each arm served; shadow, the champion's
    and the candidate's scores of the same rows (each arm joined on its own: one id, two rows)."""
    spec = pipeline.spec
    gt = spec.ground_truth
    join = {"id_column": spec.id_column, "label_column": gt.label_column or spec.target, "time_column": gt.time_column}
    versions = [release.champion, release.version]
    if release.mode == CANARY:
        served = preds.filter(pl.col(ARM).is_not_null() & pl.col(MODEL_VERSION).cast(pl.String).is_in(versions)) \
            if ARM in preds.columns else preds.head(0)
        joined = join_labels(served, labels, **join) if served.height else None
    else:
        suffix = shadow_predictions_path(pipeline, "p", release.version).rsplit("/", 1)[-1]
        files = [p for p in storage.list(shadow_predictions_prefix(pipeline)) if p.endswith("/" + suffix)]
        shadow = pl.concat([storage.read_parquet(p) for p in files], how="diagonal_relaxed") if files else None
        joined = None
        if shadow is not None and shadow.height:
            mine = preds.filter(pl.col(MODEL_VERSION).cast(pl.String) == release.champion) \
                .join(shadow.select(spec.id_column), on=spec.id_column, how="semi")
            parts = [join_labels(t, labels, **join) for t in (mine, shadow) if t.height]
            joined = pl.concat(parts, how="diagonal_relaxed") if parts else None
    if joined is None:
        joined = pl.DataFrame(schema={spec.id_column: pl.Int64, MODEL_VERSION: pl.String, DAY: pl.Date})
    arms = compare_arms(joined, task=spec.task, metric=spec.main_metric, champion_version=release.champion,
                        candidate_version=release.version, threshold=spec.model.decision_threshold,
                        classes=spec.classes)
    by_day = daily_performance(joined, spec.task, threshold=spec.model.decision_threshold, classes=spec.classes,
                               min_rows=spec.performance.min_rows_per_day) if joined.height else None
    return arms, by_day


def judge_release(context, pipeline: Pipeline, release: Release, champion: str, arms: ArmComparison | None,
                  by_day: pl.DataFrame | None) -> dict:
    """The release rule's decision on recorded facts, as metadata the release sensor reads."""
    evaluation = evaluation_of(context.instance, pipeline, release.version)
    decision = decide_release(release=release, arms=arms, policy=ReleasePolicy.from_spec(pipeline.spec.release),
                              champion=champion, approval=value(evaluation, APPROVAL), now=time.time())
    context.log.info(decision.describe())
    return release_metadata(release, decision, arms, by_day)


def release_metadata(release: Release, decision: ReleaseDecision, arms: ArmComparison | None,
                     by_day: pl.DataFrame | None) -> dict:
    metadata = {
        RELEASE_VERSION: release.version,
        RELEASE_ACTION: decision.action,
        RELEASE_REASON: decision.reason,
        "release_summary": release.describe(),
    }
    if arms is not None:
        metadata[RELEASE_ARMS] = dg.MetadataValue.json(arms.to_dict())
        metadata["release_arms_table"] = table(arms.rows())
    if by_day is not None and by_day.height:
        shown = by_day.sort(DAY).tail(28).with_columns(pl.col(DAY).cast(pl.String)).to_dicts()
        metadata["release_daily"] = table(shown)
    return metadata


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
        "daily": table(shown),
        "series_uri": dg.MetadataValue.path(uri),
    }
