"""The retrain loop over 30 simulated days, through the real sensors and schedules.

Plays `mlops_assets.demo.loop.scenario_30()` (i.i.d. labelled days, unlabelled days, late
labels, one planted population shift, a late-label performance drop, an operator rollback
and a retrain SIGKILLed mid-training) on a temporary Dagster home and MLflow store, and reads
the results back from what was recorded (runs, events, materializations, model bundles).

Last line: JSON with retrains, expected_retrains, identical_models_promoted, duplicate_runs,
missed_shifts, false_retrains, rollback_held, the per-day decisions, the settings changed from
the demo spec (cooldown 0 and a large budget among them: those rules are wall-clock) and
timings. Done when identical_models_promoted, duplicate_runs, missed_shifts and
false_retrains are 0, rollback_held is true and retrains equals expected_retrains.

    python benchmarks/loop.py [--short] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the test's 11-day scenario instead")
    parser.add_argument("--keep", default=None, help="play under this folder and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore")
    from mlops_assets.demo.loop import run_scenario, scenario_30, scenario_short, to_json

    scenario = scenario_short() if args.short else scenario_30()
    root = args.keep or tempfile.mkdtemp(prefix="loop_bench_")
    os.makedirs(root, exist_ok=True)
    t0 = time.perf_counter()

    progress = sys.stderr

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {line}", file=progress, flush=True)

    # The stages' own output (alerts, MLflow, Dagster logs) goes to a file; progress to stderr.
    try:
        with open(os.path.join(root, "engine.log"), "w") as noise, \
                contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
            results = run_scenario(scenario, os.path.join(root, "world"), log=log)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    results["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(to_json(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
