"""The command's surface: help, finding the pipeline (spec, name, Component defs.yaml), usage errors.

Fast: no run is launched (except `run --watch`, stopped on its first quiet tick).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import textwrap
import time

import pytest
import yaml

from mlops_assets.cli import build_parser
from mlops_assets.cli.target import TargetError, dagster_home, load_target
from mlops_assets_tests.cli.helpers import CLI, cli_env, leftover_processes, run_cli, stop_group
from mlops_assets_tests.conftest import small_spec

COMMANDS = ("init", "ingest", "run", "status", "doctor", "serve", "stream")


def _spec_file(root, name="churn", **changes):
    data = small_spec(root).model_dump(mode="json")
    data.update(name=name, state_dir=".mlops")
    data["source"]["path"] = "landing"
    data.update(changes)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, data


def test_every_command_has_help(tmp_path):
    r = run_cli(["--help"], tmp_path, timeout=120)
    assert r.returncode == 0 and all(c in r.stdout for c in COMMANDS), r
    parser = build_parser()
    for command in COMMANDS:
        with pytest.raises(SystemExit) as done:
            parser.parse_args([command, "--help"])
        assert done.value.code == 0


def test_the_pipeline_is_found_by_path_name_or_component(tmp_path, monkeypatch):
    path, data = _spec_file(tmp_path)
    assert load_target(str(path)).spec.name == "churn"
    assert load_target("churn", cwd=tmp_path).path == path
    monkeypatch.setenv("MLOPS_SPEC", str(path))
    assert load_target(None).name == "churn"
    monkeypatch.delenv("MLOPS_SPEC")
    with pytest.raises(TargetError, match="no pipeline 'nope'"):
        load_target("nope", cwd=tmp_path)

    # A Component defs.yaml: templates rendered, relative paths from its folder, its resources used.
    folder = tmp_path / "defs" / "loans"
    folder.mkdir(parents=True)
    attributes = {k: v for k, v in data.items() if k != "name"}
    attributes.update(name="loans", mlflow_tracking_uri="{{ env.LOANS_MLFLOW }}")
    (folder / "defs.yaml").write_text(yaml.safe_dump({"type": "mlops_assets.MLOpsPipelineComponent",
                                                      "attributes": attributes}, sort_keys=False))
    monkeypatch.setenv("LOANS_MLFLOW", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    target = load_target(str(folder))
    assert target.kind == "component" and target.name == "loans"
    assert target.spec.source.path == str(folder / "landing")
    assert target.registry().tracking_uri == f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert dagster_home(target, create=False) == (folder / ".mlops" / "dagster_home").resolve()
    monkeypatch.delenv("LOANS_MLFLOW")
    assert load_target(str(folder)).resources.get("registry") is None    # unset: the embedded store


def test_usage_errors_exit_2_and_say_why(tmp_path):
    r = run_cli(["status", "nope"], tmp_path, timeout=120)
    assert r.returncode == 2 and "no pipeline 'nope'" in r.stderr, r
    r = run_cli(["init", "missing.csv", "--target", "y"], tmp_path, timeout=120)
    assert r.returncode == 2 and "is not a file" in r.stdout, r
    (tmp_path / "tiny.csv").write_text("a,b\n1,2\n")
    r = run_cli(["init", "tiny.csv", "--target", "z"], tmp_path, timeout=120)
    assert r.returncode == 1 and "target column 'z'" in r.stdout, r
    path, _ = _spec_file(tmp_path, source={"asset_key": ["raw", "loans"]})
    (tmp_path / "x.csv").write_text("a\n1\n")
    r = run_cli(["ingest", str(path), "x.csv"], tmp_path, timeout=120)
    assert r.returncode == 2 and "upstream asset raw/loans" in r.stdout, r


@pytest.mark.timeout(600)
def test_run_watch_stops_on_ctrl_c_and_switches_back_off(tmp_path, monkeypatch):
    """Nothing to do (an empty landing folder): it starts, ticks, and a SIGINT stops it cleanly."""
    import dagster as dg

    path, _ = _spec_file(tmp_path)
    (tmp_path / "landing").mkdir()
    proc = subprocess.Popen([*CLI, "run", str(path), "--watch", "--sensor-interval", "5"], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "churn_retrain_sensor: no retrain" in line:    # the daemon ticks: the group is up
                break
        assert any("watching" in ln for ln in lines), "".join(lines)
        os.kill(proc.pid, signal.SIGINT)                   # Ctrl-C reaches the command, not the daemon group
        out, _ = proc.communicate(timeout=120)
        lines.append(out)
    finally:
        stop_group(proc)
    text = "".join(lines)
    print(text)
    assert proc.returncode == 0, text
    assert "stopping" in text and "code server and daemon stopped (SIGTERM" in text, text
    assert leftover_processes(str(tmp_path / ".mlops")) == []
    home = tmp_path / ".mlops" / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))       # its dagster.yaml reads it
    instance = dg.DagsterInstance.from_config(str(home))
    states = {s.instigator_name: s.status.value for s in instance.all_instigator_state()}
    instance.dispose()
    assert states["churn_new_data_sensor"] == "STOPPED" and states["churn_batch_inference_schedule"] == "STOPPED"


def test_init_names_the_pipeline_after_the_file(tmp_path):
    from mlops_assets.demo.data import write_day

    write_day(tmp_path / "in", dt.date(2026, 1, 1), n_rows=300, fmt="parquet")
    r = run_cli(["init", "in/loans_2026-01-01.parquet", "--target", "defaulted", "--landing", "landing"],
                tmp_path, timeout=120)
    assert r.returncode == 0, r
    text = (tmp_path / "loans.yaml").read_text()
    assert "name: loans" in text and "path: landing" in text and "format: parquet" in text
    assert "mlops-assets ingest loans.yaml" in r.stdout      # the sample is not in the landing folder
    assert textwrap.dedent(text).count("REVIEW") >= 3
