"""`mlops-assets`: drive your own pipeline (a spec YAML or a Component's defs.yaml) from a shell.

    mlops-assets init DATA_FILE --target COL   a starting spec inferred from a sample
    mlops-assets ingest [PIPELINE] FILE        register one file and run it, by hand
    mlops-assets run PIPELINE [--watch]        sensors and schedules under a real dagster-daemon
    mlops-assets status PIPELINE [--json]      champion, versions, drift, signals, skip reasons
    mlops-assets doctor PIPELINE [--fix]       aliases, half-done promotions, stuck runs, bundles
    mlops-assets serve PIPELINE                the real-time server for the champion
    mlops-assets stream PIPELINE               the streaming scorer for the champion

See docs/cli.md. Each command module is imported only when it runs, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mlops_assets.version import __version__

PIPELINE_HELP = ("a spec YAML, a Component defs.yaml (or its folder), or a pipeline name looked up as "
                 "<name>.yaml in this folder (default: $MLOPS_SPEC)")


def _pipeline(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("pipeline", nargs=None if required else "?", metavar="PIPELINE", help=PIPELINE_HELP)


def _home(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dagster-home", metavar="DIR",
                   help="the Dagster instance (default: $DAGSTER_HOME, else <state_dir>/dagster_home)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops-assets", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mlops-assets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="write a starting spec inferred from a CSV or Parquet sample")
    p.add_argument("data_file", metavar="DATA_FILE", help="a CSV or Parquet file of the data, labels included")
    p.add_argument("--target", required=True, metavar="COL", help="the label column")
    p.add_argument("--name", help="pipeline name (default: from the file name)")
    p.add_argument("-o", "--output", metavar="PATH", help="where to write the spec (default: ./<name>.yaml)")
    p.add_argument("--landing", metavar="DIR", help="the folder files arrive in (default: the data file's folder)")
    p.add_argument("--id-column", metavar="COL", help="the id column (default: guessed)")
    p.add_argument("--timestamp-column", metavar="COL", help="the timestamp column (default: guessed)")
    p.add_argument("--sample-rows", type=int, default=100_000, metavar="N", help="rows read (default: 100000)")
    p.add_argument("--margin", type=float, default=0.25, help="numeric bounds widened by this share of the "
                   "observed range (default: 0.25)")
    p.add_argument("--max-categories", type=int, default=50, metavar="N",
                   help="list at most this many categories per column (default: 50)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")

    p = sub.add_parser("ingest", help="register one file as a partition and run it now, in this process")
    p.add_argument("args", nargs="+", metavar="[PIPELINE] FILE",
                   help=f"the data file to ingest; PIPELINE is {PIPELINE_HELP}")
    p.add_argument("--as", dest="key", metavar="NAME", help="land the file under this name (its partition key)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _home(p)

    p = sub.add_parser("run", help="run the sensors and schedules under a real dagster-daemon, once or --watch")
    _pipeline(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", default=True,
                      help="until quiet: sensors, then every schedule ticked now, then stop (default)")
    mode.add_argument("--watch", action="store_true", help="keep running (schedules at their crons) until Ctrl-C")
    p.add_argument("--timeout", type=float, default=900.0, metavar="S",
                   help="--once gives up after this long (default: 900)")
    p.add_argument("--executor", choices=("in_process", "multiprocess"), default="in_process",
                   help="how a run executes its steps (default: in_process: one process per run)")
    p.add_argument("--sensor-interval", type=int, metavar="S",
                   help="override automation.sensor_interval_seconds (at least 5) while run runs")
    p.add_argument("--location-name", metavar="NAME",
                   help="code location name (default: the pipeline name); use your UI workspace's to see "
                        "the ticks there")
    p.add_argument("--run-dir", metavar="DIR", help="generated module, workspace and logs "
                   "(default: <state_dir>/automation)")
    _home(p)

    p = sub.add_parser("status", help="champion, versions, drift, retrain decision, skip reasons, runs")
    _pipeline(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    _home(p)

    p = sub.add_parser("doctor", help="check the pipeline's state; --fix repairs what is safe to repair")
    _pipeline(p)
    p.add_argument("--fix", action="store_true", help="repair what is safe, then check again")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--grace", type=float, metavar="S",
                   help="a run whose worker is gone and silent this long is dead (default: the spec's "
                        "automation.watchdog_grace_seconds)")
    p.add_argument("--location-name", metavar="NAME", help="the code location runs were launched from "
                   "(default: the pipeline name, as `run` uses)")
    _home(p)

    p = sub.add_parser("serve", help="serve the champion over HTTP (mlops_assets.serving.server)")
    _pipeline(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--poll-seconds", type=float, default=30.0, help="how often the champion alias is checked")
    p.add_argument("--max-batch-rows", type=int, default=1000)
    p.add_argument("--inline-max-rows", type=int, default=64)
    p.add_argument("--onnx-threads", type=int, default=None, help="default: as batch scoring")
    p.add_argument("--request-log-dir", metavar="DIR", help="keep sampled requests here (Parquet)")
    p.add_argument("--sample-rate", type=float, default=1.0)
    p.add_argument("--flush-rows", type=int, default=10_000)
    p.add_argument("--flush-seconds", type=float, default=60.0)
    p.add_argument("--log-level", default="info")

    p = sub.add_parser("stream", help="score a Redis stream with the champion (mlops_assets.serving.stream)")
    _pipeline(p)
    p.add_argument("--broker-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--consumer-name", help="unique in its group and stable across restarts (default: host name)")
    p.add_argument("--output-dir", metavar="DIR", help="default: <state_dir>/streaming/<name>")
    p.add_argument("--stream", help="default: <name>:events")
    p.add_argument("--group", help="default: <name>:scorers")
    p.add_argument("--output-stream", help="default: <name>:scores")
    p.add_argument("--dead-letter-stream", help="default: <name>:dead-letter")
    p.add_argument("--batch-size", type=int, default=1_000)
    p.add_argument("--max-wait-ms", type=int, default=1_000)
    p.add_argument("--champion-check-seconds", type=float, default=30.0)
    p.add_argument("--claim-idle-seconds", type=float, default=60.0)
    return parser


COMMANDS = {
    "init": "mlops_assets.cli.init:cmd_init",
    "ingest": "mlops_assets.cli.ingest:cmd_ingest",
    "run": "mlops_assets.cli.run:cmd_run",
    "status": "mlops_assets.cli.status:cmd_status",
    "doctor": "mlops_assets.cli.doctor:cmd_doctor",
    "serve": "mlops_assets.cli.serving:cmd_serve",
    "stream": "mlops_assets.cli.serving:cmd_stream",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, func = COMMANDS[args.command].split(":")
    from mlops_assets.cli.target import TargetError

    try:
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except TargetError as exc:
        print(f"mlops-assets {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "main"]
