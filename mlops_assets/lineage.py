"""Lineage facts recorded on every model version.

`git_sha` is the commit of the user's code: the code location the Dagster run was launched
from, not this library's own checkout. When that is not known (an in-process run, a code
server reached only by host and port, a folder outside git) it is absent rather than wrong;
images set MLOPS_GIT_SHA. The library's version is recorded separately (`mlops_assets_version`).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

from mlops_assets.version import __version__

GIT_SHA_ENV = "MLOPS_GIT_SHA"


def library_version() -> str:
    """The installed mlops-assets version."""
    return __version__


def code_location_dir(run) -> str | None:
    """The folder of the code a Dagster run executes, if the run records it: the run worker's
    code pointer (a Python file or a module, with its working directory), else the launching
    code location's loadable target. None for in-process runs (`materialize`)."""
    pointer = getattr(getattr(getattr(run, "job_code_origin", None), "repository_origin", None), "code_pointer", None)
    if pointer is not None:
        found = _code_dir(getattr(pointer, "python_file", None), getattr(pointer, "module", None),
                          getattr(pointer, "working_directory", None))
        if found:
            return found
    origin = getattr(run, "remote_job_origin", None)
    location = getattr(getattr(origin, "repository_origin", None), "code_location_origin", None)
    target = getattr(location, "loadable_target_origin", None)
    if target is None:
        return None
    module = target.module_name or target.package_name or getattr(target, "autoload_defs_module_name", None)
    return _code_dir(target.python_file, module, target.working_directory)


def _code_dir(python_file: str | None, module: str | None, working_directory: str | None) -> str | None:
    if python_file:
        path = Path(python_file)
        if not path.is_absolute() and working_directory:
            path = Path(working_directory) / path
        return str(path.resolve().parent)
    if module:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin:
            return str(Path(spec.origin).resolve().parent)
    return working_directory or None


def git_sha(code_dir: str | None = None) -> str | None:
    """The commit of the user's code: MLOPS_GIT_SHA if set, else HEAD of the git checkout that
    holds `code_dir` (see `code_location_dir`), else None."""
    if os.environ.get(GIT_SHA_ENV):
        return os.environ[GIT_SHA_ENV]
    if code_dir is None:
        return None
    return _git(code_dir, "rev-parse", "HEAD")


def git_dirty(code_dir: str | None) -> bool | None:
    """Whether tracked files in that checkout differ from its HEAD (None when unknown)."""
    if code_dir is None or os.environ.get(GIT_SHA_ENV):
        return None
    out = _git(code_dir, "status", "--porcelain", "--untracked-files=no", allow_empty=True)
    return None if out is None else bool(out)


def _git(cwd: str, *args: str, allow_empty: bool = False) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    return text if text or allow_empty else None


def lineage_tags(run) -> dict[str, str]:
    """The version tags that say which code made it: the user's commit (when known) and the
    library version."""
    code_dir = code_location_dir(run)
    tags = {"mlops_assets_version": library_version()}
    if sha := git_sha(code_dir):
        tags["git_sha"] = sha
        if git_dirty(code_dir):
            tags["git_dirty"] = "true"
    return tags
