"""Shared fixtures: a small demo spec under a temp dir, and demo data."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest

# Never let a test reach for the network or a user's MLflow server.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)


def small_spec(root, **overrides):
    """The demo spec, smaller and faster: fewer trees, lower row floor."""
    from mlops_assets.demo import demo_spec

    spec = demo_spec(root)
    data = spec.model_dump(mode="json")
    data["min_rows"] = 200
    data["model"]["lightgbm"]["num_boost_round"] = 80
    data["drift"]["evidently_sample_rows"] = 5_000
    data["source"]["settle_seconds"] = 0.0
    for key, value in overrides.items():
        data[key] = value
    from mlops_assets.spec import PipelineSpec

    return PipelineSpec.from_dict(data)


@pytest.fixture
def spec(tmp_path):
    return small_spec(tmp_path)


@pytest.fixture(scope="session")
def loans_day1() -> pl.DataFrame:
    from mlops_assets.demo.data import generate_loans

    return pl.from_pandas(generate_loans(6_000, day=dt.date(2026, 1, 1), seed=3))


@pytest.fixture(scope="session")
def loans_drifted() -> pl.DataFrame:
    from mlops_assets.demo.data import generate_loans

    return pl.from_pandas(generate_loans(6_000, day=dt.date(2026, 1, 2), seed=3, drift=0.9, id_offset=10_000_000))


WEBHOOK_SECRET = "T000-SECRET-TOKEN-42"


@pytest.fixture
def webhook():
    """A real webhook receiver; `fail_first` makes its first N requests answer 500."""
    state = {"bodies": [], "fail_first": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state["fail_first"] > 0:
                state["fail_first"] -= 1
                self.send_response(500)
                self.end_headers()
                return
            state["bodies"].append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/hooks/{WEBHOOK_SECRET}"
    yield state
    server.shutdown()
    server.server_close()


# -- background load -------------------------------------------------------------------------
# `MLOPS_TEST_CPU_HOG=N make test` runs the suite with N busy-looping processes beside it, the way
# a shared CI machine loads it. Tests must pass either way: no test asserts a duration, and
# the daemon tests wait on progress, not on a fixed deadline.
_HOGS: list = []
# Busy, but it ends by itself once the session that started it is gone (a killed pytest never
# reaches sessionfinish): it checks its parent every few milliseconds of spinning.
_HOG_LOOP = """
import os, sys
parent = int(sys.argv[1])
while os.getppid() == parent:
    for _ in range(200_000):
        pass
"""


# The test files that run for minutes (real daemons, SIGKILL drills, the 11-day loop), measured
# under load. They are collected first, so parallel workers (`make test`: pytest-xdist,
# one file per worker, handed out in collection order) start them at once instead of ending
# the run waiting on one of them.
LONG_RUNNING = (
    "e2e/test_loop.py", "faults/test_kill_drills.py", "e2e/test_daemon.py", "services/test_postgres.py",
    "e2e/test_demo.py", "e2e/test_dead_runs.py", "e2e/test_training_crash.py", "cli/test_cli_pipeline.py",
    "stages/test_evaluation_report.py", "e2e/test_lifecycle.py", "automation/test_release.py",
    "faults/test_registry_faults.py",
)


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0].removeprefix("mlops_assets_tests/")
        return LONG_RUNNING.index(path) if path in LONG_RUNNING else len(LONG_RUNNING)

    items.sort(key=rank)     # stable: the order inside each group is pytest's own


def pytest_sessionstart(session):
    import subprocess
    import sys

    if os.environ.get("PYTEST_XDIST_WORKER"):
        return      # the hogs belong to the controlling session, not to each parallel worker
    count = int(os.environ.get("MLOPS_TEST_CPU_HOG", "0") or 0)
    for _ in range(count):
        _HOGS.append(subprocess.Popen([sys.executable, "-c", _HOG_LOOP, str(os.getpid())], start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def pytest_sessionfinish(session, exitstatus):
    for hog in _HOGS:
        hog.kill()
        hog.wait(timeout=10)
    _HOGS.clear()
