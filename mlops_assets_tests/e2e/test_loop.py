"""The retrain loop over 11 simulated days, through the real sensors and schedules.

`mlops_assets.demo.loop.scenario_short()` has every event type: i.i.d. labelled days, an
unlabelled day labelled late, a retrain SIGKILLed mid-training (run in a worker process, failed
as the dead-run watchdog fails it, retried by the next tick) whose model the operator then rolls
back, a small labelled day after that, a planted population shift and a late-label performance
drop. The results are read back from the instance, the registry and the store (`loop.measure`)
and must be what the scenario expects. `benchmarks/loop.py` plays the 30-day version.

The loop misbehaves today in ways these tests pin down; each such test is a strict xfail that
names the cause, so it turns red (XPASS) once the cause is fixed and the marker can go.

Slow: one scenario for the module, about 3-4 minutes on a quiet 2-core machine (much more under
load); the per-day decisions and timings are printed.
"""

from __future__ import annotations

import json

import pytest

from mlops_assets.demo.loop import run_scenario, scenario_short

LATE_LABELS_CRASH = (
    "core/training.py assemble_training_frame concatenates with how='vertical_relaxed', but "
    "attach_labels appends the target after '_split' while labelled partitions have it before: "
    "'schema names differ: got defaulted, expected _split'; every training with late labels fails")
ROLLBACK_UNDONE = (
    "core/retrain.py decide_retrain counts the rolled-back version's partitions as new labelled rows: "
    "a 600-row day after the rollback retrains on 5,600 'new' rows")
LATE_LABELLED_NOT_TRAINED_ON = (
    "stages/trained_model.py records only labelled partitions in training_partitions, so drift on "
    "late-labelled partitions the champion trained on still counts (core/retrain.py _sort_signals)")
POOLED_REFERENCE_ALARMS = (
    "after the one-day shift is trained in, i.i.d. days drift against the champion's pooled reference "
    "(normalised Wasserstein 0.10-0.22 >= min_wasserstein 0.1): drift retrains on days expecting none "
    "or a performance trigger")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    lines = []
    out = run_scenario(scenario_short(), tmp_path_factory.mktemp("loop"), log=lines.append)
    print("\n".join(lines))
    print(json.dumps({k: v for k, v in out.items() if k != "per_day"}, indent=1, default=str))
    return out


def _decisions(results, day: int) -> list[str]:
    return results["per_day"][day - 1]["decisions"]


def test_the_scenario_expects_six_retrains(results):
    expected = {d["day"]: d["expected"] for d in results["per_day"] if d["expected"]}
    assert expected == {1: "bootstrap", 2: "new_data", 4: "new_data", 6: "new_data", 7: "drift",
                        10: "performance"}
    assert results["expected_retrains"] == 6


def test_the_killed_training_is_retried_once_by_the_sensor(results):
    assert results["killed_runs"] == 1 and results["retried_runs"] == 1
    day4 = _decisions(results, 4)
    assert day4[0].startswith("KILLED new_data") and day4[1].startswith("new_data"), day4


def test_the_rolled_back_training_set_is_not_rebuilt(results):
    after = _decisions(results, 4)[-1]
    assert after.startswith("after rollback: skip: nothing new to learn: this training set built"), after
    assert not any("rebuilt" in d for d in results["details"]["rollback"])


def test_no_work_is_done_twice(results):
    assert results["duplicate_runs"] == 0, results["details"]
    assert results["duplicate_materializations"] == 0
    assert results["identical_models_promoted"] == 0, results["details"]["identical_models_promoted"]
    assert results["gate_rejected"] == 0


def test_an_unlabelled_day_only_raises_alerts(results):
    assert all(d.startswith("skip") for d in _decisions(results, 3)), _decisions(results, 3)


@pytest.mark.xfail(strict=True, reason=LATE_LABELS_CRASH)
def test_trainings_with_late_labels_do_not_crash(results):
    assert results["crashed_trainings"] == 0, results["details"]["training_runs"]


@pytest.mark.xfail(strict=True, reason=ROLLBACK_UNDONE)
def test_the_rollback_holds_until_new_data_justifies_a_retrain(results):
    assert all(d.startswith("skip") for d in _decisions(results, 5)), _decisions(results, 5)
    assert results["rollback_held"] is True, results["details"]["rollback"]


ALL_OF_THEM = f"{LATE_LABELS_CRASH}; {ROLLBACK_UNDONE}; {LATE_LABELLED_NOT_TRAINED_ON}; {POOLED_REFERENCE_ALARMS}"


@pytest.mark.xfail(strict=True, reason=ALL_OF_THEM)
def test_every_expected_retrain_happens_once_with_its_trigger(results):
    assert results["missed_shifts"] == 0, results["details"]["missed_shifts"]
    assert results["false_retrains"] == 0, results["details"]["false_retrains"]
    assert results["retrains"] == results["expected_retrains"], results["details"]["training_runs"]
    for day in (8, 9):       # concept drift without labels yet: nothing to learn
        assert all(d.startswith("skip") for d in _decisions(results, day)), _decisions(results, day)
