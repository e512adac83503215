"""The stream-health sensor: consumer lag and liveness of the streaming scorer, with alerts.

It alerts when the verdict of `serving/stream_health.py: consumer_health` turns from ok to
lagging or stalled (and once more when it recovers), not on every tick: the cursor keeps the
last verdict. The tick text always says what it measured.
"""

import json

import dagster as dg

from mlops_assets.pipeline import Pipeline
from mlops_assets.redaction import redact_uri


def build_stream_health_sensor(pipeline: Pipeline, notifier) -> dg.SensorDefinition:
    streaming = pipeline.spec.streaming

    @dg.sensor(
        name=pipeline.sensor("stream_health"),
        minimum_interval_seconds=streaming.check_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Lag and liveness of the streaming scorer at {redact_uri(streaming.broker_url)}; "
                    "alerts when it lags or stalls, and when it recovers.",
    )
    def stream_health_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        from mlops_assets.serving.broker import connect_broker
        from mlops_assets.serving.stream import StreamNames
        from mlops_assets.serving.stream_health import consumer_health

        names = StreamNames.for_spec(pipeline.spec, stream=streaming.stream, group=streaming.group)
        previous = json.loads(context.cursor) if context.cursor else {}
        try:
            health = consumer_health(connect_broker(streaming.broker_url), names.events, names.group,
                                     max_lag=streaming.max_lag, max_pending_seconds=streaming.max_pending_seconds,
                                     max_idle_seconds=streaming.max_idle_seconds)
            verdict, message, fields = health.verdict, health.message, {"lag": health.lag, "pending": health.pending}
        except Exception as exc:  # noqa: BLE001 (an unreachable broker is itself the finding)
            message = f"broker {redact_uri(streaming.broker_url)}: {type(exc).__name__}"
            verdict, fields = "unreachable", {}
        if verdict != previous.get("verdict", "ok"):
            kind = "stream_recovered" if verdict == "ok" else "stream_unhealthy"
            notifier.process_config_and_initialize().send(
                kind, f"{pipeline.name}: stream {names.events} is {verdict}", message, fields)
        text = message if message.startswith(verdict) else f"{verdict}: {message}"
        return dg.SensorResult(skip_reason=text, cursor=json.dumps({"verdict": verdict}))

    return stream_health_sensor
