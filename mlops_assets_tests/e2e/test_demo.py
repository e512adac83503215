"""`make demo` end to end: exits 0, prints the summary, leaves the promised state behind."""

import os
import subprocess
import sys

import dagster as dg

from mlops_assets.pipeline import LIFECYCLE as STAGES


def test_demo_runs_headless_and_leaves_the_promised_state(tmp_path, monkeypatch):
    root = tmp_path / "demo"
    env = {**os.environ, "MLOPS_DEMO_DIR": str(root)}
    env.pop("DAGSTER_HOME", None)
    out = subprocess.run([sys.executable, "-m", "mlops_assets.demo.run"], env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "=== mlops-assets demo summary ===" in out.stdout
    assert "demo finished in" in out.stdout and "evidently report:" in out.stdout

    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster_home"))   # the demo's dagster.yaml reads it
    instance = dg.DagsterInstance.from_config(str(root / "dagster_home"))
    try:
        for stage in STAGES:
            assert instance.get_latest_materialization_event(dg.AssetKey(["demo", stage])), stage
    finally:
        instance.dispose()

    from mlops_assets.definitions import default_registry
    from mlops_assets.demo import demo_spec

    champion = default_registry(demo_spec(root)).version_by_alias("demo", "champion")
    assert champion is not None
    for tag in ("data_version", "code_version", "spec_hash", "dagster_run_id"):
        assert champion.tags.get(tag), tag
