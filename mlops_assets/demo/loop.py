"""The retrain loop played over simulated days, through the real sensors and schedules.

A scenario is data: a list of days, each labelled or not, with a planted population shift,
concept drift (the features stay, the label's dependence on them changes), labels arriving
late for earlier unlabelled days, an operator rollback, or a run killed mid-training. The
engine plays each day the way the daemon would, on a real Dagster instance (SQLite under a
Dagster home) and a real MLflow store:

    land the day's file (and any late label files)
    -> tick new_data (ingest: validate, score, drift report; the first file bootstraps)
    -> tick the model_performance schedule (hourly in the spec: once a day here), once labels exist
    -> tick the retrain sensor (on a kill day its run goes to a subprocess and is SIGKILLed
       once training started, then failed as the dead-run watchdog fails it)
    -> tick the batch-inference and drift-check schedules
    -> tick the retrain sensor again (cascades; the killed run's retry)
    -> on a rollback day: the rollback job, then the schedules and the retrain sensor again

The metrics (`measure`) are read back from what was recorded (the instance's runs, their
events and materializations, and the model bundles in the artifact store), never from the
engine's own bookkeeping; the engine only keeps the time each day started, to date runs.

The expected retrains come from the scenario (`expectations`): day 1 bootstraps; a planted
shift, once its rows are labelled, and a performance drop, on the day the labels that show
it arrive, each retrain with their trigger; every other day retrains on new data exactly
when the labelled rows no model has trained on (neither the champion nor a rolled-back
version) reach `max(new_data_min_rows, new_data_min_fraction x champion's rows)`. Every
expected retrain is assumed to pass the gate (the scenario's gate settings make it so).

Cooldown and budget are wall-clock rules: a scenario plays 30 days in minutes, so its spec
sets `retrain_cooldown_minutes: 0` and a large budget (their rules are unit-tested in
mlops_assets_tests/core/test_retrain.py). Every setting changed from the demo spec is
listed by `changed_settings`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

START_DATE = dt.date(2026, 3, 1)
KILL_TIMEOUT_S = 300.0     # a run worker to start, record its run and reach training (loaded machine)
POLL_S = 0.05

# -- the scenario, as data ----------------------------------------------------------------------


@dataclass(frozen=True)
class Day:
    """One simulated day. `labels_for`: earlier days (1-based) whose labels arrive today."""

    labelled: bool = True
    rows: int | None = None         # None: the scenario's rows_per_day
    drift: float = 0.0              # population shift (demo.data.generate_loans `drift`)
    concept_drift: float = 0.0      # label dependence changes; the features do not
    labels_for: tuple[int, ...] = ()
    rollback: bool = False          # the operator rolls the champion back at the end of the day
    kill: bool = False              # the retrain run of the day is SIGKILLed once training started
    expect: str | None = None       # a planted trigger: "drift" | "performance" (others are derived)
    note: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    days: tuple[Day, ...]
    rows_per_day: int = 5_000
    seed: int = 7
    # Dotted spec settings on top of the demo spec (see `scenario_spec`).
    settings: dict = field(default_factory=dict)

    def rows(self, n: int) -> int:
        day = self.days[n - 1]
        return self.rows_per_day if day.rows is None else day.rows


# Settings every scenario needs, on top of the demo spec (each is listed in the results):
LOOP_SETTINGS = {
    # Wall-clock rules: 30 simulated days take minutes (the rules are unit-tested elsewhere).
    "automation.retrain_cooldown_minutes": 0,
    "automation.retrain_budget": 1_000,
    # A file is complete when written (the engine writes it atomically).
    "source.settle_seconds": 0.0,
    # Speed: 80 trees (as the tests' small spec) instead of the demo's 300.
    "model.lightgbm.num_boost_round": 80,
    # A floor every model clears (holdout AUC 0.68-0.76 measured on 5,000-row days), so the
    # scenario is about the loop, not the generator's noise. With 5,000-row days the gate's
    # paired comparisons move by sd 0.005-0.01 between consecutive models (8 seeds: never below
    # -0.007), inside max_regression 0.02 (demo) and max_regression_on_champion_holdout 0.01
    # (default); at 2,000 rows they moved by sd 0.03-0.045 and blocked the first retrain.
    "gate.min_main_metric": 0.6,
    # Rendering only: Evidently's HTML page costs ~1.5 s per drifted report (measured here);
    # the drift statistics and the retrain signal are our engine's, unchanged.
    "drift.evidently_html": "never",
}


def scenario_30() -> Scenario:
    """30 days: i.i.d. labelled days; unlabelled days (days 5-6 labelled late, together, on day
    11; day 26 on day 28); a killed retrain (day 9); an operator rollback (end of day 11) followed
    by a small labelled day (not enough new rows on its own); one planted shift (day 16,
    labelled); a late-label performance drop (concept drift on unlabelled days 19-21, their
    labels on day 23)."""
    days = [Day() for _ in range(30)]

    def put(n: int, **kw) -> None:
        days[n - 1] = Day(**kw)

    put(5, labelled=False, note="unlabelled i.i.d.")
    put(6, labelled=False, note="unlabelled i.i.d.")
    put(9, kill=True, note="the retrain is killed mid-training; the next tick retries it")
    put(11, labels_for=(5, 6), rollback=True,
        note="late labels for days 5-6 (i.i.d.); the operator rolls the new champion back at the end of the day")
    put(12, rows=600, note="a small labelled day after the rollback")
    put(16, drift=1.0, expect="drift", note="planted population shift, labelled")
    put(19, labelled=False, concept_drift=1.0, note="unlabelled, concept drift")
    put(20, labelled=False, concept_drift=1.0, note="unlabelled, concept drift")
    put(21, labelled=False, concept_drift=1.0, note="unlabelled, concept drift")
    put(23, labels_for=(19, 20, 21), expect="performance", note="late labels for days 19-21: performance drop")
    put(26, labelled=False, note="unlabelled i.i.d.")
    put(28, labels_for=(26,), note="late labels for day 26 (i.i.d.)")
    return Scenario("loop-30", tuple(days), settings=dict(LOOP_SETTINGS))


def scenario_short() -> Scenario:
    """11 days with every event type, for the test: a killed retrain whose retried model the
    operator then rolls back (day 4), a small labelled day after it (5), late labels for an
    unlabelled day (3, on day 6), a planted shift (7), a late-label performance drop (concept
    drift on unlabelled days 8-9, their labels on day 10) and a quiet labelled day (11)."""
    days = [Day() for _ in range(11)]

    def put(n: int, **kw) -> None:
        days[n - 1] = Day(**kw)

    put(3, labelled=False, note="unlabelled i.i.d.")
    put(4, kill=True, rollback=True, note="the retrain is killed mid-training and retried by the next tick; "
                                          "the operator rolls its model back at the end of the day")
    put(5, rows=600, note="a small labelled day after the rollback")
    put(6, labels_for=(3,), note="late labels for day 3 (i.i.d.)")
    put(7, drift=1.0, expect="drift", note="planted population shift, labelled")
    put(8, labelled=False, concept_drift=1.0, note="unlabelled, concept drift")
    put(9, labelled=False, concept_drift=1.0, note="unlabelled, concept drift")
    put(10, labels_for=(8, 9), expect="performance", note="late labels for days 8-9: performance drop")
    return Scenario("loop-11", tuple(days), settings=dict(LOOP_SETTINGS))


# -- what the scenario expects ----------------------------------------------------------------


def expectations(scenario: Scenario, spec) -> list[str | None]:
    """The retrain each day should cause ("bootstrap", "new_data", "drift", "performance") or
    None, from the scenario alone: rows arithmetic with the spec's new-data rule, the planted
    triggers as declared, every retrain promoted, a rollback restoring the previous champion."""
    auto = spec.automation
    labelled_on: dict[int, int] = {}          # day -> the day its labels became available
    for n, day in enumerate(scenario.days, start=1):
        if day.labelled:
            labelled_on[n] = n
        for k in day.labels_for:
            labelled_on[k] = n
    out: list[str | None] = []
    champions: list[frozenset[int]] = []      # promoted training sets, newest last
    rolled_back: set[int] = set()
    for n, day in enumerate(scenario.days, start=1):
        available = frozenset(k for k, when in labelled_on.items() if when <= n)
        trigger = None
        if not champions:
            trigger = "bootstrap" if available else None
        elif day.expect is not None:
            trigger = day.expect
        elif auto.retrain_on_new_data and available != champions[-1]:
            new = sum(scenario.rows(k) for k in available - champions[-1] - rolled_back)
            needed = max(auto.new_data_min_rows,
                         auto.new_data_min_fraction * sum(scenario.rows(k) for k in champions[-1]))
            trigger = "new_data" if new >= needed else None
        if trigger is not None:
            champions.append(available)
        if day.rollback and len(champions) >= 2:
            rolled_back |= champions.pop() - champions[-1]
        out.append(trigger)
    return out


# -- the spec -------------------------------------------------------------------------------------


def _set(data: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for part in path:
        data = data.setdefault(part, {})
    data[last] = value


def scenario_spec(root: Path, scenario: Scenario):
    from mlops_assets.demo import demo_spec
    from mlops_assets.spec import PipelineSpec

    data = demo_spec(root).model_dump(mode="json")
    for dotted, value in scenario.settings.items():
        _set(data, dotted, value)
    data["ground_truth"] = {"path": str(Path(root).resolve() / "labels")}
    return PipelineSpec.from_dict(data)


def changed_settings(spec) -> dict:
    """Every setting of `spec` that differs from the demo spec's, as dotted keys (paths aside)."""
    from mlops_assets.demo import demo_spec

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            out.update(flat(v, key + ".") if isinstance(v, dict) else {key: v})
        return out

    base_spec = demo_spec("/nonexistent").model_dump(mode="json")
    mine, base = flat(spec.model_dump(mode="json")), flat(base_spec)
    skip = ("state_dir", "source.path")
    out = {}
    for key, value in sorted(mine.items()):
        section = key.split(".", 1)[0]
        if key in skip or base.get(key, "<unset>") == value:
            continue
        if base_spec.get(section, "<unset>") is None:      # a section the demo spec leaves out
            out[section] = "added (delayed labels: the scenario's label files)" if section == "ground_truth" \
                else "added"
        else:
            out[key] = value
    return out


