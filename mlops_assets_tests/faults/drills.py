"""The drill procedure of `test_kill_drills.py`: the worlds each step starts from, the
uninterrupted runs whose write traces give the kill points, and one drill (kill, check,
recover, check) per kill point. The module docstring of `test_kill_drills.py` says what is
checked and why."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import pytest

from mlops_assets.automation.jobs import RETRAIN_STAGES
from mlops_assets.pipeline import Stage
from mlops_assets_tests.faults.harness import (
    FaultWorld,
    ForkServer,
    WorldState,
    convergence_violations,
    describe,
    every_write,
    promotion_kill_points,
    safety_violations,
    scratch,
    training_kill_points,
)
from mlops_assets_tests.stages.harness import failure_text

ALL = os.environ.get("MLOPS_FAULT_DRILLS") == "all"
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


@contextlib.contextmanager
def open_drills(tmp_path_factory):
    """The worlds, the fork server and the uninterrupted runs; prints what was drilled at the end."""
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



# -- a rollback killed half done, then a promotion runs first -----------------------------------
CANDIDATE = "rollback-candidate"     # the rollback world, and v4 trained and approved, not promoted


def build_candidate_world(world: FaultWorld) -> None:
    """Once: the rollback world (v3 champion) with a fourth day landed and v4 trained and passed."""
    if (world.snapshots / CANDIDATE).exists():
        return
    world.restore("rollback")
    with world.instance() as instance:
        world.land(instance, 4)
        assert world.materialize(instance, [Stage.TRAINED_MODEL, Stage.EVALUATION_REPORT]).success
        state = world.observe(instance)
    assert state.champion == "3" and state.versions["4"].get("gate_passed") == "true", state.versions.get("4")
    world.snapshot(CANDIDATE)


def promotion_after_killed_rollback(drills: Drills, kill: str) -> list[str]:
    """The rollback v3 -> v2 is killed at `kill`; before anyone recovers it, v4 is registered.
    Its promotion finishes the rollback first and records it once (for the rollback's run), then
    moves `champion` v2 -> v4; re-executing the failed rollback run and the next training's
    sweep then change nothing. Returns what went wrong (empty: all held)."""
    world, baseline = drills.world, drills.baselines["rollback"]
    build_candidate_world(world)
    start = time.monotonic()
    world.restore(CANDIDATE)
    run = world.run_worker("rollback", kill, workers=drills.forks)
    if not run.killed:
        return [f"the worker was not killed at {kill} (exit {run.returncode}):\n{run.output[-3000:]}"]
    problems = landed_where_expected(run, kill, baseline)
    with world.instance() as instance:
        dead = world.fail_dead_runs(instance)
        promoted = world.materialize(instance, [Stage.REGISTERED_MODEL], raise_on_error=False)
        if not promoted.success:
            problems.append(f"registering v4 failed: {failure_text(promoted)}")
        state = world.observe(instance)
        problems += safety_violations(state)
        rollbacks = [(r["rolled_back_from"], r["version"]) for r in state.registered if r["rolled_back_from"]]
        if rollbacks != [("3", "2")]:
            problems.append(f"the rollback v3 -> v2 is recorded as {rollbacks}, not exactly once")
        promotions = [r["version"] for r in state.registered if not r["rolled_back_from"]]
        if promotions != ["1", "2", "3", "4"]:
            problems.append(f"promotion records {promotions}, not one each for v1..v4")
        previous = world.storage.read_json(world.pipeline.layout.registration("4")).get("previous_champion")
        if state.champion != "4" or state.versions["4"].get("previous_champion") != "2" or previous != "2":
            problems.append(f"champion v{state.champion}, v4's previous champion tagged "
                            f"{state.versions['4'].get('previous_champion')}, recorded {previous}: want v4 after v2")
        # The runbook re-executes the failed rollback run; the next training sweeps first.
        again = world.reexecute(instance, dead[0]) if len(dead) == 1 else None
        if again is None or not again.success:
            problems.append(f"re-executing the failed rollback run {dead}: "
                            f"{'failed: ' + failure_text(again) if again is not None else 'expected one dead run'}")
        swept = world.sweep(instance)
        if any(swept.values()):
            problems.append(f"the sweep still found something to do: {swept}")
        problems += converged(world, instance, state)
    TESTED.append(("rollback, then a promotion", kill, f"{time.monotonic() - start:5.1f}s "
                   + ("ok" if not problems else f"{len(problems)} violation(s)")))
    return [f"{describe(kill, baseline.writes)}: {p}" for p in problems]
