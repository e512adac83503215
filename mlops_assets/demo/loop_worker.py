"""Execute one requested run in a process of its own, so a scenario can SIGKILL it mid-run.

The loop scenario (`mlops_assets.demo.loop`) evaluates a sensor tick without executing it
(`InlineAutomation.evaluate_sensor`) and hands the run here: the same Dagster home, the same
spec YAML, the request's job, partition, asset selection and tags (run key and sensor name
included), so the run it records is the one the daemon would have launched.

    python -m mlops_assets.demo.loop_worker --home DIR --spec SPEC.yaml --job NAME \
        --tags JSON [--partition KEY] [--assets JSON] [--log-level WARNING]

Exit code 0 when the run succeeded, 1 when it failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="the Dagster home (instance) the run is recorded in")
    parser.add_argument("--spec", required=True, help="the pipeline spec YAML")
    parser.add_argument("--job", required=True)
    parser.add_argument("--tags", default="{}", help="the run's tags, as JSON")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--assets", default=None, help="asset selection: JSON list of key paths")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import dagster as dg

    from mlops_assets.definitions import build_mlops_defs
    from mlops_assets.spec import PipelineSpec

    defs = build_mlops_defs(PipelineSpec.from_yaml(args.spec))
    job = defs.resolve_job_def(args.job)
    assets = [dg.AssetKey(path) for path in json.loads(args.assets)] if args.assets else None
    instance = dg.DagsterInstance.from_config(args.home)
    try:
        result = job.execute_in_process(
            instance=instance, partition_key=args.partition, tags=json.loads(args.tags), asset_selection=assets,
            run_config={"loggers": {"console": {"config": {"log_level": args.log_level}}}}, raise_on_error=False,
        )
    finally:
        instance.dispose()
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
