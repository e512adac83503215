"""The stream-health sensor against a real Redis: alerts once when the consumer stalls, once on recovery."""
# ruff: noqa: F811  (pytest fixtures imported from stream_fixtures arrive as arguments)

import dagster as dg

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.pipeline import Pipeline
from mlops_assets.resources.notifier import Notifier
from mlops_assets_tests.conftest import small_spec
from mlops_assets_tests.serving.stream_fixtures import (  # noqa: F401
    broker,
    loan_events,
    redis_server,
    stream_names,
)


class RecordingNotifier(Notifier):
    """A log notifier that also keeps what it sent, so the test can read the alerts."""

    def send(self, kind, title, text, fields=None):
        SENT.append((kind, title, text))
        return super().send(kind, title, text, fields)


SENT: list = []


def test_alerts_when_events_wait_with_no_consumer_and_when_it_recovers(tmp_path, redis_server, broker,
                                                                        stream_names):
    SENT.clear()
    spec = small_spec(tmp_path, streaming={"broker_url": redis_server.url.replace("redis://", "redis://:pw@"),
                                           "stream": stream_names.events, "group": stream_names.group,
                                           "max_idle_seconds": 60})
    defs = build_mlops_defs(spec, notifier=RecordingNotifier(pipeline="demo"))
    name = Pipeline(spec).sensor("stream_health")
    sensor = defs.resolve_sensor_def(name)
    with dg.instance_for_test() as instance:
        def tick(cursor=None):
            return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                                  sensor_name=name))

        quiet = tick()
        assert quiet.skip_reason.skip_message == f"ok: nothing published to '{stream_names.events}' yet"
        broker.publish(stream_names.events, loan_events(20))
        stalled = tick(quiet.cursor)
        assert stalled.skip_reason.skip_message.startswith(f"stalled: group '{stream_names.group}' on "
                                                           f"'{stream_names.events}' does not exist")
        again = tick(stalled.cursor)
        assert len(SENT) == 1 and SENT[0][0] == "stream_unhealthy"      # alerted once, not per tick
        broker.ensure_group(stream_names.events, stream_names.group)
        batch = broker.read_new(stream_names.events, stream_names.group, "c1", count=100, max_wait_ms=100)
        assert len(batch) == 20
        acked = broker.commit(stream_names.events, stream_names.group, [m.id for m in batch],
                              output_stream=stream_names.output, outputs=[],
                              dead_letter_stream=stream_names.dead_letter, dead_letters=[])
        assert acked == 20
        recovered = tick(again.cursor)
        assert recovered.skip_reason.skip_message.startswith(f"ok: group '{stream_names.group}'")
        assert [kind for kind, _, _ in SENT] == ["stream_unhealthy", "stream_recovered"]
    assert "pw@" not in sensor.description and ":***@" in sensor.description
