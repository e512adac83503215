"""The streaming consumer on a real Redis: dead letters, champion changes, claims, clean stop."""

# ruff: noqa: F811  (pytest fixtures imported from stream_fixtures arrive as arguments)
from __future__ import annotations

import json
import logging
import time

import polars as pl
import pytest

from mlops_assets.serving.model_source import RegistryModelSource
from mlops_assets.serving.stream import StreamConsumer
from mlops_assets.serving.stream_health import consumer_health
from mlops_assets_tests.serving.stream_fixtures import (  # noqa: F401  (fixtures)
    ConsumerThread,
    Worker,
    broker,
    group_done,
    loan_events,
    read_output_files,
    read_stream,
    redis_server,
    stream_models,
    stream_names,
    wait_for,
)


def make_consumer(models, broker, names, output_dir, consumer_name="c1", **options):
    options = {"batch_size": 500, "max_wait_ms": 100, "champion_check_seconds": 0.2, **options}
    return StreamConsumer(models.spec, RegistryModelSource(models.registry, models.spec.name), broker,
                          output_dir=output_dir, names=names, consumer_name=consumer_name, **options)


def good_event(loan_id: int) -> dict:
    return json.loads(loan_events(1, id_offset=loan_id)[0])


def test_bad_events_go_to_the_dead_letter_stream_with_the_field_and_rule(
        stream_models, broker, stream_names, tmp_path):
    base = good_event(0)
    bad = {
        "not json": b"{oops",
        "an array": b"[1, 2]",
        "no id": json.dumps({k: v for k, v in base.items() if k != "loan_id"}).encode(),
        "bool id": json.dumps({**base, "loan_id": True}).encode(),
        "no income": json.dumps({k: v for k, v in {**base, "loan_id": 900_001}.items() if k != "income"}).encode(),
        "text age": json.dumps({**base, "loan_id": 900_002, "age": "forty"}).encode(),
        "score 900": json.dumps({**base, "loan_id": 900_003, "credit_score": 900}).encode(),
        "castle": json.dumps({**base, "loan_id": 900_004, "home_ownership": "CASTLE"}).encode(),
        "null age": json.dumps({**base, "loan_id": 900_005, "age": None}).encode(),
        "infinite income": json.dumps({**base, "loan_id": 900_006, "income": float("inf")}).encode(),
    }
    expected = {
        "not json": "field 'payload': not valid JSON",
        "an array": "field 'payload': must be a JSON object (got list)",
        "no id": "field 'loan_id': required (the spec's id_column)",
        "bool id": "field 'loan_id': must be an integer or a non-empty string (got True)",
        "no income": "field 'income': required (send null for a missing value)",
        "text age": "field 'age': type (declared numeric, got str 'forty')",
        "score 900": "field 'credit_score': range (900 above max 850.0)",
        "castle": "field 'home_ownership': unknown category ('CASTLE' not in ['RENT', 'OWN', 'MORTGAGE'])",
        "null age": "field 'age': null not allowed (max_null_fraction is 0)",
        "infinite income": "field 'income': infinite value",
    }
    good = loan_events(1_200, id_offset=1_000)
    # Bad events interleaved with good ones, so they share micro-batches with them.
    payloads = good[:300] + list(bad.values())[:5] + good[300:900] + list(bad.values())[5:] + good[900:]
    ids = broker.publish(stream_names.events, payloads)
    bad_ids = {ids[payloads.index(p)]: label for label, p in bad.items()}

    with ConsumerThread(make_consumer(stream_models, broker, stream_names, tmp_path / "out")) as running:
        wait_for(group_done(broker, stream_names), lambda n: n >= len(payloads), "all events committed",
                 alive=running.problem)
    stats = running.consumer.stats

    dead = {fields["event_id"]: fields for _, fields in read_stream(broker, stream_names.dead_letter)}
    assert set(dead) == set(bad_ids)
    for event_id, label in bad_ids.items():
        assert dead[event_id]["reason"].startswith(expected[label]), (label, dead[event_id]["reason"])
        assert dead[event_id]["payload"] == bad[label].decode()
    out = read_output_files(tmp_path / "out")
    assert sorted(out["loan_id"].to_list()) == list(range(1_000, 2_200))
    assert stats.scored == 1_200 and stats.dead_lettered == len(bad)
    info = broker.group_info(stream_names.events, stream_names.group)
    assert info.lag == 0 and info.pending == 0   # bad events never block the group


