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

import os
import time
from dataclasses import dataclass, field

import pytest

from mlops_assets.automation.jobs import RETRAIN_STAGES
from mlops_assets.pipeline import Stage
from mlops_assets_tests.faults.harness import (
    VERSION_CREATED,
    FaultWorld,
    ForkServer,
    WorldState,
    convergence_violations,
    describe,
    every_write,
    first_write,
    promotion_kill_points,
    safety_violations,
    scratch,
    training_kill_points,
)
from mlops_assets_tests.stages.harness import failure_text

ALL = os.environ.get("MLOPS_FAULT_DRILLS") == "all"
# The module's worlds are built in the first test's setup, and a drill set can take minutes on
# a loaded 2-core machine (each kill point trains or promotes for real): past the 600 s default.
pytestmark = pytest.mark.timeout(1_800)
TESTED: list[tuple[str, str, str]] = []     # (step, kill point, outcome), printed at the end
BASELINES: dict = {}                        # step -> its uninterrupted run, for the summary


@dataclass
class Baseline:
    writes: list[dict]
    state: WorldState                     # after the step
    second: WorldState | None = None      # rollback: after a second rollback


@dataclass
class Drills:
    world: FaultWorld
    forks: ForkServer
    baselines: dict[str, Baseline] = field(default_factory=dict)


