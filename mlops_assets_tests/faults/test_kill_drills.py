"""Kill drills: a real worker process is SIGKILLed at a write of training, registration or
rollback; the dead run is failed as the watchdog would, the recovery the product offers runs
(the retrain sensor's decision and the run it requests; re-executing the failed rollback run),
and the invariants are checked right after the kill and after the recovery:

* `champion` only ever points at an approved (or forced) version;
* no version is its own `previous_champion` or `rolled_back_from`;
* exactly one `registered_model` materialization per promotion, and the champion of record
  equals the alias; no promotion intent left open;
* no version left pending (never judged, never abandoned), no MLflow run left RUNNING, and
  `mlops-assets doctor` reports nothing;
* the end state (champion, approvals, aliases, the registration history, by training set)
  equals the uninterrupted run's; a rollback lands on its intended version and a second one
  goes further back, never forth.

`doctor --fix` first, or re-executing the failed run from failure, must converge as well.

Kill points come from the uninterrupted run's write trace (worker.py), at the landmarks where
what is recorded changes kind: for training and evaluation, the MLflow run opens, the version
appears, is labelled, is judged; for a promotion and a rollback, nothing written, the intent
open, the target tagged, the alias moved, all but the record, the record stored.
MLOPS_FAULT_DRILLS=all kills at every write of each step instead (and after the last one and
after each record). The kill points and their outcomes are printed at the end (`pytest -s`).
"""

from __future__ import annotations

import pytest

from mlops_assets_tests.faults.drills import (
    drill,
    intent_open_points,
    kill_points,
    open_drills,
    promotion_after_killed_rollback,
)
from mlops_assets_tests.faults.harness import (
    VERSION_CREATED,
    convergence_violations,
    first_write,
    safety_violations,
)

# The module's worlds are built in the first test's setup, and a drill set can take minutes on
# a loaded 2-core machine (each kill point trains or promotes for real): past the 600 s default.
pytestmark = pytest.mark.timeout(1_800)


@pytest.fixture(scope="module")
def drills(tmp_path_factory):
    with open_drills(tmp_path_factory) as drills:
        yield drills


# -- the uninterrupted runs ---------------------------------------------------------------------
def test_uninterrupted_steps_promote_and_roll_back_as_intended(drills):
    retrain, register, rollback = (drills.baselines[s] for s in ("retrain", "register", "rollback"))
    for baseline in (retrain, register):
        state = baseline.state
        assert state.champion == "2" and state.versions["2"]["approval"] == "approved"
        assert state.versions["2"]["previous_champion"] == "1" and state.aliases == {"champion": "2"}
        assert [r["version"] for r in state.registered] == ["1", "2"]
    assert retrain.state.signature() == register.state.signature()
    assert rollback.state.champion == "2" and rollback.state.registered[-1]["rolled_back_from"] == "3"
    assert rollback.state.versions["3"]["rolled_back"] == "true"
    assert rollback.second.champion == "1" and rollback.second.registered[-1]["rolled_back_from"] == "2"
    promotion = [w["method"] for w in register.writes if w["stage"] == "registered_model"]
    assert promotion[0] == "mlflow.set_registered_model_tag", "the intent is written before anything else"
    assert promotion.index("mlflow.set_registered_model_alias") > promotion.index("mlflow.set_model_version_tag")


def test_a_fresh_interpreter_writes_what_a_forked_worker_writes(drills):
    """The fork server is only a faster start: same writes, same end state as a new process."""
    world = drills.world
    world.restore("rollback")
    run = world.run_worker("rollback")
    assert run.returncode == 0, run.output[-3000:]
    baseline = drills.baselines["rollback"]
    assert [w["method"] for w in run.writes] == [w["method"] for w in baseline.writes]
    with world.instance() as instance:
        assert world.observe(instance).signature() == baseline.state.signature()



@pytest.mark.parametrize("step", ["retrain", "register", "rollback"])
def test_a_kill_at_any_write_converges_to_the_uninterrupted_end_state(drills, step):
    problems = []
    for kill in kill_points(drills, step):
        problems += drill(drills, step, kill)
    assert not problems, "\n".join(problems)


def test_doctor_first_then_the_retrain_sensor_converges_too(drills):
    """`mlops-assets doctor --fix` runs before anything else while a promotion intent is open:
    it finishes the promotion and records it; the sensor then has nothing left to do."""
    problems = []
    for kill in intent_open_points(drills, "register"):
        problems += drill(drills, "register", kill, doctor_first=True)
    assert not problems, "\n".join(problems)


def test_re_executing_the_failed_run_from_failure_converges_too(drills):
    """The runbook's answer to `run_failure`: re-execute the run from failure, in the UI."""
    writes = drills.baselines["register"].writes
    promotion = [w["n"] for w in writes if w["stage"] == "registered_model"]
    alias = first_write(writes, "registered_model", "mlflow.set_registered_model_alias")
    problems = []
    for kill in dict.fromkeys([f"write:{promotion[0]}", f"write:{alias}", f"after:{alias}", f"after:{promotion[-1]}"]):
        problems += drill(drills, "register", kill, reexecute=True)
    assert not problems, "\n".join(problems)


def test_re_executing_a_promotion_whose_record_is_stored_records_it_once(drills):
    """The re-execution finds its earlier attempt's record (same root run) and records nothing."""
    problems = drill(drills, "register", "event:registered_model", reexecute=True)
    assert not problems, "\n".join(problems)


