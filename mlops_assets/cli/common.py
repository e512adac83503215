"""Small helpers the commands share: timed output lines, JSON output, a quiet environment."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable


def quiet_environment() -> None:
    """No tqdm download bars from MLflow, no library warnings on the console."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(dagster|mlflow|pydantic).*")
    try:
        import dagster as dg

        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    except (ImportError, AttributeError):
        pass


def timed_printer(started: float | None = None, stream=None) -> Callable[[str], None]:
    """`say(text)` prints `[  12.3s] text`, cut to the terminal's width."""
    started = time.perf_counter() if started is None else started
    width = shutil.get_terminal_size((120, 40)).columns

    def say(text: str) -> None:
        line = f"[{time.perf_counter() - started:6.1f}s] {text}"
        if len(line) > width:
            line = line[: width - 3] + "..."
        print(line, file=stream or sys.stdout, flush=True)

    return say


def terminal_width() -> int:
    return shutil.get_terminal_size((120, 40)).columns


def print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))
