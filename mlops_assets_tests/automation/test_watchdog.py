"""The dead-run decision (pure) and the local process checks it relies on (real processes)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from mlops_assets.automation.watchdog import (
    DeadRun,
    Proc,
    RunFacts,
    WatchdogReport,
    address_is_here,
    find_dead_runs,
    process_alive,
    process_created_at,
    track_gone_workers,
    worker_host,
)

HOST = "trainer-1"
NOW = 10_000.0
GRACE = 20.0


def facts(status="STARTED", *, pid=101, host=HOST, last=NOW - 60, gone=NOW - 30, steps=(), ended=None,
          slots=False, launched=NOW - 120, run_id="r1"):
    return RunFacts(
        run_id=run_id, status=status, job_name="churn__retrain", launched_at=launched,
        worker=Proc(pid, launched + 2) if pid is not None else None, worker_host=host,
        steps=tuple(Proc(p, launched + 3) for p in steps), last_event_at=last, ended_at=ended, holds_slots=slots,
        worker_gone_since=gone,
    )


def decide(runs, alive=(), **kwargs):
    """find_dead_runs with `alive` as the set of pids that run here."""
    return find_dead_runs(runs, now=NOW, grace_seconds=GRACE, is_alive=lambda pid, _at: pid in alive,
                          hostname=HOST, **kwargs)


def test_a_live_worker_is_not_dead():
    assert decide([facts()], alive={101}) == []


def test_a_worker_gone_past_grace_is_dead_and_failed_with_its_slots_freed():
    [dead] = decide([facts(last=NOW - 60, gone=NOW - 30)])
    assert (dead.run_id, dead.mark, dead.free_slots, dead.stop_pids) == ("r1", "failed", True, ())
    assert "pid 101" in dead.reason and "gone for 30s" in dead.reason and "last event 60s ago" in dead.reason
    assert "marked failed" in dead.summary() and "pool slots freed" in dead.summary()


def test_within_grace_the_run_is_left_alone():
    # Just found gone: the code server that saw its worker die may still be failing the run.
    assert decide([facts(gone=NOW - GRACE + 1)]) == []
    assert decide([facts(gone=None)]) == []                           # this tick is the first to see it
    assert decide([facts(gone=NOW - GRACE - 1)]) != []
    # A run that still writes events is not dead, whatever its recorded pid says.
    assert decide([facts(gone=NOW - 300, last=NOW - 2)]) == []


def test_no_event_at_all_counts_from_the_worker_start():
    assert decide([facts(last=None, launched=NOW - 10)]) == []       # worker recorded 8 s ago
    assert len(decide([facts(last=None, launched=NOW - 100)])) == 1


def test_gone_workers_are_tracked_from_the_first_tick_that_saw_them():
    runs = [facts(run_id="a"), facts(run_id="b", pid=102), facts(run_id="c", pid=None),
            facts("FAILURE", run_id="d", ended=NOW - 5)]
    first = track_gone_workers(runs, {}, now=NOW, is_alive=lambda pid, _at: pid == 102)
    assert first == {"a": NOW}                                        # b alive, c unknown, d over
    later = track_gone_workers(runs, {**first, "zombie-entry": 1.0}, now=NOW + 9, is_alive=lambda *_: False)
    assert later == {"a": NOW, "b": NOW + 9}                          # kept, added, pruned


def test_a_run_on_another_host_is_never_judged_by_a_local_pid():
    assert decide([facts(host="trainer-2")]) == []
    assert decide([facts(host=None)]) == []                           # unknown host: same
    finished = facts("FAILURE", host="trainer-2", ended=NOW - 300, slots=True)
    assert decide([finished]) == []


def test_a_starting_run_without_a_worker_times_out():
    young = facts("STARTING", pid=None, launched=NOW - 100, last=NOW - 100)
    old = facts("STARTING", pid=None, launched=NOW - 400, last=NOW - 400, run_id="r2")
    [dead] = decide([young, old], start_timeout_seconds=300)
    assert dead.run_id == "r2" and dead.mark == "failed" and "300s of launch" in dead.reason


def test_a_starting_run_with_a_live_worker_is_slow_not_dead():
    assert decide([facts("STARTING", launched=NOW - 900)], alive={101}, start_timeout_seconds=300) == []


def test_a_started_run_without_a_recorded_worker_is_not_judged():
    assert decide([facts(pid=None, last=NOW - 900)]) == []


def test_a_canceling_run_whose_worker_died_is_marked_canceled():
    [dead] = decide([facts("CANCELING")])
    assert dead.mark == "canceled"


def test_queued_runs_wait_and_are_never_touched():
    assert decide([facts("QUEUED", pid=None, launched=NOW - 9_000)]) == []


def test_orphaned_step_workers_are_stopped_before_the_slots_are_freed():
    [dead] = decide([facts(steps=(201, 202))], alive={202})
    assert dead.mark == "failed" and dead.stop_pids == (202,) and dead.stop_signal == signal.SIGTERM
    assert dead.free_slots is False                                   # freed once 202 is gone


def test_a_finished_run_still_holding_slots_gets_them_freed():
    [dead] = decide([facts("FAILURE", ended=NOW - 60, slots=True)])
    assert dead.mark is None and dead.free_slots and "still holds pool slots" in dead.reason
    assert decide([facts("FAILURE", ended=NOW - 60, slots=False)]) == []    # nothing held
    assert decide([facts("SUCCESS", ended=NOW - 5, slots=True)]) == []      # just ended


def test_a_finished_runs_orphans_get_sigterm_then_sigkill():
    term = decide([facts("FAILURE", steps=(201,), ended=NOW - 30, slots=True)], alive={201})
    kill = decide([facts("FAILURE", steps=(201,), ended=NOW - 3 * GRACE - 1, slots=True)], alive={201})
    assert [(d.stop_pids, d.stop_signal, d.free_slots) for d in term] == [((201,), signal.SIGTERM, False)]
    assert [(d.stop_pids, d.stop_signal, d.free_slots) for d in kill] == [((201,), signal.SIGKILL, False)]


def test_a_finished_run_whose_worker_still_winds_down_is_left_to_it():
    assert decide([facts("SUCCESS", ended=NOW - 60, slots=True)], alive={101}) == []


def test_is_alive_gets_the_recorded_time_to_refuse_a_reused_pid():
    seen = []
    decide_with = find_dead_runs([facts(steps=(201,))], now=NOW, grace_seconds=GRACE, hostname=HOST,
                                 is_alive=lambda pid, at: seen.append((pid, at)) or False)
    assert (201, NOW - 120 + 3) in seen and (101, NOW - 120 + 2) in seen
    assert len(decide_with) == 1


def test_the_report_lists_the_runs_acted_on():
    assert WatchdogReport(checked=3).describe() == "no dead runs (3 in-progress or slot-holding runs checked)"
    acted = WatchdogReport(checked=2, acted=[DeadRun("r9", "j", "STARTED", "worker gone", mark="failed")])
    assert "r9" in acted.describe() and "marked failed" in acted.describe()


def grpc(location="churn", **info):
    return {"dagster/code_location": location, ".dagster/grpc_info": json.dumps(info)}


def test_worker_host_from_the_launchers_tags():
    never = lambda _address: False                                    # no name lookups
    # A socket or loopback address is the daemon's host: ours only for our own location's runs.
    assert worker_host(grpc(socket="/tmp/x"), "churn", HOST, never) == HOST
    assert worker_host(grpc(host="localhost", port=4000), "churn", HOST, never) == HOST
    assert worker_host(grpc(host="127.0.0.1", port=4000), "churn", HOST, never) == HOST
    assert worker_host(grpc("other", socket="/tmp/x"), "churn", HOST, never) is None
    assert worker_host(grpc(socket="/tmp/x"), None, HOST, never) is None
    # A named address: ours when it is this host, someone else's otherwise.
    assert worker_host(grpc("other", host=HOST, port=4000), "churn", HOST, never) == HOST
    assert worker_host(grpc(host="user_code", port=4000), "churn", HOST, lambda a: a == "user_code") == HOST
    assert worker_host(grpc(host="10.9.8.7", port=4000), "churn", HOST, never) == "10.9.8.7"
    # Not launched into a code server (a script, `materialize`): unknown.
    assert worker_host({"dagster/code_location": "churn"}, "churn", HOST, never) is None


def test_address_is_here_binds_to_find_out():
    assert not address_is_here("127.0.0.1")                           # loopback says nothing
    assert not address_is_here("198.51.100.77")                       # TEST-NET-2: no one's address
    # This machine's own address, as the kernel would pick it for an outgoing route (a UDP
    # connect sends nothing). A machine with no route has only loopback to offer.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))
            mine = probe.getsockname()[0]
        except OSError:
            mine = None
    if mine is not None:
        assert address_is_here(mine), mine


# -- real processes ---------------------------------------------------------------------
def test_process_checks_on_real_processes():
    recorded = time.time() + 0.5
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.3)
        created = process_created_at(child.pid)
        assert created is not None and abs(created - time.time()) < 5
        assert process_alive(child.pid, recorded)
        # A pid recorded before this process existed belongs to some earlier process.
        assert not process_alive(child.pid, created - 10)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_created_at(child.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        # Killed but not yet reaped (a zombie): dead all the same.
        assert process_created_at(child.pid) is None and not process_alive(child.pid, recorded)
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid, recorded)
