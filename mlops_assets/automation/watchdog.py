"""Dead-run watchdog: a killed run is failed, its pool slots freed and its orphans stopped.

Why (measured with dagster 1.13.27 and the DefaultRunLauncher):
- The DefaultRunLauncher does not implement `check_run_worker_health`, so run monitoring never
  checks a STARTED run's worker. When the daemon's process group dies (daemon, code server, run
  and step workers) the run stays STARTED for ever, keeps its `mlops_training` slot, and every
  later training waits on the pool. No alert is sent.
- When only the run worker dies, the code server fails the run within a second, but the slot
  stays claimed (the dead run worker claimed it) and the step worker trains on as an orphan.

The watchdog is a sensor, so the code server of its location evaluates it: under the
DefaultRunLauncher that is the server that forks the run workers, on the same host and pid
namespace. Each tick reads the run-worker pid each in-progress run recorded (the engine event
"Started process for run (pid: N)") and the runs holding pool slots, decides with the pure
`find_dead_runs`, and for each dead run stops its orphaned step workers, marks it failed the
public way (`report_run_failed`, so every `run_failure_sensor` fires) and frees its slots.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import dagster as dg

# Tags Dagster writes on launched runs, spelled out: dagster exports no public constants.
CODE_LOCATION_TAG = "dagster/code_location"
GRPC_INFO_TAG = ".dagster/grpc_info"
START_MESSAGE = "Started process for run (pid:"
NOTIFY_KIND = "dead_run"
PID_CLOCK_SLACK_S = 2.0      # a process's creation time vs the event that recorded it
ORPHAN_WAIT_S = 5.0          # a signalled orphan gone this soon gets its slots freed at once
MAX_RUNS_PER_TICK = 500
IN_PROGRESS = ("STARTING", "STARTED", "CANCELING")
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


@dataclass(frozen=True)
class Proc:
    """A process recorded in a run's events: its pid and when the event was written."""

    pid: int
    recorded_at: float


@dataclass(frozen=True)
class RunFacts:
    """What is known about one run, from its record, events and tags."""

    run_id: str
    status: str                        # a DagsterRunStatus value, e.g. "STARTED"
    job_name: str
    launched_at: float | None          # launch time (STARTING) or creation time
    worker: Proc | None = None         # the run worker the launcher started
    worker_host: str | None = None     # None: unknown, and then the run is never judged
    steps: tuple[Proc, ...] = ()       # step workers (multiprocess executor)
    last_event_at: float | None = None
    ended_at: float | None = None
    holds_slots: bool = False
    worker_gone_since: float | None = None   # the first tick that found the worker gone


@dataclass(frozen=True)
class DeadRun:
    """One decision: what to do about a run whose worker is gone."""

    run_id: str
    job_name: str
    status: str
    reason: str
    mark: str | None                   # "failed", "canceled", or None: already finished
    stop_pids: tuple[int, ...] = ()    # live orphaned step workers to signal
    stop_signal: int = signal.SIGTERM
    free_slots: bool = True            # False while orphans run: freed once they are gone

    def summary(self) -> str:
        done = [f"marked {self.mark}"] if self.mark else []
        if self.stop_pids:
            done.append(f"{signal.Signals(self.stop_signal).name} to orphaned pids {list(self.stop_pids)}")
        if self.free_slots:
            done.append("pool slots freed")
        return f"{self.run_id} ({self.job_name}, {self.status}): {self.reason}; " + ", ".join(done)


