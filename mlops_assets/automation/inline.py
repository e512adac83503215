"""Run sensor and schedule ticks in this process, the way the daemon would.

Used by the headless demo and by tests that need the automation's decisions to
actually execute. It evaluates a tick, registers requested partitions, skips run keys
the sensor already launched (as the daemon does), and executes each run in-process on
the given instance. Production uses the real `dagster-daemon`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import dagster as dg

from mlops_assets.signals import RUN_KEY_TAG, SENSOR_NAME_TAG


@dataclass
class TickOutcome:
    name: str
    skip_reason: str | None = None
    launched: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    deduplicated: list[str] = field(default_factory=list)

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.launched]


@dataclass(frozen=True)
class PendingRun:
    """A run a tick requested, not executed yet: its job, request and the tags it runs with
    (the run key and sensor name included, as the daemon adds them)."""

    job_name: str
    request: dg.RunRequest
    tags: dict


class InlineAutomation:
    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, log_level: str = "INFO"):
        self.defs = defs
        self.instance = instance
        self.log_level = log_level
        self.cursors: dict[str, str | None] = {}

    def tick_sensor(self, name: str) -> TickOutcome:
        outcome, pending = self.evaluate_sensor(name)
        outcome.launched.extend(self.execute(run) for run in pending)
        return outcome

    def evaluate_sensor(self, name: str) -> tuple[TickOutcome, list[PendingRun]]:
        """Evaluate one tick as the daemon does (cursor, requested partitions, run keys already
        launched skipped) but execute nothing: the runs it would launch, each with its job and
        final tags, for the caller to execute (`execute`) here or in another process."""
        sensor = self.defs.resolve_sensor_def(name)
        # `definitions=` supplies the repository only; the resources the sensor requires (e.g.
        # the S3 client of an s3:// source) are passed explicitly, as the daemon binds them.
        available = self.defs.resources or {}
        resources = {k: available[k] for k in sensor.required_resource_keys if k in available}
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursors.get(name), definitions=self.defs, sensor_name=name,
            resources=resources or None,
        )
        # Called directly (not evaluate_tick): the daemon adds the tick's requested dynamic
        # partitions before it validates run requests against them; evaluate_tick would
        # validate first and reject partitions this very tick creates.
        result = sensor(context)
        if isinstance(result, dg.SkipReason):
            result = dg.SensorResult(skip_reason=result)
        elif not isinstance(result, dg.SensorResult):
            result = dg.SensorResult(run_requests=list(result or []))
        if result.cursor is not None:
            self.cursors[name] = result.cursor
        elif context.cursor is not None:
            self.cursors[name] = context.cursor
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        skip = result.skip_reason.skip_message if result.skip_reason else None
        outcome = TickOutcome(name, skip_reason=skip)
        default_job = sensor.job_name if sensor.has_jobs and len(sensor.jobs) == 1 else None
        pending, keys = [], set()
        for request in result.run_requests or []:
            tags = dict(request.tags or {})
            if request.run_key:
                # A key repeated within the tick counts as launched, as if the first had run.
                if request.run_key in keys or self._already_launched(name, request.run_key):
                    outcome.deduplicated.append(request.run_key)
                    continue
                keys.add(request.run_key)
                tags.update({RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: name})
            pending.append(PendingRun(request.job_name or default_job, request, tags))
        return outcome, pending

    def execute(self, run: PendingRun) -> dg.ExecuteInProcessResult:
        """Execute one run `evaluate_sensor` returned, in this process."""
        return self._execute(run.job_name, run.request, run.tags)

    def tick_schedule(self, name: str, at: dt.datetime | None = None) -> TickOutcome:
        schedule = self.defs.resolve_schedule_def(name)
        context = dg.build_schedule_context(
            instance=self.instance, scheduled_execution_time=at or dt.datetime.now(dt.UTC)
        )
        result = schedule(context)
        if isinstance(result, dg.SkipReason):
            return TickOutcome(name, skip_reason=result.skip_message)
        requests = [result] if isinstance(result, dg.RunRequest) else list(result or [])
        outcome = TickOutcome(name)
        for request in requests:
            tags = dict(request.tags or {})
            if request.run_key:
                tags[RUN_KEY_TAG] = request.run_key
            outcome.launched.append(self._execute(schedule.job_name, request, tags))
        return outcome

    def _already_launched(self, sensor_name: str, run_key: str) -> bool:
        runs = self.instance.get_runs(
            filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: sensor_name}), limit=1
        )
        return bool(runs)

    def _execute(self, job_name: str, request: dg.RunRequest, tags: dict) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(job_name)
        return job.execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags=tags,
            asset_selection=list(request.asset_selection) if request.asset_selection else None,
            run_config={"loggers": {"console": {"config": {"log_level": self.log_level}}}},
            raise_on_error=False,
        )
