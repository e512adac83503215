"""One lifecycle step in its own process, for the fault drills: it may be SIGKILLed at any write.

Usage: python -m mlops_assets_tests.faults.worker WORLD_DIR STEP [KILL]
       python -m mlops_assets_tests.faults.worker --serve

`--serve` is a fork server: it imports the heavy libraries once, then for each request on stdin
(one JSON line: world, step, kill, log) forks a child that runs the step exactly as a fresh
process would, waits for it and answers with its exit status (one JSON line). The child is a
real process: the kill is a real SIGKILL of it. Nothing touches a store before the fork.

STEP is what the product runs:
  retrain    one tick of the retrain sensor, and the run it requests (train -> evaluate ->
             register, or the recovery subset the decision chooses), executed in this process;
  rollback   the rollback job, default target, reason "drill".
KILL is where this process kills itself with SIGKILL (no clean-up, no atexit, no finally):
  write:N            just before write number N (1-based);
  after:N            just after write number N returned;
  event:STAGE        just after the Dagster materialization of STAGE (or `rollback`: the
                     rollback's registered_model event) was stored;
  (none)             run to the end: the uninterrupted run that counts the writes.

A write is one outermost call that changes recorded state: an MlflowClient write (aliases,
model and version tags, versions, runs, params, metrics, inputs, artifacts), an MLflow
artifact-repository upload, or an ArtifactStore write. The wrappers are installed on the
classes of this process only: production code has no hooks. Every write is appended to
WORLD_DIR/trace.jsonl before it runs, so the test sees exactly where the kill landed.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
from pathlib import Path

# What counts as a write. Names missing from the installed MLflow are skipped.
MLFLOW_CLIENT_WRITES = (
    "create_experiment", "set_experiment_tag", "create_run", "update_run", "set_terminated",
    "delete_run", "log_metric", "log_param", "log_batch", "log_inputs", "log_outputs", "log_dict",
    "log_text", "log_figure", "log_image", "log_table", "log_artifact", "log_artifacts", "set_tag",
    "delete_tag", "create_registered_model", "update_registered_model", "set_registered_model_tag",
    "delete_registered_model_tag", "create_model_version", "update_model_version",
    "set_model_version_tag", "delete_model_version_tag", "set_registered_model_alias",
    "delete_registered_model_alias", "create_logged_model", "finalize_logged_model",
    "set_logged_model_tags", "delete_logged_model_tag", "log_model_artifacts", "log_model_params",
    "_create_model_version", "_create_logged_model",
)
ARTIFACT_REPO_WRITES = ("log_artifact", "log_artifacts")
STORE_WRITES = ("write_bytes", "write_parquet", "write_json", "write_file")
STAGES = ("trained_model", "evaluation_report", "registered_model", "rollback_champion")

_depth = threading.local()


class Trace:
    def __init__(self, path: Path, kill: str | None):
        self.path = path
        self.count = 0
        mode, _, arg = (kill or "").partition(":")
        self.mode, self.arg = mode or None, arg
        self.lock = threading.Lock()

    def _append(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def before(self, method: str, detail: str) -> int:
        with self.lock:
            self.count += 1
            n = self.count
        row = {"n": n, "method": method, "stage": current_stage(), "detail": detail[:200]}
        if self.mode == "write" and n == int(self.arg):
            self._append({**row, "killed": "before"})
            die()
        self._append(row)
        return n

    def after(self, n: int) -> None:
        if self.mode == "after" and n == int(self.arg):
            self._append({"n": n, "killed": "after"})
            die()

    def stored(self, stage: str) -> None:
        self._append({"event": stage})
        if self.mode == "event" and stage == self.arg:
            self._append({"event": stage, "killed": "event"})
            die()


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def current_stage() -> str | None:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name in STAGES and "mlops_assets" in frame.f_code.co_filename:
            return "rollback" if frame.f_code.co_name == "rollback_champion" else frame.f_code.co_name
        frame = frame.f_back
    return None


def _describe(args, kwargs) -> str:
    parts = [a if isinstance(a, str) else type(a).__name__ for a in args[1:4]]
    parts += [f"{k}={v}" for k, v in kwargs.items() if isinstance(v, str | int | float)][:3]
    return " ".join(str(p) for p in parts)


def _wrap(cls, name: str, label: str, trace: Trace) -> None:
    original = cls.__dict__.get(name)
    if original is None or getattr(original, "_fault_wrapped", False):
        return

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        depth = getattr(_depth, "n", 0)
        if depth:                      # a write inside a write: the outer one counts
            return original(*args, **kwargs)
        n = trace.before(f"{label}.{name}", _describe(args, kwargs))
        _depth.n = depth + 1
        try:
            result = original(*args, **kwargs)
        finally:
            _depth.n = depth
        trace.after(n)
        return result

    wrapper._fault_wrapped = True
    setattr(cls, name, wrapper)


def install(trace: Trace) -> None:
    """Count (and maybe kill at) every write this process makes. Test double only."""
    import dagster as dg
    from mlflow import MlflowClient
    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from mlops_assets.resources.storage import ArtifactStore

    for name in MLFLOW_CLIENT_WRITES:
        _wrap(MlflowClient, name, "mlflow", trace)
    for cls in (ArtifactRepository, LocalArtifactRepository):
        for name in ARTIFACT_REPO_WRITES:
            _wrap(cls, name, "artifacts", trace)
    for name in STORE_WRITES:
        _wrap(ArtifactStore, name, "store", trace)

    original = dg.DagsterInstance.handle_new_event

    def handle_new_event(self, event, *args, **kwargs):
        result = original(self, event, *args, **kwargs)
        dagster_event = event.dagster_event
        if dagster_event is not None and dagster_event.is_step_materialization:
            mat = dagster_event.step_materialization_data.materialization
            stage = mat.asset_key.path[-1]
            if stage == "registered_model" and "rolled_back_from" in mat.metadata:
                stage = "rollback"
            trace.stored(stage)
        return result

    dg.DagsterInstance.handle_new_event = handle_new_event


def main(world_dir: str, step: str, kill: str | None = None) -> int:
    import dagster as dg

    from mlops_assets.automation.inline import InlineAutomation
    from mlops_assets.definitions import build_mlops_defs
    from mlops_assets.pipeline import Pipeline
    from mlops_assets.spec import PipelineSpec

    root = Path(world_dir)
    trace = Trace(root / "trace.jsonl", kill)
    install(trace)
    spec = PipelineSpec.from_yaml(root / "spec.yaml")
    pipeline = Pipeline(spec)
    defs = build_mlops_defs(spec)
    with dg.DagsterInstance.from_config(str(root / "dagster_home")) as instance:
        if step == "retrain":
            outcome = InlineAutomation(defs, instance, log_level="WARNING").tick_sensor(pipeline.sensor("retrain"))
            results = outcome.launched
            note = outcome.skip_reason or ""
        elif step == "rollback":
            job = defs.resolve_job_def(pipeline.job("rollback"))
            config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}},
                      "ops": {f"{pipeline.name}_rollback_champion": {"config": {"reason": "drill"}}}}
            results = [job.execute_in_process(instance=instance, run_config=config, raise_on_error=False)]
            note = ""
        else:
            raise SystemExit(f"unknown step {step!r}")
    summary = {"runs": [r.run_id for r in results], "success": [r.success for r in results],
               "writes": trace.count, "note": note}
    print("RESULT " + json.dumps(summary), flush=True)
    return 0


PRELOAD = (
    "dagster", "mlflow", "mlflow.pyfunc", "mlflow.data.pandas_dataset", "mlflow.models",
    "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store", "lightgbm",
    "onnxruntime", "onnxmltools", "matplotlib", "mlops_assets.definitions", "mlops_assets.automation.inline",
    "mlops_assets.core.evaluation", "mlops_assets.core.plots", "mlops_assets.core.training",
    "mlops_assets.core.onnx_export", "mlops_assets.resources.mlflow_runs",
)


def _run_child(request: dict) -> None:
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(request.get("env", {}))
    code = 1
    try:
        code = main(request["world"], request["step"], request.get("kill"))
    except BaseException:                       # noqa: BLE001 (reported through the log)
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> int:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    protocol = sys.stdout
    print("READY", file=protocol, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_child(request)
        print(json.dumps({"started": pid}), file=protocol, flush=True)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"pid": pid, "returncode": code}), file=protocol, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else main(*sys.argv[1:]))
