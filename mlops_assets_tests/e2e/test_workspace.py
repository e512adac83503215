"""`make dev`'s workspace loads, and a real webserver serves the seven demo assets."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    return {**os.environ, "DAGSTER_HOME": str(home), "MLOPS_DEMO_DIR": str(tmp_path / "demo")}


def test_workspace_validates(tmp_path):
    out = subprocess.run([str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
                         cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "All code locations passed validation" in out.stdout + out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webserver(tmp_path):
    port = _free_port()
    log = open(tmp_path / "webserver.log", "w")  # noqa: SIM115  (the server writes to it while it runs)
    proc = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=_env(tmp_path), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", tmp_path / "webserver.log"
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        log.close()


def _graphql(url: str, query: str) -> dict:
    req = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_webserver_serves_the_demo_assets(webserver):
    url, log = webserver
    deadline = time.time() + 150
    nodes = None
    while time.time() < deadline:
        try:
            data = _graphql(url, "{ assetNodes { assetKey { path } groupName } }")
            nodes = data.get("data", {}).get("assetNodes")
            if nodes:
                break
        except OSError:
            pass
        time.sleep(2)
    assert nodes, "webserver never served asset nodes:\n" + log.read_text()[-3000:]
    keys = {tuple(n["assetKey"]["path"]) for n in nodes if n["groupName"] == "demo"}
    assert keys == {("demo", s) for s in ("raw_data", "validated_features", "trained_model", "evaluation_report",
                                           "registered_model", "batch_predictions", "drift_report")}
