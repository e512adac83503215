"""The real-time server: the champion's verified ONNX bundle behind an ASGI app on uvicorn.

    create_app(spec, model_source, *, request_log=None, poll_seconds=30.0, max_batch_rows=1000,
               max_body_bytes=None, inline_max_rows=64, onnx_threads=None) -> starlette.applications.Starlette
    serve(spec, *, registry, host="127.0.0.1", port=8000, request_log=None, poll_seconds=30.0,
          max_batch_rows=1000, log_level="info", **app_options) -> None   # runs uvicorn until stopped
    python -m mlops_assets.serving.server --spec SPEC.yaml --tracking-uri URI [--port P] ...

Endpoints:
  POST /predict   one row (a JSON object of features) or {"rows": [...]}; answers
                  {"model_version": "3", "predictions": [{<id>, <score columns>}, ...]} with the
                  score columns of the batch predictions table (binary: score, prediction;
                  multiclass: prediction, proba_<class>; regression: prediction).
                  422 names the field, the row and the rule; 413 above max_batch_rows or
                  max_body_bytes; 400 for a body that is not JSON; 503 before a model is loaded.
                  During a canary release each prediction row also carries the `model_version`
                  of its id's arm (the top-level one is then the version that served every
                  row, or the champion's when a batch spans both arms); see serving/release.py.
  GET /healthz    200 while the process runs.
  GET /readyz     200 once a model is served, 503 before (with the reason); `release`
                  describes a candidate under release.
  GET /metrics    Prometheus text format.

Starlette rather than FastAPI: the request contract is validated by `RequestSchema` (errors
that name rows and rules), so FastAPI's per-route pydantic layer would only add cost.
The ONNX call runs inline on the event loop for small requests (a thread hop costs more than
scoring a few rows; see docs/serving.md "Real-time") and in the threadpool above
`inline_max_rows`, so a large batch cannot stall other requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
from typing import TYPE_CHECKING

from mlops_assets.serving.metrics import CONTENT_TYPE, MetricsMiddleware, ServingMetrics
from mlops_assets.serving.model_source import ChampionWatcher, ModelSource, RegistryModelSource
from mlops_assets.serving.release import ShadowJob, ShadowScorer, score_by_arm, shadow_columns
from mlops_assets.serving.request_log import RequestLog, RequestLogConfig
from mlops_assets.serving.request_schema import (
    FieldError,
    RequestRejected,
    RequestSchema,
    decode_json,
)
from mlops_assets.spec import PipelineSpec

if TYPE_CHECKING:
    from starlette.applications import Starlette

logger = logging.getLogger("mlops_assets.serving")

PREDICT, HEALTHZ, READYZ, METRICS = "/predict", "/healthz", "/readyz", "/metrics"
_ERROR_KIND = {400: "bad_json", 413: "too_large", 422: "validation", 503: "not_ready"}


def create_app(spec: PipelineSpec, model_source: ModelSource, *, request_log: RequestLogConfig | None = None,
               poll_seconds: float = 30.0, max_batch_rows: int = 1000, max_body_bytes: int | None = None,
               inline_max_rows: int = 64, onnx_threads: int | None = None) -> Starlette:
    """An ASGI app serving `model_source`'s champion for `spec`; see the module docstring."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    schema = RequestSchema(spec, max_batch_rows=max_batch_rows)
    if max_body_bytes is None:
        max_body_bytes = 64 * 1024 + max_batch_rows * 4096
    if not (isinstance(max_body_bytes, int) and max_body_bytes >= 1024):
        raise ValueError(f"max_body_bytes must be an integer >= 1024, got {max_body_bytes!r}")
    if not (isinstance(inline_max_rows, int) and inline_max_rows >= 0):
        raise ValueError(f"inline_max_rows must be an integer >= 0, got {inline_max_rows!r}")
    metrics = ServingMetrics(spec.name)
    releases = spec.release.mode != "none"
    watcher = ChampionWatcher(spec, model_source, poll_seconds=poll_seconds, metrics=metrics,
                              onnx_threads=onnx_threads, follow_release=releases)
    log = RequestLog(request_log, spec, metrics) if request_log is not None else None
    shadow = ShadowScorer(spec.task, metrics, keep_results=log is not None) if releases else None
    flushes: set[asyncio.Task] = set()
    id_column = spec.id_column

    def json_response(body: dict, status: int = 200) -> Response:
        return Response(json.dumps(body, separators=(",", ":")), status, media_type="application/json")

    def rejected(exc: RequestRejected) -> Response:
        metrics.error(PREDICT, _ERROR_KIND.get(exc.status, "validation"))
        return json_response(exc.to_dict(), exc.status)

    async def predict(request: Request) -> Response:
        model = watcher.current          # read once: this request is wholly this version
        release = watcher.release        # (and this release: a candidate beside that champion)
        if model is None:
            return rejected(RequestRejected(503, [FieldError(
                "model", "ready", f"no model is loaded yet ({watcher.last_error or 'loading'})")]))
        if release is not None and release.champion != model.version:
            release = None               # recorded against another champion: not this one's release
        try:
            body = await _read_body(request, max_body_bytes)
            parsed = schema.parse(decode_json(body))
        except RequestRejected as exc:
            return rejected(exc)
        if release is None:
            if len(parsed) <= inline_max_rows:
                columns = model.score(parsed.values)
            else:
                columns = await run_in_threadpool(model.score, parsed.values)
            versions: list[str] | str = model.version
        elif len(parsed) <= inline_max_rows:
            columns, versions = score_by_arm(model, release, parsed)
        else:
            columns, versions = await run_in_threadpool(score_by_arm, model, release, parsed)
        metrics.rows_scored.inc(len(parsed))
        received_at = dt.datetime.now(dt.UTC)
        shadowed = False
        if release is not None and release.mode == "shadow":
            shadowed = shadow.submit(ShadowJob(parsed, model.version, columns, received_at, release))
        if log is not None and not (shadowed and shadow.keep_results):
            log.add(parsed, versions, columns, received_at)     # shadowed rows are logged once scored
            if len(log) >= log.config.flush_rows and not flushes:
                _start_flush()
        rows = model.response_rows(parsed, columns, id_column)
        top = model.version
        if release is not None and release.mode == "canary":
            per_row = [versions] * len(rows) if isinstance(versions, str) else versions
            served = set(per_row)
            metrics.canary_rows.labels("candidate").inc(sum(1 for v in per_row if v == release.version))
            metrics.canary_rows.labels("champion").inc(sum(1 for v in per_row if v != release.version))
            for row, version in zip(rows, per_row):
                row["model_version"] = version
            if len(served) == 1:
                top = per_row[0] if per_row else model.version
        return json_response({"model_version": top, "predictions": rows})

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        model = watcher.current
        if model is None:
            return json_response({"ready": False, "reason": watcher.last_error or "loading the champion"}, 503)
        body = {"ready": True, "model_version": model.version, "champion": watcher.champion,
                "loaded_at": model.loaded_at.isoformat()}
        release = watcher.release
        if release is not None and release.champion == model.version:
            body["release"] = release.describe()
        return json_response(body)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    # -- the request log: buffered on the loop, written in a thread --------------------------
    def collect_shadow() -> None:
        """Shadow jobs the worker finished -> the request log, with both models' scores."""
        if shadow is None or log is None:
            return
        while shadow.finished:
            job, result = shadow.finished.popleft()
            columns = job.columns if result is None else {
                **job.columns, **shadow_columns(job.release.version, result, len(job.parsed))}
            log.add(job.parsed, job.champion_version, columns, job.received_at)

    async def flush_log() -> None:
        collect_shadow()
        records = log.take()
        if not records:
            return
        try:
            paths = await asyncio.to_thread(log.write, records)
            logger.debug("request log: wrote %d rows to %s", len(records), [str(p) for p in paths])
        except Exception as exc:  # noqa: BLE001  a full disk must not fail requests; rows are kept
            log.give_back(records)
            metrics.log_errors.inc()
            logger.error("request log: writing %d rows failed (%s); kept for the next try", len(records), exc)

    def _start_flush() -> None:
        task = asyncio.create_task(flush_log())
        flushes.add(task)
        task.add_done_callback(flushes.discard)

    async def flush_when_due() -> None:
        while True:
            await asyncio.sleep(min(1.0, log.config.flush_seconds))
            collect_shadow()
            if log.due() and not flushes:
                _start_flush()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        tasks = [asyncio.create_task(watcher.run(), name="champion-watcher")]
        if log is not None:
            tasks.append(asyncio.create_task(flush_when_due(), name="request-log-flush"))
        if shadow is not None:
            shadow.start()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if shadow is not None:
                await asyncio.to_thread(shadow.stop)     # what is queued is scored, then logged
            if log is not None:
                await asyncio.gather(*flushes, return_exceptions=True)
                await flush_log()      # what is still buffered, on shutdown

    routes = [Route(PREDICT, predict, methods=["POST"]), Route(HEALTHZ, healthz, methods=["GET"]),
              Route(READYZ, readyz, methods=["GET"]), Route(METRICS, metrics_endpoint, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(MetricsMiddleware, metrics=metrics,
                       endpoints=frozenset({PREDICT, HEALTHZ, READYZ, METRICS}))
    app.state.watcher, app.state.metrics, app.state.request_log = watcher, metrics, log
    app.state.shadow = shadow
    return app


async def _read_body(request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    too_large = RequestRejected(413, [FieldError("body", "max_body_bytes",
                                                 f"the request body is larger than {limit} bytes")])
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def serve(spec: PipelineSpec, *, registry, host: str = "127.0.0.1", port: int = 8000,
          request_log: RequestLogConfig | None = None, poll_seconds: float = 30.0, max_batch_rows: int = 1000,
          log_level: str = "info", **app_options) -> None:
    """Serve `spec.name`'s champion from `registry` (an `MLflowRegistry`) with uvicorn, one
    worker, until SIGINT/SIGTERM; in-flight requests finish and the request log is flushed.
    `app_options` go to `create_app` (max_body_bytes, inline_max_rows, onnx_threads)."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(spec, RegistryModelSource(registry, spec.name), request_log=request_log,
                     poll_seconds=poll_seconds, max_batch_rows=max_batch_rows, **app_options)
    # No access log: /metrics and the request log cover it, and it costs a log line per request.
    uvicorn.run(app, host=host, port=port, workers=1, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=30)


def exit_zero_on_stop() -> None:
    """uvicorn drains the requests in flight on SIGTERM/SIGINT, then re-raises the signal to the
    handler it found; with this one, a requested stop after a clean shutdown exits 0 (not -15,
    and no KeyboardInterrupt traceback). For the process's main thread only."""
    import signal
    import sys

    def stop(signum, frame) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlops_assets.serving.server",
                                     description="Serve a pipeline's champion model over HTTP.")
    parser.add_argument("--spec", required=True, help="pipeline spec YAML")
    parser.add_argument("--tracking-uri", required=True, help="MLflow tracking URI (sqlite:///... or http://...)")
    parser.add_argument("--registry-uri", default=None)
    parser.add_argument("--bundle-cache-dir", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--poll-seconds", type=float, default=30.0)
    parser.add_argument("--max-batch-rows", type=int, default=1000)
    parser.add_argument("--inline-max-rows", type=int, default=64)
    parser.add_argument("--onnx-threads", type=int, default=None, help="default: as batch scoring")
    parser.add_argument("--request-log-dir", default=None, help="write sampled requests here (Parquet)")
    parser.add_argument("--sample-rate", type=float, default=1.0)
    parser.add_argument("--flush-rows", type=int, default=10_000)
    parser.add_argument("--flush-seconds", type=float, default=60.0)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    from mlops_assets.resources.registry import MLflowRegistry

    spec = PipelineSpec.from_yaml(args.spec)
    registry = MLflowRegistry(tracking_uri=args.tracking_uri, registry_uri=args.registry_uri,
                              **({"cache_dir": args.bundle_cache_dir} if args.bundle_cache_dir else {}))
    request_log = None
    if args.request_log_dir:
        request_log = RequestLogConfig(args.request_log_dir, sample_rate=args.sample_rate,
                                       flush_rows=args.flush_rows, flush_seconds=args.flush_seconds,
                                       max_buffer_rows=max(200_000, args.flush_rows))
    exit_zero_on_stop()
    serve(spec, registry=registry, host=args.host, port=args.port, request_log=request_log,
          poll_seconds=args.poll_seconds, max_batch_rows=args.max_batch_rows, log_level=args.log_level,
          inline_max_rows=args.inline_max_rows, onnx_threads=args.onnx_threads)


if __name__ == "__main__":
    main()
