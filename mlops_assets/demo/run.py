"""`make demo`: the whole lifecycle, headless, under a real `dagster-daemon`, state under .demo/.

Day 1 lands -> the new-data sensor bootstraps all seven assets. Day 2 lands with drift -> the
ingest run's drift report flags it -> the retrain sensor's run retrains -> the gate promotes or
holds the new version -> the batch-inference schedule, ticked now (its cron is 06:00), scores
every partition with the champion. Then the daemon group stops. (`mlops-assets run --once`
also ticks the drift-check schedule; the demo leaves it to its cron to stay within 90 s.)

It goes through what a deployment runs (the machinery of `mlops-assets run`,
mlops_assets/cli/deployment.py): the daemon evaluates the sensors and launches their runs into
its code server, so `make dev` afterwards shows the ticks, their skip reasons and runs
launched by their sensor or schedule. The code location is named like the one workspace.yaml
loads (`mlops_assets.demo.definitions`), so the UI finds this history under its own sensors.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

LOCATION_NAME = "mlops_assets.demo.definitions"    # as workspace.yaml's python_module names it
SENSOR_INTERVAL_S = 5                              # the demo's 15 s, shortened while it runs
DEADLINE_S = 840


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    from mlops_assets.cli.common import quiet_environment, timed_printer

    quiet_environment()
    say = timed_printer(started)
    from mlops_assets.demo import demo_dir

    root = demo_dir()
    if root.exists():
        shutil.rmtree(root)
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("dagster.yaml"), home / "dagster.yaml")
    os.environ.setdefault("MLOPS_DEMO_DIR", str(root))

    from mlops_assets.cli.deployment import Automation, Deployment, DeploymentError
    from mlops_assets.cli.target import open_instance
    from mlops_assets.demo import demo_spec
    from mlops_assets.demo.data import write_day
    from mlops_assets.demo.summary import print_summary
    from mlops_assets.pipeline import Pipeline

    spec = demo_spec(root)
    spec_file = root / "demo_spec.yaml"      # the spec the code location loads: demo_spec(root) as YAML
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    pipeline = Pipeline(spec)
    landing = Path(spec.source.path)
    instance = open_instance(home)
    deployment = Deployment(spec_file, spec.name, home, root / "automation", location_name=LOCATION_NAME,
                            overrides={"automation.sensor_interval_seconds": SENSOR_INTERVAL_S})
    deadline = time.monotonic() + DEADLINE_S
    say(f"demo pipeline {spec.name!r} under {root}")
    day1 = write_day(landing, dt.date(2026, 1, 1), n_rows=20_000, seed=7, day_index=0)
    say(f"day 1 landed: {day1.name}")
    try:
        deployment.start()
        with Automation(deployment, instance, pipeline, say=say, width=92, quiet_skips=_routine) as auto:
            auto.switch_on()
            say(f"dagster-daemon up, sensors and schedules on (logs: {_short(deployment.logs, root)})")
            auto.wait_first_run(deadline)          # the bootstrap, once the new-data sensor took day 1
            auto.wait_runs(deadline)
            day2 = write_day(landing, dt.date(2026, 1, 2), n_rows=20_000, seed=7, drift=0.9, day_index=1)
            say(f"day 2 landed, drifted: {day2.name}")
            auto.settle(deadline)                  # ingest -> drift -> retrain, until the sensors are quiet
            auto.tick_schedule_now(pipeline.schedule("batch_inference"), requested_by="make demo")
            auto.wait_runs(deadline)
            failed = [o for o in auto.outcomes.values() if not o.ok]
    except (DeploymentError, TimeoutError) as exc:
        say(f"demo failed: {exc}")
        say(f"daemon group stopped ({deployment.stop()}); logs in {deployment.logs}")
        return 1
    deployment.begin_stop()                        # SIGTERM now; the summary reads the stores meanwhile
    try:
        print_summary(spec, instance, root, time.perf_counter() - started,
                      stopped=lambda: f"daemon group stopped ({deployment.stop()})")
    finally:
        instance.dispose()
    if failed:
        print(f"demo: {len(failed)} run(s) failed: " + "; ".join(f"{o.job_name} {o.run_id[:8]}" for o in failed))
        return 1
    return 0


def _routine(name: str, text: str) -> bool:
    """Skip reasons not worth a line of the demo: only the retrain sensor's and the schedules' say
    something about the story."""
    return not name.endswith(("_retrain_sensor", "_schedule")) or text.startswith("no new files")


def _short(path: Path, root: Path) -> str:
    try:
        return f".demo/{path.relative_to(root)}" if root.name == ".demo" else str(path)
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
