"""Running `mlops-assets` as a user would: a subprocess in its own process group, stopped as a group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlops_assets_tests.waiting import stop_group

CLI = [sys.executable, "-m", "mlops_assets.cli"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self):
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"rc={self.returncode} ({self.seconds:.1f}s)\n--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"


def cli_env(**extra) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    env.pop("DAGSTER_HOME", None)            # each pipeline's own <state_dir>/dagster_home
    env.pop("MLOPS_SPEC", None)
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> Result:
    started = time.perf_counter()
    proc = subprocess.Popen([*CLI, *args], cwd=cwd, env=env or cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        out, err = proc.communicate()
        raise AssertionError(f"`mlops-assets {' '.join(args)}` still running after {timeout:.0f}s\n{out}\n{err}") from None
    finally:
        stop_group(proc, grace=5.0)
    result = Result(proc.returncode, out, err, time.perf_counter() - started)
    print(f"$ mlops-assets {' '.join(args)}  ({result.seconds:.1f}s)\n{out}", flush=True)
    return result


def leftover_processes(marker: str) -> list[str]:
    """Processes (not this one) whose command line or DAGSTER_HOME mentions `marker`."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            text = " ".join(proc.info["cmdline"] or [])
            home = proc.environ().get("DAGSTER_HOME", "") if marker not in text else ""
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if proc.pid != os.getpid() and (marker in text or marker in home):
            found.append(f"{proc.pid} {text[:160]}")
    return found
