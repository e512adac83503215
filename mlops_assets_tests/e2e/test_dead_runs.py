"""Killed runs under a real `dagster-daemon`: the dead-run watchdog fails them and frees the pool.

A temporary DAGSTER_HOME (SQLite, the repo's dagster.yaml as is: no run monitoring), a code
location of its own: one asset in the pool `mlops_training` (limit 1, set on the instance) whose
body sleeps, a sensor that launches a run per request file, a `run_failure_sensor` that writes an
alert file, and the watchdog (interval 5 s, grace 10 s). Run 1 holds the slot, run 2 waits on the
pool; then
  (a) run 1's run-worker process is SIGKILLed (the code server survives), or
  (b) the daemon's whole process group is SIGKILLed (daemon, code server, run and step workers)
      and the daemon restarted.
Each time: run 1 ends FAILURE, its slot is freed, the failure alert is sent, and run 2 completes.

Slow-ish (80-100 s per case on two busy cores): it starts real processes.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.automation.watchdog import process_created_at

REPO = Path(__file__).resolve().parents[2]
POOL = "mlops_training"
INTERVAL_S = 5
GRACE_S = 10
# The stated interval: a tick finds the dead worker within one interval, the first tick a grace
# later acts. Counted from the kill, or in (b) from the watchdog's first tick after the restart
# (nothing can notice anything before it). A busy machine stretches the daemon's sensor loop
# (ticks 5-10 s apart were measured for a 5 s interval at load 4), hence the allowance on top;
# the measured time and the tick spacing are printed.
DETECT_S = GRACE_S + 2 * INTERVAL_S
BUSY_ALLOWANCE_S = 60
STARTUP_S = 180        # daemon + code server up, a run launched and its step running (loaded machine)
FINISH_S = 180         # the queued run dequeued, launched and finished
POLL_S = 0.5

DEFS_PY = f'''\
import json
import os
import time
from pathlib import Path

import dagster as dg

from mlops_assets.automation.watchdog import build_dead_run_watchdog_sensor

STATE = Path(__file__).with_name("state")


def _write(path, data):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.rename(path)


@dg.asset(pool="{POOL}")
def train(context: dg.AssetExecutionContext) -> int:
    _write(STATE / f"step_{{context.run_id}}.json", {{"pid": os.getpid()}})
    time.sleep(float(context.run.tags.get("sleep_s", "1")))
    return 1


train_job = dg.define_asset_job("train_job", selection=[train])


@dg.sensor(job=train_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def requests(context: dg.SensorEvaluationContext):
    """One run per request file; the run key keeps it to one."""
    found = [dg.RunRequest(run_key=p.stem, tags=json.loads(p.read_text()))
             for p in sorted(STATE.glob("request_*.json"))]
    return found or dg.SkipReason("no requests")


@dg.run_failure_sensor(monitored_jobs=[train_job], minimum_interval_seconds=1,
                       default_status=dg.DefaultSensorStatus.RUNNING)
def alert_on_failure(context: dg.RunFailureSensorContext) -> None:
    _write(STATE / f"alert_{{context.dagster_run.run_id}}.json", {{"message": context.failure_event.message}})


def notify(kind, title, text, fields):
    _write(STATE / f"notify_{{fields['run_id']}}.json", {{"kind": kind, "title": title, "text": text}})


watchdog = build_dead_run_watchdog_sensor(
    "dead_run_watchdog", ["train_job"], minimum_interval_seconds={INTERVAL_S}, grace_seconds={GRACE_S},
    notify=notify,
)

defs = dg.Definitions(assets=[train], jobs=[train_job], sensors=[requests, alert_on_failure, watchdog])
'''


def _alive(pid: int) -> bool:
    return process_created_at(pid) is not None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, n: int = 40) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else ["<missing>"]
    return f"--- {path.name} ---\n" + "\n".join(lines[-n:])


class Deployment:
    def __init__(self, root: Path):
        self.root, self.home, self.state = root, root / "dagster_home", root / "state"
        self.home.mkdir()
        self.state.mkdir()
        shutil.copy(REPO / "dagster.yaml", self.home / "dagster.yaml")
        (root / "defs.py").write_text(DEFS_PY)
        (root / "workspace.yaml").write_text(json.dumps({"load_from": [{"python_file": {
            "relative_path": "defs.py", "working_directory": str(root), "location_name": "dead_runs"}}]}))
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        self.daemon: subprocess.Popen | None = None
        self.starts = 0
        self.t0 = time.monotonic()

    def mark(self, what: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {what}", flush=True)

    def start_daemon(self) -> None:
        self.starts += 1
        binary = Path(sys.executable).with_name("dagster-daemon")
        with open(self.root / f"daemon{self.starts}.log", "wb") as log:
            self.daemon = subprocess.Popen([str(binary), "run", "-w", "workspace.yaml"], cwd=self.root,
                                           env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)

    def kill_daemon_group(self, sig: int = signal.SIGKILL, wait: float = 15.0) -> None:
        if self.daemon is None:
            return
        pgid = self.daemon.pid        # start_new_session: the group id is the leader's pid
        for s, w in ((sig, wait), (signal.SIGKILL, 5.0)):
            if not _group_alive(pgid):
                break
            try:
                os.killpg(pgid, s)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + w
            while time.monotonic() < deadline and _group_alive(pgid):
                self.daemon.poll()    # reap the leader so the group can empty
                time.sleep(0.1)
        self.daemon.poll()
        self.daemon = None

    def request(self, name: str, sleep_s: float) -> None:
        (self.state / f"request_{name}.json").write_text(json.dumps({"sleep_s": str(sleep_s)}))

    def logs(self) -> str:
        return "\n".join(_tail(self.root / f"daemon{i}.log") for i in range(1, self.starts + 1))

    def wait(self, what: str, check, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            if self.daemon is not None and self.daemon.poll() is not None:
                pytest.fail(f"dagster-daemon exited with {self.daemon.returncode}\n{self.logs()}")
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{self.logs()}")
            time.sleep(POLL_S)


@pytest.fixture
def deployment(tmp_path, monkeypatch):
    dep = Deployment(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(dep.home))    # the dagster.yaml reads it for base_dir
    try:
        yield dep
    finally:
        dep.kill_daemon_group(signal.SIGTERM, wait=10.0)


def _run(instance, run_key: str):
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    return runs[0] if runs else None


def _finished(instance, run_id: str):
    run = instance.get_run_by_id(run_id)
    return run if run.is_finished else None


def _slot_holders(instance) -> list[str]:
    # Test-side read of the pool's claimed slots (no public API reads them).
    info = instance.event_log_storage.get_concurrency_info(POOL)
    return [slot.run_id for slot in info.claimed_slots]


def _watchdog_ticks(instance, after: float):
    for state in instance.all_instigator_state():
        if state.instigator_name == "dead_run_watchdog":
            return instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after, limit=200)
    return []


def _hold_the_pool(dep: Deployment, instance):
    """Run 1 trains (and holds the only slot) while run 2 waits on the pool."""
    dep.request("1", sleep_s=900)
    step_file = dep.wait("run 1's step to start training",
                         lambda: next(iter(dep.state.glob("step_*.json")), None), STARTUP_S)
    run1 = _run(instance, "request_1")
    step_pid = json.loads(step_file.read_text())["pid"]
    started = [r for r in instance.all_logs(run1.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
               if (r.message or "").startswith("Started process for run")]
    worker_pid = int(started[-1].dagster_event.event_specific_data.metadata["pid"].value)
    assert _slot_holders(instance) == [run1.run_id]
    dep.request("2", sleep_s=1)
    run2 = dep.wait("run 2 to be queued", lambda: _run(instance, "request_2"), 60)
    time.sleep(2 * INTERVAL_S)   # ample time to start, were the pool not full
    run2 = instance.get_run_by_id(run2.run_id)
    assert run2.status == dg.DagsterRunStatus.QUEUED, run2.status
    dep.mark(f"run 1 {run1.run_id[:8]} trains (run worker {worker_pid}, step {step_pid}); run 2 waits on the pool")
    return run1, run2, worker_pid, step_pid


def _assert_recovered(dep: Deployment, instance, run1, run2, killed_at: float, detect_from: float):
    """Run 1 FAILURE and its slot freed within the stated interval; alert sent; run 2 completes."""
    budget = DETECT_S + BUSY_ALLOWANCE_S
    dep.wait("run 1 to fail and free its slot", lambda: (
        instance.get_run_by_id(run1.run_id).status == dg.DagsterRunStatus.FAILURE
        and run1.run_id not in _slot_holders(instance)), detect_from + budget - time.time())
    freed = time.time()
    dep.mark(f"run 1 FAILURE and slot free {freed - detect_from:.1f}s after detection could start "
             f"(stated {DETECT_S}s, allowed {budget}s; {freed - killed_at:.1f}s after the kill)")
    alert = dep.wait("the run-failure alert", lambda: next(iter(dep.state.glob(f"alert_{run1.run_id}.json")), None), 60)
    dep.mark(f"run-failure sensor alerted: {json.loads(alert.read_text())['message'][:100]!r}")
    done = dep.wait("run 2 to finish", lambda: _finished(instance, run2.run_id), FINISH_S)
    assert done.status == dg.DagsterRunStatus.SUCCESS, done.status
    record = instance.get_run_record_by_id(run2.run_id)
    assert record.start_time >= killed_at           # it waited for run 1's slot
    dep.mark(f"run 2 SUCCESS, started {record.start_time - freed:+.1f}s after the slot was freed")
    assert _slot_holders(instance) == []
    ticks = [t for t in _watchdog_ticks(instance, killed_at) if run1.run_id in (t.skip_reason or "")]
    assert ticks, "no watchdog tick lists run 1"
    described = " | ".join(t.skip_reason for t in reversed(ticks))   # oldest first
    dep.mark(f"watchdog tick(s): {described[:400]}")
    times = sorted(t.timestamp for t in _watchdog_ticks(instance, killed_at))
    dep.mark(f"watchdog tick spacing since the kill (s): {[round(b - a, 1) for a, b in itertools.pairwise(times)]}")
    return described


@pytest.mark.timeout(1_800)   # real daemons on a shared machine: waits judge progress
def test_a_sigkilled_run_worker_is_failed_and_its_slot_freed(deployment):
    dep = deployment
    with dg.DagsterInstance.from_config(str(dep.home)) as instance:
        # The pool limit, set on the instance as `dagster instance concurrency set` would.
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
        dep.start_daemon()
        run1, run2, worker_pid, step_pid = _hold_the_pool(dep, instance)

        os.kill(worker_pid, signal.SIGKILL)
        killed_at = time.time()
        dep.mark(f"SIGKILL run worker {worker_pid}")
        # The code server sees its child die and fails the run, but the claimed slot stays and
        # the step worker trains on as an orphan: the watchdog must stop it and free the slot.
        described = _assert_recovered(dep, instance, run1, run2, killed_at, detect_from=killed_at)
        assert "still holds pool slots" in described
        assert not _alive(step_pid), "the orphaned step worker was not stopped"
        notice = json.loads((dep.state / f"notify_{run1.run_id}.json").read_text())
        assert notice["kind"] == "dead_run" and "pool slots freed" in notice["text"]
        dep.mark(f"orphaned step worker {step_pid} stopped; watchdog notified: {notice['text'][:120]!r}")


@pytest.mark.timeout(1_800)   # real daemons on a shared machine: waits judge progress
def test_a_sigkilled_daemon_group_leaves_runs_the_watchdog_fails_after_restart(deployment):
    dep = deployment
    with dg.DagsterInstance.from_config(str(dep.home)) as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
        dep.start_daemon()
        run1, run2, worker_pid, step_pid = _hold_the_pool(dep, instance)

        dep.kill_daemon_group(signal.SIGKILL)
        killed_at = time.time()
        assert not _alive(worker_pid) and not _alive(step_pid), "the run died with the daemon's group"
        dep.mark("SIGKILL the daemon's process group: daemon, code server, run worker and step worker gone")
        time.sleep(2)
        assert instance.get_run_by_id(run1.run_id).status == dg.DagsterRunStatus.STARTED
        assert _slot_holders(instance) == [run1.run_id]   # nothing else would ever free it

        dep.start_daemon()
        restarted = time.time()
        dep.mark("daemon restarted")
        # Detection can only start once the new code server evaluates the watchdog.
        first = dep.wait("the watchdog's first tick after the restart",
                         lambda: sorted(t.timestamp for t in _watchdog_ticks(instance, restarted)), STARTUP_S)[0]
        dep.mark(f"first watchdog tick {first - restarted:.1f}s after the restart")
        described = _assert_recovered(dep, instance, run1, run2, killed_at, detect_from=first)
        assert "marked failed" in described and f"pid {worker_pid}" in described
        failure = instance.all_logs(run1.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "Dead-run watchdog" in failure[-1].message
        assert (dep.state / f"notify_{run1.run_id}.json").exists()