def find_dead_runs(
    runs: Iterable[RunFacts],
    *,
    now: float,
    grace_seconds: float,
    is_alive: Callable[[int, float], bool],
    hostname: str,
    start_timeout_seconds: float = 300.0,
) -> list[DeadRun]:
    """Decide which runs are dead. Pure: every process check goes through `is_alive`.

    `is_alive(pid, recorded_at)`: that pid runs here and is the process recorded then (a reused
    pid is not). Only runs on `hostname` are judged. An in-progress run is dead when its run
    worker has been gone for more than `grace_seconds` (since `worker_gone_since`) and it has
    written no event for as long; the grace lets the code server, which fails a run whose
    worker it saw die, do so alone. A run with no recorded worker is dead once STARTING for
    more than `start_timeout_seconds`. A finished run still holding pool slots `grace_seconds`
    after its end gets them freed once its orphaned step workers are stopped (SIGTERM, SIGKILL
    past three graces).
    """
    dead: list[DeadRun] = []
    for run in runs:
        if run.worker_host is None or run.worker_host != hostname:
            continue                   # another host's pid means nothing here
        live_steps = tuple(p.pid for p in run.steps if is_alive(p.pid, p.recorded_at))
        worker_alive = run.worker is not None and is_alive(run.worker.pid, run.worker.recorded_at)
        if run.status in FINISHED:
            age = now - run.ended_at if run.ended_at is not None else 0.0
            # A run frees its own slots as it ends, and a worker still winding down will.
            if run.holds_slots and age > grace_seconds and not worker_alive:
                dead.append(DeadRun(
                    run.run_id, run.job_name, run.status, f"ended {age:.0f}s ago but still holds pool slots",
                    mark=None, stop_pids=live_steps, free_slots=not live_steps,
                    stop_signal=signal.SIGKILL if age > 3 * grace_seconds else signal.SIGTERM,
                ))
            continue
        if run.status not in IN_PROGRESS or worker_alive:
            continue                   # alive, or waiting (QUEUED, NOT_STARTED) as it should
        if run.worker is not None:
            gone = now - (run.worker_gone_since if run.worker_gone_since is not None else now)
            quiet = now - max(run.last_event_at or 0.0, run.worker.recorded_at)
            if gone <= grace_seconds or quiet <= grace_seconds:
                continue
            reason = (f"run worker pid {run.worker.pid} on {run.worker_host} gone for {gone:.0f}s, "
                      f"last event {quiet:.0f}s ago")
        else:
            age = now - run.launched_at if run.launched_at is not None else 0.0
            if run.status != "STARTING" or age <= start_timeout_seconds:
                continue               # without a recorded worker only a start timeout tells
            reason = f"no run worker started within {start_timeout_seconds:.0f}s of launch ({age:.0f}s ago)"
        dead.append(DeadRun(run.run_id, run.job_name, run.status, reason,
                            mark="canceled" if run.status == "CANCELING" else "failed",
                            stop_pids=live_steps, free_slots=not live_steps))
    return dead


def track_gone_workers(runs: Iterable[RunFacts], previous: dict[str, float], *, now: float,
                       is_alive: Callable[[int, float], bool]) -> dict[str, float]:
    """run id -> when a tick first found its in-progress run worker gone. Pure."""
    return {run.run_id: previous.get(run.run_id, now) for run in runs
            if run.status in IN_PROGRESS and run.worker is not None
            and not is_alive(run.worker.pid, run.worker.recorded_at)}


# -- this host's processes and addresses -----------------------------------------------
# /proc (Linux) rather than psutil, which is only a dev dependency of the package.
def process_created_at(pid: int) -> float | None:
    """When `pid` was created; None when it does not exist or is a zombie (dead, unreaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        if Path("/proc/self/stat").exists():
            return None
        try:                           # no /proc (not Linux): existence only, no creation time
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return float("-inf")
    fields = stat[stat.rindex(")") + 2:].split()    # the command name may hold spaces and ")"
    if fields[0] in ("Z", "X"):
        return None
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


@functools.cache
def _boot_time() -> float:
    return next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))


def process_alive(pid: int, recorded_at: float) -> bool:
    """`pid` runs on this host and existed when it was recorded (a reused pid did not)."""
    created = process_created_at(pid)
    return created is not None and created <= recorded_at + PID_CLOCK_SLACK_S


def address_is_here(host: str) -> bool:
    """Every address `host` resolves to is a non-loopback address of this machine (bindable)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        if ipaddress.ip_address(sockaddr[0].split("%")[0]).is_loopback:
            return False               # loopback is relative to the daemon, not to us
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((sockaddr[0], 0))
            except OSError:
                return False
    return bool(infos)


