"""A new pipeline from `mlops-assets init` on a CSV reaches a champion with `mlops-assets run`.

End to end, as a user types it: `init` on one day of the demo generator's data written as CSV,
`run` (once: a real dagster-daemon in its own process group), `status --json`, `ingest` of a
second file from elsewhere, `status` again, `serve` of the champion. Slow: real processes for
every run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import dagster as dg
import pytest

from mlops_assets.demo.data import write_day
from mlops_assets.spec import PipelineSpec
from mlops_assets_tests.cli.helpers import CLI, cli_env, leftover_processes, run_cli, stop_group

ROWS = 5_000


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    write_day(root / "landing", dt.date(2026, 1, 1), n_rows=ROWS, seed=1, day_index=0, fmt="csv")
    write_day(root / "exports", dt.date(2026, 1, 2), n_rows=ROWS, seed=2, day_index=1, fmt="csv")
    return root


@pytest.mark.timeout(1_500)
def test_init_run_status_ingest(project, monkeypatch):
    # init: a starting spec that loads, next to the data
    r = run_cli(["init", "landing/loans_2026-01-01.csv", "--target", "defaulted"], project)
    assert r.returncode == 0, r
    assert "wrote" in r.stdout and "mlops-assets run loans.yaml" in r.stdout
    spec = PipelineSpec.from_yaml(project / "loans.yaml")
    assert (spec.name, spec.task, spec.id_column, spec.timestamp_column) == ("loans", "binary", "loan_id", "applied_at")
    assert spec.source.path == str(project / "landing") and spec.source.format == "csv"
    again = run_cli(["init", "landing/loans_2026-01-01.csv", "--target", "defaulted"], project, timeout=120)
    assert again.returncode == 2 and "--force" in again.stdout

    # run --once: the new-data sensor bootstraps under the daemon; the schedules are ticked now
    r = run_cli(["run", "loans", "--sensor-interval", "5"], project, timeout=900)
    assert r.returncode == 0, r
    out = r.stdout
    assert "loans_new_data_sensor -> loans_bootstrap_job" in out, out
    assert "loans_batch_inference_schedule: every accepted partition is scored by champion v1" in out, out
    assert "champion: v1" in out and "code server and daemon stopped (SIGTERM" in out, out
    assert leftover_processes(str(project / ".mlops")) == []

    status = run_cli(["status", "loans", "--json"], project, timeout=180)
    assert status.returncode == 0, status
    s = status.json()
    assert s["champion"] == {"of_record": "1", "alias": "1", "agree": True}
    assert [v["approval"] for v in s["versions"]] == ["approved"]
    assert s["partitions"][0]["validation"] == "accepted" and s["partitions"][0]["scored_by"] == "1"
    assert s["retrain_decision"]["act"] is False and "nothing new to learn" in s["retrain_decision"]["reason"]
    auto = {a["name"]: a for a in s["automation"]}
    assert auto["loans_new_data_sensor"]["status"] == "STOPPED"          # switched back off
    assert auto["loans_batch_inference_schedule"]["last_tick_status"] == "SKIPPED"
    assert s["recent_runs"][0]["launched_by"] == "loans_new_data_sensor"
    assert s["in_flight"] == []

    # The daemon's ticks and runs are in the instance, under the code location `run` served.
    monkeypatch.setenv("DAGSTER_HOME", str(project / ".mlops" / "dagster_home"))   # its dagster.yaml reads it
    instance = dg.DagsterInstance.from_config(str(project / ".mlops" / "dagster_home"))
    try:
        run = instance.get_runs(filters=dg.RunsFilter(job_name="loans_bootstrap_job"))[0]
        assert run.tags["dagster/sensor_name"] == "loans_new_data_sensor"
        assert run.tags["dagster/code_location"] == "loans"
        assert run.status == dg.DagsterRunStatus.SUCCESS
    finally:
        instance.dispose()

    # ingest: a file from elsewhere is copied in, registered and run now (the ingest job)
    r = run_cli(["ingest", "loans", "exports/loans_2026-01-02.csv"], project, timeout=600)
    assert r.returncode == 0, r
    assert "running loans_ingest_job" in r.stdout and "SUCCESS" in r.stdout, r
    assert "validated_features: accepted" in r.stdout and "scored by v1" in r.stdout, r
    assert (project / "landing" / "loans_2026-01-02.csv").read_bytes() == \
        (project / "exports" / "loans_2026-01-02.csv").read_bytes()
    s = run_cli(["status", "loans", "--json"], project, timeout=180).json()
    assert [p["partition"] for p in s["partitions"]] == ["loans_2026-01-01.csv", "loans_2026-01-02.csv"]
    assert all(p["scored_by"] == "1" for p in s["partitions"])
    assert s["recent_runs"][0]["launched_by"] == "mlops-assets ingest"

    # a file that cannot be a partition key is refused with the rule, and nothing is landed
    bad = project / "exports" / "my data.csv"
    bad.write_text("a,b\n1,2\n")
    r = run_cli(["ingest", "loans", str(bad)], project, timeout=120)
    assert r.returncode == 1 and "refused" in r.stdout, r
    assert not (project / "landing" / "my data.csv").exists()
    # ...and a different file under a name already landed is refused: the landing folder keeps its file
    r = run_cli(["ingest", "loans", str(bad), "--as", "loans_2026-01-02.csv"], project, timeout=120)
    assert r.returncode == 1 and "other content" in r.stdout, r

    # serve: the champion of the pipeline's own registry, no tracking URI typed; SIGTERM stops it
    port = _free_port()
    proc = subprocess.Popen([*CLI, "serve", "loans", "--port", str(port), "--poll-seconds", "5"], cwd=project,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        ready = _wait_ready(f"http://127.0.0.1:{port}/readyz", proc, timeout=240)
        assert ready["ready"] is True and str(ready["model_version"]) == "1", ready
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        stop_group(proc)
    assert proc.returncode == 0, proc.stdout.read()[-3000:]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except (OSError, ValueError) as exc:       # not listening yet, or 503 while loading
            last = exc
        time.sleep(1.0)
    raise AssertionError(f"{url} not ready after {timeout:.0f}s: {last}")
