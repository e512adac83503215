"""What people see: plots embedded on the assets and their checks, sortable native tables, numbers
kept numeric, links into MLflow's model-training view, and the drift pages on the champion's run."""

import dagster as dg

from mlops_assets.pipeline import Stage
from mlops_assets.stages.drift_report import DRIFT_SIGNAL_CHECK
from mlops_assets.stages.evaluation_report import GATE_CHECK

IMAGE = "](data:image/png;base64,"


def _is_image(value) -> bool:
    return isinstance(value, dg.MarkdownMetadataValue) and IMAGE in value.value


def _raw(world, stage, partition=None) -> dict:
    mat = world.latest(stage, partition)
    assert mat is not None
    return dict(mat.metadata)


def test_plots_tables_and_links_on_training_evaluation_and_drift(world, monkeypatch):
    monkeypatch.delenv("MLOPS_GIT_SHA", raising=False)
    first = world.land(day=1)
    world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES], first)
    world.materialize([Stage.TRAINED_MODEL])
    evaluated = world.materialize([Stage.EVALUATION_REPORT])
    world.materialize([Stage.REGISTERED_MODEL])

    trained = _raw(world, Stage.TRAINED_MODEL)
    assert _is_image(trained["plot_learning_curve"])
    assert isinstance(trained["feature_importance"], dg.TableMetadataValue)
    assert trained["mlflow_version"].value.endswith("/versions/1?workflowType=machine_learning")

    ev = _raw(world, Stage.EVALUATION_REPORT)
    for name in ("roc", "pr", "calibration", "feature_importance"):
        assert _is_image(ev[f"plot_{name}"]), name
        assert ev["plot_uris"].value[name].endswith(f"{name}.png")
    assert all(len(ev[k].value) < 40_000 for k in ev if k.startswith("plot_") and k != "plot_uris")
    for name in ("metrics", "gate", "permutation_importance", "slices"):
        assert isinstance(ev[name], dg.TableMetadataValue), name
    assert isinstance(ev["holdout_roc_auc"], dg.FloatMetadataValue)          # the Plots tab reads these
    metric_rows = {r.data["metric"]: r.data for r in ev["metrics"].records}
    assert abs(metric_rows["roc_auc"]["challenger"] - ev["holdout_roc_auc"].value) < 1e-5
    assert "workflowType=machine_learning" in ev["mlflow_run"].value
    assert ev["mlflow_plots"].value.split("?")[0].endswith("/artifacts/evaluation/plots")
    (gate,) = evaluated.get_asset_check_evaluations()
    assert gate.check_name == GATE_CHECK
    assert isinstance(gate.metadata["rules"], dg.TableMetadataValue) and _is_image(gate.metadata["plot_roc"])
    assert isinstance(gate.metadata["holdout_roc_auc"], dg.FloatMetadataValue)

    registry = world.resource("registry")
    version = registry.get_version("demo", "1")
    run = registry.client().get_run(version.run_id)
    assert run.info.run_name == "demo v1 (manual)"
    assert "git_sha" not in version.tags                 # an in-process run has no code location
    assert version.tags["mlops_assets_version"] and version.tags["code_version"].startswith("0.1.0+")

    shifted = world.land(day=2, n_rows=2_000, seed=5, drift=0.9)
    world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES, Stage.BATCH_PREDICTIONS], shifted)
    drifted = world.materialize([Stage.DRIFT_REPORT], shifted)
    assert drifted.success
    (check,) = drifted.get_asset_check_evaluations()
    assert check.check_name == DRIFT_SIGNAL_CHECK and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith("retrain signal fired")
    assert _is_image(check.metadata["plot_drift_severity"]) and _is_image(check.metadata["plot_trend"])

    drift = _raw(world, Stage.DRIFT_REPORT, shifted)
    assert isinstance(drift["drift_table"], dg.TableMetadataValue)
    assert isinstance(drift["retrain_signal_table"], dg.TableMetadataValue)
    first_row = drift["drift_table"].records[0].data
    assert first_row["drifted"] is True and first_row["severity"] >= 1
    assert _is_image(drift["plot_drift_severity"]) and _is_image(drift["plot_trend"])
    assert drift["mlflow_drift_report"].value.split("?")[0].endswith(f"/artifacts/drift/{shifted}/evidently.html")
    logged = {a.path for a in registry.client().list_artifacts(version.run_id, f"drift/{shifted}")}
    assert {f"drift/{shifted}/{n}" for n in ("evidently.html", "drift_summary.html", "drift_severity.png",
                                             "trend.png", "report.json")} <= logged


def test_the_drift_signal_check_is_declared_and_never_blocks(world):
    node = world.defs.resolve_asset_graph().get(world.pipeline.key(Stage.DRIFT_REPORT))
    (spec,) = node.assets_def.check_specs
    assert spec.name == DRIFT_SIGNAL_CHECK and not spec.blocking


def test_the_drift_signal_check_warns_near_the_threshold():
    from types import SimpleNamespace

    from mlops_assets.stages.drift_report import drift_signal_check

    def result(share, empty=False):
        return SimpleNamespace(drift_share=share, share_threshold=0.5, empty=empty, message="no rows",
                               drifted_features=[], features=[], prediction=None)

    quiet = SimpleNamespace(triggered=False, reasons=[], key_features_drifted=[])
    fired = SimpleNamespace(triggered=True, reasons=["key feature 'x' shifted"], key_features_drifted=["x"])
    calm = drift_signal_check(result(0.1), quiet, {})
    near = drift_signal_check(result(0.42), quiet, {})
    firing = drift_signal_check(result(0.1), fired, {})
    empty = drift_signal_check(result(0.0, empty=True), quiet, {})
    assert calm.passed and empty.passed and not near.passed and not firing.passed
    assert {c.severity for c in (calm, near, firing, empty)} == {dg.AssetCheckSeverity.WARN}
    assert "near the threshold 0.5" in near.description and "key feature 'x'" in firing.description
    assert near.metadata["drift_share"].value == 0.42
