"""The short summary `make demo` prints at the end."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mlops_assets.pipeline import LIFECYCLE, Pipeline


def _md(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def print_summary(spec, instance: dg.DagsterInstance, defs: dg.Definitions, root: Path, seconds: float) -> None:
    names = Pipeline(spec)
    registry = defs.resources[names.registry_key]
    print("\n=== mlops-assets demo summary ===")
    counts = {}
    for stage in LIFECYCLE:
        found = instance.fetch_materializations(names.key(stage), limit=1000)
        counts[stage.value] = len(found.records)
    print("materializations: " + ", ".join(f"{s}={n}" for s, n in counts.items()))
    print(f"model '{names.model_name}' versions:")
    for v in registry.list_versions(names.model_name):
        alias = f" @{','.join(v.aliases)}" if v.aliases else ""
        print(f"  v{v.version}{alias}: approval={v.tags.get('approval')} "
              f"data_version={v.tags.get('data_version')} gate={v.tags.get('gate_message', '-')[:120]}")
    ev = _md(instance, names.key("evaluation_report"))
    if ev:
        print(f"last evaluation (v{ev.get('model_version')} vs champion {ev.get('champion_version')}): "
              f"roc_auc={ev.get('holdout_roc_auc', float('nan')):.4f} "
              f"log_loss={ev.get('holdout_log_loss', float('nan')):.4f} "
              f"onnx_parity_max_abs_diff={ev.get('onnx_parity_max_abs_diff', float('nan')):.2e} "
              f"gate_passed={ev.get('gate_passed')}")
    drift_events = instance.fetch_materializations(names.key("drift_report"), limit=10)
    for record in reversed(drift_events.records):
        md = record.asset_materialization.metadata
        print(f"drift {record.asset_materialization.partition}: share={md['drift_share'].value:.2f} "
              f"dataset_drift={md['dataset_drift'].value} drifted={md['drifted_features'].value}")
        if "evidently_html" in md:
            print(f"  evidently report: {md['evidently_html'].value}")
    preds = _md(instance, names.key("batch_predictions"))
    if preds:
        print(f"batch predictions: {preds.get('dagster/row_count')} rows scored by v{preds.get('model_version')} "
              f"-> {preds.get('uri')}")
    print(f"state: {root}  (Dagster home, MLflow store, artifacts)")
    print("look around: `make dev` (Dagster UI), `make mlflow-ui` (MLflow)")
    print(f"demo finished in {seconds:.1f}s")
