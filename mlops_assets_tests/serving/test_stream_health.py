"""`consumer_health` verdicts on a real Redis consumer group."""

# ruff: noqa: F811  (pytest fixtures imported from stream_fixtures arrive as arguments)
from __future__ import annotations

import time

import pytest

from mlops_assets.serving.stream_health import consumer_health
from mlops_assets_tests.serving.stream_fixtures import broker, redis_server, stream_names  # noqa: F401


def health(broker, names, **limits):
    return consumer_health(broker, names.events, names.group, **limits)


def test_nothing_published_is_ok_and_events_without_a_group_are_stalled(broker, stream_names):
    quiet = health(broker, stream_names)
    assert quiet.verdict == "ok" and "nothing published" in quiet.message
    broker.publish(stream_names.events, [b"{}"] * 3)
    orphan = health(broker, stream_names)
    assert orphan.verdict == "stalled"
    assert orphan.message == (f"stalled: group '{stream_names.group}' on '{stream_names.events}' does not "
                              "exist: no consumer has started; 3 events wait")


def test_lagging_then_stalled_then_ok(broker, stream_names):
    s, g = stream_names.events, stream_names.group
    broker.publish(s, [b"{}"] * 500)
    broker.ensure_group(s, g)
    batch = broker.read_new(s, g, "reader", 100, 0)
    lagging = health(broker, stream_names, max_lag=300)
    assert lagging.verdict == "lagging"
    assert (lagging.lag, lagging.pending) == (400, 100)
    assert lagging.message.startswith(f"lagging: 400 events in group '{g}' on '{s}' not yet delivered (limit 300)")
    assert [(c.name, c.pending) for c in lagging.consumers] == [("reader", 100)]

    time.sleep(1.1)   # the batch ages without an ack
    stalled = health(broker, stream_names, max_lag=300, max_pending_seconds=1.0)
    assert stalled.verdict == "stalled" and stalled.oldest_pending_seconds >= 1.0
    assert "100 events" in stalled.message and "held by reader (100 pending" in stalled.message
    idle = health(broker, stream_names, max_lag=10_000, max_pending_seconds=60, max_idle_seconds=1.0)
    assert idle.verdict == "stalled" and "no consumer read for" in idle.message

    broker.commit(s, g, [m.id for m in batch], output_stream=stream_names.output, outputs=[],
                  dead_letter_stream=stream_names.dead_letter, dead_letters=[])
    broker.read_new(s, g, "reader", 1_000, 0)
    done = broker.read_own_pending(s, g, "reader")
    broker.commit(s, g, [m.id for m in done], output_stream=stream_names.output, outputs=[],
                  dead_letter_stream=stream_names.dead_letter, dead_letters=[])
    ok = health(broker, stream_names, max_lag=300)
    assert ok.verdict == "ok" and ok.ok and (ok.lag, ok.pending) == (0, 0)
    assert ok.to_dict()["consumers"] == [{"name": "reader", "pending": 0, "idle_seconds": ok.consumers[0].idle_seconds}]


def test_thresholds_are_checked(broker, stream_names):
    with pytest.raises(ValueError, match=r"^max_pending_seconds: must be >= 0, got -1$"):
        health(broker, stream_names, max_pending_seconds=-1)


def test_commit_publishes_only_for_messages_it_acknowledged(broker, stream_names):
    """The broker half of exactly-once: a batch committed twice yields its outputs once."""
    from mlops_assets.serving.broker import OutputRecord

    s, g = stream_names.events, stream_names.group
    broker.publish(s, [b"{}"] * 4)
    broker.ensure_group(s, g)
    ids = [m.id for m in broker.read_new(s, g, "a", 10, 0)]
    records = [OutputRecord(i, {"event_id": i, "data": "{}"}) for i in ids]
    args = {"output_stream": stream_names.output, "outputs": records,
            "dead_letter_stream": stream_names.dead_letter, "dead_letters": []}
    assert broker.commit(s, g, ids, **args) == 4
    assert broker.commit(s, g, ids, **args) == 0
    assert [f["event_id"] for _, f in broker.read_range(stream_names.output)] == ids
