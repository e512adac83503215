"""Alerts: gate failures, drift, performance drops, rollbacks and run failures.

Backends: `log` (the Python/Dagster log) and `webhook` (HTTP POST of JSON with a
Slack-compatible `text` field, so a Slack incoming-webhook URL works as is). The webhook
URL is a secret: configure it with `dg.EnvVar("MLOPS_WEBHOOK_URL")`; it is never logged
nor put into metadata, and config errors about it do not echo it.

A webhook that is down never fails a run, and never holds one up for long:

* only `http` and `https` URLs are used (another scheme is a config error naming
  `webhook_url`);
* redirects are never followed: a 3xx is a failed attempt, since following it would send the
  alert, and whatever the secret URL carries, to another address;
* one deadline (`deadline_s`) bounds a whole `send`: every attempt and every backoff sleep.
  It is enforced on the socket itself, so a server that accepts the connection and then
  answers slowly, or trickles bytes, is cut off at the deadline;
* failures are retried with exponential backoff, at most `max_attempts` times, and only when
  another attempt could succeed (network errors, 5xx, 408, 429; not 3xx or other 4xx).

Then the failure is logged and `send` returns False.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Literal
from urllib.parse import urlsplit

import dagster as dg
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

logger = logging.getLogger("mlops_assets.alerts")


def _ensure_alert_output() -> None:
    """The log backend is how alerts are delivered, so it must print even where nobody set up
    logging (Python's last-resort handler prints a bare message). Where logging is configured
    (Dagster, pytest, the user), alerts go through it unchanged."""
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s mlops-assets ALERT %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)

SCHEMES = ("http", "https")
RETRIED_4XX = (408, 429)   # request timeout, too many requests: the same request may succeed later


def webhook_url_problem(url: str, *, complete: bool = True) -> str | None:
    """Why `url` cannot be a webhook (never quoting it: it is a secret), or None.

    `complete=False` only refuses a wrong scheme: what a config validator can tell while the
    value may still be the name of an environment variable (an `EnvVar` is validated first by
    its name, then by its value).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme and parts.scheme.lower() not in SCHEMES:
        return f"has the scheme '{parts.scheme}': alerts are only sent over http or https"
    if complete and (not parts.scheme or not parts.hostname):
        return "is not an absolute http(s) URL (expected https://host/path)"
    return None


class Notifier(dg.ConfigurableResource):
    # The URL is a secret: a config error about it must not print it.
    model_config = ConfigDict(hide_input_in_errors=True)

    backend: Literal["log", "webhook"] = "log"
    webhook_url: str | None = Field(None, description="Secret: set it with EnvVar('MLOPS_WEBHOOK_URL').")
    timeout_s: float = Field(5.0, gt=0, description="Longest wait of one attempt for a connect or a read.")
    max_attempts: int = Field(4, ge=1, le=10)
    backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles each attempt.")
    deadline_s: float = Field(
        15.0, gt=0, le=300, description="Longest time one send takes, all attempts and backoff together."
    )
    pipeline: str | None = None
    _sleep = PrivateAttr(default=time.sleep)

    @field_validator("webhook_url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        problem = None if value is None else webhook_url_problem(value, complete=False)
        if problem:
            raise ValueError(f"webhook_url {problem}")
        return value

    def send(self, kind: str, title: str, text: str, fields: dict | None = None) -> bool:
        """Deliver one alert. Returns True when delivered (or logged), False when the webhook failed."""
        fields = {k: str(v) for k, v in (fields or {}).items()}
        line = f"[{kind}] {title}: {text}" + (" " + ", ".join(f"{k}={v}" for k, v in fields.items()) if fields else "")
        _ensure_alert_output()
        logger.warning(line)
        if self.backend != "webhook":
            return True
        if not self.webhook_url:
            logger.error("notifier backend is 'webhook' but webhook_url is not set; alert only logged")
            return False
        problem = webhook_url_problem(self.webhook_url)
        if problem:
            logger.error(f"notifier webhook_url {problem}; alert only logged")
            return False
        payload = {
            "text": f"*{title}*\n{text}",            # Slack-compatible
            "kind": kind, "title": title, "message": text, "fields": fields, "pipeline": self.pipeline,
        }
        return self._post(json.dumps(payload).encode())

    def _post(self, body: bytes) -> bool:
        deadline = time.monotonic() + self.deadline_s
        delay = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            problem, retry = _attempt(self.webhook_url, body, timeout=self.timeout_s, deadline=deadline)
            if problem is None:
                return True
            logger.warning(f"alert webhook attempt {attempt}/{self.max_attempts} failed: {problem}")
            if not retry:
                logger.error("alert webhook delivery failed: a retry would get the same answer; alert only logged")
                return False
            if attempt == self.max_attempts:
                break
            if time.monotonic() + delay >= deadline:
                logger.error(f"alert webhook delivery failed after {attempt} attempts: the {self.deadline_s:g}s "
                             "deadline leaves no time for another; alert only logged")
                return False
            self._sleep(delay)
            delay *= 2
        logger.error(f"alert webhook delivery failed after {self.max_attempts} attempts; alert only logged")
        return False


def _attempt(url: str, body: bytes, *, timeout: float, deadline: float) -> tuple[str | None, bool]:
    """One POST: (None, _) when delivered, else (what failed, whether a retry could help).

    What failed is a status code or an exception type, never an exception's text: that can
    contain the URL.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return "the deadline passed", True    # the caller sees the deadline and stops
    connections: list[_DeadlineConnection] = []
    opener = urllib.request.build_opener(
        _NoRedirect(), _HTTPHandler(deadline, connections), _HTTPSHandler(deadline, connections))
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=min(timeout, remaining)) as response:
            status = response.status
        if any(c.expired for c in connections):
            # Cut off mid-answer: a status line read up to the shutdown is no proof of delivery.
            return "no answer before the deadline", True
        if 200 <= status < 300:
            return None, False
        return f"HTTP {status}", True
    except urllib.error.HTTPError as exc:
        exc.close()
        if 300 <= exc.code < 400:
            return f"HTTP {exc.code}, a redirect (never followed)", False
        return f"HTTP {exc.code}", exc.code >= 500 or exc.code in RETRIED_4XX
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            return "no answer before the deadline", True
        return type(getattr(exc, "reason", exc)).__name__, True
    finally:
        for connection in connections:
            connection.stop_timer()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None   # urllib then raises HTTPError with the 3xx code


class _DeadlineConnection:
    """Shuts its socket down at the deadline, so no read can outlive it (a timeout is per read)."""

    deadline: float
    expired = False
    _timer: threading.Timer | None = None

    def connect(self):
        super().connect()  # type: ignore[misc]
        raw = self.sock    # kept: urllib drops the connection's reference once the headers are read
        self._timer = threading.Timer(max(self.deadline - time.monotonic(), 0.0), self._expire, args=(raw,))
        self._timer.daemon = True
        self._timer.start()

    def _expire(self, sock: socket.socket) -> None:
        self.expired = True
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class _HTTPConnection(_DeadlineConnection, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float, connections: list):
        super().__init__()
        self._deadline, self._connections = deadline, connections

    def _connection(self, cls):
        def make(host, **kwargs):
            connection = cls(host, **kwargs)
            connection.deadline = self._deadline
            self._connections.append(connection)
            return connection
        return make

    def http_open(self, req):
        return self.do_open(self._connection(_HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float, connections: list):
        super().__init__()
        self._deadline, self._connections = deadline, connections

    _connection = _HTTPHandler._connection

    def https_open(self, req):
        return self.do_open(self._connection(_HTTPSConnection), req, context=self._context)
