"""A training run SIGKILLed under a real daemon: the loop recovers by itself.

The pipeline's own definitions, a real `dagster-daemon`: the lone first file starts the
bootstrap run; while it trains, its run worker is SIGKILLed. The dead-run watchdog (on by
default) fails the run and frees its `mlops_training` slot, the run-failure sensor alerts
through a real webhook, and the retrain sensor's next tick trains the first champion again,
under a new run key. Stated interval: the run is failed and its slot freed within the
watchdog's grace (10 s here) plus two sensor intervals (5 s) of the worker's death, on a quiet machine; the waits below
fail only when nothing progresses for minutes, so a loaded machine is slower, not red.
"""

import datetime as dt
import os
import signal
import time

import dagster as dg
import pytest

from mlops_assets.definitions import default_registry
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import TRAINING_POOL
from mlops_assets_tests.e2e.test_daemon import Deployment, _runs, _wait

WATCHDOG = {"watchdog_interval_seconds": 5, "watchdog_grace_seconds": 10}


def _slow_training(data: dict) -> None:
    # Long enough to be killed mid-training, on any machine: no early stopping, many rounds.
    data["model"]["lightgbm"].update(num_boost_round=1_200, learning_rate=0.01, early_stopping_rounds=None)
    data["automation"].update(WATCHDOG)


@pytest.fixture
def crashing(tmp_path, webhook, monkeypatch):
    dep = Deployment(tmp_path, edit=_slow_training, env={"MLOPS_WEBHOOK_URL": webhook["url"]})
    monkeypatch.setenv("DAGSTER_HOME", str(dep.home))   # the dagster.yaml reads it for base_dir
    try:
        yield dep
    finally:
        dep.stop_daemon()


def _training_worker(instance, run) -> int | None:
    """The run worker's pid, once the run's training step has started."""
    events = instance.all_logs(run.run_id)
    started = [e for e in events if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
               and e.step_key and e.step_key.endswith("__trained_model")]
    pids = [e.dagster_event.event_specific_data.metadata["pid"].value for e in events
            if e.dagster_event and e.dagster_event.event_type_value == "ENGINE_EVENT"
            and e.dagster_event.event_specific_data and "pid" in (e.dagster_event.event_specific_data.metadata or {})]
    return int(pids[0]) if started and pids else None


@pytest.mark.timeout(1_800)   # real processes on a shared machine: the waits judge progress instead
def test_a_killed_training_run_is_failed_alerted_and_retrained(crashing, webhook):
    dep, names = crashing, crashing.names
    with dg.DagsterInstance.from_config(str(dep.home)) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        dep.start_daemon()
        dep.start_sensors(names.sensor("new_data"), names.sensor("retrain"), names.sensor("run_failure"))
        write_day(dep.spec.source.path, dt.date(2026, 1, 1), n_rows=5_000, seed=1)

        def training():
            runs = _runs(instance, names.job("bootstrap"))
            return (runs[0], _training_worker(instance, runs[0])) if runs and _training_worker(instance, runs[0]) \
                else None

        run, worker = _wait(dep, instance, "the bootstrap run to start training", training, 240)
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()

        failed = _wait(dep, instance, "the watchdog to fail the killed run",
                       lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE, 240)
        assert failed
        # Dagster fails the run itself when only the worker died; its training step lives on as an
        # orphan holding the pool slot until the watchdog stops it and frees the slot.
        _wait(dep, instance, "the watchdog to free the training slot",
              lambda: not instance.event_log_storage.get_concurrency_info(TRAINING_POOL).claimed_slots, 240)
        detected_s = time.monotonic() - killed_at
        _wait(dep, instance, "the run-failure alert",
              lambda: any(body.get("kind") == "run_failure" and body["fields"].get("run_id") == run.run_id
                          for _, body in webhook["bodies"]), 240)

        def retrained():
            runs = _runs(instance, names.job("retrain"))
            return runs[0] if runs and runs[0].status == dg.DagsterRunStatus.SUCCESS else None

        retrain = _wait(dep, instance, "the retrain sensor's bootstrap retry", retrained, 300)
        assert retrain.tags["mlops/trigger"] == "bootstrap"
        assert retrain.tags["dagster/run_key"].endswith(":0")
        print(f"killed run failed and its slot freed {detected_s:.1f} s after SIGKILL; "
              f"retrained by run {retrain.run_id[:8]}")
    champion = default_registry(dep.spec).champion(names.model_name)
    assert champion is not None and champion.tags["dagster_run_id"] == retrain.run_id
