"""Running one step in a worker process (`faults/worker.py`) that may SIGKILL itself, and
choosing where: the kill points, read from an uninterrupted run's write trace."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

WORKER = "mlops_assets_tests.faults.worker"


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


# -- kill points ---------------------------------------------------------------------------------
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

