"""The notifier resource against real HTTP servers on 127.0.0.1 (well-behaved and not)."""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
from pydantic import ValidationError

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


# -- servers that misbehave -------------------------------------------------------------------

class _Server:
    """A real HTTP server on 127.0.0.1; `answer(handler)` writes the response to each POST."""

    def __init__(self, answer):
        self.requests: list[tuple[str, bytes]] = []
        self.release = threading.Event()     # set at teardown: handlers that wait give up
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests.append((self.path, body))
                answer(self, server)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    started: list[_Server] = []

    def start(answer) -> _Server:
        started.append(_Server(answer))
        return started[-1]

    yield start
    for s in started:
        s.close()


def _status(code: int, location: str | None = None):
    def answer(handler, server):
        handler.send_response(code)
        if location:
            handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


def _send_guarded(n: Notifier) -> bool:
    """send() in a thread: a broken deadline shows as a test failure, not as a hung suite."""
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(n.send("drift", "t", "x")), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert result, "send() did not return: the deadline did not hold"
    return result[0]


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_attempt_and_is_never_followed(servers, caplog, code):
    caplog.set_level(logging.WARNING, logger="mlops_assets.alerts")
    target = servers(_status(200))
    redirector = servers(_status(code, location=f"{target.url}/elsewhere/{SECRET}"))
    assert _notifier(f"{redirector.url}/hooks/{SECRET}").send("drift", "t", "x") is False
    assert target.requests == []                       # the alert went nowhere else
    assert len(redirector.requests) == 1               # and was not retried: the answer would not change
    assert f"attempt 1/4 failed: HTTP {code}, a redirect (never followed)" in caplog.text
    assert "a retry would get the same answer" in caplog.text
    assert SECRET not in caplog.text


def test_a_client_error_is_not_retried_but_a_server_error_is(servers, caplog):
    caplog.set_level(logging.WARNING, logger="mlops_assets.alerts")
    missing = servers(_status(404))
    assert _notifier(f"{missing.url}/hooks/{SECRET}").send("drift", "t", "x") is False
    assert len(missing.requests) == 1
    busy = servers(_status(503))
    assert _notifier(f"{busy.url}/hooks/{SECRET}", max_attempts=3).send("drift", "t", "x") is False
    assert len(busy.requests) == 3
    assert "attempt 3/3 failed: HTTP 503" in caplog.text and "delivery failed after 3 attempts" in caplog.text
    assert SECRET not in caplog.text


def test_500_then_200_is_delivered_on_the_retry(servers):
    answers = iter([500, 200])
    server = servers(lambda handler, s: _status(next(answers))(handler, s))
    assert _notifier(f"{server.url}/hooks/{SECRET}").send("gate_failed", "t", "x") is True
    assert len(server.requests) == 2
    assert json.loads(server.requests[1][1])["kind"] == "gate_failed"


def _stall(handler, server):
    server.release.wait()                              # accept the request, never answer


def _trickle(handler, server):
    """Answer one byte at a time, each well within any read timeout, for as long as allowed."""
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 100_000:
        if server.release.wait(0.05):
            return
        try:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
        except OSError:
            return


@pytest.mark.parametrize("answer", [_stall, _trickle], ids=["stalled", "trickling"])
def test_a_slow_server_is_cut_off_at_the_deadline(servers, caplog, answer):
    caplog.set_level(logging.WARNING, logger="mlops_assets.alerts")
    server = servers(answer)
    # Read timeouts far longer than the deadline: only the deadline can end this send.
    n = _notifier(f"{server.url}/hooks/{SECRET}", deadline_s=1, timeout_s=60, max_attempts=4)
    assert _send_guarded(n) is False
    assert len(server.requests) == 1                   # no second attempt after the deadline
    assert "attempt 1/4 failed: no answer before the deadline" in caplog.text
    assert "the 1s deadline leaves no time for another" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize("url, scheme", [("file:///etc/passwd", "file"), ("ftp://example.com/hook", "ftp"),
                                         ("gopher://example.com/1", "gopher")])
def test_a_scheme_other_than_http_is_refused_naming_the_field(url, scheme):
    with pytest.raises(ValidationError) as caught:
        Notifier(backend="webhook", webhook_url=url)
    text = str(caught.value)
    assert f"webhook_url has the scheme '{scheme}': alerts are only sent over http or https" in text
    assert url not in text                             # a config error never echoes the secret


def test_an_env_var_url_is_checked_when_the_run_resolves_it(monkeypatch):
    monkeypatch.setenv("MLOPS_TEST_WEBHOOK_URL", f"file:///tmp/{SECRET}")
    notifier = Notifier(backend="webhook", webhook_url=dg.EnvVar("MLOPS_TEST_WEBHOOK_URL"))   # a name: fine

    @dg.asset
    def alerting(notifier: Notifier) -> None:
        notifier.send("drift", "t", "x")

    result = dg.materialize([alerting], resources={"notifier": notifier}, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    text = failure.event_specific_data.error.to_string()
    assert "webhook_url has the scheme 'file'" in text and SECRET not in text


def test_a_url_that_is_not_absolute_is_only_logged(caplog):
    caplog.set_level(logging.WARNING, logger="mlops_assets.alerts")
    n = _notifier(f"hooks.example.com/{SECRET}")
    assert n.send("drift", "t", "x") is False
    assert "notifier webhook_url is not an absolute http(s) URL (expected https://host/path)" in caplog.text
    assert SECRET not in caplog.text


def test_backend_log_never_posts(servers):
    server = servers(_status(200))
    assert Notifier(backend="log", webhook_url=f"{server.url}/hooks/{SECRET}").send("drift", "t", "x") is True
    assert server.requests == []
