"""Lineage facts recorded on every model version."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from mlops_assets.version import __version__


def code_version() -> str:
    return __version__


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The commit of the running code: MLOPS_GIT_SHA if set (images), else git, else None."""
    if os.environ.get("MLOPS_GIT_SHA"):
        return os.environ["MLOPS_GIT_SHA"]
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha or None
