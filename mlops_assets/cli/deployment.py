"""A headless deployment of one pipeline: its code server and a real `dagster-daemon`.

`mlops-assets run` and `make demo` drive the pipeline through what a deployment runs, not
through in-process shortcuts, so the Dagster UI shows what happened as it shows any
deployment: sensor ticks with their skip reasons, runs tagged with the sensor or schedule
that launched them, the Overview timeline.

- `Deployment` writes a code-location module, a workspace and (if missing) the instance's
  dagster.yaml, then starts `dagster-daemon run` in a process group (and session) of its own;
  the code server the daemon starts for the workspace, and the run workers that server starts,
  are in that group too. `stop()` sends SIGTERM to the group, then SIGKILL to whatever is left
  after a grace.
- `Automation` is the client side, in this process, on the same workspace file (so the same
  code-location origins as the daemon's): it switches the pipeline's sensors and
  schedules on through the instance (what `dagster sensor start` does, without starting a
  second code server per call: about 20 s each on two loaded cores) and back off when done,
  watches ticks and runs, and ticks a schedule *now* (see `tick_schedule_now`).

Schedules fire at their cron times only, which a one-shot `run --once` cannot wait for. It
ticks each schedule once, now, with the scheduler daemon's own procedure
(`dagster._scheduler.scheduler._schedule_runs_at_time`): the code server evaluates the
schedule, the tick is recorded on the schedule, its runs carry the schedule's tags and are
queued for the daemon to launch, exactly as at a cron tick. Only the time differs; each such
run is also tagged `mlops/requested_by=mlops-assets run --once`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LOCATION_MODULE = '''\
"""Code location written by `mlops-assets run` for the pipeline {name!r}; rewritten on every run.

The pipeline's own definitions (see mlops_assets/cli/location.py). To look at it in the UI:
    DAGSTER_HOME={home} dagster dev -w {workspace}
