"""The client side of a headless deployment: `Automation`, in this process, on the same
workspace file as the daemon (so the same code-location origins as the daemon's).

It switches the pipeline's sensors and schedules on through the instance (what `dagster sensor
start` does, without starting a second code server per call: about 20 s each on two loaded
cores) and back off when done, watches ticks and runs and reports them, and ticks a schedule
*now* (see `tick_schedule_now`).

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
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlops_assets.cli.deployment_events import (
    IN_FLIGHT,
    DeploymentError,
    RunOutcome,
    TickEvent,
    files_waiting,
    first_line,
    run_failure_detail,
)

if TYPE_CHECKING:
    from mlops_assets.cli.deployment import Deployment

REQUESTED_BY_TAG = "mlops/requested_by"
POLL_S = 1.0


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
