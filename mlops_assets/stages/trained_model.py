"""`trained_model`: train on every labelled, accepted partition; log the candidate to MLflow.

The new MLflow version is a candidate (approval `pending`; the `challenger` alias is a label
for people) until the evaluation gate decides; `champion` never moves here. The version
reaches evaluation along the asset edge: it is this materialization's metadata.
"""


import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from mlops_assets.champion_record import sweep_and_record
from mlops_assets.core.features import SPLIT_COLUMN, data_hash
from mlops_assets.core.gate import Approval
from mlops_assets.core.training import (
    TrainingOutcome,
    assemble_training_frame,
    attach_labels,
    train_from_frame,
)
from mlops_assets.lineage import lineage_tags
from mlops_assets.pipeline import TRAINING_POOL, Pipeline, Stage
from mlops_assets.resources.registry import CHALLENGER, CandidateRef
from mlops_assets.signals import (
    DELAYED_LABEL_ROWS,
    LATE_LABELLED_PARTITIONS,
    MLFLOW_EXPERIMENT_ID,
    MLFLOW_RUN_ID,
    MODEL_VERSION,
    TRAINING_DATA_VERSION,
    TRAINING_PARTITIONS,
    TRAINING_SET,
    TRIGGER_TAG,
)
from mlops_assets.sources.labels import read_label_files
from mlops_assets.stages.base import stage_asset
from mlops_assets.stages.metadata import dagster_run_url, image_md, model_training_view, table
from mlops_assets.state import partition_facts, training_recipe

PROGRESS_EVERY = 50   # boosting rounds / epochs between progress lines in the run log


def build_trained_model_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @stage_asset(pipeline, Stage.TRAINED_MODEL, resources={pipeline.storage_key, pipeline.registry_key},
                 pool=TRAINING_POOL)
    def trained_model(context: dg.AssetExecutionContext):
        res = pipeline.resources(context)
        repaired = sweep_and_record(context.instance, pipeline, res.registry)
        if any(repaired.values()):
            context.log.warning(f"repaired what killed runs left behind: {repaired}")
        frames, rows, late = training_frames(context, pipeline, res.storage)
        delayed = sum(late.values())
        frame = assemble_training_frame(frames, spec)
        context.log.info(f"training {spec.model.trainer} on {frame.height} rows from {len(rows)} partitions"
                         + (f" ({delayed} labelled late)" if delayed else ""))
        checkpoints = spec.state_path("checkpoints", spec.name, f"{data_hash(frame)}-{spec.spec_hash}")
        outcome = train_from_frame(frame, spec, checkpoint_dir=str(checkpoints), progress=_progress(context))
        trigger = context.run.tags.get(TRIGGER_TAG, "manual")
        identity = recorded_training_set(context, pipeline)
        with tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp:
            bundle_dir = outcome.save(Path(tmp) / "bundle")
            ref = res.registry.log_candidate(pipeline.model_name, bundle_dir, **_run_record(
                pipeline, outcome, frame, context.run, trigger))
            for f in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
                res.storage.write_file(pipeline.layout.bundle_file(ref.version, f.relative_to(bundle_dir).as_posix()), f)
        res.registry.set_alias(pipeline.model_name, CHALLENGER, ref.version)
        holdout_uri = res.storage.write_parquet(pipeline.layout.holdout(ref.version), outcome.holdout)
        return dg.MaterializeResult(
            metadata={**training_metadata(pipeline, res, ref, outcome, holdout_uri),
                      TRAINING_SET: identity, TRAINING_PARTITIONS: dg.MetadataValue.json(rows),
                      DELAYED_LABEL_ROWS: delayed, LATE_LABELLED_PARTITIONS: dg.MetadataValue.json(late)},
            data_version=dg.DataVersion(f"{outcome.data_version}-v{ref.version}"),
        )

    return trained_model


def training_frames(context, pipeline: Pipeline, storage
                    ) -> tuple[list[pl.DataFrame], dict[str, int], dict[str, int]]:
    """Every accepted labelled partition, plus unlabelled ones whose rows got labels later
    (ground-truth files); returns the frames, the rows each labelled partition gave and the rows
    each late-labelled partition gave (its signals no longer count once it is trained on)."""
    spec = pipeline.spec
    facts = [f for f in partition_facts(context.instance, pipeline) if f.accepted]
    frames, rows, late = [], {}, {}
    labels = None
    if spec.ground_truth is not None and any(not f.labelled for f in facts):
        labels = read_label_files(spec.ground_truth.path, spec.limits)
    for f in facts:
        if not f.labelled and (labels is None or labels.height == 0):
            continue
        features = storage.read_parquet(pipeline.layout.features(f.key))
        if not f.labelled:
            features = attach_labels(features, labels, spec)
            if features.height == 0:
                continue
            late[f.key] = features.height
        else:
            rows[f.key] = features.height
        frames.append(features)
    return frames, rows, late


def recorded_training_set(context, pipeline: Pipeline) -> str:
    """The identity the retrain decision computes for this data (see core/retrain.py)."""
    from mlops_assets.state import candidate_training_set

    return candidate_training_set(context.instance, pipeline).identity