"""

from mlops_assets.cli.location import pipeline_defs

defs = pipeline_defs({target!r}, executor={executor!r}, overrides={overrides!r})
'''

REQUESTED_BY_TAG = "mlops/requested_by"
STOP_GRACE_S = 30.0
POLL_S = 1.0
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


class DeploymentError(RuntimeError):
    """The code server or the daemon failed; the message carries the tail of its log."""


def _bin(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise DeploymentError(f"{name} not found next to {sys.executable} or on PATH")
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tail(path: Path, n: int = 40) -> str:
    if not path.exists():
        return f"<{path}: missing>"
    lines = path.read_text(errors="replace").splitlines()
    return f"--- {path} (last {min(n, len(lines))} of {len(lines)} lines) ---\n" + "\n".join(lines[-n:])


@dataclass
class Deployment:
    """The files and processes of one headless deployment, under `root`."""

    target: Path                        # spec YAML or defs.yaml
    name: str                           # the pipeline's name
    home: Path                          # DAGSTER_HOME
    root: Path                          # where the module, workspace and logs go
    location_name: str
    executor: str = "in_process"
    overrides: dict = field(default_factory=dict)
    env: dict | None = None
    leader: subprocess.Popen | None = field(default=None, init=False)   # dagster-daemon
    _stop_started: float | None = field(default=None, init=False)
    _signalled: bool = field(default=False, init=False)

    @property
    def location_file(self) -> Path:
        return self.root / "location.py"

    @property
    def workspace_file(self) -> Path:
        return self.root / "workspace.yaml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.location_file.write_text(LOCATION_MODULE.format(
            name=self.name, home=self.home, workspace=self.workspace_file, target=str(self.target),
            executor=self.executor, overrides=dict(self.overrides)))
        entry = {"relative_path": self.location_file.name, "working_directory": str(self.root),
                 "location_name": self.location_name}
        self.workspace_file.write_text(yaml.safe_dump({"load_from": [{"python_file": entry}]}, sort_keys=False))

    def process_env(self) -> dict:
        env = dict(self.env if self.env is not None else os.environ)
        env.update({"DAGSTER_HOME": str(self.home), "PYTHONUNBUFFERED": "1",
                    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
        return env

    # -- processes ----------------------------------------------------------------------
    def start(self) -> None:
        """Start `dagster-daemon run` in a process group and session of its own. The daemon starts
        the code server for the workspace (a child, in the same group); so does `Automation`, for
        its own calls, from the same workspace file: both see the same origins."""
        self.write()
        with open(self.logs / "daemon.log", "ab") as log:
            self.leader = subprocess.Popen(
                [_bin("dagster-daemon"), "run", "-w", str(self.workspace_file), "--log-level", "info"],
                cwd=self.root, env=self.process_env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.leader is not None and self.leader.poll() is not None:
            raise DeploymentError(f"the daemon exited with {self.leader.returncode}\n{tail(self.logs / 'daemon.log')}")

    def begin_stop(self) -> None:
        """SIGTERM to the group, without waiting: `stop()` then waits (and escalates)."""
        if self.leader is None or self._stop_started is not None:
            return
        self._stop_started = time.monotonic()
        self._signalled = _group_alive(self.leader.pid)
        if self._signalled:
            try:
                os.killpg(self.leader.pid, signal.SIGTERM)
            except ProcessLookupError:
                self._signalled = False

    def stop(self, grace: float = STOP_GRACE_S) -> str:
        """SIGTERM to the group, SIGKILL after `grace`; returns what it took, e.g. 'SIGTERM, 1.2s'."""
        if self.leader is None:
            return "not started"
        pgid = self.leader.pid
        self.begin_stop()
        started = self._stop_started
        used = "SIGTERM" if self._signalled else "nothing (already gone)"
        deadline = started + grace
        while time.monotonic() < deadline and _group_alive(pgid):
            self.leader.poll()            # reap the leader, so the group can empty
            time.sleep(0.1)
        if _group_alive(pgid):
            self._note_leftovers(pgid, grace)
            used = "SIGTERM, then SIGKILL"
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            kill_deadline = time.monotonic() + 5.0
            while time.monotonic() < kill_deadline and _group_alive(pgid):
                self.leader.poll()
                time.sleep(0.1)
        try:
            self.leader.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        left = " (processes still left!)" if _group_alive(pgid) else ""
        self.leader, self._stop_started = None, None
        return f"{used}, {time.monotonic() - started:.1f}s{left}"

    def _note_leftovers(self, pgid: int, grace: float) -> None:
        """Which processes ignored SIGTERM, into the daemon log (for whoever looks into it)."""
        try:
            listing = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(pgid)], capture_output=True, text=True,
                                     timeout=5, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return
        with open(self.logs / "daemon.log", "a") as log:
            log.write(f"still running {grace:.0f}s after SIGTERM, sent SIGKILL:\n{listing}\n")

    def __enter__(self) -> Deployment:  # noqa: PYI034
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the client side ---------------------------------------------------------------------
@dataclass
class RunOutcome:
    run_id: str
    job_name: str
    status: str
    partition: str | None
    seconds: float | None
    detail: str = ""             # the failure, or what the gate said
    gate_held: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS" or self.gate_held


@dataclass
class TickEvent:
    name: str
    kind: str                    # sensor | schedule
    status: str                  # SUCCESS | SKIPPED | FAILURE
    timestamp: float
    run_ids: list[str]
    text: str                    # skip reason or error


def first_line(text: str | None, width: int = 100) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def files_waiting(tick: TickEvent) -> bool:
    """The new-data sensor skipped because files are still being written (they will be taken)."""
    text = tick.text.lower()
    return "waiting" in text and ("settle" in text or "complete" in text or "hashed" in text)


def run_failure_detail(instance, run_id: str, gate_step: str = "evaluation_report") -> tuple[str, bool]:
    """The first error of a failed run, and whether only the gate (a blocking check) held it."""
    import dagster as dg

    records = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE})
    failed_steps, messages = [], []
    for record in records:
        event = record.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        if event and event.event_type == dg.DagsterEventType.STEP_FAILURE:
            failed_steps.append(record.step_key or "")
        text = error.message if error is not None else record.message
        text = (text or "").replace("dagster._core.definitions.events.Failure: ", "")   # the stage's own words
        if text:
            messages.append(f"{record.step_key + ': ' if record.step_key else ''}{text.strip()}")
    gate = bool(failed_steps) and all(gate_step in s for s in failed_steps)
    return (messages[0] if messages else "no error recorded"), gate


class Automation:
    """Switch the pipeline's automation on, watch it, tick schedules now, wait until it is quiet."""

    def __init__(self, deployment: Deployment, instance, pipeline, *, say: Callable[[str], None] = print,
                 settle_sensors: tuple[str, ...] | None = None, width: int = 100,
                 quiet_skips: Callable[[str, str], bool] | None = None):
        self.deployment = deployment
        self.instance = instance
        self.pipeline = pipeline
        self.say = say
        self.width = width
        self.settle_sensors = settle_sensors or (pipeline.sensor("new_data"), pipeline.sensor("retrain"))
        self.quiet_skips = quiet_skips or (lambda name, text: False)
        self.since = time.time() - 1
        self._started: list[tuple[str, object]] = []
        self._ticks: dict[str, list[TickEvent]] = {}
        self._seen_ticks: set[int] = set()
        self._last_skip: dict[str, str] = {}
        self._runs: dict[str, str] = {}          # run id -> last status seen
        self.outcomes: dict[str, RunOutcome] = {}
        self.tick_errors: list[TickEvent] = []
        self._wpc = None
        self.repo = None

    # -- workspace ------------------------------------------------------------------------
    def __enter__(self) -> Automation:  # noqa: PYI034
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import WorkspaceFileTarget

        # Its own code server for the same workspace file, quiet on the console (ERROR only).
        self._wpc = WorkspaceProcessContext(self.instance, WorkspaceFileTarget(
            paths=[str(self.deployment.workspace_file)]), code_server_log_level="ERROR")
        self.repo = self._repository()
        self.jobs = {j.name for j in self.repo.get_all_jobs()}
        self.instigators = {}
        for remote in self.repo.get_sensors():
            self.instigators[remote.name] = ("sensor", remote)
        for remote in self.repo.get_schedules():
            self.instigators[remote.name] = ("schedule", remote)
        import dagster as dg

        # Runs an earlier session left queued or running count as in flight too.
        for run in self.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus(s) for s in IN_FLIGHT])):
            if run.job_name in self.jobs:
                self._runs[run.run_id] = run.status.value
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.restore()
        finally:
            if self._wpc is not None:
                self._wpc.__exit__(None, None, None)
                self._wpc = None

    def _location(self):
        context = self._wpc.create_request_context()
        name = self.deployment.location_name
        error = context.get_code_location_error(name)
        if error is not None:
            raise DeploymentError(f"code location {name!r} failed to load:\n{error.to_string()}")
        return context.get_code_location(name)

    def _repository(self):
        repos = list(self._location().get_repositories().values())
        if len(repos) != 1:
            raise DeploymentError(f"expected one repository in the location, found {[r.name for r in repos]}")
        return repos[0]

    # -- switches -------------------------------------------------------------------------
    def switch_on(self) -> list[str]:
        """Start every sensor and schedule that is not running; `restore()` stops them again."""
        started = []
        for name, (kind, remote) in self.instigators.items():
            stored = self.instance.get_instigator_state(remote.get_remote_origin_id(), remote.selector_id)
            if remote.get_current_instigator_state(stored).is_running:
                continue
            if kind == "sensor":
                self.instance.start_sensor(remote)
            else:
                self.instance.start_schedule(remote)
            self._started.append((kind, remote))
            started.append(name)
        return started

    def restore(self) -> None:
        """Stop what `switch_on` started: nothing stays switched on once `run` ends."""
        while self._started:
            kind, remote = self._started.pop()
            if kind == "sensor":
                self.instance.stop_sensor(remote.get_remote_origin_id(), remote.selector_id, remote)
            else:
                self.instance.stop_schedule(remote.get_remote_origin_id(), remote.selector_id, remote)

    # -- watching -------------------------------------------------------------------------
    def poll(self) -> None:
        """Read new finished ticks and run status changes, and report them."""
        import dagster as dg

        self.deployment.check_alive()
        for name, (kind, remote) in self.instigators.items():
            ticks = self.instance.get_ticks(remote.get_remote_origin_id(), remote.selector_id, after=self.since,
                                            limit=50)
            for tick in sorted(ticks, key=lambda t: t.timestamp):
                if tick.tick_id in self._seen_ticks or tick.status.value == "STARTED":
                    continue
                self._seen_ticks.add(tick.tick_id)
                text = tick.skip_reason or (tick.error.message if tick.error else "")
                event = TickEvent(name, kind, tick.status.value, tick.timestamp, list(tick.run_ids), text or "")
                self._ticks.setdefault(name, []).append(event)
                self._report_tick(event)
        records = list(self.instance.get_run_records(dg.RunsFilter(
            created_after=dt.datetime.fromtimestamp(self.since, dt.UTC)), limit=500))
        older = [r for r in self.in_flight() if r not in {rec.dagster_run.run_id for rec in records}]
        if older:
            records += self.instance.get_run_records(dg.RunsFilter(run_ids=older))
        for record in sorted(records, key=lambda r: r.create_timestamp):
            run = record.dagster_run
            if run.job_name not in self.jobs:
                continue
            status = run.status.value
            if self._runs.get(run.run_id) == status:
                continue
            self._runs[run.run_id] = status
            if run.is_finished:
                seconds = (record.end_time - record.start_time) if record.end_time and record.start_time else None
                detail, gate = ("", False) if status == "SUCCESS" else run_failure_detail(self.instance, run.run_id)
                outcome = RunOutcome(run.run_id, run.job_name, status, run.tags.get("dagster/partition"),
                                     seconds, detail, gate)
                self.outcomes[run.run_id] = outcome
                self._report_run(outcome)

    def _report_tick(self, event: TickEvent) -> None:
        if event.status == "FAILURE":
            self.tick_errors.append(event)
            self.say(f"{event.name} tick FAILED: {first_line(event.text, self.width)}")
            return
        if event.run_ids:
            self._last_skip.pop(event.name, None)
            self.say(f"{event.name} -> {self._describe_runs(event.run_ids)}")
            return
        text = first_line(event.text or "skipped", self.width)
        # Skips worth a line: the settle sensors' and the schedules' (each change of reason), and
        # the watchdog's when it acted; the other sensors' routine all-clear is not.
        routine = event.kind == "sensor" and event.name not in self.settle_sensors \
            and not text.startswith("dead runs handled")
        if self._last_skip.get(event.name) != text and not routine and not self.quiet_skips(event.name, text):
            self.say(f"{event.name}: {text}")
        self._last_skip[event.name] = text

    def _describe_runs(self, run_ids: list[str]) -> str:
        by_job: dict[str, list[str]] = {}
        for run_id in run_ids:
            run = self.instance.get_run_by_id(run_id)
            job = run.job_name if run else "?"
            label = run_id[:8] + (f" {run.tags['dagster/partition']}" if run and run.tags.get("dagster/partition")
                                  else "")
            by_job.setdefault(job, []).append(label)
        return "; ".join(f"{job} {', '.join(labels)}" for job, labels in by_job.items())

    def _report_run(self, o: RunOutcome) -> None:
        took = f" in {o.seconds:.1f}s" if o.seconds is not None else ""
        if o.status == "SUCCESS":
            self.say(f"run {o.run_id[:8]} {o.job_name} succeeded{took}")
        elif o.gate_held:
            self.say(f"run {o.run_id[:8]} {o.job_name} held by the gate{took}: {first_line(o.detail, self.width)}")
        else:
            self.say(f"run {o.run_id[:8]} {o.job_name} {o.status}{took}: {first_line(o.detail, self.width)}")

    def in_flight(self) -> list[str]:
        return [r for r, s in self._runs.items() if s in IN_FLIGHT]

    # -- waiting --------------------------------------------------------------------------
    def wait_runs(self, deadline: float, run_ids: list[str] | None = None) -> None:
        while True:
            self.poll()
            busy = [r for r in (run_ids or self.in_flight()) if self._runs.get(r, "QUEUED") in IN_FLIGHT]
            if not busy:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(busy)} run(s) still in flight: {[r[:8] for r in busy]}")
            time.sleep(POLL_S)

    def wait_first_run(self, deadline: float) -> None:
        """Until a sensor or schedule launched a run of the pipeline (e.g. the first file's)."""
        while True:
            self.poll()
            if self._runs:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("no run was launched")
            time.sleep(POLL_S)

    def settle(self, deadline: float) -> None:
        """Until quiet: no run in flight, and every settle sensor ticked after the last run ended
        without launching anything and without files still waiting to complete."""
        quiet_since: float | None = None
        while True:
            self.poll()
            if self.in_flight():
                quiet_since = None
            else:
                quiet_since = quiet_since or time.time()
                fresh = {name: [t for t in self._ticks.get(name, []) if t.timestamp >= quiet_since]
                         for name in self.settle_sensors if name in self.instigators}
                latest = [ticks[-1] for ticks in fresh.values() if ticks]
                for name, ticks in fresh.items():
                    failed = [t for t in ticks if t.status == "FAILURE"]
                    if len(failed) >= 2:
                        raise DeploymentError(f"{name} failed on {len(failed)} ticks in a row: "
                                              f"{first_line(failed[-1].text, 300)}")
                if any(t.run_ids for ticks in fresh.values() for t in ticks):
                    quiet_since = None            # it launched runs: wait for them, then look again
                elif len(latest) == len(fresh) and all(t.status != "FAILURE" for t in latest):
                    if not any(files_waiting(t) for t in latest):
                        return
                    quiet_since = time.time()     # files still settling: wait for a later tick
            if time.monotonic() > deadline:
                pending = self.in_flight()
                what = (f"{len(pending)} run(s) in flight" if pending else
                        "fresh ticks of " + ", ".join(self.settle_sensors))
                raise TimeoutError(f"not quiet yet: waiting for {what}")
            time.sleep(POLL_S)

    # -- schedules, now -------------------------------------------------------------------
    def tick_schedule_now(self, name: str, requested_by: str = "mlops-assets run --once") -> TickEvent:
        """One tick of schedule `name` at the current time, through the scheduler daemon's own
        procedure; its runs are queued for the daemon. Returns the recorded tick."""
        from dagster._core.definitions.run_request import InstigatorType
        from dagster._core.scheduler.instigation import TickData, TickStatus
        from dagster._scheduler.scheduler import _schedule_runs_at_time, _ScheduleLaunchContext
        from dagster._utils.error import serializable_error_info_from_exc_info

        kind, remote = self.instigators[name]
        assert kind == "schedule", name
        now = dt.datetime.now(dt.UTC)
        tick = self.instance.create_tick(TickData(
            instigator_origin_id=remote.get_remote_origin_id(), instigator_name=name,
            instigator_type=InstigatorType.SCHEDULE, status=TickStatus.STARTED, timestamp=now.timestamp(),
            selector_id=remote.selector_id,
        ))
        logger = logging.getLogger("mlops_assets.run")
        with _ScheduleLaunchContext(remote, tick, self.instance, logger, {}) as launch:
            launch.add_log_key(launch.log_key)
            try:
                for error in _schedule_runs_at_time(self._wpc, logger, remote, now,
                                                    remote.execution_timezone or "UTC", launch, None):
                    if error is not None and hasattr(error, "message"):
                        launch.update_state(TickStatus.FAILURE, error=error)
            except Exception:  # noqa: BLE001  (recorded on the tick, as the daemon does)
                launch.update_state(TickStatus.FAILURE, error=serializable_error_info_from_exc_info(sys.exc_info()))
        recorded = next((t for t in self.instance.get_ticks(remote.get_remote_origin_id(), remote.selector_id,
                                                             limit=5) if t.tick_id == tick.tick_id), None)
        for run_id in (recorded.run_ids if recorded else []):
            self.instance.add_run_tags(run_id, {REQUESTED_BY_TAG: requested_by})
            self._runs.setdefault(run_id, "QUEUED")
        self.poll()
        found = [t for t in self._ticks.get(name, []) if recorded and t.timestamp == recorded.timestamp]
        return found[-1] if found else TickEvent(name, "schedule", "SKIPPED", now.timestamp(), [], "")

    def schedules_now(self, deadline: float, order: tuple[str, ...] = ("batch_inference", "drift_check",
                                                                        "performance")) -> int:
        """Tick each schedule now, in order, each after the runs of the one before finished."""
        launched = 0
        for what in order:
            name = self.pipeline.schedule(what)
            if name not in self.instigators:
                continue
            event = self.tick_schedule_now(name)
            if event.run_ids:
                launched += len(event.run_ids)
                self.wait_runs(deadline, event.run_ids)
        return launched

    def run_once(self, deadline: float, max_rounds: int = 4) -> None:
        """Sensors until quiet, then the schedules now; again while the schedules found work."""
        for _ in range(max_rounds):
            self.settle(deadline)
            if not self.schedules_now(deadline):
                return
        self.settle(deadline)