# -- the engine ---------------------------------------------------------------------------------


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


# -- the metrics, from recorded state -------------------------------------------------------------


@dataclass
class Training:
    run_id: str
    job: str
    day: int
    trigger: str | None
    training_set: str | None
    run_key: str | None
    status: str
    started_at: float
    finished_training: bool        # trained_model materialized in this run
    killed: bool                   # training started, the step never ended, the run failed
    version: str | None
    error: str | None = None       # the training step failed: the first line of why

    @property
    def ran(self) -> bool:
        """A training that ran: it completed, or it was killed mid-way (not one that crashed)."""
        return self.finished_training or self.killed


def _day_of(timestamp: float, starts: list[float]) -> int:
    day = 0
    for i, start in enumerate(starts, start=1):
        if timestamp >= start:
            day = i
    return day


def _trainings(instance, pipeline, starts: list[float]) -> list[Training]:
    import dagster as dg

    from mlops_assets.pipeline import Stage
    from mlops_assets.signals import (
        MODEL_VERSION,
        RUN_KEY_TAG,
        TRAINING_SET,
        TRAINING_SET_TAG,
        TRIGGER_TAG,
    )

    key = pipeline.key(Stage.TRAINED_MODEL)
    out = []
    for job in (pipeline.job("bootstrap"), pipeline.job("retrain")):
        for record in instance.get_run_records(dg.RunsFilter(job_name=job)):
            run = record.dagster_run
            steps = {}
            for entry in instance.all_logs(run.run_id, of_type={
                    dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
                    dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.ASSET_MATERIALIZATION}):
                if "trained_model" in (entry.step_key or ""):
                    steps.setdefault(entry.dagster_event.event_type, entry)
            start = steps.get(dg.DagsterEventType.STEP_START)
            if start is None:
                continue                      # recovery runs (evaluate, promote) train nothing
            mat = steps.get(dg.DagsterEventType.ASSET_MATERIALIZATION)
            metadata = mat.dagster_event.event_specific_data.materialization.metadata if mat else {}
            ended = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE} & set(steps)
            failure = steps.get(dg.DagsterEventType.STEP_FAILURE)
            identity = metadata[TRAINING_SET].value if TRAINING_SET in metadata else run.tags.get(TRAINING_SET_TAG)
            assert mat is None or mat.dagster_event.asset_key == key
            out.append(Training(
                run_id=run.run_id, job=job, day=_day_of(start.timestamp, starts),
                trigger=run.tags.get(TRIGGER_TAG), training_set=identity, run_key=run.tags.get(RUN_KEY_TAG),
                status=run.status.value, started_at=start.timestamp, finished_training=mat is not None,
                killed=not ended and run.status == dg.DagsterRunStatus.FAILURE,
                version=str(metadata[MODEL_VERSION].value) if MODEL_VERSION in metadata else None,
                error=_first_error_line(failure.dagster_event.event_specific_data.error) if failure else None,
            ))
    return sorted(out, key=lambda t: t.started_at)