def _stop(pids: Sequence[int], sig: int) -> bool:
    """Signal the orphans; True when they all exit within ORPHAN_WAIT_S."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while any(process_created_at(pid) is not None for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# -- reading and writing the instance ---------------------------------------------------
def _slot_holding_run_ids(instance: dg.DagsterInstance) -> set[str]:
    """Runs holding or waiting for pool slots. Private storage API: there is no public reader
    (Dagster's own slot-freeing daemon calls the same method)."""
    storage = instance.event_log_storage
    return set(storage.get_concurrency_run_ids()) if storage.supports_global_concurrency_limits else set()


def _free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    """Private storage API, as Dagster's daemon uses it: nothing public frees a run's slots."""
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def _report_dead(instance: dg.DagsterInstance, run: dg.DagsterRun, mark: str, message: str) -> None:
    """Fail (or cancel) the run through the instance, as Dagster's run monitoring does. The
    failure reason is private API: UNEXPECTED_TERMINATION is what run retries retry, unlike a
    step failure."""
    from dagster._core.events import JobFailureData, RunFailureReason

    if mark == "canceled":
        instance.report_run_canceled(run, message)
    else:
        instance.report_run_failed(run, message, JobFailureData(
            error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION))


def _recorded_processes(instance: dg.DagsterInstance, run_id: str) -> tuple[Proc | None, tuple[Proc, ...]]:
    """The latest run worker and every step worker the run's engine events recorded."""
    worker, steps = None, []
    for record in instance.all_logs(run_id, of_type={dg.DagsterEventType.ENGINE_EVENT,
                                                     dg.DagsterEventType.STEP_WORKER_STARTED}):
        event = record.dagster_event
        pid = (getattr(getattr(event, "event_specific_data", None), "metadata", None) or {}).get("pid")
        if pid is None or not str(pid.value).isdigit():
            continue
        proc = Proc(int(str(pid.value)), record.timestamp)
        if event.event_type == dg.DagsterEventType.STEP_WORKER_STARTED:
            steps.append(proc)
        elif (record.message or "").startswith(START_MESSAGE):
            worker = proc
    return worker, tuple(steps)


def worker_host(tags: dict[str, str], location: str | None, hostname: str,
                is_here: Callable[[str], bool] = address_is_here) -> str | None:
    """Where the run worker ran, from the run's tags; `hostname` when it is this host.

    The DefaultRunLauncher runs a run inside the code server the daemon reached at the address
    in GRPC_INFO_TAG. A named address is this host when it resolves here; a socket or loopback
    address is the daemon's host, which is this host when the run is of this sensor's own
    location (the daemon reaches this server at that same address).
    """
    try:
        grpc = json.loads(tags.get(GRPC_INFO_TAG) or "null")
    except ValueError:
        grpc = None
    if not isinstance(grpc, dict):
        return None                    # not launched into a code server (e.g. run in a script)
    address = str(grpc.get("host") or "")
    if grpc.get("socket") or address in ("localhost", "", "::1") or address.startswith("127."):
        return hostname if location is not None and tags.get(CODE_LOCATION_TAG) == location else None
    return hostname if address == hostname or is_here(address) else address


def _statuses(names: Sequence[str]) -> list[dg.DagsterRunStatus]:
    return [dg.DagsterRunStatus(name) for name in names]


def gather_run_facts(instance: dg.DagsterInstance, *, job_names: Sequence[str] | None,
                     location: str | None, hostname: str) -> list[RunFacts]:
    """RunFacts for every in-progress or slot-holding run of `job_names` (None: any job)."""
    records = list(instance.get_run_records(dg.RunsFilter(statuses=_statuses(IN_PROGRESS)),
                                            limit=MAX_RUNS_PER_TICK))
    holding = _slot_holding_run_ids(instance)
    others = holding - {r.dagster_run.run_id for r in records}
    if others:
        records += instance.get_run_records(dg.RunsFilter(run_ids=sorted(others), statuses=_statuses(FINISHED)),
                                            limit=MAX_RUNS_PER_TICK)
    is_here = functools.cache(address_is_here)   # one name lookup per address per pass
    facts = []
    for record in records:
        run = record.dagster_run
        if job_names is not None and run.job_name not in job_names:
            continue
        worker, steps = _recorded_processes(instance, run.run_id)
        launched = record.create_timestamp.timestamp()
        if run.status == dg.DagsterRunStatus.STARTING:
            launched = instance.get_run_stats(run.run_id).launch_time or launched
        last = instance.get_records_for_run(run.run_id, limit=1, ascending=False).records
        facts.append(RunFacts(
            run_id=run.run_id, status=run.status.value, job_name=run.job_name, launched_at=launched,
            worker=worker, worker_host=worker_host(dict(run.tags), location, hostname, is_here), steps=steps,
            last_event_at=last[0].timestamp if last else None, ended_at=record.end_time,
            holds_slots=run.run_id in holding,
        ))
    return facts


# -- one pass, and the sensor -----------------------------------------------------------
@dataclass
class WatchdogReport:
    checked: int = 0
    acted: list[DeadRun] = field(default_factory=list)
    gone: dict[str, float] = field(default_factory=dict)    # the next pass's `previous`

    def describe(self) -> str:
        if not self.acted:
            waiting = f"; {len(self.gone)} with a gone worker, within grace" if self.gone else ""
            return f"no dead runs ({self.checked} in-progress or slot-holding runs checked{waiting})"
        return (f"dead runs handled ({len(self.acted)} of {self.checked} checked): "
                + "; ".join(d.summary() for d in self.acted))


def handle_dead_runs(instance: dg.DagsterInstance, *, job_names: Sequence[str] | None, location: str | None,
                     grace_seconds: float, start_timeout_seconds: float = 300.0,
                     previous: dict[str, float] | None = None, hostname: str | None = None) -> WatchdogReport:
    """One watchdog pass: gather, decide, act. Returns what was done, for the tick and alerts."""
    hostname = hostname or socket.gethostname()
    now = time.time()
    facts = gather_run_facts(instance, job_names=job_names, location=location, hostname=hostname)
    here = [f for f in facts if f.worker_host == hostname]         # other hosts' pids say nothing
    gone = track_gone_workers(here, previous or {}, now=now, is_alive=process_alive)
    facts = [replace(f, worker_gone_since=gone.get(f.run_id)) for f in facts]
    report = WatchdogReport(checked=len(facts), gone=gone)
    observed = {f.run_id: f.status for f in facts}
    for decision in find_dead_runs(facts, now=now, grace_seconds=grace_seconds, is_alive=process_alive,
                                   hostname=hostname, start_timeout_seconds=start_timeout_seconds):
        run = instance.get_run_by_id(decision.run_id)
        if run is None or run.status.value != observed[decision.run_id]:
            continue                   # it moved on since we looked: judged again next pass
        if decision.stop_pids and _stop(decision.stop_pids, decision.stop_signal):
            decision = replace(decision, free_slots=True)
        if decision.mark:
            _report_dead(instance, run, decision.mark, f"Dead-run watchdog: {decision.reason}.")
            report.gone.pop(decision.run_id, None)
        if decision.free_slots:
            _free_slots(instance, decision.run_id)
        report.acted.append(decision)
    return report


def build_dead_run_watchdog_sensor(
    name: str,
    job_names: list[str] | None,
    *,
    minimum_interval_seconds: int = 30,
    grace_seconds: float = 20.0,
    notify: Callable[[str, str, str, dict], object] | None = None,
    start_timeout_seconds: float = 300.0,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """A sensor that fails the dead runs of `job_names` (None: any job) and frees their slots.

    A tick finds a dead worker gone within `minimum_interval_seconds` of its death (or on the
    first tick after a daemon restart); the first tick `grace_seconds` later fails the run. So
    about `grace_seconds + 2 * minimum_interval_seconds` from death to FAILURE, plus the daemon's
    loop delay on a busy machine. `notify(kind, title, text, fields)` (e.g. `Notifier.send`) is
    told of each run failed or freed; run-failure sensors fire on the failure by themselves.
    Running by default: a safety net that has to be switched on is one nobody switches on.
    """

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Fails runs whose run worker died (SIGKILL, OOM, a killed daemon), frees their "
                    "pool slots and stops their orphaned step workers.",
    )
    def dead_run_watchdog(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        # `code_location_origin`: a plain, undocumented property naming the location whose
        # server evaluates this sensor.
        origin = context.code_location_origin
        try:
            previous = {k: float(v) for k, v in json.loads(context.cursor or "{}").items()}
        except (ValueError, AttributeError):
            previous = {}              # an unreadable cursor costs one grace, nothing else
        report = handle_dead_runs(context.instance, job_names=job_names,
                                  location=origin.location_name if origin is not None else None,
                                  grace_seconds=grace_seconds, start_timeout_seconds=start_timeout_seconds,
                                  previous=previous)
        for decision in report.acted:
            context.log.warning(f"dead-run watchdog: {decision.summary()}")
            # Alert on what settles a run (failed, slots freed), not on each signal to an orphan.
            if notify is not None and (decision.mark or decision.free_slots):
                try:
                    notify(NOTIFY_KIND, f"dead run of {decision.job_name}", decision.summary(),
                           {"run_id": decision.run_id, "status": decision.status})
                except Exception as exc:  # noqa: BLE001  a failed alert must not stop the watchdog
                    context.log.error(f"dead-run alert failed: {type(exc).__name__}")
        # The tick's text (shown in the UI) lists every run acted on; the cursor keeps when each
        # gone worker was first found gone, across ticks and code-server restarts.
        return dg.SensorResult(skip_reason=report.describe(), cursor=json.dumps(report.gone, sort_keys=True))

    return dead_run_watchdog
