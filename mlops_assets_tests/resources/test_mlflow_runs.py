"""What one logged training run looks like in MLflow, on a real sqlite store: a readable name,
per-iteration curves, the dataset, a signature with outputs, an input example, the description,
the version's tags from its creation on, and a console without MLflow's noise."""

import warnings

import pytest

from mlops_assets.core.features import SPLIT_COLUMN, prepare_features
from mlops_assets.core.training import assemble_training_frame, train_from_frame
from mlops_assets.resources.mlflow_runs import BATCH, ints_as_doubles, log_curves, readable_run_name
from mlops_assets.resources.registry import MLflowRegistry
from mlops_assets.stages.metadata import mlflow_artifact_url, model_training_view


@pytest.fixture
def registry(tmp_path):
    return MLflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                          artifact_location=str(tmp_path / "artifacts"))


@pytest.fixture
def trained(tmp_path, spec, loans_day1):
    frame = assemble_training_frame([prepare_features(loans_day1, spec)], spec)
    out = train_from_frame(frame, spec)
    return frame, out, out.bundle.save(tmp_path / "bundle")


def _record(spec, frame, out, trigger="drift"):
    return {
        "params": out.model.params, "metrics": {"train_rows": out.train_rows}, "history": out.model.history,
        "tags": {"dagster_run_id": "r1", "approval": "pending", "trigger": trigger, "data_version": out.data_version},
        "run_name": f"{spec.name} {trigger}", "description": "**demo**: trained by [r1](http://dagster/runs/r1).",
        "dataset_sample": frame.drop(SPLIT_COLUMN).head(500).to_pandas(), "dataset_digest": out.data_version,
        "target": spec.target, "feature_kinds": dict(spec.feature_types),
        "nullable": {f.name for f in spec.features if f.max_null_fraction > 0}, "task": spec.task,
        "classes": out.bundle.classes, "input_example": out.bundle.reference_sample.head(5).to_pandas(),
    }


def test_a_candidate_run_reads_like_a_model_training_run(registry, spec, trained, capfd):
    frame, out, bundle_dir = trained
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = registry.log_candidate(spec.name, bundle_dir, **_record(spec, frame, out))
    console = capfd.readouterr().err
    assert "Downloading artifacts" not in console                       # no tqdm bars
    assert "Successfully registered" not in console and "Created version" not in console
    mlflow_warnings = [str(w.message) for w in caught if "mlflow" in w.filename]
    assert not [m for m in mlflow_warnings if "Integer columns" in m or "type hint" in m], mlflow_warnings

    client = registry.client()
    run = client.get_run(ref.run_id)
    assert run.info.run_name == readable_run_name(spec.name, ref.version, "drift") == "demo v1 (drift)"
    assert run.data.tags["mlflow.note.content"].startswith("**demo**")
    # Per-iteration curves, one step per boosting round.
    for name, values in out.model.history.items():
        history = client.get_metric_history(ref.run_id, f"curve_{name}")
        assert [m.step for m in history] == list(range(1, len(values) + 1))
    # The training dataset: our digest, and no integer columns in its schema.
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == out.data_version
    assert '"long"' not in dataset_input.dataset.schema and '"integer"' not in dataset_input.dataset.schema

    version = client.get_model_version(spec.name, ref.version)
    assert version.description.startswith("**demo**") and version.run_id == ref.run_id
    assert {"bundle_sha256", "bundle_manifest", "dagster_run_id", "approval"} <= set(version.tags)
    with registry.activated() as fluent:
        model_info = fluent.models.get_model_info(f"models:/{spec.name}/{ref.version}")
    assert model_info.signature.outputs is not None
    assert {c.name for c in model_info.signature.outputs.inputs} >= {"score", "prediction"}
    assert model_info.saved_input_example_info is not None


def test_curves_are_logged_in_batches_with_steps(registry):
    experiment = registry.ensure_experiment("curves")
    client = registry.client()
    run = client.create_run(experiment)
    n = BATCH + 250
    assert log_curves(client, run.info.run_id, {"loss": [1.0 / (i + 1) for i in range(n)], "empty": []}) == n
    history = client.get_metric_history(run.info.run_id, "curve_loss")
    assert len(history) == n and history[-1].step == n


def test_integer_columns_are_given_as_doubles():
    import pandas as pd

    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5], "c": ["x", "y"]})
    out = ints_as_doubles(frame)
    assert str(out["a"].dtype) == "float64" and str(out["c"].dtype) == "object"
    assert ints_as_doubles(None) is None


def test_links_open_the_model_training_view_and_the_artifact_viewer(registry):
    # MLflow 3.17's UI picks its view from `workflowType` (else a per-browser setting that
    # defaults to GenAI); the experiment tag below is kept for older UIs.
    experiment_id = registry.ensure_experiment("links")
    assert registry.client().get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    run = model_training_view(registry.run_url(experiment_id, "abc"))
    assert run.endswith(f"/#/experiments/{experiment_id}/runs/abc?workflowType=machine_learning")
    assert model_training_view(run) == run
    assert mlflow_artifact_url(run, "drift/p1/evidently.html").endswith(
        "/runs/abc/artifacts/drift/p1/evidently.html?workflowType=machine_learning")


def test_a_rejection_reads_the_same_on_run_and_version_and_drift_logs_files_only(registry, spec, trained, tmp_path):
    frame, out, bundle_dir = trained
    ref = registry.log_candidate(spec.name, bundle_dir, **_record(spec, frame, out))
    registry.record_evaluation(ref, metrics={"holdout_roc_auc": 0.6}, report={"gate": {"passed": False}},
                               artifacts=[], tags={"gate_passed": "false", "approval": "rejected"})
    client = registry.client()
    assert client.get_run(ref.run_id).data.tags["approval"] == "rejected"
    assert client.get_model_version(spec.name, ref.version).tags["approval"] == "rejected"

    page = tmp_path / "evidently.html"
    page.write_text("<html><body>drift</body></html>")
    registry.record_evaluation(ref, report={"drift_share": 0.1}, report_path="drift/p1/report.json",
                               artifacts=[("drift/p1", page)])
    assert sorted(a.path for a in client.list_artifacts(ref.run_id, "drift/p1")) == [
        "drift/p1/evidently.html", "drift/p1/report.json"]
    assert client.get_run(ref.run_id).data.tags["approval"] == "rejected"    # no tags: unchanged