def _first_error_line(error) -> str | None:
    while error is not None and error.cause is not None:
        error = error.cause
    return None if error is None else error.message.strip().splitlines()[0][:200]


def _materializations(instance, key):
    """Every materialization record of `key`, oldest first (paged: storage caps one fetch)."""
    out, cursor = [], None
    while True:
        found = instance.fetch_materializations(key, limit=5_000, cursor=cursor, ascending=True)
        out.extend(found.records)
        if not found.has_more:
            return out
        cursor = found.cursor


def _registrations(instance, pipeline):
    """registered_model events, oldest first: (storage_id, timestamp, version, rolled_back_from, run_id)."""
    from mlops_assets.pipeline import Stage
    from mlops_assets.signals import MODEL_VERSION, ROLLED_BACK_FROM

    out = []
    for r in _materializations(instance, pipeline.key(Stage.REGISTERED_MODEL)):
        md = r.asset_materialization.metadata
        out.append({"storage_id": r.storage_id, "timestamp": r.timestamp,
                    "version": str(md[MODEL_VERSION].value) if MODEL_VERSION in md else None,
                    "rolled_back_from": str(md[ROLLED_BACK_FROM].value) if ROLLED_BACK_FROM in md else None,
                    "changed": md["changed"].value if "changed" in md else None, "run_id": r.run_id})
    return out


