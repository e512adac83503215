"""`registered_model`: promotes the version its run evaluated, only when MLflow agrees it passed."""

import pytest

from mlops_assets.pipeline import Stage
from mlops_assets_tests.stages.harness import assert_definition, failure_text


def test_definition(world):
    assert_definition(world, Stage.REGISTERED_MODEL, deps=[Stage.EVALUATION_REPORT], kinds={"mlflow"},
                      partitioned=False)


@pytest.fixture
def evaluated(world):
    partition = world.land(day=1)
    world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES], partition)
    assert world.materialize([Stage.TRAINED_MODEL, Stage.EVALUATION_REPORT]).success
    return world


def test_promotes_the_evaluated_version_alone(evaluated):
    world = evaluated
    result = world.materialize([Stage.REGISTERED_MODEL])
    assert result.success
    md = world.metadata(Stage.REGISTERED_MODEL)
    assert md["model_version"] == "1" and md["previous_champion"] == "none" and md["bootstrap"] is True
    assert md["mlflow_version"] == "http://127.0.0.1:5000/#/models/demo/versions/1?workflowType=machine_learning"
    registry = world.resource("registry")
    champion = registry.champion("demo")
    assert champion.version == "1" and champion.aliases == ["champion"]
    assert champion.tags["approval"] == "approved"
    assert champion.tags["promoted_by_run"] == result.run_id
    assert "previous_champion" not in champion.tags
    assert registry.version_by_alias("demo", "challenger") is None
    record = world.resource("storage").read_json(world.pipeline.layout.registration("1"))
    assert record == {"version": "1", "previous_champion": None, "approval": "approved", "run_id": result.run_id,
                      "promotion_id": champion.tags["promotion_id"]}


def test_refuses_when_the_mlflow_record_disagrees_with_the_evaluation(evaluated):
    world = evaluated
    registry = world.resource("registry")
    registry.set_tags("demo", "1", {"gate_passed": "false"})
    result = world.materialize([Stage.REGISTERED_MODEL], raise_on_error=False)
    assert not result.success
    failure = failure_text(result)
    assert "version 1 is not promotable" in failure and "MLflow records gate_passed=false" in failure
    assert registry.champion("demo") is None


def test_a_re_execution_after_the_record_was_stored_records_the_promotion_once(evaluated):
    """A run killed between storing its record and ending is re-executed (same root run): the
    promotion is done and recorded, so the step succeeds and records nothing more."""
    world = evaluated
    first = world.materialize([Stage.REGISTERED_MODEL])
    again = world.materialize([Stage.REGISTERED_MODEL], tags={"dagster/parent_run_id": first.run_id,
                                                             "dagster/root_run_id": first.run_id})
    assert again.success and not again.asset_materializations_for_node("demo__registered_model")
    records = world.instance.fetch_materializations(world.pipeline.key(Stage.REGISTERED_MODEL), limit=10).records
    assert [r.run_id for r in records] == [first.run_id]
    assert world.resource("registry").champion("demo").tags["promoted_by_run"] == first.run_id


def test_materialized_again_for_the_champion_it_made_records_nothing(evaluated):
    world = evaluated
    first = world.materialize([Stage.REGISTERED_MODEL])
    again = world.materialize([Stage.REGISTERED_MODEL])
    assert again.success and not again.asset_materializations_for_node("demo__registered_model")
    records = world.instance.fetch_materializations(world.pipeline.key(Stage.REGISTERED_MODEL), limit=10).records
    assert [r.run_id for r in records] == [first.run_id]


def test_an_operators_rollback_is_not_undone_by_materializing_the_promotion_again(tmp_path, instance):
    """v1 -> v2, then an operator rolls back to v1. Materializing `registered_model` again (it
    would use v2's old approving evaluation) is refused with the reason; evaluating v2 again
    fails the gate's rolled-back rule. The champion stays v1 throughout, with one record each."""
    from mlops_assets.signals import MODEL_VERSION, ROLLED_BACK_FROM
    from mlops_assets.state import champion_of_record
    from mlops_assets_tests.conftest import small_spec
    from mlops_assets_tests.stages.harness import StageWorld

    # The regression rules off: v2 only has to be promotable, whatever its small-data metrics.
    gate = {**small_spec(tmp_path).gate.model_dump(mode="json"), "max_regression": None,
            "max_regression_on_champion_holdout": None}
    world = StageWorld(tmp_path, instance, gate=gate)
    world.bootstrap(world.land(day=1))
    day2 = world.land(day=2)
    assert world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES], day2).success
    assert world.materialize([Stage.TRAINED_MODEL, Stage.EVALUATION_REPORT, Stage.REGISTERED_MODEL]).success
    registry = world.resource("registry")
    assert registry.champion("demo").version == "2"
    rollback = world.defs.resolve_job_def(world.pipeline.job("rollback"))
    config = {"ops": {f"{world.pipeline.name}_rollback_champion": {"config": {"reason": "incident 42"}}}}
    assert rollback.execute_in_process(instance=world.instance, run_config=config).success
    assert registry.champion("demo").version == "1"

    again = world.materialize([Stage.REGISTERED_MODEL], raise_on_error=False)
    assert not again.success
    failure = failure_text(again)
    assert "v2 was rolled back" in failure and "evaluate it again" in failure
    reevaluated = world.materialize([Stage.EVALUATION_REPORT, Stage.REGISTERED_MODEL], raise_on_error=False)
    assert not reevaluated.success
    gate = world.metadata(Stage.EVALUATION_REPORT)
    assert gate["approval"] == "rejected"
    failed = {e.check_name: e.description for e in reevaluated.get_asset_check_evaluations() if not e.passed}
    assert "not_a_rolled_back_training_set" in failed["gate"] and "v2, which was rolled back" in failed["gate"]
    assert "blocking asset check failed" in failure_text(reevaluated)   # registered_model did not run

    assert registry.champion("demo").version == "1" and champion_of_record(world.instance, world.pipeline) == "1"
    records = world.instance.fetch_materializations(world.pipeline.key(Stage.REGISTERED_MODEL), limit=10,
                                                    ascending=True).records
    moves = [(r.asset_materialization.metadata.get(ROLLED_BACK_FROM), r.asset_materialization.metadata[MODEL_VERSION])
             for r in records]
    assert [(None if f is None else f.value, v.value) for f, v in moves] == [(None, "1"), (None, "2"), ("2", "1")]
