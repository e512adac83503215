"""The short summary `make demo` prints at the end: one screen, read from the recorded state."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mlops_assets.definitions import default_registry
from mlops_assets.pipeline import LIFECYCLE, Pipeline, Stage


def _md(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _f(value, fmt: str = ".4f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def print_summary(spec, instance: dg.DagsterInstance, root: Path, seconds: float, registry=None,
                  stopped=None) -> None:
    """`stopped()` (optional) waits for the daemon group to stop and says how; printed last but one."""
    import time

    started = time.perf_counter()
    names = Pipeline(spec)
    registry = registry or default_registry(spec)
    print("\n=== mlops-assets demo summary ===")
    counts = {s.value: len(instance.fetch_materializations(names.key(s), limit=1000).records) for s in LIFECYCLE}
    print("materializations: " + ", ".join(f"{s}={n}" for s, n in counts.items()))
    print(f"model '{names.model_name}' versions:")
    for v in registry.list_versions(names.model_name):
        alias = f" @{','.join(v.aliases)}" if v.aliases else ""
        print(f"  v{v.version}{alias}: approval={v.tags.get('approval')} "
              f"data_version={v.tags.get('data_version')} gate={v.tags.get('gate_message', '-')[:60]}")
    ev = _md(instance, names.key(Stage.EVALUATION_REPORT))
    if ev:
        print(f"last evaluation (v{ev.get('model_version')} vs champion {ev.get('champion_version')}): "
              f"roc_auc={_f(ev.get('holdout_roc_auc'))} log_loss={_f(ev.get('holdout_log_loss'))} "
              f"onnx_parity={_f(ev.get('onnx_parity_max_abs_diff'), '.1e')} gate_passed={ev.get('gate_passed')}")
    latest: dict[str, dg.AssetMaterialization] = {}
    for record in instance.fetch_materializations(names.key(Stage.DRIFT_REPORT), limit=50, ascending=True).records:
        latest[record.asset_materialization.partition] = record.asset_materialization
    for partition, m in latest.items():
        md = m.metadata
        print(f"drift {partition} vs v{_v(md, 'champion_version')}: share={_v(md, 'drift_share', 0.0):.2f} "
              f"dataset_drift={_v(md, 'dataset_drift')} retrain_signal={_v(md, 'retrain_signal')}")
    html = next((m.metadata["evidently_html"].value for m in latest.values() if "evidently_html" in m.metadata), None)
    if html:
        print(f"  evidently report: {html}")
    preds = _md(instance, names.key(Stage.BATCH_PREDICTIONS))
    if preds:
        print(f"batch predictions: {preds.get('dagster/row_count')} rows scored by v{preds.get('model_version')} "
              f"-> {preds.get('uri')}")
    print(f"state: {root}  (Dagster home, MLflow store, artifacts, daemon logs)")
    print("look around: `make dev` (Dagster UI: sensor ticks, runs, timeline), `make mlflow-ui` (MLflow)")
    if stopped is not None:
        print(stopped())
    print(f"demo finished in {seconds + time.perf_counter() - started:.1f}s")


def _v(metadata: dict, key: str, default=None):
    entry = metadata.get(key)
    return default if entry is None else entry.value
