"""The retrain loop over 11 simulated days, through the real sensors and schedules.

`mlops_assets.demo.loop.scenario_short()` has every event type: i.i.d. labelled days, an
unlabelled day labelled late, a retrain SIGKILLed mid-training (run in a worker process, failed
as the dead-run watchdog fails it, retried by the next tick) whose model the operator then rolls
back, a small labelled day after that, a planted population shift and a late-label performance
drop. The results are read back from the instance, the registry and the store (`loop.measure`)
and must be what the scenario expects. `benchmarks/loop.py` plays the 30-day version.

What these tests pin down was once wrong: trainings with late labels crashed; a rollback was
undone by counting the rolled-back model's rows as new data; drift on a late-labelled partition
still counted after the champion trained on it; i.i.d. days "drifted" against a reference that had
a shifted day trained into it (now the novel-mass rule, docs/drift.md).

Slow: one scenario for the module, about 3-4 minutes on a quiet 2-core machine (much more under
load); the per-day decisions and timings are printed.
"""

from __future__ import annotations

import json

import pytest

from mlops_assets.demo.loop import run_scenario, scenario_short


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


def test_trainings_with_late_labels_do_not_crash(results):
    assert results["crashed_trainings"] == 0, results["details"]["training_runs"]


def test_the_rollback_holds_until_new_data_justifies_a_retrain(results):
    assert all(d.startswith("skip") for d in _decisions(results, 5)), _decisions(results, 5)
    assert results["rollback_held"] is True, results["details"]["rollback"]


def test_every_expected_retrain_happens_once_with_its_trigger(results):
    assert results["missed_shifts"] == 0, results["details"]["missed_shifts"]
    assert results["false_retrains"] == 0, results["details"]["false_retrains"]
    assert results["retrains"] == results["expected_retrains"], results["details"]["training_runs"]
    for day in (8, 9):       # concept drift without labels yet: nothing to learn
        assert all(d.startswith("skip") for d in _decisions(results, day)), _decisions(results, day)
