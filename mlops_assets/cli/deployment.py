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
- `Automation` (automation_client.py) is the client side, in this process, on the same
  workspace file: it switches the pipeline's sensors and schedules on and back off, watches
  ticks and runs, and ticks a schedule *now*. What it reports (ticks, run outcomes, their
  one-line descriptions) is plain records, in deployment_events.py.

The client side is re-exported here, so `from mlops_assets.cli.deployment import Automation`
keeps working for the commands that drive a deployment.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mlops_assets.cli.automation_client import REQUESTED_BY_TAG, Automation
from mlops_assets.cli.deployment_events import (
    IN_FLIGHT,
    DeploymentError,
    RunOutcome,
    TickEvent,
    files_waiting,
    first_line,
    run_failure_detail,
)

__all__ = [
    "IN_FLIGHT",
    "REQUESTED_BY_TAG",
    "Automation",
    "Deployment",
    "DeploymentError",
    "RunOutcome",
    "TickEvent",
    "files_waiting",
    "first_line",
    "run_failure_detail",
    "tail",
]

LOCATION_MODULE = '''\
"""Code location written by `mlops-assets run` for the pipeline {name!r}; rewritten on every run.

The pipeline's own definitions (see mlops_assets/cli/location.py). To look at it in the UI:
    DAGSTER_HOME={home} dagster dev -w {workspace}
"""

from mlops_assets.cli.location import pipeline_defs

defs = pipeline_defs({target!r}, executor={executor!r}, overrides={overrides!r})
'''

STOP_GRACE_S = 30.0


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