@pytest.fixture(scope="module")
def drills(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        # No pooled sqlite connection may outlive a restore of the world under it.
        mp.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        with scratch(tmp_path_factory, "faults") as root:
            world = FaultWorld(root / "world")
            forks = ForkServer()
            try:
                build_worlds(world)
                drills = Drills(world, forks)
                for step in ("retrain", "register", "rollback"):
                    drills.baselines[step] = BASELINES[step] = uninterrupted(drills, step)
                yield drills
            finally:
                forks.close()
    for step, kill, outcome in TESTED:
        print(f"{step:9} {kill:28} {outcome}")
    print(f"{len(TESTED)} kill points; uninterrupted writes: "
          + ", ".join(f"{step} {len(b.writes)}" for step, b in BASELINES.items()))


def build_worlds(world: FaultWorld) -> None:
    """retrain: v1 champion, a second labelled day validated. register: v2 trained and judged,
    not yet promoted. rollback: v1 -> v2 -> v3 promoted in turn (v3 champion)."""
    with world.instance() as instance:
        world.land(instance, 1)
        assert world.materialize(instance, RETRAIN_STAGES).success
        world.land(instance, 2)
    world.snapshot("retrain")
    with world.instance() as instance:
        assert world.materialize(instance, [Stage.TRAINED_MODEL, Stage.EVALUATION_REPORT]).success
    world.snapshot("register")
    with world.instance() as instance:
        assert world.materialize(instance, [Stage.REGISTERED_MODEL]).success
        world.land(instance, 3)
        assert world.materialize(instance, RETRAIN_STAGES).success
        state = world.observe(instance)
    assert state.champion == "3" and state.versions["3"]["previous_champion"] == "2", state
    world.snapshot("rollback")


def uninterrupted(drills: Drills, step: str) -> Baseline:
    world = drills.world
    world.restore(step)
    run = world.run_worker(worker_step(step), workers=drills.forks)
    assert run.returncode == 0 and all(run.result["success"]), run.output[-4000:]
    with world.instance() as instance:
        state = world.observe(instance)
        assert not convergence_violations(state), convergence_violations(state)
        second = None
        if step == "rollback":
            assert world.rollback(instance).success
            second = world.observe(instance)
    return Baseline(run.writes, state, second)


def worker_step(step: str) -> str:
    # The register world's recovery decision ("promote:v2") is what the sensor requests there.
    return "retrain" if step == "register" else step


def drill(drills: Drills, step: str, kill: str, *, doctor_first: bool = False, reexecute: bool = False) -> list[str]:
    """One kill point: kill, check, recover, check. Returns what went wrong (empty: all held).

    The recovery is the product's: the retrain sensor (retrain, register) or re-executing the
    failed rollback run; with `reexecute`, the failed retrain run is re-executed from failure
    (the runbook's `run_failure` advice) and the sensor must then find nothing left to do."""
    world, baseline = drills.world, drills.baselines[step]
    start = time.monotonic()
    world.restore(step)
    restored = time.monotonic()
    run = world.run_worker(worker_step(step), kill, workers=drills.forks)
    killed = time.monotonic()
    label = describe(kill, baseline.writes)
    if not run.killed:
        return [f"the worker was not killed at {label} (exit {run.returncode}):\n{run.output[-3000:]}"]
    problems = landed_where_expected(run, kill, baseline)
    with world.instance() as instance:
        problems += [f"right after the kill: {p}" for p in safety_violations(world.observe(instance))]
        dead = world.fail_dead_runs(instance)
        if len(dead) != 1:
            problems.append(f"expected one dead run to fail, found {dead}")
        if doctor_first:
            world.doctor_fix(instance)
            fixed = world.observe(instance)
            problems += [f"after doctor --fix: {p}" for p in convergence_violations(fixed)
                         if "still in progress" not in p]
        if step == "rollback":
            problems += recover_rollback(world, instance, dead, baseline)
        else:
            if reexecute:
                again = world.reexecute(instance, dead[0], from_failure=True)
                if not again.success:
                    problems.append(f"re-executing the failed run failed: {failure_text(again)}")
                extra = [o for o in world.tick_retrain(instance) if o.launched]
                if extra:
                    problems.append(f"after the re-execution the retrain sensor still launched {extra[0].run_ids}")
            else:
                world.tick_retrain(instance)
            problems += converged(world, instance, baseline.state)
    how = " (doctor first)" if doctor_first else " (re-executed)" if reexecute else ""
    TESTED.append((step + how, kill,
                   f"{time.monotonic() - start:5.1f}s (restore {restored - start:.1f}, "
                   f"worker {killed - restored:.1f}) "
                   + ("ok" if not problems else f"{len(problems)} violation(s)")))
    return [f"{label}: {p}" for p in problems]


def landed_where_expected(run, kill: str, baseline: Baseline) -> list[str]:
    """The killed run wrote exactly what the uninterrupted one did, up to the kill."""
    mode, _, arg = kill.partition(":")
    if mode == "event":
        return []
    n = int(arg)
    got = [(w["method"], w["stage"]) for w in run.writes]
    want = [(w["method"], w["stage"]) for w in baseline.writes[:n]]
    if got == want:
        return []
    return [f"the killed run's writes differ from the uninterrupted run's: {got[-3:]} vs {want[-3:]}"]


def converged(world: FaultWorld, instance, expected: WorldState) -> list[str]:
    final = world.observe(instance)
    problems = convergence_violations(final)
    problems += [f"after the recovery, doctor reports: {f}" for f in world.doctor_findings(instance)]
    if final.signature() != expected.signature():
        problems.append(f"end state differs from the uninterrupted run's:\n  got  {final.signature()}\n"
                        f"  want {expected.signature()}")
    return problems


def recover_rollback(world: FaultWorld, instance, dead: list[str], baseline: Baseline) -> list[str]:
    """The runbook's recovery for a failed rollback run: re-execute it (same job, same config)."""
    again = world.reexecute(instance, dead[0]) if dead else world.rollback(instance)
    if not again.success:
        return [f"re-executing the rollback failed: {failure_text(again)}"]
    problems = converged(world, instance, baseline.state)
    landed = world.observe(instance)
    if landed.identity(landed.champion) != baseline.state.identity(baseline.state.champion):
        problems.append(f"the rollback landed on v{landed.champion}, not the intended v{baseline.state.champion}")
        return problems
    second = world.rollback(instance)
    final = world.observe(instance)
    if not second.success or final.signature() != baseline.second.signature():
        problems.append(f"a second rollback went to v{final.champion}, not v{baseline.second.champion} "
                        f"(ok={second.success}): it must go further back, never forth")
    return problems


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


# -- the drills ---------------------------------------------------------------------------------
def kill_points(drills: Drills, step: str) -> list[str]:
    """Every write with MLOPS_FAULT_DRILLS=all; by default a sample at each landmark."""
    writes = drills.baselines[step].writes
    if step == "retrain":
        if ALL:
            return [f"write:{w['n']}" for w in writes] + [
                "event:trained_model", "event:evaluation_report", "event:registered_model"]
        return training_kill_points(writes)
    stage = "registered_model" if step == "register" else "rollback"
    return every_write(writes, stage) if ALL else promotion_kill_points(writes, stage)


def intent_open_points(drills: Drills, step: str) -> list[str]:
    """Kill points where a promotion intent is open: just before and just after the alias move."""
    stage = "registered_model" if step == "register" else "rollback"
    writes = [w for w in drills.baselines[step].writes if w["stage"] == stage]
    alias = next(w["n"] for w in writes if w["method"] == "mlflow.set_registered_model_alias")
    return [f"write:{alias}", f"after:{alias}"]


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
