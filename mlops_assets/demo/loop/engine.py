"""The engine that plays a scenario's days through the real sensors and schedules.

It plays each day the way the daemon would, on a real Dagster instance (SQLite under a
Dagster home) and a real MLflow store:

    land the day's file (and any late label files)
    -> tick new_data (ingest: validate, score, drift report; the first file bootstraps)
    -> tick the model_performance schedule (hourly in the spec: once a day here), once labels exist
    -> tick the retrain sensor (on a kill day its run goes to a subprocess and is SIGKILLed
       once training started, then failed as the dead-run watchdog fails it)
    -> tick the batch-inference and drift-check schedules
    -> tick the retrain sensor again (cascades; the killed run's retry)
    -> on a rollback day: the rollback job, then the schedules and the retrain sensor again

The engine keeps only the time each day started (to date runs) and what each retrain tick
decided (the per-day report); the results are read back from recorded state (`results.measure`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlops_assets.demo.loop.scenario import START_DATE, Day, Scenario, expectations, scenario_spec

KILL_TIMEOUT_S = 300.0     # a run worker to start, record its run and reach training (loaded machine)
POLL_S = 0.05

@dataclass
class DayRecord:
    day: int
    date: str
    started_at: float
    note: str
    expected: str | None
    decisions: list[str] = field(default_factory=list)   # the retrain ticks: launched or skipped, why
    seconds: float = 0.0
    killed: str | None = None                            # the run SIGKILLed today


class LoopEngine:
    """Plays a scenario on its own Dagster home and MLflow store under `root`."""

    def __init__(self, root: str | Path, scenario: Scenario, log: Callable[[str], None] | None = None,
                 resume: bool = False):
        import dagster as dg
        import yaml

        from mlops_assets.automation.inline import InlineAutomation
        from mlops_assets.definitions import build_mlops_defs
        from mlops_assets.pipeline import Pipeline

        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.scenario = scenario
        self.log = log or (lambda line: None)
        self.spec = scenario_spec(self.root, scenario)
        self.pipeline = Pipeline(self.spec)
        self.spec_file = self.root / "spec.yaml"
        self.spec_file.write_text(yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False))
        self.home = self.root / "dagster_home"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text(
            f"storage:\n  sqlite:\n    base_dir: {self.home}\n"
            # One training step at a time, as the embedded default: a killed run holding the
            # slot would hold every later training, unless it is freed as the watchdog frees it.
            "concurrency:\n  pools:\n    default_limit: 1\n"
            "telemetry:\n  enabled: false\n")
        self.instance = dg.DagsterInstance.from_config(str(self.home))
        self.defs = build_mlops_defs(self.spec)
        self.auto = InlineAutomation(self.defs, self.instance, log_level="WARNING")
        self.landing = Path(self.spec.source.path)
        self.labels_dir = Path(self.spec.ground_truth.path)
        self.landing.mkdir(parents=True, exist_ok=True)
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        self.expected = expectations(scenario, self.spec)
        self.records: list[DayRecord] = []
        if resume and (self.root / "days.json").exists():
            # Measure a world played earlier (days.json holds when each day started).
            self.records = [DayRecord(**r) for r in json.loads((self.root / "days.json").read_text())]
        self._held_labels: dict[int, object] = {}

    def close(self) -> None:
        self.instance.dispose()

    # ---- one day
    def play(self) -> list[DayRecord]:
        for n, day in enumerate(self.scenario.days, start=1):
            self.play_day(n, day)
        return self.records

    def play_day(self, n: int, day: Day) -> DayRecord:
        names = self.pipeline
        started = time.time()
        date = START_DATE + dt.timedelta(days=n - 1)
        record = DayRecord(n, date.isoformat(), started, day.note, self.expected[n - 1])
        self.records.append(record)
        self._land(n, day, date)
        self._tick("new_data", self.auto.tick_sensor(names.sensor("new_data")))
        if self._performance_due():
            self._performance()
        record.decisions.append(self._retrain(kill=day.kill, record=record))
        self._schedules()
        record.decisions.append(self._retrain())
        if day.rollback:
            self._rollback(f"scenario day {n}: the operator turns the new champion away")
            self._schedules()
            record.decisions.append("after rollback: " + self._retrain())
        record.seconds = round(time.time() - started, 2)
        (self.root / "days.json").write_text(json.dumps([asdict(r) for r in self.records], indent=1))
        self.log(f"day {n:2d} {record.seconds:6.1f}s expected={record.expected or '-':<11} "
                 + " | ".join(record.decisions))
        return record

    def _land(self, n: int, day: Day, date: dt.date) -> None:
        import polars as pl

        from mlops_assets.demo.data import generate_loans

        frame = pl.from_pandas(generate_loans(
            self.scenario.rows(n), day=date, seed=self.scenario.seed, drift=day.drift,
            id_offset=n * 10_000_000, concept_drift=day.concept_drift))
        target = self.spec.target
        if not day.labelled:
            self._held_labels[n] = frame.select(self.spec.id_column, target)
            frame = frame.drop(target)
        _atomic_parquet(frame, self.landing / f"loans_{date.isoformat()}.parquet")
        if day.labels_for:
            known = dt.datetime.combine(date, dt.time(12), tzinfo=dt.UTC)
            labels = pl.concat([self._held_labels.pop(k) for k in day.labels_for])
            labels = labels.with_columns(pl.lit(known).alias(self.spec.ground_truth.time_column))
            _atomic_parquet(labels, self.labels_dir / f"labels_{date.isoformat()}.parquet")

    def _performance(self) -> None:
        """A tick of the performance schedule: a plain cron schedule of the performance job (no
        evaluation function to call), so its run is what the daemon would launch for it."""
        import dagster as dg

        from mlops_assets.automation.inline import PendingRun

        schedule = self.defs.resolve_schedule_def(self.pipeline.schedule("performance"))
        tags = {"dagster/schedule_name": schedule.name}
        result = self.auto.execute(PendingRun(schedule.job_name, dg.RunRequest(tags=tags), tags))
        if not result.success:
            self.log("    performance: run failed")

    def _performance_due(self) -> bool:
        """The performance schedule shares the hourly monitoring cron: it runs at least once a
        simulated day, once there are labels and a champion to judge."""
        from mlops_assets.state import champion_of_record

        return any(self.labels_dir.iterdir()) and champion_of_record(self.instance, self.pipeline) is not None

    def _tick(self, what: str, outcome) -> None:
        failed = [r.run_id[:8] for r in outcome.launched if not r.success]
        if failed:
            self.log(f"    {what}: run(s) failed: {failed}")

    def _schedules(self) -> None:
        self._tick("batch_inference", self.auto.tick_schedule(self.pipeline.schedule("batch_inference")))
        self._tick("drift_check", self.auto.tick_schedule(self.pipeline.schedule("drift_check")))

    def _retrain(self, kill: bool = False, record: DayRecord | None = None) -> str:
        from mlops_assets.signals import DECISION_TAG, TRIGGER_TAG

        outcome, pending = self.auto.evaluate_sensor(self.pipeline.sensor("retrain"))
        if not pending:
            why = (outcome.skip_reason or "").splitlines()[0] if outcome.skip_reason else "no request"
            return _short("skip: " + why.removeprefix("no retrain: "))
        run = pending[0]
        text = _short(f"{run.tags.get(TRIGGER_TAG)}: {run.tags.get(DECISION_TAG, '')}")
        if kill:
            killed = self.kill_during_training(run)
            if record is not None:
                record.killed = killed
            return f"KILLED {text}"
        result = self.auto.execute(run)
        return ("" if result.success else "FAILED ") + text

    def _rollback(self, reason: str) -> None:
        job = self.defs.resolve_job_def(self.pipeline.job("rollback"))
        result = job.execute_in_process(
            instance=self.instance, raise_on_error=False,
            run_config={"ops": {f"{self.pipeline.name}_rollback_champion": {"config": {"reason": reason}}},
                        "loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        if not result.success:
            self.log("    rollback failed")

    # ---- the killed run
    def kill_during_training(self, run) -> str:
        """Execute `run` in a worker process, SIGKILL it once its training step logged that
        training started, and fail it the way the dead-run watchdog does."""
        import dagster as dg

        from mlops_assets.signals import RUN_KEY_TAG

        args = [sys.executable, "-m", "mlops_assets.demo.loop_worker", "--home", str(self.home),
                "--spec", str(self.spec_file), "--job", run.job_name, "--tags", json.dumps(run.tags)]
        if run.request.partition_key:
            args += ["--partition", run.request.partition_key]
        if run.request.asset_selection:
            args += ["--assets", json.dumps([list(k.path) for k in run.request.asset_selection])]
        log_path = self.root / f"worker_{run.tags.get(RUN_KEY_TAG, 'run').replace(':', '_')}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "DAGSTER_HOME": str(self.home)})
        deadline = time.monotonic() + KILL_TIMEOUT_S
        run_id = None
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if run_id is None:
                    found = self.instance.get_runs(dg.RunsFilter(tags={RUN_KEY_TAG: run.tags[RUN_KEY_TAG]}), limit=1)
                    run_id = found[0].run_id if found else None
                if run_id is not None and _training_started(self.instance, run_id):
                    break
                time.sleep(POLL_S)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if run_id is None:
            raise RuntimeError(f"the worker never recorded its run; see {log_path}")
        dead = self.instance.get_run_by_id(run_id)
        if dead.is_finished:
            self.log(f"    the run {run_id[:8]} ended ({dead.status.value}) before it could be killed")
            return run_id
        held = _report_dead_like_the_watchdog(self.instance, dead)
        self.log(f"    SIGKILLed run {run_id[:8]} during training; failed it as the watchdog does"
                 + (" and freed its pool slot" if held else ""))
        return run_id


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _atomic_parquet(frame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)


def _training_started(instance, run_id: str) -> bool:
    """The trained_model step logged its "training ... on N rows" line (or, should that line
    change, has been running for a second)."""
    import dagster as dg

    started_at = None
    for entry in instance.all_logs(run_id):
        step = entry.step_key or ""
        if "trained_model" not in step:
            continue
        if entry.user_message.startswith("training "):
            return True
        if entry.dagster_event is not None and entry.dagster_event.event_type == dg.DagsterEventType.STEP_START:
            started_at = entry.timestamp
    return started_at is not None and time.time() - started_at > 1.0


def _report_dead_like_the_watchdog(instance, run) -> bool:
    """What automation/watchdog.py does to a run whose worker is gone: free its pool slots and
    fail it with UNEXPECTED_TERMINATION (the reason run retries retry). Private Dagster API, as
    there. Returns whether the run held or awaited pool slots."""
    from dagster._core.events import JobFailureData, RunFailureReason

    storage = instance.event_log_storage
    held = storage.supports_global_concurrency_limits and run.run_id in storage.get_concurrency_run_ids()
    if storage.supports_global_concurrency_limits:
        storage.free_concurrency_slots_for_run(run.run_id)
    instance.report_run_failed(run, "its run worker was SIGKILLed (scenario); failed as the dead-run watchdog "
                                    "fails it", JobFailureData(error=None,
                                                               failure_reason=RunFailureReason.UNEXPECTED_TERMINATION))
    return held
