"""The lifecycle under a real `dagster-daemon`: sensors tick on their own, runs launch as processes.

A temporary DAGSTER_HOME (SQLite storage, the repo's dagster.yaml), a python_file code
location built from a small spec, and `dagster-daemon run -w workspace.yaml` in its own
process group. Day 1 lands -> the new-data sensor bootstraps all seven assets; day 2 lands
with drift -> ingest -> drift report flags it -> exactly one retrain, which stays one over
further ticks and across a daemon restart.

Slow (a few minutes on two cores): it starts real processes for every run.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.scheduler.instigation import InstigatorStatus

from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import LIFECYCLE as STAGES
from mlops_assets.pipeline import Pipeline
from mlops_assets_tests.conftest import small_spec
from mlops_assets_tests.waiting import run_progress, wait_for

REPO = Path(__file__).resolve().parents[2]
PHASE_TIMEOUT_S = 240          # longest stretch without progress in each phase (not a deadline)
WATCH_S = 20                   # at least this long watching for a duplicate retrain
TOTAL_BUDGET_S = 300           # the optional daemon restart only runs within this
STOP_GRACE_S = 10
POLL_S = 1.0
# 5,000 rows a day, as in test_lifecycle: with 3,000 the holdout is small enough that the
# first model's ROC-AUC lands near 0.65 and the gate (floor 0.70) rightly holds it.
ROWS_PER_DAY = 5_000

DEFS_PY = '''\
from pathlib import Path

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.spec import PipelineSpec

defs = build_mlops_defs(PipelineSpec.from_yaml(Path(__file__).with_name("spec.yaml")))
'''


def _bin(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    assert found, f"{name} not found next to {sys.executable} or on PATH"
    return found


def _tail(path: Path, n: int = 60) -> str:
    if not path.exists():
        return f"<{path.name}: missing>"
    lines = path.read_text(errors="replace").splitlines()
    return f"--- {path.name} (last {min(n, len(lines))} of {len(lines)} lines) ---\n" + "\n".join(lines[-n:])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> str:
    """SIGTERM the whole process group, wait up to `grace` s, then SIGKILL whatever is left.

    Returns what it took, e.g. "SIGTERM, 1.2s", for the test's output.
    """
    pgid = proc.pid              # started with start_new_session: the group id is the leader's pid
    started = time.monotonic()
    used = "nothing (already gone)"
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not _group_alive(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        used = sig.name
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(pgid):
            proc.poll()          # reap the leader so the group can empty
            time.sleep(0.2)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    left = " (processes still left!)" if _group_alive(pgid) else ""
    return f"{used}, {time.monotonic() - started:.1f}s{left}"


class Deployment:
    """A temp DAGSTER_HOME, a code location, and a daemon started and stopped as a group."""

    def __init__(self, root: Path, edit=None, env: dict | None = None):
        """`edit(spec_data)` changes the spec's dict before it is written; `env` adds variables."""
        self.root = root
        self.home = root / "dagster_home"
        self.home.mkdir()
        shutil.copy(REPO / "dagster.yaml", self.home / "dagster.yaml")
        config = yaml.safe_load((self.home / "dagster.yaml").read_text())
        assert "sqlite" in config["storage"] and config["telemetry"]["enabled"] is False

        data = small_spec(root).model_dump(mode="json")
        data["model"]["lightgbm"]["num_boost_round"] = 40
        data["drift"]["evidently_sample_rows"] = 2_000
        data["automation"]["sensor_interval_seconds"] = 5
        data["source"]["path"] = str(root / "landing")
        data["state_dir"] = str(root / "state")
        if edit is not None:
            edit(data)
        (root / "spec.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        (root / "defs.py").write_text(DEFS_PY)
        (root / "workspace.yaml").write_text(yaml.safe_dump(
            {"load_from": [{"python_file": {"relative_path": "defs.py", "working_directory": str(root),
                                            "location_name": "mlops_e2e"}}]}
        ))
        from mlops_assets.spec import PipelineSpec

        self.spec = PipelineSpec.from_yaml(root / "spec.yaml")
        self.names = Pipeline(self.spec)
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home), "PYTHONUNBUFFERED": "1",
                    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        self.env.pop("MLFLOW_TRACKING_URI", None)
        self.env.update(env or {})
        self.daemon: subprocess.Popen | None = None
        self.starts = 0

    # -- processes -------------------------------------------------------------------
    def start_daemon(self) -> None:
        self.starts += 1
        with open(self.root / f"daemon{self.starts}.out", "wb") as out, \
                open(self.root / f"daemon{self.starts}.err", "wb") as err:
            self.daemon = subprocess.Popen(
                [_bin("dagster-daemon"), "run", "-w", "workspace.yaml"],
                cwd=self.root, env=self.env, stdout=out, stderr=err, start_new_session=True,
            )

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            print(f"daemon process group stopped: {_stop_group(self.daemon)}", flush=True)
            self.daemon = None

    def start_sensors(self, *names: str, timeout: float = 120) -> None:
        """`dagster sensor start` per sensor (they run side by side)."""
        procs = []
        for name in names:
            with open(self.root / f"start_{name}.log", "wb") as log:
                procs.append((name, subprocess.Popen(
                    [_bin("dagster"), "sensor", "start", "-w", "workspace.yaml", name],
                    cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )))
        deadline = time.monotonic() + timeout
        try:
            for name, proc in procs:
                try:
                    rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    rc = None
                if rc != 0:
                    pytest.fail(f"`dagster sensor start {name}` -> {rc}\n"
                                f"{_tail(self.root / f'start_{name}.log')}")
        finally:
            for _, proc in procs:
                if proc.poll() is None:
                    _stop_group(proc, grace=3)

    def logs(self) -> str:
        parts = []
        for i in range(1, self.starts + 1):
            parts += [_tail(self.root / f"daemon{i}.out", 20), _tail(self.root / f"daemon{i}.err", 80)]
        return "\n".join(parts)

    def assert_daemon_alive(self) -> None:
        if self.daemon is not None and self.daemon.poll() is not None:
            pytest.fail(f"dagster-daemon exited with {self.daemon.returncode}\n{self.logs()}")