def test_output_rows_carry_features_scores_version_and_event_id(stream_models, broker, stream_names, tmp_path):
    payloads = loan_events(700, id_offset=5_000)
    ids = broker.publish(stream_names.events, payloads)
    with ConsumerThread(make_consumer(stream_models, broker, stream_names, tmp_path / "out")) as running:
        wait_for(group_done(broker, stream_names), lambda n: n >= 700, "all events committed", alive=running.problem)

    out = read_output_files(tmp_path / "out").sort("loan_id")
    spec = stream_models.spec
    assert out.columns == ["loan_id", *spec.feature_names, "score", "prediction", "model_version",
                           "scored_at", "event_id", "_file"]
    assert out["event_id"].to_list() == ids and out["model_version"].unique().to_list() == ["1"]
    assert out.schema["scored_at"] == pl.Datetime("us", "UTC")
    sent = pl.DataFrame([json.loads(p) for p in payloads]).select("loan_id", *spec.feature_names)
    assert out.select(sent.columns).equals(sent.with_columns(pl.col(pl.Int64).exclude("loan_id").cast(pl.Float64)))
    # The scores are the champion's, computed as batch inference would.
    bundle = RegistryModelSource(stream_models.registry, spec.name).load("1")
    expected = bundle.score_frame(out.select(sent.columns))
    assert out["score"].to_list() == pytest.approx(expected["score"].to_list(), abs=1e-12)
    # Files: date partition from the first message's timestamp, name from first/last message id.
    day = time.strftime("%Y-%m-%d", time.gmtime(int(ids[0].split("-")[0]) / 1000))
    files = sorted((tmp_path / "out").glob("date=*/*.parquet"))
    assert {f.parent.name for f in files} == {f"date={day}"}
    # Published before the consumer started, so the batches are exactly 500 + 200.
    assert [f.name for f in files] == [f"{ids[0]}_{ids[499]}.parquet", f"{ids[500]}_{ids[699]}.parquet"]
    entries = read_stream(broker, stream_names.output)
    assert [f["event_id"] for _, f in entries] == ids
    scores = {f["event_id"]: json.loads(f["data"]) for _, f in entries}
    first = out.row(0, named=True)
    assert scores[first["event_id"]] == {
        "event_id": first["event_id"], "loan_id": first["loan_id"], "model_version": "1",
        "scored_at": first["scored_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "score": first["score"],
        "prediction": first["prediction"], "file": f"date={day}/{ids[0]}_{ids[499]}.parquet"}


def test_champion_change_mid_stream_switches_model_version(stream_models, broker, stream_names, tmp_path,
                                                           caplog):
    caplog.set_level(logging.INFO, logger="mlops_assets.stream")
    v1, v2, corrupt = stream_models.versions
    consumer = make_consumer(stream_models, broker, stream_names, tmp_path / "out")
    with ConsumerThread(consumer) as running:
        broker.publish(stream_names.events, loan_events(1_500, id_offset=0))
        wait_for(group_done(broker, stream_names), lambda n: n >= 1_500, "first events", alive=running.problem)
        stream_models.set_champion(v2)
        wait_for(lambda: consumer.stats.model_switches, lambda n: n >= 1, "the switch to v2", alive=running.problem)
        broker.publish(stream_names.events, loan_events(1_500, id_offset=10_000))
        wait_for(group_done(broker, stream_names), lambda n: n >= 3_000, "second events", alive=running.problem)
        # A champion that cannot be loaded: keep scoring with the model in hand.
        stream_models.set_champion(corrupt)
        time.sleep(1.0)   # several champion checks (every 0.2 s)
        broker.publish(stream_names.events, loan_events(1_000, id_offset=20_000))
        wait_for(group_done(broker, stream_names), lambda n: n >= 4_000, "third events", alive=running.problem)
        # No champion at all any more: keep scoring with the model in hand too.
        stream_models.registry.delete_alias(stream_models.spec.name, "champion")
        time.sleep(1.0)
        broker.publish(stream_names.events, loan_events(500, id_offset=30_000))
        wait_for(group_done(broker, stream_names), lambda n: n >= 4_500, "fourth events", alive=running.problem)

    out = read_output_files(tmp_path / "out")
    version_of = dict(zip(out["loan_id"].to_list(), out["model_version"].to_list(), strict=True))
    assert len(version_of) == out.height == 4_500
    assert {version_of[i] for i in range(1_500)} == {v1}
    assert {version_of[i] for i in range(10_000, 11_500)} == {v2}
    assert {version_of[i] for i in range(20_000, 21_000)} == {v2}
    assert {version_of[i] for i in range(30_000, 30_500)} == {v2}
    assert consumer.stats.model_switches == 1 and consumer.stats.model_version == v2
    logged = caplog.text
    assert f"champion changed: version {v1} -> {v2}" in logged
    assert f"champion is now version {corrupt} but it could not be loaded" in logged
    assert f"the champion alias is gone; still scoring with version {v2}" in logged
    # Each file holds one version only: the switch happens between micro-batches.
    assert out.group_by("_file").agg(pl.col("model_version").n_unique())["model_version"].max() == 1


def test_a_dead_consumer_never_restarted_has_its_batch_claimed(stream_models, broker, stream_names,
                                                               redis_server, tmp_path):
    payloads = loan_events(3_000, id_offset=0)
    ids = broker.publish(stream_names.events, payloads)
    out_dir = tmp_path / "out"
    # Dies by SIGKILL after writing its 3rd batch's file, before committing it; never comes back.
    dead = Worker(stream_models, redis_server.url, stream_names, "doomed", out_dir, tmp_path,
                  batch_size=500, crash_after_batches=3)
    assert dead.proc.wait(300) == -9, dead.log()[-3000:]
    info = broker.group_info(stream_names.events, stream_names.group)
    assert info.pending == 500 and [(c.name, c.pending) for c in info.consumers] == [("doomed", 500)]
    orphan_file = next(f for f in out_dir.glob("date=*/*.parquet") if f.name.startswith(ids[1000]))
    time.sleep(1.2)
    health = consumer_health(broker, stream_names.events, stream_names.group, max_pending_seconds=1.0)
    assert health.verdict == "stalled" and "doomed (500 pending" in health.message

    rescuer = make_consumer(stream_models, broker, stream_names, out_dir, consumer_name="rescuer",
                            claim_idle_seconds=1.0)
    with ConsumerThread(rescuer) as running:
        wait_for(group_done(broker, stream_names), lambda n: n >= 3_000, "all events committed",
                 alive=running.problem)
    assert rescuer.stats.redelivered_batches == 1
    out = read_output_files(out_dir)
    assert sorted(out["event_id"].to_list()) == sorted(ids)      # every event once, none twice
    assert out.filter(pl.col("_file") == orphan_file.name)["event_id"].to_list() == ids[1000:1500]
    scores = [f["event_id"] for _, f in read_stream(broker, stream_names.output)]
    assert sorted(scores) == sorted(ids)
    assert consumer_health(broker, stream_names.events, stream_names.group).verdict == "ok"


def test_sigterm_finishes_the_batch_commits_and_exits_zero(stream_models, broker, stream_names,
                                                           redis_server, tmp_path):
    ids = broker.publish(stream_names.events, loan_events(20_000, id_offset=0))
    worker = Worker(stream_models, redis_server.url, stream_names, "polite", tmp_path / "out", tmp_path,
                    batch_size=200)
    wait_for(group_done(broker, stream_names), lambda n: n >= 1_000, "some progress", alive=worker.problem)
    assert worker.terminate() == 0, worker.log()[-3000:]
    info = broker.group_info(stream_names.events, stream_names.group)
    assert info.pending == 0                      # the batch in hand was committed
    stats = worker.stats()
    committed = len(ids) - info.lag
    assert stats["scored"] == committed
    assert read_output_files(tmp_path / "out").height == committed
    assert len(read_stream(broker, stream_names.output)) == committed


def test_dropped_broker_connections_lose_and_double_nothing(stream_models, broker, stream_names,
                                                            redis_server, tmp_path):
    """The server cuts the consumer's connections (CLIENT KILL) mid-stream, while it is busy
    and while it waits in a blocking read. Broker errors surface (no client-side retries), the
    consumer reconnects, re-reads whatever a cut read delivered into its pending set, and the
    output still holds each event once."""
    import redis

    admin = redis.Redis(port=redis_server.port)          # the test's own client, with retries
    consumer = make_consumer(stream_models, broker, stream_names, tmp_path / "out", batch_size=200,
                             max_wait_ms=1_000, champion_check_seconds=3_600, broker_retry_seconds=120)

    def committed() -> int:
        info = admin.xinfo_groups(stream_names.events)[0]
        return int(info["entries-read"] or 0) - int(info["pending"])

    def cut() -> None:
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1

    ids: list[str] = []
    with ConsumerThread(consumer) as running:
        for round_ in range(4):
            ids += broker.publish(stream_names.events, loan_events(3_000, id_offset=10_000 * round_))
            total = len(ids)
            wait_for(committed, lambda n, t=total - 2_000: n >= t, "a third of the round", alive=running.problem)
            cut()                                    # busy: reading, scoring, writing or committing
            wait_for(committed, lambda n, t=total: n >= t, "the round", alive=running.problem)
            errors = consumer.stats.broker_errors
            time.sleep(0.3)                          # idle: blocked in XREADGROUP
            cut()
            wait_for(lambda: consumer.stats.broker_errors, lambda n, e=errors: n > e, "the idle cut to be felt",
                     alive=running.problem)
    assert consumer.stats.broker_errors >= 4
    out = read_output_files(tmp_path / "out")
    assert out.height == len(ids) == 12_000 and sorted(out["event_id"].to_list()) == sorted(ids)
    scored = [f["event_id"] for _, f in read_stream(broker, stream_names.output)]
    assert len(scored) == len(ids) and set(scored) == set(ids)
    info = broker.group_info(stream_names.events, stream_names.group)
    assert (info.lag, info.pending) == (0, 0)
