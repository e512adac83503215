"""Prometheus metrics of the real-time server, in a registry of its own per app.

A per-app `CollectorRegistry` (not prometheus-client's global one) keeps two apps in one
process (tests, several pipelines) from mixing their counts. `MetricsMiddleware` is a plain
ASGI wrapper: Starlette's `BaseHTTPMiddleware` would add a task and a stream per request.
"""

from __future__ import annotations

import time

# Request latency buckets, in seconds: sub-millisecond resolution where single rows land.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SCORE_DIFF_BUCKETS = (1e-6, 1e-4, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


class ServingMetrics:
    def __init__(self, pipeline: str):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.pipeline = pipeline
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("mlops_serving_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("mlops_serving_errors", "Requests answered with an error, by kind "
                              "(validation, too_large, bad_json, not_ready, internal).",
                              ["endpoint", "kind"], registry=r)
        self.latency = Histogram("mlops_serving_request_duration_seconds", "Time from request to response.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.rows_scored = Counter("mlops_serving_rows_scored", "Rows scored.", registry=r)
        self.model = Info("mlops_serving_model", "The model version being served.", registry=r)
        self.model_loaded = Gauge("mlops_serving_model_loaded", "1 once a model is served.", registry=r)
        self.model_swaps = Counter("mlops_serving_model_swaps", "Times a new model version was swapped in.",
                                   registry=r)
        self.model_errors = Counter("mlops_serving_model_errors", "Failed champion lookups and model loads.",
                                    ["stage"], registry=r)
        self.logged_rows = Counter("mlops_serving_request_log_rows", "Rows written to the request log.",
                                   registry=r)
        self.log_dropped = Counter("mlops_serving_request_log_dropped_rows",
                                   "Rows the request log dropped because its buffer was full.", registry=r)
        self.log_errors = Counter("mlops_serving_request_log_errors", "Failed request-log writes.", registry=r)
        # -- shadow and canary (serving/release.py) ------------------------------------------
        self.release = Info("mlops_serving_release", "The candidate under release beside the champion "
                            "(mode none: no release).", registry=r)
        self.canary_rows = Counter("mlops_serving_canary_rows", "Rows served during a canary release, by arm.",
                                   ["arm"], registry=r)
        self.shadow_rows = Counter("mlops_serving_shadow_rows", "Rows the candidate scored in shadow.", registry=r)
        self.shadow_dropped = Counter("mlops_serving_shadow_dropped_rows", "Rows not shadow-scored because the "
                                      "shadow queue was full (the answer is never held up for them).", registry=r)
        self.shadow_same_label = Counter("mlops_serving_shadow_same_label_rows", "Shadow rows whose label (binary "
                                         "decision, top class) equals the champion's.", registry=r)
        self.shadow_abs_diff = Histogram("mlops_serving_shadow_abs_score_diff", "|candidate - champion| of the "
                                         "monitored score, per shadow row.", buckets=SCORE_DIFF_BUCKETS, registry=r)
        self.model.info({"pipeline": pipeline, "version": ""})
        self.release.info({"pipeline": pipeline, "mode": "none", "candidate": "", "champion": ""})
        self._request_children: dict[tuple[str, int], object] = {}
        self._latency_children: dict[str, object] = {}

    # -- the request path (label children cached: `.labels()` costs more than `.inc()`) -----
    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(endpoint, str(status))
        counter.inc()
        histogram = self._latency_children.get(endpoint)
        if histogram is None:
            histogram = self._latency_children[endpoint] = self.latency.labels(endpoint)
        histogram.observe(seconds)

    def error(self, endpoint: str, kind: str) -> None:
        self.errors.labels(endpoint, kind).inc()

    # -- model lifecycle -------------------------------------------------------------------
    def model_swapped(self, version: str) -> None:
        self.model.info({"pipeline": self.pipeline, "version": str(version)})
        self.model_loaded.set(1)
        self.model_swaps.inc()

    def model_error(self, stage: str) -> None:
        self.model_errors.labels(stage).inc()

    def release_changed(self, release) -> None:
        if release is None:
            self.release.info({"pipeline": self.pipeline, "mode": "none", "candidate": "", "champion": ""})
        else:
            self.release.info({"pipeline": self.pipeline, "mode": release.mode, "candidate": str(release.version),
                               "champion": str(release.champion)})

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request by endpoint and status and times it."""

    def __init__(self, app, metrics: ServingMetrics, endpoints: frozenset[str]):
        self.app, self.metrics, self.endpoints = app, metrics, endpoints

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in self.endpoints else "other"
        started = time.perf_counter()
        status = 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            self.metrics.error(endpoint, "internal")
            raise
        finally:
            self.metrics.observe(endpoint, status, time.perf_counter() - started)
