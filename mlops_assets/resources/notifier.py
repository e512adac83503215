"""Alerts: gate failures, drift, performance drops and run failures."""

from __future__ import annotations

import logging

import dagster as dg
from pydantic import Field

logger = logging.getLogger("mlops_assets.alerts")


class Notifier(dg.ConfigurableResource):
    """Sends alerts. Backend 'log' writes to the Dagster/Python log."""

    backend: str = Field("log", description="'log'.")

    def send(self, kind: str, title: str, text: str, fields: dict | None = None) -> bool:
        line = f"[{kind}] {title}: {text}"
        if fields:
            line += " " + ", ".join(f"{k}={v}" for k, v in fields.items())
        logger.warning(line)
        return True
