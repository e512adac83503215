"""`evaluation_report`: evaluates the version trained in its own run, gates it, records the verdict."""

import dagster as dg

from mlops_assets.pipeline import Stage
from mlops_assets.stages.evaluation_report import GATE_CHECK
from mlops_assets_tests.stages.harness import StageWorld, assert_definition


def test_definition(world):
    assert_definition(world, Stage.EVALUATION_REPORT, deps=[Stage.TRAINED_MODEL], kinds={"mlflow", "onnx"},
                      checks=[GATE_CHECK], partitioned=False)


def test_evaluates_and_records_the_gate_on_the_version_and_its_run(world):
    partition = world.land(day=1)
    world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES], partition)
    world.materialize([Stage.TRAINED_MODEL])
    result = world.materialize([Stage.EVALUATION_REPORT])
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == GATE_CHECK and check.passed
    md = world.metadata(Stage.EVALUATION_REPORT)
    assert md["model_version"] == "1" and md["champion_version"] == "none" and md["gate_passed"] is True
    assert md["approval"] == "approved"
    registry = world.resource("registry")
    version = registry.get_version("demo", "1")
    assert version.tags["gate_passed"] == "true"
    assert version.tags["approval"] == "pending"      # approved only once promoted
    run = registry.client().get_run(version.run_id)
    assert run.data.tags["gate_passed"] == "true"
    assert abs(run.data.metrics["holdout_roc_auc"] - md["holdout_roc_auc"]) < 1e-12
    report = world.resource("storage").read_json(world.pipeline.layout.evaluation("1"))
    assert report["version"] == "1" and report["gate"]["passed"] is True


def test_two_retrains_in_flight_each_evaluate_and_gate_their_own_model(tmp_path, instance):
    """Two retrain runs as real processes, interleaved: train A, train B, evaluate A, evaluate B.
    Each evaluates (and tags) the version it trained, whichever was logged last."""
    import os
    import subprocess
    import sys

    import yaml

    from mlops_assets_tests.conftest import small_spec

    base = small_spec(tmp_path)
    spec = small_spec(tmp_path, gate={**base.gate.model_dump(mode="json"), "min_main_metric": 0.55,
                                      "max_fairness_gap": None})
    world = StageWorld(tmp_path, instance, spec=spec)
    partition = world.land(day=1)
    world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES], partition)
    world.resource("registry").ensure_experiment("demo")   # one store schema before two writers
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "DAGSTER_HOME": os.environ["DAGSTER_HOME"]}
    workers = [subprocess.Popen(
        [sys.executable, "-m", "mlops_assets_tests.stages.interleaved_worker", str(spec_file), str(barrier), "2", n],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in ("A", "B")]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), "\n".join(o[-3000:] for o in outputs)

    registry = world.resource("registry")
    evaluated = set()
    for run_line in (line for o in outputs for line in o.splitlines() if line.startswith("RUN ")):
        _, name, run_id, _ = run_line.split()
        records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        by_stage = {r.asset_materialization.asset_key.path[-1]: r.asset_materialization.metadata for r in records}
        mine = by_stage["trained_model"]["model_version"].value
        assert by_stage["evaluation_report"]["model_version"].value == mine, name
        tags = registry.get_version("demo", mine).tags
        assert tags["gate_evaluated_by_run"] == by_stage["trained_model"]["mlflow_run_id"].value
        assert tags["dagster_run_id"] == run_id
        evaluated.add(mine)
    assert evaluated == {"1", "2"}
