"""`trained_model`: train on every labelled validated partition, log and register a candidate.

The new MLflow version is a candidate (alias `challenger`, approval `pending`) until the
evaluation gate decides; `champion` never moves here.
"""


import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from mlops_assets.core.bundle import PROFILE_FILE, SAMPLE_FILE
from mlops_assets.core.features import data_hash
from mlops_assets.core.training import assemble_training_frame, train_from_frame
from mlops_assets.lineage import code_version, git_sha
from mlops_assets.resources.registry import CHALLENGER, log_and_register
from mlops_assets.stages.common import Names, Paths, markdown_table

TRAINING_POOL = "mlops_training"


def build_training_asset(names: Names) -> dg.AssetsDefinition:
    spec = names.spec
    paths = Paths(spec.name)

    @dg.asset(
        key=names.key("trained_model"),
        group_name=spec.name,
        deps=[names.key("validated_features")],
        kinds={spec.model.trainer, "mlflow", "onnx"},
        code_version=names.code_version,
        pool=TRAINING_POOL,
        required_resource_keys={names.storage, names.registry},
        description="Model trained on all labelled partitions, exported to ONNX, registered as a candidate.",
    )
    def trained_model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        storage = getattr(context.resources, names.storage)
        registry = getattr(context.resources, names.registry)
        files = [p for p in storage.list(paths.features_prefix()) if p.endswith(".parquet")]
        frames = [storage.read_parquet(p) for p in files]
        frame = assemble_training_frame(frames, spec)
        context.log.info(f"training on {frame.height} rows from {len(files)} partitions")
        checkpoints = spec.state_path("checkpoints", spec.name, f"{data_hash(frame)}-{spec.spec_hash}")
        outcome = train_from_frame(frame, spec, checkpoint_dir=str(checkpoints))
        model = outcome.model

        tags = {
            "data_version": outcome.data_version,
            "code_version": code_version(),
            "spec_hash": spec.spec_hash,
            "dagster_run_id": context.run_id,
            "approval": "pending",
            "trainer": model.trainer,
            "onnx_parity_max_abs_diff": f"{outcome.parity_max_abs_diff:.3e}",
        }
        if sha := git_sha():
            tags["git_sha"] = sha
        with tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp:
            bundle_dir = outcome.bundle.save(Path(tmp) / "bundle")
            (bundle_dir / PROFILE_FILE).write_text(_json(outcome.reference_profile))
            outcome.reference_sample.write_parquet(bundle_dir / SAMPLE_FILE)
            dataset = _mlflow_dataset(frame, spec, outcome.data_version)
            tags["dataset_digest"] = dataset.digest
            valid_metrics = {f"valid_{k}": v[-1] for k, v in model.history.items() if v}
            experiment_id, run_id, version = log_and_register(
                registry,
                model_name=names.model_name,
                bundle_dir=bundle_dir,
                params=model.params,
                metrics={**valid_metrics, "train_rows": outcome.train_rows,
                         "onnx_parity_max_abs_diff": outcome.parity_max_abs_diff},
                tags=tags,
                dataset=dataset,
                input_example=outcome.reference_sample.head(5).to_pandas(),
                trials=_trial_rows(outcome.search),
            )
            registry.set_alias(names.model_name, CHALLENGER, version)
            for f in sorted(bundle_dir.iterdir()):
                storage.write_file(f"{paths.model_dir(version)}/bundle/{f.name}", f)
        holdout_uri = storage.write_parquet(paths.holdout(version), outcome.holdout)
        record = {
            "version": version, "run_id": run_id, "experiment_id": experiment_id,
            "partitions": [Path(p).stem for p in files], "train_rows": outcome.train_rows,
            "valid_rows": outcome.valid_rows, "holdout_rows": outcome.holdout.height,
            "data_version": outcome.data_version, "parity_max_abs_diff": outcome.parity_max_abs_diff,
            "tags": tags,
        }
        storage.write_json(paths.training_record(version), record)
        top = sorted(model.feature_importance.items(), key=lambda kv: -kv[1])[:10]
        search_md = {}
        if outcome.search is not None:
            rows = [{"trial": t.index, **t.params, f"valid_{outcome.search.metric}": t.score}
                    for t in outcome.search.trials]
            search_md = {"search": dg.MetadataValue.md(markdown_table(rows)),
                         "search_best_trial": outcome.search.best.index,
                         "search_stopped_by": outcome.search.stopped_by}
        return dg.MaterializeResult(
            metadata={
                "model_version": version,
                "mlflow_run": dg.MetadataValue.url(registry.run_url(experiment_id, run_id)),
                "mlflow_run_id": run_id,
                "train_rows": outcome.train_rows,
                "holdout_rows": outcome.holdout.height,
                "partitions": len(files),
                "best_iteration": model.best_iteration or 0,
                "train_seconds": round(model.train_seconds, 3),
                "onnx_parity_max_abs_diff": outcome.parity_max_abs_diff,
                "bundle_uri": dg.MetadataValue.path(storage.uri(paths.model_dir(version))),
                "holdout_uri": dg.MetadataValue.path(holdout_uri),
                "training_data_version": outcome.data_version,
                "feature_importance": dg.MetadataValue.md(
                    markdown_table([{"feature": k, "gain_share": v} for k, v in top])
                ),
                **search_md,
            },
            data_version=dg.DataVersion(f"{outcome.data_version}-v{version}"),
        )

    return trained_model


def _trial_rows(search) -> list[dict]:
    if search is None:
        return []
    return [{"index": t.index, "params": t.params, "score": t.score, "seconds": t.seconds,
             "metric": search.metric, "best": t is search.best} for t in search.trials]


def _json(payload: dict) -> str:
    import json

    return json.dumps(payload, sort_keys=True)


def _mlflow_dataset(frame: pl.DataFrame, spec, data_version: str):
    import mlflow.data

    # The schema comes from a sample; the digest is our hash of the full training frame.
    sample = frame.drop("_split").head(1_000).to_pandas()
    return mlflow.data.from_pandas(
        sample, name=f"{spec.name}-training", targets=spec.target, digest=data_version
    )
