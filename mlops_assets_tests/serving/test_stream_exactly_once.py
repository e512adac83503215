"""100k events, the consumer SIGKILLed twice mid-stream: every event scored exactly once.

The consumer is a real process (`stream_worker.py`, through `run_stream`) on a real Redis.
Kill 1 comes from outside at a moment chosen only by progress (any point of the loop).
Kill 2 is the worst moment, made certain by the fault drill: after the batch's Parquet file
is written, before its commit. New events are published while the consumer is down, so the
restarted consumer has new messages waiting beside its unacknowledged batch.
"""

# ruff: noqa: F811  (pytest fixtures imported from stream_fixtures arrive as arguments)
from __future__ import annotations

import json
import os
import time

import polars as pl

from mlops_assets_tests.serving.stream_fixtures import (  # noqa: F401  (fixtures)
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

TOTAL = 100_000
BATCH = 1_000


def test_100k_events_two_sigkills_every_event_scored_exactly_once(
        stream_models, broker, stream_names, redis_server, tmp_path):
    payloads = loan_events(TOTAL, id_offset=0)
    out_dir = tmp_path / "out"
    progress = group_done(broker, stream_names)

    def start(**options) -> Worker:
        return Worker(stream_models, redis_server.url, stream_names, "scorer-1", out_dir, tmp_path,
                      batch_size=BATCH, **options)

    def pending_of_scorer() -> int:
        info = broker.group_info(stream_names.events, stream_names.group)
        return sum(c.pending for c in info.consumers if c.name == "scorer-1")

    ids = broker.publish(stream_names.events, payloads[:60_000])
    started = time.monotonic()

    # Run 1: killed from outside once it has made progress.
    worker = start()
    wait_for(progress, lambda n: n >= 20_000, "20k committed", alive=worker.problem)
    worker.kill()
    pending_after_kill_1 = pending_of_scorer()
    ids += broker.publish(stream_names.events, payloads[60_000:])

    # Run 2: resumes (own pending batch first, then new messages), then SIGKILLs itself
    # between the Parquet write and the commit of its 25th batch.
    worker = start(crash_after_batches=25)
    assert worker.proc.wait(600) == -9, worker.log()[-4000:]
    assert "drill: SIGKILL after writing" in worker.log()
    assert pending_of_scorer() == BATCH   # the written-but-uncommitted batch
    committed_before_run_3 = progress()
    assert 20_000 < committed_before_run_3 < TOTAL

    # Run 3: to the end, then a clean stop.
    worker = start()
    run3_started, run3_wall = time.monotonic(), time.time()
    wait_for(progress, lambda n: n >= TOTAL, "all 100k committed", alive=worker.problem)
    run3_seconds = time.monotonic() - run3_started
    assert worker.terminate() == 0, worker.log()[-4000:]
    total_seconds = time.monotonic() - started
    assert worker.stats()["redelivered_batches"] >= 1   # it resumed the drill's batch first

    # Parquet: every event id exactly once across all files, and nothing else.
    out = read_output_files(out_dir)
    assert out.height == TOTAL
    assert out["event_id"].n_unique() == TOTAL and set(out["event_id"]) == set(ids)
    assert out["loan_id"].n_unique() == TOTAL and set(out["loan_id"]) == set(range(TOTAL))
    assert out["model_version"].unique().to_list() == [stream_models.versions[0]]
    # Output stream: exactly once, no dedup needed (the commit acks and appends atomically).
    scored = [fields["event_id"] for _, fields in read_stream(broker, stream_names.output)]
    assert len(scored) == TOTAL and set(scored) == set(ids)
    info = broker.group_info(stream_names.events, stream_names.group)
    assert (info.lag, info.pending) == (0, 0)
    assert read_stream(broker, stream_names.dead_letter) == []

    run3_events = TOTAL - committed_before_run_3
    # Steady state: scored_at of run 3's rows, first to last batch (process start excluded).
    run3 = out.filter(pl.col("scored_at").dt.epoch("us") >= int(run3_wall * 1e6))["scored_at"]
    steady_seconds = (run3.max() - run3.min()).total_seconds()
    load = os.getloadavg()
    report = {
        "events": TOTAL, "batch_size": BATCH, "files": out["_file"].n_unique(),
        "pending_after_kill_1": pending_after_kill_1,
        "run3_events": run3_events, "run3_seconds": round(run3_seconds, 2),
        "run3_events_per_s": round(run3_events / run3_seconds),
        "steady_events_per_s": round(run3.len() / steady_seconds) if steady_seconds else None,
        "total_seconds_with_restarts": round(total_seconds, 2),
        "load_average": [round(x, 2) for x in load],
    }
    print("stream-exactly-once " + json.dumps(report))
    (tmp_path / "throughput.json").write_text(json.dumps(report))
    assert out.group_by("_file").len()["len"].max() <= BATCH
    assert out.filter(pl.col("event_id").is_duplicated()).height == 0
