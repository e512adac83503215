"""Alerts: gate failures, drift, performance drops, rollbacks and run failures.

Backends: `log` (the Python/Dagster log) and `webhook` (HTTP POST of JSON with a
Slack-compatible `text` field, so a Slack incoming-webhook URL works as is). The webhook
URL is a secret: configure it with `dg.EnvVar("MLOPS_WEBHOOK_URL")`; it is never logged
nor put into metadata. A webhook that is down never fails a run: delivery is retried with
exponential backoff, then the failure is logged and `send` returns False.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Literal

import dagster as dg
from pydantic import Field, PrivateAttr

logger = logging.getLogger("mlops_assets.alerts")


class Notifier(dg.ConfigurableResource):
    backend: Literal["log", "webhook"] = "log"
    webhook_url: str | None = Field(None, description="Secret: set it with EnvVar('MLOPS_WEBHOOK_URL').")
    timeout_s: float = Field(5.0, gt=0)
    max_attempts: int = Field(4, ge=1)
    backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles each attempt.")
    pipeline: str | None = None
    _sleep = PrivateAttr(default=time.sleep)

    def send(self, kind: str, title: str, text: str, fields: dict | None = None) -> bool:
        """Deliver one alert. Returns True when delivered (or logged), False when the webhook failed."""
        fields = {k: str(v) for k, v in (fields or {}).items()}
        line = f"[{kind}] {title}: {text}" + (" " + ", ".join(f"{k}={v}" for k, v in fields.items()) if fields else "")
        logger.warning(line)
        if self.backend != "webhook":
            return True
        if not self.webhook_url:
            logger.error("notifier backend is 'webhook' but webhook_url is not set; alert only logged")
            return False
        payload = {
            "text": f"*{title}*\n{text}",            # Slack-compatible
            "kind": kind, "title": title, "message": text, "fields": fields, "pipeline": self.pipeline,
        }
        return self._post(json.dumps(payload).encode())

    def _post(self, body: bytes) -> bool:
        delay = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            request = urllib.request.Request(
                self.webhook_url, data=body, method="POST", headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    if 200 <= response.status < 300:
                        return True
                    problem = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                # Only the exception type: its text can contain the URL, which is a secret.
                problem = type(getattr(exc, "reason", exc)).__name__
            logger.warning(f"alert webhook attempt {attempt}/{self.max_attempts} failed: {problem}")
            if attempt < self.max_attempts:
                self._sleep(delay)
                delay *= 2
        logger.error(f"alert webhook delivery failed after {self.max_attempts} attempts; alert only logged")
        return False