@pytest.fixture
def deployment(tmp_path, monkeypatch):
    dep = Deployment(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(dep.home))   # the dagster.yaml reads it for base_dir
    try:
        yield dep
    finally:
        dep.stop_daemon()


# -- reading the instance ----------------------------------------------------------------
def _runs(instance, job_name):
    return instance.get_runs(filters=dg.RunsFilter(job_name=job_name))


def _materializations(instance, key, partition=None):
    flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
    return [r.asset_materialization for r in instance.fetch_materializations(flt, limit=100).records]


def _sensor_ticks(instance, sensor_name, after: float | None = None):
    for state in instance.all_instigator_state():
        if state.instigator_name == sensor_name:
            return instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after, limit=50)
    return []


def _sensor_report(instance, names) -> str:
    out = []
    for what in ("new_data", "retrain"):
        sensor = names.sensor(what)
        for tick in list(_sensor_ticks(instance, sensor))[:5]:
            detail = tick.skip_reason or (tick.error.message.strip()[:800] if tick.error else "") or tick.run_ids
            out.append(f"{sensor} {tick.status.value} @{tick.timestamp:.0f}: {detail}")
    return "\n".join(out)


def _run_failure(instance, run) -> str:
    logs = instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE})
    messages = []
    for record in logs:
        data = record.dagster_event.event_specific_data if record.dagster_event else None
        error = getattr(data, "error", None)
        messages.append(f"{record.step_key or 'run'}: {error.message.strip()[:1500] if error else record.message}")
    return f"run {run.run_id} ({run.job_name}) {run.status.value}:\n" + "\n".join(messages)


def _wait(deployment, instance, what: str, check, timeout: float):
    """Poll `check()` until it returns a truthy value. `timeout` is how long the daemon may go
    without any progress (a run changing status or writing an event), not a deadline: a busy
    machine is slower, not stuck."""
    def fail(reason: str) -> None:
        pytest.fail(f"{reason}\n{_sensor_report(instance, deployment.names)}\n{deployment.logs()}")

    return wait_for(check, lambda: (run_progress(instance), _tick_count(instance, deployment.names)),
                    what=what, on_fail=fail, stall_s=timeout, poll_s=POLL_S, alive=deployment.assert_daemon_alive)


def _tick_count(instance, names) -> int:
    return sum(len(_sensor_ticks(instance, names.sensor(kind))) for kind in ("new_data", "retrain"))


def _finished_run(deployment, instance, job_name, partition=None):
    """The (single) run of `job_name` [for `partition`], once finished; failure fails the test."""
    def check():
        runs = [r for r in _runs(instance, job_name) if partition is None or r.tags.get("dagster/partition") == partition]
        if not runs:
            return None
        run = runs[0]
        if run.status == dg.DagsterRunStatus.SUCCESS:
            return run
        if run.is_finished:
            pytest.fail(f"{_run_failure(instance, run)}\n{deployment.logs()}")
        return None
    return check