def _version_training_sets(instance, pipeline) -> dict[str, str]:
    from mlops_assets.pipeline import Stage
    from mlops_assets.signals import MODEL_VERSION, TRAINING_SET

    out = {}
    for r in _materializations(instance, pipeline.key(Stage.TRAINED_MODEL)):
        md = r.asset_materialization.metadata
        if MODEL_VERSION in md and TRAINING_SET in md:
            out[str(md[MODEL_VERSION].value)] = str(md[TRAINING_SET].value)
    return out


def _native_model_hash(storage, pipeline, version: str) -> str | None:
    prefix = f"{pipeline.layout.model_dir(version)}/bundle"
    files = [p for p in storage.list(prefix) if p.rsplit("/", 1)[-1].startswith("model.")]
    if not files:
        return None
    return hashlib.sha256(storage.read_bytes(files[0])).hexdigest()


def _partition_duplicates(instance, pipeline, registrations) -> tuple[int, int, list[str]]:
    """Runs (ingest, batch inference, drift check) doing the same partition's work twice in one
    champion epoch, and batch_predictions / drift_report materializations repeated in one epoch."""
    import bisect

    import dagster as dg

    from mlops_assets.pipeline import Stage
    from mlops_assets.signals import PARTITION_KEY_TAG

    times = [r["timestamp"] for r in registrations]
    ids = [r["storage_id"] for r in registrations]
    runs = defaultdict(list)
    for job in (pipeline.job("ingest"), pipeline.job("batch_inference"), pipeline.job("drift")):
        for record in instance.get_run_records(dg.RunsFilter(job_name=job)):
            run = record.dagster_run
            if run.status != dg.DagsterRunStatus.SUCCESS:
                continue
            epoch = bisect.bisect_right(times, record.create_timestamp.timestamp())
            runs[(job, run.tags.get(PARTITION_KEY_TAG), epoch)].append(run.run_id)
    dup_runs = {k: v for k, v in runs.items() if len(v) > 1}
    mats = defaultdict(int)
    for stage in (Stage.BATCH_PREDICTIONS, Stage.DRIFT_REPORT):
        for r in _materializations(instance, pipeline.key(stage)):
            epoch = bisect.bisect_left(ids, r.storage_id)
            mats[(stage.value, r.asset_materialization.partition, epoch)] += 1
    dup_mats = sum(n - 1 for n in mats.values() if n > 1)
    detail = [f"{job} {part} epoch {epoch}: {len(v)} runs" for (job, part, epoch), v in dup_runs.items()]
    return sum(len(v) - 1 for v in dup_runs.values()), dup_mats, detail


