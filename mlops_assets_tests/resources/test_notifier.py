"""The notifier resource against a real HTTP server on 127.0.0.1."""

import logging

from mlops_assets.resources.notifier import Notifier
from mlops_assets_tests.conftest import WEBHOOK_SECRET as SECRET


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
