"""Waiting on real processes without wall-clock deadlines that a busy machine breaks.

A wait fails only when nothing has moved for `stall_s` (no run changed status, no run wrote
an event), or past a generous cap. On a quiet machine the work finishes long before either; on
a loaded one it takes longer, but keeps making progress, and the test still passes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import dagster as dg

STALL_S = 180.0    # no progress at all for this long: something is stuck
CAP_S = 1_800.0    # a hard stop, far above any loaded-machine run


def run_progress(instance: dg.DagsterInstance, limit: int = 50) -> tuple:
    """A value that changes whenever any recent run changes status or writes an event."""
    runs = instance.get_runs(limit=limit)
    return tuple((r.run_id, r.status.value, -1 if r.is_finished else len(instance.all_logs(r.run_id)))
                 for r in runs)


def wait_for(check: Callable[[], object], progress: Callable[[], object], *, what: str,
             on_fail: Callable[[str], None], stall_s: float = STALL_S, cap_s: float = CAP_S,
             poll_s: float = 1.0, alive: Callable[[], None] | None = None):
    """Poll `check()` until it returns something truthy, as long as `progress()` keeps changing."""
    started = last_move = time.monotonic()
    seen = progress()
    while True:
        if alive is not None:
            alive()
        value = check()
        if value:
            return value
        now = time.monotonic()
        current = progress()
        if current != seen:
            seen, last_move = current, now
        if now - last_move > stall_s:
            on_fail(f"no progress for {stall_s:.0f} s while waiting for {what} ({now - started:.0f} s in all)")
        if now - started > cap_s:
            on_fail(f"still waiting for {what} after {cap_s:.0f} s, though it kept making progress")
        time.sleep(poll_s)


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM to the process group, SIGKILL after `grace`; returns once the group is gone."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
