"""`mlops-assets run PIPELINE [--once | --watch]`: the pipeline's automation under a real daemon.

--once (the default): start the code server and `dagster-daemon` (one process group), switch
the sensors and schedules on, wait until the sensors are quiet (no run in flight, a fresh tick
of each that launched nothing), tick every schedule now (batch inference, then the drift
check, then performance), and repeat while the schedules found work; then switch back off
what it switched on and stop the group. --watch: the same start, then everything runs at its
own interval and cron until Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from mlops_assets.cli.common import quiet_environment, terminal_width, timed_printer


def open_deployment(target, home: Path, *, location_name: str | None = None, executor: str = "in_process",
                    sensor_interval: int | None = None, run_dir: str | Path | None = None):
    from mlops_assets.cli.deployment import Deployment

    overrides = {"automation.sensor_interval_seconds": sensor_interval} if sensor_interval else {}
    return Deployment(target.path, target.name, home, Path(run_dir or target.state_dir / "automation").resolve(),
                      location_name=location_name or target.name, executor=executor, overrides=overrides)


def cmd_run(args) -> int:
    quiet_environment()
    from mlops_assets.cli.deployment import Automation, DeploymentError
    from mlops_assets.cli.target import dagster_home, load_target, open_instance
    from mlops_assets.pipeline import Pipeline

    started = time.perf_counter()
    say = timed_printer(started)
    target = load_target(args.pipeline)
    if args.sensor_interval is not None and args.sensor_interval < 5:
        say("--sensor-interval must be at least 5 seconds")
        return 2
    home = dagster_home(target, args.dagster_home)
    instance = open_instance(home)
    pipeline = Pipeline(target.spec)
    deployment = open_deployment(target, home, location_name=args.location_name, executor=args.executor,
                                 sensor_interval=args.sensor_interval, run_dir=args.run_dir)
    say(f"{target.name}: starting its code server and dagster-daemon (Dagster home {home})")
    code = 0
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        deployment.start()
        with Automation(deployment, instance, pipeline, say=say, width=terminal_width() - 12,
                        quiet_skips=_routine_skip) as auto:
            switched = auto.switch_on()
            say(f"daemon up (logs in {deployment.logs}); switched on: {', '.join(switched) or 'nothing new'}")
            if args.watch:
                say("watching; Ctrl-C stops the daemon and switches the automation back off")
                try:
                    while True:
                        auto.poll()
                        time.sleep(1.0)
                except KeyboardInterrupt:
                    say("stopping")
            else:
                try:
                    auto.run_once(time.monotonic() + args.timeout)
                except TimeoutError as exc:
                    say(f"gave up after {args.timeout:.0f}s: {exc}")
                    code = 1
            code = max(code, _report(auto, say))
    except DeploymentError as exc:
        say(f"deployment failed: {exc}")
        code = 1
    except KeyboardInterrupt:
        say("interrupted")
        code = 130
    finally:
        say(f"code server and daemon stopped ({deployment.stop()})")
        signal.signal(signal.SIGTERM, previous)
        instance.dispose()
    if code == 0:
        _champion_line(target, instance_home=home, say=say)
    say(f"the UI on this history: DAGSTER_HOME={home} dagster dev -w {deployment.workspace_file}")
    return code


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _routine_skip(name: str, text: str) -> bool:
    """Skips not worth a line: an empty landing folder, again."""
    return text.startswith("no new files")


def _report(auto, say) -> int:
    outcomes = list(auto.outcomes.values())
    ok = sum(o.status == "SUCCESS" for o in outcomes)
    held = sum(o.gate_held for o in outcomes)
    failed = [o for o in outcomes if not o.ok]
    say(f"{len(outcomes)} run(s): {ok} succeeded, {held} held by the gate, {len(failed)} failed"
        + (f"; {len(auto.tick_errors)} tick error(s)" if auto.tick_errors else ""))
    return 1 if failed or auto.tick_errors else 0


def _champion_line(target, instance_home: Path, say) -> None:
    from mlops_assets.cli.target import open_instance
    from mlops_assets.pipeline import Pipeline
    from mlops_assets.state import champion_of_record

    instance = open_instance(instance_home)
    try:
        champion = champion_of_record(instance, Pipeline(target.spec))
    finally:
        instance.dispose()
    say(f"champion: v{champion}" if champion else "no champion yet (see `mlops-assets status`)")
