"""`mlops-assets serve` and `mlops-assets stream`: thin wrappers over the serving functions.

Both follow the pipeline's `champion` alias in the pipeline's own registry (the Component's
`mlflow_tracking_uri`, or the embedded store under `state_dir`), so no tracking URI is typed.
- serve: `mlops_assets.serving.server.serve(spec, registry=..., ...)`, uvicorn until SIGINT/SIGTERM.
- stream: `mlops_assets.serving.stream.run_stream(spec, registry=..., ...)`, until SIGINT/SIGTERM
  (the batch in hand is finished and committed first).
See docs/serving.md for what they do.
"""

from __future__ import annotations

import socket
from pathlib import Path


def cmd_serve(args) -> int:
    from mlops_assets.cli.common import quiet_environment
    from mlops_assets.cli.target import load_target

    quiet_environment()
    target = load_target(args.pipeline)
    from mlops_assets.serving.request_log import RequestLogConfig
    from mlops_assets.serving.server import exit_zero_on_stop, serve

    request_log = None
    if args.request_log_dir:
        request_log = RequestLogConfig(args.request_log_dir, sample_rate=args.sample_rate,
                                       flush_rows=args.flush_rows, flush_seconds=args.flush_seconds,
                                       max_buffer_rows=max(200_000, args.flush_rows))
    exit_zero_on_stop()
    serve(target.spec, registry=target.registry(), host=args.host, port=args.port, request_log=request_log,
          poll_seconds=args.poll_seconds, max_batch_rows=args.max_batch_rows, log_level=args.log_level,
          inline_max_rows=args.inline_max_rows, onnx_threads=args.onnx_threads)
    return 0


def cmd_stream(args) -> int:
    import logging

    from mlops_assets.cli.common import quiet_environment
    from mlops_assets.cli.target import load_target

    quiet_environment()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    target = load_target(args.pipeline)
    from mlops_assets.serving.stream import run_stream

    output_dir = Path(args.output_dir or target.state_dir / "streaming" / target.name)
    stats = run_stream(
        target.spec, registry=target.registry(), broker_url=args.broker_url, stream=args.stream, group=args.group,
        consumer_name=args.consumer_name or socket.gethostname(), output_dir=output_dir,
        output_stream=args.output_stream, dead_letter_stream=args.dead_letter_stream, batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms, champion_check_seconds=args.champion_check_seconds,
        claim_idle_seconds=args.claim_idle_seconds,
    )
    print(f"stream stopped: {stats}")
    return 0
