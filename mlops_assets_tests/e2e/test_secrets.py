"""Credentials never leak: a planted password in the MLflow tracking URI and a planted webhook
token are searched for, byte by byte, in everything a lifecycle leaves behind: the Dagster
instance (run storage, event log, compute logs), the MLflow store (database and artifacts),
the artifact store and cache folders, and what the process printed.

The tracking server is a real `mlflow server` on 127.0.0.1 (it ignores the basic-auth
credentials, which is enough: the question is only whether our code writes them anywhere).
"""

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.automation.inline import InlineAutomation
from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import Pipeline
from mlops_assets.resources import MLflowRegistry
from mlops_assets_tests.conftest import small_spec
from mlops_assets_tests.services.conftest import free_port

PASSWORD = "S3CRET-pw-7f3e9a"
TOKEN = "T0KEN-4c1d2b8e"


@pytest.fixture
def mlflow_server(tmp_path):
    store = tmp_path / "mlflow_server"
    store.mkdir()
    port = free_port()
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--default-artifact-root", str(store / "art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env, cwd=store)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/health", proc)
        yield store, port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait_until_up(url: str, proc: subprocess.Popen, patience_s: float = 180) -> None:
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlflow server exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow server not up at {url} after {patience_s} s")


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                pass
    return hits


def test_no_planted_secret_is_written_anywhere(tmp_path, mlflow_server, webhook, monkeypatch, capfd):
    store, port = mlflow_server
    monkeypatch.setenv("MLOPS_WEBHOOK_URL", webhook["url"].replace("T000-SECRET-TOKEN-42", TOKEN))
    spec = small_spec(tmp_path / "pipeline")
    registry = MLflowRegistry(tracking_uri=f"http://alice:{PASSWORD}@127.0.0.1:{port}",
                              cache_dir=str(tmp_path / "pipeline" / "cache"))
    defs = build_mlops_defs(spec, registry=registry)
    names = Pipeline(spec)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        auto = InlineAutomation(defs, instance)
        write_day(spec.source.path, dt.date(2026, 1, 1), n_rows=3_000, seed=1)
        tick = auto.tick_sensor(names.sensor("new_data"))
        assert len(tick.launched) == 1
        assert tick.launched[0].success
        # A run that fails (a rollback with nothing to roll back to) alerts through the webhook.
        rollback = defs.resolve_job_def(names.job("rollback")).execute_in_process(
            instance=instance, raise_on_error=False,
            run_config={"ops": {f"{names.name}_rollback_champion": {"config": {"reason": "drill"}}}})
        assert not rollback.success
        failed = [instance.get_run_by_id(rollback.run_id)]
        sensor = defs.resolve_sensor_def(names.sensor("run_failure"))
        records = instance.get_records_for_run(failed[0].run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_event=records[0].event_log_entry.dagster_event,
            dagster_instance=instance, dagster_run=failed[0]).for_run_failure()
        sensor(context)
    assert webhook["bodies"], "the alert reached the webhook"
    out, err = capfd.readouterr()
    for secret in (PASSWORD, TOKEN):
        assert secret not in out and secret not in err, f"{secret} printed"
        for root in (home, store, tmp_path / "pipeline"):
            assert _files_containing(root, secret.encode()) == [], f"{secret} written under {root}"
