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