def _progress(context: dg.AssetExecutionContext):
    def report(step: int, values: dict[str, float]) -> None:
        if step % PROGRESS_EVERY == 0:
            shown = ", ".join(f"{k}={v:.5g}" for k, v in values.items())
            context.log.info(f"training step {step}: {shown}")

    return report


def _run_record(pipeline: Pipeline, outcome: TrainingOutcome, frame: pl.DataFrame, run, trigger: str) -> dict:
    """Everything MLflow records about the training run and the new version. `code_version` is
    the trained_model asset's Dagster code version (library version + the spec sections that
    shape training); `git_sha` is the user's code location's commit, when known."""
    spec, model = pipeline.spec, outcome.model
    run_id = run.run_id
    tags = {
        "data_version": outcome.data_version, "code_version": training_recipe(pipeline), "spec_hash": spec.spec_hash,
        "dagster_run_id": run_id, "approval": Approval.PENDING.value, "trainer": model.trainer,
        "trigger": trigger, "onnx_parity_max_abs_diff": f"{outcome.parity_max_abs_diff:.3e}",
        "dagster_run_url": dagster_run_url(run_id), **lineage_tags(run),
    }
    nullable = {f.name for f in spec.features if f.max_null_fraction > 0}
    return {
        "params": model.params,
        "metrics": {**{f"valid_{k}": v[-1] for k, v in model.history.items() if v},
                    "train_rows": outcome.train_rows, "onnx_parity_max_abs_diff": outcome.parity_max_abs_diff},
        "history": model.history,
        "tags": tags,
        "run_name": f"{spec.name} {trigger}",
        "description": run_description(pipeline, outcome, run_id, trigger),
        "dataset_sample": frame.drop(SPLIT_COLUMN).head(1_000).to_pandas(),
        "dataset_digest": outcome.data_version,
        "target": spec.target,
        "feature_kinds": dict(spec.feature_types),
        "nullable": nullable,
        "task": spec.task,
        "classes": outcome.bundle.classes,
        "input_example": outcome.bundle.reference_sample.head(5).to_pandas(),
        "trials": _trial_rows(outcome.search),
    }


def run_description(pipeline: Pipeline, outcome: TrainingOutcome, run_id: str, trigger: str) -> str:
    """Markdown for the MLflow run and version pages (both render it)."""
    spec = pipeline.spec
    return (f"**{spec.name}**: {spec.model.trainer} ({spec.task}, target `{spec.target}`) trained on "
            f"{outcome.train_rows:,} rows by Dagster run [{run_id[:8]}]({dagster_run_url(run_id)}), "
            f"trigger `{trigger}`.\n\nTraining data version `{outcome.data_version}`; spec hash "
            f"`{spec.spec_hash}`. The gate's verdict and the approval are the tags `gate_passed` and `approval`.")


def _trial_rows(search) -> list[dict]:
    if search is None:
        return []
    return [{"index": t.index, "params": t.params, "score": t.score, "seconds": t.seconds,
             "metric": search.metric, "best": t is search.best} for t in search.trials]


def training_metadata(pipeline: Pipeline, res, ref: CandidateRef, outcome: TrainingOutcome,
                      holdout_uri: str) -> dict:
    model = outcome.model
    top = sorted(model.feature_importance.items(), key=lambda kv: -kv[1])[:20]
    metadata = {
        MODEL_VERSION: ref.version,
        MLFLOW_RUN_ID: ref.run_id,
        MLFLOW_EXPERIMENT_ID: ref.experiment_id,
        "mlflow_run": dg.MetadataValue.url(model_training_view(res.registry.run_url(ref.experiment_id, ref.run_id))),
        "mlflow_version": dg.MetadataValue.url(model_training_view(res.registry.version_url(ref.model_name,
                                                                                            ref.version))),
        "train_rows": outcome.train_rows,
        "holdout_rows": outcome.holdout.height,
        "best_iteration": model.best_iteration or 0,
        "train_seconds": round(model.train_seconds, 3),
        "onnx_parity_max_abs_diff": outcome.parity_max_abs_diff,
        "bundle_uri": dg.MetadataValue.path(res.storage.uri(pipeline.layout.model_dir(ref.version))),
        "holdout_uri": dg.MetadataValue.path(holdout_uri),
        TRAINING_DATA_VERSION: outcome.data_version,
        "feature_importance": table([{"feature": k, "gain_share": v} for k, v in top]),
    }
    if outcome.search is not None:
        rows = [{"trial": t.index, **t.params, f"valid_{outcome.search.metric}": t.score}
                for t in outcome.search.trials]
        metadata.update({"search": table(rows),
                         "search_best_trial": outcome.search.best.index,
                         "search_stopped_by": outcome.search.stopped_by})
    metadata.update(learning_curve_metadata(model))
    return metadata


def learning_curve_metadata(model) -> dict:
    """The per-iteration validation curves as an embedded plot (MLflow has them as `curve_*`)."""
    from mlops_assets.core.plots import learning_curve_plot

    with tempfile.TemporaryDirectory(prefix="mlops-curve-") as tmp:
        path = learning_curve_plot(model.history, Path(tmp) / "learning_curve.png", model.best_iteration)
        return {} if path is None else {"plot_learning_curve": image_md(path, "Learning curve")}