def measure(engine: LoopEngine) -> dict:
    """The scenario's results, read from the instance, the registry's records and the store."""
    import dagster as dg

    from mlops_assets.pipeline import Stage

    instance, pipeline, scenario = engine.instance, engine.pipeline, engine.scenario
    starts = [r.started_at for r in engine.records]
    expected = engine.expected
    trainings = _trainings(instance, pipeline, starts)
    registrations = _registrations(instance, pipeline)
    sets = _version_training_sets(instance, pipeline)
    storage = engine.defs.resources[pipeline.storage_key]

    # One retrain per training set that ran (completed or killed): a killed run and its retry
    # are one retrain. Trainings that crashed are counted apart (`crashed_trainings`).
    by_set: dict[str, list[Training]] = defaultdict(list)
    for t in trainings:
        by_set[t.training_set or t.run_id].append(t)
    retrains = sorted((next(t for t in runs if t.ran) for runs in by_set.values() if any(t.ran for t in runs)),
                      key=lambda t: t.started_at)
    crashed = [t for t in trainings if t.error is not None]

    duplicate_trainings = []
    for identity, runs in by_set.items():
        for i, t in enumerate(runs[1:], start=1):
            earlier = runs[:i]
            # A duplicate: the same set again after one finished training, or while one was in flight.
            if any(e.finished_training or (not e.killed and e.status in ("STARTED", "STARTING")) for e in earlier):
                duplicate_trainings.append(t.run_id)
    dup_partition_runs, dup_mats, dup_detail = _partition_duplicates(instance, pipeline, registrations)

    promotions = [r for r in registrations if r["rolled_back_from"] is None and r["changed"] is not False]
    identical, seen_sets, seen_bytes = [], {}, {}
    for p in promotions:
        v = p["version"]
        identity, digest = sets.get(v), _native_model_hash(storage, pipeline, v)
        twin = seen_sets.get(identity) if identity else None
        twin = twin or (seen_bytes.get(digest) if digest else None)
        if twin is not None and twin != v:
            identical.append(f"v{v} = v{twin}")
        if identity:
            seen_sets.setdefault(identity, v)
        if digest:
            seen_bytes.setdefault(digest, v)

    by_day: dict[int, list[Training]] = defaultdict(list)
    for t in retrains:
        by_day[t.day].append(t)
    false_retrains, missed = [], []
    for n in range(1, len(scenario.days) + 1):
        want, got = expected[n - 1], by_day.get(n, [])
        for i, t in enumerate(got):
            if want is None or i > 0 or t.trigger != want:
                false_retrains.append(f"day {n}: {t.trigger} (expected {want or 'none'})")
        if scenario.days[n - 1].expect and not got:
            missed.append(f"day {n}: no retrain after the planted {scenario.days[n - 1].expect}")
    expected_retrains = sum(1 for e in expected if e)

    rollback = _rollback_held(engine, trainings, registrations, sets)
    killed = [t for t in trainings if t.killed]
    retried = [t for t in trainings if any(k.training_set == t.training_set and k.started_at < t.started_at
                                           for k in killed)]
    latest = instance.fetch_materializations(pipeline.key(Stage.REGISTERED_MODEL), limit=1).records
    runs_by_job, run_seconds = {}, {}
    for job in (pipeline.job(n) for n in ("ingest", "bootstrap", "retrain", "batch_inference", "drift",
                                           "performance", "rollback")):
        records = instance.get_run_records(dg.RunsFilter(job_name=job))
        runs_by_job[job] = len(records)
        run_seconds[job] = round(sum(r.end_time - r.start_time for r in records if r.start_time and r.end_time), 1)
    wasted = _drift_reports_on_trained_partitions(instance, pipeline)
    return {
        "retrains": len(retrains),
        "expected_retrains": expected_retrains,
        "identical_models_promoted": len(identical),
        "duplicate_runs": len(duplicate_trainings) + dup_partition_runs,
        "missed_shifts": len(missed),
        "false_retrains": len(false_retrains),
        "rollback_held": rollback["held"],
        "promotions": len(promotions),
        "training_runs": len(trainings),
        "killed_runs": len(killed),
        "retried_runs": len(retried),
        "crashed_trainings": len(crashed),
        "gate_rejected": sum(1 for t in trainings if t.finished_training and not any(
            p["version"] == t.version for p in promotions)),
        "champion": latest[0].asset_materialization.metadata["model_version"].value if latest else None,
        "duplicate_materializations": dup_mats,
        "runs_by_job": runs_by_job,
        "run_seconds_by_job": run_seconds,
        "drift_reports_on_trained_partitions": wasted,
        "details": {
            "false_retrains": false_retrains, "missed_shifts": missed, "identical_models_promoted": identical,
            "duplicate_trainings": duplicate_trainings, "duplicate_partition_runs": dup_detail,
            "rollback": rollback["detail"],
            "training_runs": [f"day {t.day}: {t.trigger} ({'killed' if t.killed else t.status.lower()}"
                              f"{', v' + t.version if t.version else ''}{', ' + t.error if t.error else ''})"
                              for t in trainings],
        },
    }


