"""A world for fault drills: a prepared Dagster home, sqlite MLflow store and artifact folder
that a worker process (`faults/worker.py`) runs one step on and may be SIGKILLed in, snapshots
to restore it between kill points, the recovery the product offers, and the invariants.

The world lives at one fixed path and is restored in place from a snapshot, because MLflow and
the spec record absolute paths. MLflow's sqlite engine runs with a NullPool here so that no
connection outlives a restore.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import yaml

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import MODEL_VERSION, ROLLED_BACK_FROM
from mlops_assets_tests.conftest import small_spec

PROMOTABLE = ("approved", "forced")
INTENT_TAG = "promotion_intent"
WORKER = "mlops_assets_tests.faults.worker"
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


def worker_env(home: Path | None = None) -> dict:
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "PYTHONWARNINGS": "ignore",
           "MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if home is not None:
        env["DAGSTER_HOME"] = str(home)
    return env


class ForkServer:
    """`worker.py --serve`: one interpreter with the heavy imports done, forking one child per
    step (a fresh interpreter costs about 4 s of imports per kill point on this machine)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", WORKER, "--serve"], env=worker_env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        ready = self.proc.stdout.readline().strip()
        if ready != "READY":
            self.close()
            raise RuntimeError(f"the fork server did not start: {ready!r}")

    def run(self, world: Path, step: str, kill: str | None, *, log: Path, env: dict, timeout: float) -> int:
        request = {"world": str(world), "step": step, "kill": kill, "log": str(log), "env": env}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        child = json.loads(self.proc.stdout.readline())["started"]
        timer = threading.Timer(timeout, lambda: _kill_quietly(child))
        timer.start()
        try:
            answer = json.loads(self.proc.stdout.readline())
        finally:
            timer.cancel()
        return answer["returncode"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class WorkerRun:
    returncode: int
    output: str
    trace: list[dict]

    @property
    def killed(self) -> bool:
        return self.returncode == -9

    @property
    def writes(self) -> list[dict]:
        return [row for row in self.trace if "method" in row]

    @property
    def result(self) -> dict | None:
        lines = [line for line in self.output.splitlines() if line.startswith("RESULT ")]
        return json.loads(lines[-1][len("RESULT "):]) if lines else None


@dataclass
class WorldState:
    """What the registry and the Dagster instance say, as plain data."""

    versions: dict[str, dict[str, str]]          # version -> tags
    aliases: dict[str, str]                      # alias -> version
    model_tags: dict[str, str]
    registered: list[dict]                       # registered_model materializations, oldest first
    running_mlflow_runs: list[str]
    champion_of_record: str | None
    in_progress_runs: list[str] = field(default_factory=list)

    @property
    def champion(self) -> str | None:
        return self.aliases.get("champion")

    def identity(self, version: str | None) -> str | None:
        """A version by what it was trained on (renumbering-proof: a retried retrain gets a new number)."""
        if version is None:
            return None
        tags = self.versions.get(str(version), {})
        return tags.get("data_version", f"untagged-v{version}")

    def signature(self) -> dict:
        """The end state, comparable between an interrupted and an uninterrupted history."""
        live = {v: t for v, t in self.versions.items() if t.get("approval") != "abandoned"}
        return {
            "champion": self.identity(self.champion),
            "champion_approval": self.versions.get(self.champion or "", {}).get("approval"),
            "champion_previous": self.identity(self.versions.get(self.champion or "", {}).get("previous_champion")),
            "approvals": sorted((self.identity(v), t.get("approval"), t.get("rolled_back", ""))
                                for v, t in live.items()),
            "aliases": sorted(self.aliases),
            "registered": [(self.identity(r["version"]), self.identity(r["rolled_back_from"]))
                           for r in self.registered],
            "intent": self.model_tags.get(INTENT_TAG),
        }


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


class FlakyTrackingServer:
    """MLflow's own tracking server (its Flask app, served from a thread of this process) behind
    a switch that answers 503 to chosen REST endpoints, e.g. `registered-models/get`.

    Served in-process because `mlflow server` took 14 s to answer its first request here."""

    def __init__(self, backend_uri: str, artifact_root: str):
        import mlflow
        from mlflow.server import app, handlers
        from werkzeug.serving import make_server

        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        handlers._tracking_store = handlers._model_registry_store = None
        handlers._get_tracking_store(backend_uri, artifact_root)
        handlers._get_model_registry_store(backend_uri)
        mlflow.set_tracking_uri(tracking)          # the store setup points the fluent API at it
        mlflow.set_registry_uri(registry)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.handlers = handlers
        self.failing: set[str] = set()
        self.after: str | None = None
        self.refused: list[str] = []
        self.requests: list[str] = []

        def wsgi(environ, start_response):
            path = environ.get("PATH_INFO", "")
            self.requests.append(f"{environ.get('REQUEST_METHOD')} {path}")
            if self.after is not None:
                if path.endswith(self.after):
                    self.after = None
            elif any(path.endswith(endpoint) for endpoint in self.failing):
                self.refused.append(path)
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"service unavailable (injected)"]
            return app(environ, start_response)

        self.server = make_server("127.0.0.1", 0, wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def arm(self, *endpoints: str, after: str | None = None) -> None:
        """Answer 503 to these endpoints (all of them once `after` has been requested)."""
        self.failing, self.after, self.refused = set(endpoints), after, []

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.handlers._tracking_store = self.handlers._model_registry_store = None


# -- invariants --------------------------------------------------------------------------------
def safety_violations(state: WorldState) -> list[str]:
    """What must hold at every instant, even right after a SIGKILL."""
    problems = []
    if state.champion is not None:
        approval = state.versions.get(state.champion, {}).get("approval")
        if approval not in PROMOTABLE:
            problems.append(f"champion alias on v{state.champion} whose approval is {approval!r}")
    for version, tags in state.versions.items():
        for key in ("previous_champion", "rolled_back_from"):
            if tags.get(key) == version:
                problems.append(f"v{version} records itself as its {key}")
    promoted = Counter(r["version"] for r in state.registered if r["rolled_back_from"] is None)
    problems += [f"v{v} has {n} registered_model materializations for one promotion"
                 for v, n in promoted.items() if n > 1]
    for r in state.registered:
        if r["rolled_back_from"] == r["version"]:
            problems.append(f"a rollback recorded v{r['version']} -> itself")
    return problems


def convergence_violations(state: WorldState) -> list[str]:
    """What must hold once the recovery the product offers has run."""
    problems = safety_violations(state)
    if state.model_tags.get(INTENT_TAG):
        problems.append(f"a promotion intent is still open: {state.model_tags[INTENT_TAG]}")
    if state.champion_of_record != state.champion:
        problems.append(f"champion of record v{state.champion_of_record} but the alias is on v{state.champion}")
    pending = [v for v, t in state.versions.items() if t.get("approval") in (None, "pending")
               and t.get("gate_passed") is None]
    if pending:
        problems.append(f"versions never judged nor abandoned: {pending}")
    if state.running_mlflow_runs:
        problems.append(f"MLflow runs left RUNNING: {state.running_mlflow_runs}")
    if state.in_progress_runs:
        problems.append(f"Dagster runs still in progress: {state.in_progress_runs}")
    return problems


def every_write(writes: list[dict], stage: str) -> list[str]:
    """Before each write of `stage`, after its last one, and after its Dagster record."""
    numbers = [w["n"] for w in writes if w["stage"] == stage]
    return [f"write:{n}" for n in numbers] + [f"after:{numbers[-1]}", f"event:{stage}"]


VERSION_CREATED = ("mlflow.create_model_version", "mlflow._create_model_version")


def first_write(writes: list[dict], stage: str, methods, detail: str | None = None) -> int | None:
    """The number of the first write of `stage` by one of `methods` (with `detail` among its
    words), or None."""
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    for w in writes:
        if w["stage"] == stage and w["method"] in methods and (detail is None or detail in w["detail"].split()):
            return w["n"]
    return None


def training_kill_points(writes: list[dict]) -> list[str]:
    """A spread across `trained_model` and `evaluation_report`, chosen where what is recorded
    changes kind: the MLflow run opens, the version appears, is owned, labelled, judged. A
    landmark the current code does not write (e.g. tags set with the version) is skipped."""
    train = [w["n"] for w in writes if w["stage"] == "trained_model"]
    evaluate = [w["n"] for w in writes if w["stage"] == "evaluation_report"]
    assert train and evaluate, f"no training or evaluation writes: {writes}"
    version = first_write(writes, "trained_model", VERSION_CREATED)
    gate = (first_write(writes, "evaluation_report", "mlflow.set_model_version_tag", "gate_passed")
            or first_write(writes, "evaluation_report", "mlflow.set_model_version_tag"))
    landmarks = [
        ("write", train[0]),                                                          # before the MLflow run
        ("write", first_write(writes, "trained_model", "mlflow.log_model_artifacts")),  # run open, no version
        ("write", version), ("after", version),                                       # the version appears
        ("write", first_write(writes, "trained_model", "mlflow.set_model_version_tag", "approval")),
        ("write", first_write(writes, "trained_model", "mlflow.set_registered_model_alias")),  # challenger
        ("after", train[-1]), ("event", "trained_model"),                             # all but / with the record
        ("write", evaluate[0]), ("after", gate), ("event", "evaluation_report"),      # before / at the verdict
    ]
    return list(dict.fromkeys(f"{mode}:{n}" for mode, n in landmarks if n is not None))


def promotion_kill_points(writes: list[dict], stage: str) -> list[str]:
    """A sample of a promotion's or rollback's writes where what is recorded changes kind:
    nothing yet, the intent open, the target tagged but not serving, the alias moved, all but
    the record, the record stored."""
    numbers = [w["n"] for w in writes if w["stage"] == stage]
    assert numbers, f"no {stage} writes: {writes}"
    intent = first_write(writes, stage, "mlflow.set_registered_model_tag")
    alias = first_write(writes, stage, "mlflow.set_registered_model_alias")
    landmarks = [("write", numbers[0]), ("after", intent), ("write", alias), ("after", alias),
                 ("after", numbers[-1]), ("event", stage)]
    return list(dict.fromkeys(f"{mode}:{n}" for mode, n in landmarks if n is not None))


def describe(kill: str, writes: list[dict]) -> str:
    mode, _, arg = kill.partition(":")
    if mode == "event":
        return f"after the {arg} materialization was stored"
    row = next(w for w in writes if w["n"] == int(arg))
    return f"{'before' if mode == 'write' else 'after'} {row['method']} {row['detail'][:60]} ({row['stage']})"


def timed(fn):
    start = time.monotonic()
    value = fn()
    return value, time.monotonic() - start
