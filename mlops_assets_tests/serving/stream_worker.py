"""The streaming consumer as its own process, for tests that SIGKILL it.

    python -m mlops_assets_tests.serving.stream_worker --spec spec.yaml --tracking-uri URI \\
        --broker-url redis://127.0.0.1:PORT/0 --stream S --group G --consumer C --output-dir DIR

It goes through `run_stream`, the function behind `mlops-assets stream`. Fault drill:
`--crash-after-batches N` makes the process SIGKILL itself right after writing the Parquet
file of its N-th batch and before committing it (the worst moment for exactly-once).
`--stats-file` receives the consumer's counters as JSON on a clean exit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--output-stream", required=True)
    parser.add_argument("--dead-letter-stream", required=True)
    parser.add_argument("--consumer", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--max-wait-ms", type=int, default=200)
    parser.add_argument("--champion-check-seconds", type=float, default=1.0)
    parser.add_argument("--claim-idle-seconds", type=float, default=60.0)
    parser.add_argument("--crash-after-batches", type=int, default=0)
    parser.add_argument("--stats-file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")

    from mlops_assets.resources.registry import MLflowRegistry
    from mlops_assets.serving.stream import run_stream
    from mlops_assets.spec import PipelineSpec

    written = 0

    def crash_drill(batch_key: str) -> None:
        nonlocal written
        written += 1
        if args.crash_after_batches and written >= args.crash_after_batches:
            logging.getLogger(__name__).warning("drill: SIGKILL after writing %s, before its commit", batch_key)
            os.kill(os.getpid(), signal.SIGKILL)

    stats = run_stream(
        PipelineSpec.from_yaml(args.spec),
        registry=MLflowRegistry(tracking_uri=args.tracking_uri),
        broker_url=args.broker_url, stream=args.stream, group=args.group,
        output_stream=args.output_stream, dead_letter_stream=args.dead_letter_stream,
        consumer_name=args.consumer, output_dir=args.output_dir, batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms, champion_check_seconds=args.champion_check_seconds,
        claim_idle_seconds=args.claim_idle_seconds, on_batch_written=crash_drill,
    )
    if args.stats_file:
        with open(args.stats_file, "w") as handle:
            json.dump(dataclasses.asdict(stats), handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
