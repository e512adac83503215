"""champion_record: a request's own records are found across its re-executions, and a move a
recovery finished in MLflow is recorded once, for the run that started it."""

import dagster as dg
import pytest

from mlops_assets.champion_record import (
    RECORDED_FOR_RUN,
    explained_move,
    recorded_for_request,
    recover_and_record,
    request_run_ids,
    sweep_and_record,
)
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.resources.registry import VersionInfo
from mlops_assets.signals import MODEL_VERSION, ROLLED_BACK_FROM
from mlops_assets.state import champion_of_record
from mlops_assets_tests.conftest import small_spec

REEXECUTES = "dagster/parent_run_id", "dagster/root_run_id"


@pytest.fixture
def pipeline(tmp_path):
    return Pipeline(small_spec(tmp_path))


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def _record(pipeline, instance, metadata: dict, tags: dict | None = None) -> dg.DagsterRun:
    """A run that stores one registered_model record with `metadata`."""
    @dg.asset(key=pipeline.key(Stage.REGISTERED_MODEL))
    def registered_model():
        return dg.MaterializeResult(metadata=metadata)

    result = dg.materialize([registered_model], instance=instance, tags=tags)
    return instance.get_run_by_id(result.run_id)


def _reexecution_of(pipeline, instance, run: dg.DagsterRun) -> dg.DagsterRun:
    @dg.op
    def noop():
        return None

    @dg.job(name="attempt")
    def attempt():
        noop()

    result = attempt.execute_in_process(instance=instance, tags=dict.fromkeys(REEXECUTES, run.run_id))
    return instance.get_run_by_id(result.run_id)


def test_a_re_execution_finds_its_requests_record_and_no_one_elses(pipeline, instance):
    first = _record(pipeline, instance, {MODEL_VERSION: "2"})
    again = _reexecution_of(pipeline, instance, first)
    other = _record(pipeline, instance, {MODEL_VERSION: "3"})
    assert first.run_id in request_run_ids(instance, again)
    assert recorded_for_request(instance, pipeline, again, rollback=False, version="2") is not None
    assert recorded_for_request(instance, pipeline, again, rollback=False, version="3") is None
    assert recorded_for_request(instance, pipeline, again, rollback=True) is None      # a promotion, not a rollback
    fresh = _reexecution_of(pipeline, instance, other)
    assert recorded_for_request(instance, pipeline, fresh, rollback=False, version="2") is None


def test_a_runless_record_made_for_a_run_counts_as_that_runs(pipeline, instance):
    first = _record(pipeline, instance, {MODEL_VERSION: "3"})
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=pipeline.key(Stage.REGISTERED_MODEL),
        metadata={MODEL_VERSION: "2", ROLLED_BACK_FROM: "3", RECORDED_FOR_RUN: first.run_id}))
    found = recorded_for_request(instance, pipeline, _reexecution_of(pipeline, instance, first), rollback=True)
    assert found is not None and found.metadata[ROLLED_BACK_FROM].value == "3"


def test_a_move_is_explained_only_by_a_finished_run_from_the_recorded_champion():
    dead, alive = (lambda run_id: False), (lambda run_id: True)
    rolled = {"rolled_back_by_run": "r1", "rolled_back_from": "3", "approval": "approved"}
    promoted = {"promoted_by_run": "r2", "previous_champion": "1", "approval": "approved", "gate_passed": "true"}
    assert explained_move(rolled, "3", dead) == "rollback"
    assert explained_move(promoted, "1", dead) == "promotion"
    assert explained_move(rolled, "3", alive) is None             # its run records it itself
    assert explained_move(rolled, "2", dead) is None              # not from the champion of record
    assert explained_move({**promoted, "approval": "rejected"}, "1", dead) is None
    assert explained_move({"approval": "approved"}, "1", dead) is None      # moved by hand


class _Registry:
    """What sweep_and_record asks of the registry: a sweep that finished a rollback to v2."""

    def __init__(self, tags: dict[str, str]):
        self.tags = tags

    def sweep(self, model_name, is_alive):
        return {"promotion": ["finished"], "abandoned": [], "orphaned_runs": []}

    def recover_promotion(self, model_name):
        return "finished"

    def champion(self, model_name):
        return VersionInfo(model_name, "2", "mlflow-run", self.tags, ["champion"])


def test_the_training_sweep_records_the_rollback_it_finished_once(pipeline, instance):
    dead_rollback = _record(pipeline, instance, {MODEL_VERSION: "3"})    # v3 is the champion of record
    registry = _Registry({"rolled_back_by_run": dead_rollback.run_id, "rolled_back_from": "3",
                          "approval": "approved", "rollback_reason": "drill"})
    repaired = sweep_and_record(instance, pipeline, registry)
    assert repaired["promotion"] == ["finished"] and repaired["recorded"] == ["recorded the rollback v3 -> v2"]
    assert champion_of_record(instance, pipeline) == "2"
    found = recorded_for_request(instance, pipeline, dead_rollback, rollback=True)
    assert found is not None and found.metadata["rollback_reason"].value == "drill"
    assert sweep_and_record(instance, pipeline, registry)["recorded"] == []      # already follows the alias


def test_a_promotion_records_the_rollback_its_recovery_finished_once_but_not_its_own_promotion(pipeline, instance):
    """Before its own move, a promotion finishes what a killed run left (here: a rollback to v2)
    and records it; a finished promotion of the version it promotes is its own to record."""
    dead_rollback = _record(pipeline, instance, {MODEL_VERSION: "3"})
    registry = _Registry({"rolled_back_by_run": dead_rollback.run_id, "rolled_back_from": "3",
                          "approval": "approved", "rollback_reason": "drill"})
    done = recover_and_record(instance, pipeline, registry, recorded_by="a test", promoting="4")
    assert done == "a half-done earlier move was finished; recorded the rollback v3 -> v2"
    assert champion_of_record(instance, pipeline) == "2"
    assert recover_and_record(instance, pipeline, registry, recorded_by="a test", promoting="4") == (
        "a half-done earlier move was finished")                                   # recorded once
    dead_promotion = _record(pipeline, instance, {MODEL_VERSION: "1"})
    own = _Registry({"promoted_by_run": dead_promotion.run_id, "previous_champion": "1", "approval": "approved",
                     "gate_passed": "true"})
    recover_and_record(instance, pipeline, own, recorded_by="a test", promoting="2")
    assert champion_of_record(instance, pipeline) == "1"
    recover_and_record(instance, pipeline, own, recorded_by="a test")                # a rollback job's
    assert champion_of_record(instance, pipeline) == "2"