def test_doctor_first_after_a_kill_in_training(drills):
    """`doctor` abandons the version the dead run left unjudged and fails its open MLflow run;
    a version the gate judged in MLflow (its record not yet stored) is not abandoned."""
    writes = drills.baselines["retrain"].writes
    version = first_write(writes, "trained_model", VERSION_CREATED)
    gate = first_write(writes, "evaluation_report", "mlflow.set_model_version_tag")
    problems = []
    for kill in (f"after:{version}", f"after:{gate}"):
        problems += drill(drills, "retrain", kill, doctor_first=True)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doctor_first", [False, True], ids=["record stored by the run", "recorded by doctor"])
def test_re_executing_a_rollback_whose_result_is_recorded_does_not_roll_back_again(drills, doctor_first):
    """Killed after the rollback's own record was stored; or killed with the intent open, after
    which `doctor --fix` finished and recorded it. The runbook then re-executes the failed run."""
    kills = ["event:rollback"] if not doctor_first else intent_open_points(drills, "rollback")
    problems = []
    for kill in kills:
        problems += drill(drills, "rollback", kill, doctor_first=doctor_first)
    assert not problems, "\n".join(problems)


def test_the_training_sweep_after_a_kill_mid_rollback_keeps_the_champion_of_record_on_the_alias(drills):
    """The sweep finishes the rollback and records it; re-executing the rollback then does nothing."""
    world, baseline = drills.world, drills.baselines["rollback"]
    world.restore("rollback")
    alias = next(w["n"] for w in baseline.writes if w["method"] == "mlflow.set_registered_model_alias")
    assert world.run_worker("rollback", f"after:{alias}", workers=drills.forks).killed
    with world.instance() as instance:
        world.fail_dead_runs(instance)
        assert world.sweep(instance)["promotion"] == ["finished"]
        state = world.observe(instance)
    assert not safety_violations(state)
    assert state.champion_of_record == state.champion == "2", (state.champion_of_record, state.champion)
    assert state.registered[-1]["rolled_back_from"] == "3", state.registered
    with world.instance() as instance:
        (dead,) = [r.run_id for r in instance.get_runs() if r.is_failure]
        assert world.reexecute(instance, dead).success
        assert world.observe(instance).signature() == baseline.state.signature()


def test_a_promotion_finished_by_its_retry_keeps_its_promotion_id(drills):
    world, baseline = drills.world, drills.baselines["register"]
    world.restore("register")
    alias = next(w["n"] for w in baseline.writes if w["method"] == "mlflow.set_registered_model_alias")
    assert world.run_worker("retrain", f"after:{alias}", workers=drills.forks).killed
    with world.instance() as instance:
        world.fail_dead_runs(instance)
        world.tick_retrain(instance)
        assert world.observe(instance).champion == "2"
    record = world.storage.read_json(world.pipeline.layout.registration("2"))
    assert record["promotion_id"] == world.registry.get_version(world.model, "2").tags["promotion_id"], record


def test_a_version_doctor_abandoned_is_not_promoted_with_its_abandonment(drills):
    world = drills.world
    world.restore("retrain")
    assert world.run_worker("retrain", "event:trained_model", workers=drills.forks).killed
    with world.instance() as instance:
        world.fail_dead_runs(instance)
        assert "versions marked abandoned: v2" in world.doctor_fix(instance)
        world.tick_retrain(instance)
        state = world.observe(instance)
    assert not convergence_violations(state)
    assert "abandoned_reason" not in state.versions[state.champion], state.versions[state.champion]


def test_a_retrain_killed_mid_training_is_retried_on_the_next_tick_with_the_default_cooldown(drills):
    from mlops_assets.automation.jobs import build_jobs
    from mlops_assets.automation.retrain import decide_now
    from mlops_assets.pipeline import Pipeline
    from mlops_assets_tests.faults.harness import drill_spec

    world, baseline = drills.world, drills.baselines["retrain"]
    world.restore("retrain")
    artifacts = first_write(baseline.writes, "trained_model", "mlflow.log_model_artifacts")
    assert world.run_worker("retrain", f"write:{artifacts}", workers=drills.forks).killed
    automation = {**world.spec.automation.model_dump(mode="json"), "retrain_cooldown_minutes": 60}
    pipeline = Pipeline(drill_spec(world.root, automation=automation))
    with world.instance() as instance:
        world.fail_dead_runs(instance)
        decision = decide_now(instance, pipeline, build_jobs(pipeline))
    assert decision.act, decision.reason


def test_a_promotion_that_first_finishes_a_killed_rollback_records_that_rollback_once(drills):
    """A rollback killed with its intent open (nothing tagged yet; the target tagged; the alias
    moved), or after its last write but before its record; then a new approved candidate is
    registered before anything else runs. The promotion finishes the rollback, which is recorded
    once, and the history reads v3, back to v2, then v4."""
    writes = drills.baselines["rollback"].writes
    rollback = [w["n"] for w in writes if w["stage"] == "rollback"]
    intent = first_write(writes, "rollback", "mlflow.set_registered_model_tag")
    alias = first_write(writes, "rollback", "mlflow.set_registered_model_alias")
    problems = []
    for kill in dict.fromkeys([f"after:{intent}", f"write:{alias}", f"after:{alias}", f"after:{rollback[-1]}"]):
        problems += promotion_after_killed_rollback(drills, kill)
    assert not problems, "\n".join(problems)