# Above the sum of the bounded waits below, so those fail first, with the daemon's log tail.
@pytest.mark.timeout(1_200)
def test_daemon_drives_bootstrap_drift_and_exactly_one_retrain(deployment):
    started = time.perf_counter()

    def mark(what: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {what}", flush=True)

    try:
        _story(deployment, mark, started)
    finally:
        deployment.stop_daemon()
        print(f"daemon e2e wall time: {time.perf_counter() - started:.1f}s", flush=True)


def _story(dep: Deployment, mark, started: float) -> None:
    names = dep.names
    landing = Path(dep.spec.source.path)
    with dg.DagsterInstance.from_config(str(dep.home)) as instance:
        # Create the SQLite schemas here first: processes that each create them on first
        # use race (`table alembic_version already exists`).
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        instance.fetch_materializations(names.key("raw_data"), limit=1)
        dep.start_daemon()
        dep.start_sensors(names.sensor("new_data"), names.sensor("retrain"))
        running = {s.instigator_name for s in instance.all_instigator_state()
                   if s.status == InstigatorStatus.RUNNING}
        assert {names.sensor("new_data"), names.sensor("retrain")} <= running, running
        mark("daemon started, sensors on")

        # Day 1: the new-data sensor bootstraps the whole lifecycle.
        write_day(landing, dt.date(2026, 1, 1), n_rows=ROWS_PER_DAY, seed=1, day_index=0)
        day1 = "loans_2026-01-01.parquet"
        run = _wait(dep, instance, "the bootstrap run",
                    _finished_run(dep, instance, names.job("bootstrap"), day1), PHASE_TIMEOUT_S)
        assert run.tags.get("dagster/sensor_name") == names.sensor("new_data")
        for stage in STAGES:
            assert _materializations(instance, names.key(stage)), f"{stage} not materialized"
        drift1 = _materializations(instance, names.key("drift_report"), day1)[0].metadata
        assert drift1["retrain_signal"].value is False
        mark("day 1 bootstrapped: all seven assets materialized")

        # Day 2, drifted: ingest -> drift report flags it -> one retrain.
        write_day(landing, dt.date(2026, 1, 2), n_rows=ROWS_PER_DAY, seed=1, drift=0.9, day_index=1)
        day2 = "loans_2026-01-02.parquet"
        _wait(dep, instance, "the day-2 ingest run",
              _finished_run(dep, instance, names.job("ingest"), day2), PHASE_TIMEOUT_S)
        drift2 = _materializations(instance, names.key("drift_report"), day2)[0].metadata
        assert drift2["retrain_signal"].value is True
        mark("day 2 ingested: drift report raises the retrain signal")

        retrain = _wait(dep, instance, "the retrain run",
                        _finished_run(dep, instance, names.job("retrain")), PHASE_TIMEOUT_S)
        assert retrain.tags.get("mlops/trigger") == "drift"
        assert retrain.tags.get("dagster/sensor_name") == names.sensor("retrain")
        assert len(_runs(instance, names.job("retrain"))) == 1
        mark(f"one retrain run finished ({retrain.status.value})")

        # More sensor ticks, and the same signal again (a recomputed report of the same
        # data version, as the drift job would write it): still one retrain.
        watch_from = time.time()
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=names.key("drift_report"), partition=day2, metadata=dict(drift2),
        ))
        time.sleep(WATCH_S)

        def watched_ticks():
            ticks = _sensor_ticks(instance, names.sensor("retrain"), after=watch_from)
            handled = any("nothing new to learn" in (t.skip_reason or "") for t in ticks)
            return ticks if len(ticks) >= 2 and handled else None

        # The daemon's loop is slower than the 5 s interval on a busy machine: wait for the ticks.
        ticks = _wait(dep, instance, "retrain-sensor ticks re-reading the signal", watched_ticks, 60)
        assert not any(t.run_ids for t in ticks), [t.run_ids for t in ticks]
        assert len(_runs(instance, names.job("retrain"))) == 1
        mark(f"still one retrain after {len(ticks)} more retrain-sensor ticks, one re-reading the signal")

        # Across a daemon restart: the stored cursor and run keys keep it at one.
        if time.perf_counter() - started < TOTAL_BUDGET_S - 60:
            dep.stop_daemon()
            restarted = time.time()
            dep.start_daemon()
            _wait(dep, instance, "a retrain-sensor tick after the restart",
                  lambda: len(_sensor_ticks(instance, names.sensor("retrain"), after=restarted)) >= 2, 60)
            assert len(_runs(instance, names.job("retrain"))) == 1
            mark("daemon restarted: still one retrain")
        else:
            print("daemon restart skipped: over the time budget", flush=True)

        # Nothing else ran: one bootstrap, one ingest, one retrain.
        assert len(_runs(instance, names.job("bootstrap"))) == 1
        assert len(_runs(instance, names.job("ingest"))) == 1