def _drift_reports_on_trained_partitions(instance, pipeline) -> dict:
    """Drift reports computed against a champion that was trained on that very partition: the
    retrain decision ignores their signal, so the run bought nothing for the loop."""
    from mlops_assets.pipeline import Stage
    from mlops_assets.signals import CHAMPION_VERSION, MODEL_VERSION, TRAINING_PARTITIONS

    trained = {}
    for r in _materializations(instance, pipeline.key(Stage.TRAINED_MODEL)):
        md = r.asset_materialization.metadata
        if MODEL_VERSION in md and TRAINING_PARTITIONS in md:
            trained[str(md[MODEL_VERSION].value)] = set(md[TRAINING_PARTITIONS].value or {})
    total = wasted = 0
    for r in _materializations(instance, pipeline.key(Stage.DRIFT_REPORT)):
        total += 1
        champion = r.asset_materialization.metadata.get(CHAMPION_VERSION)
        if champion is not None and r.asset_materialization.partition in trained.get(str(champion.value), ()):
            wasted += 1
    return {"reports": total, "on_a_partition_the_champion_trained_on": wasted}


def _rollback_held(engine: LoopEngine, trainings, registrations, sets) -> dict:
    """After each rollback: nothing rebuilds the rolled-back training set, and the champion stays
    on the rollback target (no training, no promotion) until the next day the scenario expects
    a retrain."""
    starts = [r.started_at for r in engine.records]
    problems, seen = [], 0
    for i, reg in enumerate(registrations):
        if reg["rolled_back_from"] is None:
            continue
        seen += 1
        left, target = reg["rolled_back_from"], reg["version"]
        bad_set = sets.get(left)
        day = _day_of(reg["timestamp"], starts)
        nxt = next((n for n in range(day + 1, len(engine.expected) + 1) if engine.expected[n - 1]), None)
        until = starts[nxt - 1] if nxt is not None and nxt <= len(starts) else float("inf")
        for t in trainings:
            if t.started_at > reg["timestamp"] and bad_set and t.training_set == bad_set:
                problems.append(f"day {t.day}: run {t.run_id[:8]} rebuilt v{left}'s training set")
            if reg["timestamp"] < t.started_at < until:
                problems.append(f"day {t.day}: a {t.trigger} retrain before the next expected one "
                                f"(day {nxt or '-'})")
        for later in registrations[i + 1:]:
            if later["timestamp"] < until and later["version"] != target:
                problems.append(f"champion left v{target} for v{later['version']} before day {nxt or '-'}")
                break
    return {"held": seen > 0 and not problems,
            "detail": problems or ([f"{seen} rollback(s) held"] if seen else ["no rollback recorded"])}


# -- one call for the benchmark and the test -----------------------------------------------------


def run_scenario(scenario: Scenario, root: str | Path, log: Callable[[str], None] | None = None) -> dict:
    """Play `scenario` under `root` and return its metrics, the per-day decisions and timings."""
    t0 = time.perf_counter()
    engine = LoopEngine(root, scenario, log=log)
    try:
        engine.play()
        played = time.perf_counter() - t0
        results = measure(engine)
        results.update({
            "scenario": scenario.name,
            "days": len(scenario.days),
            "rows_per_day": scenario.rows_per_day,
            "settings_changed_from_demo_spec": changed_settings(engine.spec),
            "settings_base": "mlops_assets/demo/demo_spec.yaml (gate: min_main_metric 0.70, max_regression 0.02, "
                             "max_fairness_gap 0.10, max_p99_latency_ms 50; other sections: package defaults)",
            "cooldown_and_budget": "wall-clock rules: cooldown 0 and budget 1000 in this scenario; "
                                   "unit-tested in mlops_assets_tests/core/test_retrain.py",
            "per_day": [{"day": r.day, "expected": r.expected, "decisions": r.decisions, "seconds": r.seconds,
                         **({"note": r.note} if r.note else {})} for r in engine.records],
            "seconds": {"play": round(played, 1), "measure": round(time.perf_counter() - t0 - played, 1),
                        "slowest_day": max((r.seconds for r in engine.records), default=0.0)},
        })
        return results
    finally:
        engine.close()


def to_json(results: dict) -> str:
    return json.dumps(results, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
