"""The MLflow registry resource on a real sqlite store: versions, tags, nested search trials."""


from mlops_assets.core.features import prepare_features
from mlops_assets.core.training import assemble_training_frame, train_from_frame
from mlops_assets.resources.registry import MLflowRegistry


def test_search_trials_are_nested_runs_and_version_is_a_candidate(tmp_path, spec, loans_day1):
    data = spec.model_dump(mode="json")
    data["model"]["search"] = {"strategy": "grid", "space": {"num_leaves": {"values": [4, 16]}}}
    from mlops_assets.spec import PipelineSpec

    s = PipelineSpec.from_dict(data)
    out = train_from_frame(assemble_training_frame([prepare_features(loans_day1, s)], s), s)
    bundle_dir = out.bundle.save(tmp_path / "bundle")
    registry = MLflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                              artifact_location=str(tmp_path / "artifacts"))
    trials = [{"index": t.index, "params": t.params, "score": t.score, "seconds": t.seconds,
               "metric": out.search.metric, "best": t is out.search.best} for t in out.search.trials]
    ref = registry.log_candidate(
        "demo", bundle_dir, params=out.model.params, metrics={"train_rows": out.train_rows},
        tags={"dagster_run_id": "r1", "approval": "pending"}, run_name="demo test", trials=trials,
    )
    exp_id, run_id, version = ref.experiment_id, ref.run_id, ref.version
    assert version == "1"
    client = registry.client()
    children = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert len(children) == 2
    assert {c.data.tags["best"] for c in children} == {"true", "false"}
    assert all(f"valid_{out.search.metric}" in c.data.metrics for c in children)
    info = registry.get_version("demo", "1")
    assert info.tags["approval"] == "pending" and info.aliases == []
    assert registry.version_by_alias("demo", "champion") is None
    assert registry.load_bundle("demo", "1").onnx_bytes == out.bundle.onnx_bytes
