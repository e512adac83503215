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
    """`say(text)` prints `[  12.3s] text`, cut to the terminal's width on a terminal; piped or
    redirected output (a log file, CI) keeps whole lines."""
    started = time.perf_counter() if started is None else started
    width = shutil.get_terminal_size((120, 40)).columns

    def say(text: str) -> None:
        out = stream or sys.stdout
        line = f"[{time.perf_counter() - started:6.1f}s] {text}"
        if len(line) > width and _is_terminal(out):
            line = line[: width - 3] + "..."
        print(line, file=out, flush=True)

    return say


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):     # no isatty, or a closed stream
        return False


PIPED_WIDTH = 400   # lines written to a pipe or a file: long enough for any one reason


def terminal_width() -> int:
    """The terminal's width, or PIPED_WIDTH when stdout is not a terminal (a log keeps the words
    a terminal would cut)."""
    return shutil.get_terminal_size((120, 40)).columns if _is_terminal(sys.stdout) else PIPED_WIDTH


def print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))
