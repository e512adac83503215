"""A world for fault drills: a prepared Dagster home, sqlite MLflow store and artifact folder
that a worker process (`faults/worker.py`) runs one step on and may be SIGKILLed in, snapshots
to restore it between kill points, and the recovery the product offers.

The world lives at one fixed path and is restored in place from a snapshot, because MLflow and
the spec record absolute paths. MLflow's sqlite engine runs with a NullPool here so that no
connection outlives a restore.

Its parts live beside it and are re-exported here: `driver` (the worker process, the fork
server and the kill points), `state` (what the world records and the invariants) and
`flaky_server` (a tracking server that fails chosen requests).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import yaml

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import MODEL_VERSION, ROLLED_BACK_FROM
from mlops_assets_tests.conftest import small_spec
from mlops_assets_tests.faults.driver import (
    VERSION_CREATED,
    WORKER,
    ForkServer,
    WorkerRun,
    describe,
    every_write,
    first_write,
    promotion_kill_points,
    training_kill_points,
    worker_env,
)
from mlops_assets_tests.faults.flaky_server import FlakyTrackingServer
from mlops_assets_tests.faults.state import (
    INTENT_TAG,
    PROMOTABLE,
    WorldState,
    convergence_violations,
    safety_violations,
)

__all__ = [
    "INTENT_TAG", "PROMOTABLE", "QUIET", "ROLLBACK_REASON", "VERSION_CREATED", "WORKER", "FaultWorld",
    "FlakyTrackingServer", "ForkServer", "WorkerRun", "WorldState", "convergence_violations", "describe",
    "drill_spec", "every_write", "first_write", "job_from", "promotion_kill_points", "safety_violations",
    "scratch", "timed", "training_kill_points", "worker_env",
]

ROLLBACK_REASON = "drill"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def drill_spec(root: Path, **overrides):
    """The small demo spec, smaller still (40 rounds), with a gate every retrain on more of the
    same data clears and no cooldown, so a retried retrain starts on the next tick."""
    base = small_spec(root)
    model = base.model.model_dump(mode="json")
    model["lightgbm"]["num_boost_round"] = 40
    gate = base.gate.model_dump(mode="json")
    loose = {"min_main_metric": 0.55, "max_fairness_gap": None, "max_p99_latency_ms": None,
             "max_regression": 0.05, "max_regression_on_champion_holdout": 0.05}
    gate.update({k: v for k, v in loose.items() if k in gate})
    automation = {**base.automation.model_dump(mode="json"), "retrain_cooldown_minutes": 0}
    settings = {"model": model, "gate": gate, "automation": automation, **overrides}
    return small_spec(root, **settings)


class FaultWorld:
    def __init__(self, root: Path, spec=None, registry=None):
        self.root = Path(root)
        self.snapshots = self.root.parent / f"{self.root.name}-snapshots"
        self.root.mkdir(parents=True, exist_ok=True)
        self.spec = spec or drill_spec(self.root)
        self.pipeline = Pipeline(self.spec)
        self.defs = build_mlops_defs(self.spec, registry=registry)
        self.home = self.root / "dagster_home"
        self.home.mkdir(exist_ok=True)
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        (self.root / "spec.yaml").write_text(yaml.safe_dump(self.spec.model_dump(mode="json")))

    # -- the world itself -------------------------------------------------------------------
    @contextmanager
    def instance(self):
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            yield instance

    @property
    def registry(self):
        return self.defs.resources[self.pipeline.registry_key]

    @property
    def storage(self):
        return self.defs.resources[self.pipeline.storage_key]

    @property
    def model(self) -> str:
        return self.pipeline.model_name

    def land(self, instance, day: int, n_rows: int = 3_000) -> str:
        from mlops_assets.demo.data import write_day

        path = write_day(self.spec.source.path, dt.date(2026, 1, day), n_rows=n_rows, day_index=day - 1)
        instance.add_dynamic_partitions(self.pipeline.partitions_name, [path.name])
        self.materialize(instance, [Stage.RAW_DATA, Stage.VALIDATED_FEATURES], partition=path.name)
        return path.name

    def materialize(self, instance, stages, partition: str | None = None, raise_on_error: bool = True):
        return dg.materialize(
            list(self.defs.assets), selection=self.pipeline.keys(stages), instance=instance,
            resources=self.defs.resources, partition_key=partition, raise_on_error=raise_on_error,
            run_config=QUIET,
        )

    def snapshot(self, name: str) -> None:
        target = self.snapshots / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(self.root, target, symlinks=True)

    def restore(self, name: str) -> None:
        shutil.rmtree(self.root)
        shutil.copytree(self.snapshots / name, self.root, symlinks=True)

    # -- the step under test, in its own process --------------------------------------------
    def run_worker(self, step: str, kill: str | None = None, workers: ForkServer | None = None,
                   timeout: float = 300) -> WorkerRun:
        """Run `step` in a worker process (forked from `workers`, else a fresh interpreter)."""
        trace_file, log = self.root / "trace.jsonl", self.root.parent / f"{self.root.name}-worker.log"
        trace_file.unlink(missing_ok=True)
        if workers is not None:
            returncode = workers.run(self.root, step, kill, log=log, env={"DAGSTER_HOME": str(self.home)},
                                     timeout=timeout)
            output = log.read_text()
        else:
            args = [sys.executable, "-m", WORKER, str(self.root), step] + ([kill] if kill else [])
            proc = subprocess.run(args, check=False, env=worker_env(self.home), capture_output=True, text=True,
                                  timeout=timeout, cwd=str(self.root))
            returncode, output = proc.returncode, proc.stdout + proc.stderr
        trace = [json.loads(line) for line in trace_file.read_text().splitlines()] if trace_file.exists() else []
        trace_file.unlink(missing_ok=True)
        return WorkerRun(returncode, output, trace)

    # -- the recovery the product offers ----------------------------------------------------
    @staticmethod
    def fail_dead_runs(instance) -> list[str]:
        """What the dead-run watchdog does for a run whose worker was SIGKILLed."""
        dead = instance.get_runs(filters=dg.RunsFilter(statuses=[
            dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]))
        for run in dead:
            instance.report_run_failed(run, message="drill: its worker was SIGKILLed")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        return [r.run_id for r in dead]

    def tick_retrain(self, instance, max_ticks: int = 6) -> list:
        """Tick the retrain sensor (running what it requests in this process) until it skips;
        with `max_ticks=1`, exactly one tick."""
        from mlops_assets.automation.inline import InlineAutomation

        automation = InlineAutomation(self.defs, instance, log_level="WARNING")
        outcomes = []
        for _ in range(max_ticks):
            outcome = automation.tick_sensor(self.pipeline.sensor("retrain"))
            outcomes.append(outcome)
            if not outcome.launched or max_ticks == 1:
                return outcomes
        raise AssertionError("the retrain sensor never settled: " + " | ".join(
            o.skip_reason or ",".join(o.run_ids) for o in outcomes))

    def rollback(self, instance, to_version: str | None = None, raise_on_error: bool = False):
        job = self.defs.resolve_job_def(self.pipeline.job("rollback"))
        config = {"reason": ROLLBACK_REASON, **({"to_version": to_version} if to_version else {})}
        return job.execute_in_process(
            instance=instance, raise_on_error=raise_on_error,
            run_config={**QUIET, "ops": {f"{self.pipeline.name}_rollback_champion": {"config": config}}})

    def reexecute(self, instance, run_id: str, from_failure: bool = False):
        """What "Re-execute" (all steps, or from failure) in the UI does for a failed run (the
        runbook's recovery): a new run of the same job and config whose parent is the failed one."""
        parent = instance.get_run_by_id(run_id)
        job = dg.build_reconstructable_job(__name__, "job_from", (str(self.root / "spec.yaml"), parent.job_name))
        config = {**parent.run_config, "execution": {"config": {"in_process": {}}}}
        options = (dg.ReexecutionOptions.from_failure(run_id, instance) if from_failure
                   else dg.ReexecutionOptions(parent_run_id=run_id))
        tags = {k: v for k, v in parent.tags.items() if not k.startswith("dagster/")}
        with dg.execute_job(job, instance, run_config=config, raise_on_error=False,
                            reexecution_options=options, tags=tags) as result:
            return result

    def doctor(self, instance, registry=None):
        """`mlops-assets doctor` on this world (grace 0: the dead runs are already failed)."""
        from mlops_assets.cli.doctor import Doctor
        from mlops_assets.cli.target import PipelineTarget

        target = PipelineTarget(self.root / "spec.yaml", "spec", self.spec, {"registry": registry or self.registry})
        return Doctor(target, instance, grace=0)

    def doctor_fix(self, instance) -> list[str]:
        return self.doctor(instance).fix()

    def doctor_findings(self, instance) -> list[str]:
        """What `doctor` (without --fix) still reports as an error or a warning."""
        return [f.line() for f in self.doctor(instance).check() if f.severity in ("error", "warning")]

    def sweep(self, instance) -> dict:
        """What the start of every training does (the registry's sweep, then its record)."""
        from mlops_assets.champion_record import sweep_and_record

        return sweep_and_record(instance, self.pipeline, self.registry)

    # -- what is recorded -------------------------------------------------------------------
    def observe(self, instance) -> WorldState:
        from mlops_assets.state import champion_of_record

        registry = self.registry
        versions = {v.version: dict(v.tags) for v in registry.list_versions(self.model)}
        aliases = {}
        for alias in ("champion", "challenger"):
            found = registry.version_by_alias(self.model, alias)
            if found is not None:
                aliases[alias] = found.version
        found = instance.fetch_materializations(self.pipeline.key(Stage.REGISTERED_MODEL), limit=1000,
                                                ascending=True)
        registered = []
        for record in found.records:
            md = record.asset_materialization.metadata
            left = md.get(ROLLED_BACK_FROM)
            registered.append({"version": str(md[MODEL_VERSION].value), "run_id": record.run_id,
                               "rolled_back_from": str(left.value) if left is not None else None})
        client = registry.client()
        experiment = client.get_experiment_by_name(self.model)
        running = [] if experiment is None else [
            r.info.run_id for r in client.search_runs([experiment.experiment_id],
                                                      filter_string="attributes.status = 'RUNNING'")]
        in_progress = [r.run_id for r in instance.get_runs(filters=dg.RunsFilter(statuses=[
            dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]))]
        return WorldState(versions, aliases, registry.model_tags(self.model), registered, running,
                          champion_of_record(instance, self.pipeline), in_progress)


@contextmanager
def scratch(tmp_path_factory, name: str):
    """A scratch folder on tmpfs when there is one: sqlite's fsyncs cost seconds per drill on a
    busy disk here, and a SIGKILL loses nothing a disk would have kept (only a power cut does)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        import tempfile

        path = Path(tempfile.mkdtemp(prefix=f"mlops-{name}-", dir=shm))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp(name)


def job_from(spec_file: str, job_name: str) -> dg.JobDefinition:
    """Rebuilds a pipeline job in an executing process (a reconstructable job's recipe)."""
    from mlops_assets.spec import PipelineSpec

    return build_mlops_defs(PipelineSpec.from_yaml(spec_file)).resolve_job_def(job_name)


def timed(fn):
    start = time.monotonic()
    value = fn()
    return value, time.monotonic() - start
