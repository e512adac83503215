"""Alerts through a real HTTP server on 127.0.0.1, the run-failure sensor, quarantine."""

import datetime as dt
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import Pipeline
from mlops_assets.resources.notifier import Notifier

SECRET = "T000-SECRET-TOKEN-42"


@pytest.fixture
def webhook():
    """A real webhook receiver; `fail_first` makes its first N requests answer 500."""
    state = {"bodies": [], "fail_first": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state["fail_first"] > 0:
                state["fail_first"] -= 1
                self.send_response(500)
                self.end_headers()
                return
            state["bodies"].append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/hooks/{SECRET}"
    yield state
    server.shutdown()
    server.server_close()


def _notifier(url, **kw) -> Notifier:
    n = Notifier(backend="webhook", webhook_url=url, backoff_s=0.01, **kw)
    return n


def test_webhook_posts_slack_compatible_json(webhook):
    assert _notifier(webhook["url"], pipeline="demo").send("drift", "demo: drift", "share 0.8", {"share": 0.8})
    path, body = webhook["bodies"][0]
    assert path.endswith(SECRET)
    assert body["text"] == "*demo: drift*\nshare 0.8"
    assert body["kind"] == "drift" and body["fields"] == {"share": "0.8"} and body["pipeline"] == "demo"


def test_webhook_retries_with_backoff(webhook):
    webhook["fail_first"] = 2
    sleeps = []
    n = _notifier(webhook["url"])
    n._sleep = sleeps.append
    assert n.send("gate_failed", "t", "x")
    assert sleeps == [0.01, 0.02] and len(webhook["bodies"]) == 1


def test_webhook_down_never_raises_and_never_logs_the_secret(caplog):
    caplog.set_level(logging.WARNING, logger="mlops_assets.alerts")
    n = _notifier(f"http://127.0.0.1:9/hooks/{SECRET}", max_attempts=2, timeout_s=1)
    assert n.send("run_failure", "t", "x") is False
    assert "delivery failed after 2 attempts" in caplog.text
    assert SECRET not in caplog.text


def test_secret_comes_from_env_var_and_stays_out_of_logs(webhook, monkeypatch, caplog, spec):
    monkeypatch.setenv("MLOPS_WEBHOOK_URL", webhook["url"])
    defs = build_mlops_defs(spec)
    names = Pipeline(spec)
    notifier = defs.resources[names.notifier_key]
    assert notifier.backend == "webhook"
    sensor = defs.get_sensor_def(names.sensor("run_failure"))
    caplog.set_level(logging.DEBUG)
    with dg.instance_for_test() as instance:
        @dg.op
        def boom():
            raise RuntimeError("model server exploded")

        job = dg.GraphDefinition(name="g", node_defs=[boom]).to_job(name=names.job("retrain"))
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        failure = [e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE"][0]
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_event=failure, dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
        ).for_run_failure()
        sensor(context)
    kinds = [b["kind"] for _, b in webhook["bodies"]]
    assert kinds == ["run_failure"]
    assert webhook["bodies"][0][1]["fields"]["run_id"] == result.run_id
    assert SECRET not in caplog.text


def test_unreadable_file_is_quarantined_and_does_not_block_the_next(spec):
    defs = build_mlops_defs(spec)
    names = Pipeline(spec)
    landing = spec.source.path
    good = write_day(landing, dt.date(2026, 1, 2), n_rows=300)
    bad = good.with_name("loans_2026-01-01.parquet")
    bad.write_bytes(b"PAR1 this is not parquet")
    job = defs.resolve_job_def(names.job("ingest"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(names.partitions_name, [bad.name, good.name])
        failed = job.execute_in_process(instance=instance, partition_key=bad.name, raise_on_error=False,
                                        asset_selection=[names.key("raw_data")])
        assert not failed.success
        failure = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"][0]
        assert "quarantined" in failure.event_specific_data.error.message
        moved = bad.parent / "_quarantine" / bad.name
        assert moved.exists() and not bad.exists()
        assert "unreadable" in (moved.parent / (bad.name + ".reason.txt")).read_text()
        record = defs.resources[names.storage_key].read_json(f"{spec.name}/quarantine/{bad.name}.json")
        assert record["moved_to"] == str(moved)
        ok = job.execute_in_process(instance=instance, partition_key=good.name,
                                    asset_selection=[names.key("raw_data"), names.key("validated_features")])
        assert ok.success
