"""The production storage stack on a real PostgreSQL server.

- A Dagster instance on dagster-postgres (run, event-log and schedule storage) configured
  like deploy/dagster.yaml: QueuedRunCoordinator semantics under `concurrency.runs`, and
  op-level pools under `concurrency.pools`. The MLflow tracking backend is PostgreSQL too.
- The bootstrap runs in-process on it; its materializations are read back with SQL.
- A real `dagster-daemon` (its own process group, stopped with killpg, SIGKILL after a
  timeout) dequeues 2 full-lifecycle runs + 4 partitioned batch-inference runs; run start/end
  times in the run storage show that at most `max_concurrent_runs` overlapped, and the two
  training steps (pool `mlops_training`, default limit 1) waited for each other.

  Why full-lifecycle (bootstrap job) runs and not retrain runs: with the queue settings of
  deploy/dagster.yaml (no `op_granularity_run_buffer`), the daemon does not even launch a run
  whose root steps are all waiting on a full pool. A retrain run starts with the training step,
  so a second retrain stays queued until the first has trained; the bootstrap job starts with
  raw_data, so two of them run side by side and meet at the pool at step level.
- An unreachable PostgreSQL fails fast and names the host and port.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlops_assets.automation.inline import InlineAutomation
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import LIFECYCLE as STAGES
from mlops_assets.pipeline import TRAINING_POOL, Pipeline
from mlops_assets.spec import PipelineSpec
from mlops_assets_tests.services.conftest import (
    PostgresDatabases,
    PostgresServer,
    free_port,
    services_spec,
)
from mlops_assets_tests.waiting import run_progress, wait_for

ROWS_PER_DAY = 1_000
DAYS = [dt.date(2026, 1, d) for d in (1, 2, 3, 4)]
PARTITIONS = [f"loans_{d.isoformat()}.parquet" for d in DAYS]
MAX_CONCURRENT_RUNS = 2
PASSWORD_ENV = "MLOPS_TEST_PG_PASSWORD"
DAEMON_STALL_S = 150   # longest stretch without any run progress (not a deadline)
FAIL_FAST_SECONDS = 15
CODE_LOCATION_FILE = Path(__file__).with_name("pg_code_location.py")
CONFIG_ENV = "MLOPS_SERVICES_CONFIG"   # read by pg_code_location.py
LOCATION_NAME = "mlops_services"
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}   # one process per run, not per step


def instance_yaml(server: PostgresServer, db: str, *, port: int | None = None) -> dict:
    """Shaped like deploy/dagster.yaml; the password comes from the environment."""
    return {
        "storage": {"postgres": {"postgres_db": {
            "hostname": server.host, "port": port or server.port, "username": server.user,
            "password": {"env": PASSWORD_ENV}, "db_name": db, "scheme": "postgresql+psycopg2",
        }}},
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {"dequeue_interval_seconds": 1}},
        "concurrency": {
            "runs": {"max_concurrent_runs": MAX_CONCURRENT_RUNS},
            # No explicit pool limit is set anywhere: `mlops_training` gets the default of 1.
            "pools": {"default_limit": 1, "granularity": "op"},
        },
        "telemetry": {"enabled": False},
    }


@dataclass
class PgWorld:
    server: PostgresServer
    dagster_db: str
    mlflow_db: str
    root: Path
    home: Path
    spec: PipelineSpec
    names: Pipeline
    defs: dg.Definitions
    instance: dg.DagsterInstance


@pytest.fixture(scope="module")
def pg_world(tmp_path_factory, postgres_server: PostgresServer, postgres_databases: PostgresDatabases):
    dagster_db = postgres_databases.create("dagster")
    mlflow_db = postgres_databases.create("mlflow")     # separate: both keep an alembic_version table
    root = tmp_path_factory.mktemp("postgres")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml(postgres_server, dagster_db)))
    spec = services_spec(root)
    config = {
        "spec": spec.model_dump(mode="json"),
        "storage_uri": str(root / "artifacts"),
        "tracking_uri": postgres_server.url(mlflow_db),
        "artifact_location": str(root / "mlartifacts"),
    }
    config_path = root / "services_config.json"
    config_path.write_text(json.dumps(config))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PASSWORD_ENV, postgres_server.password)
        mp.setenv("DAGSTER_HOME", str(home))
        mp.setenv(CONFIG_ENV, str(config_path))
        # The very definitions the daemon's code server and run workers load.
        from mlops_assets_tests.services import pg_code_location

        defs = importlib.reload(pg_code_location).defs
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            yield PgWorld(postgres_server, dagster_db, mlflow_db, root, home, spec, Pipeline(spec), defs, instance)
        finally:
            instance.dispose()


@pytest.mark.timeout(1_800)   # real daemons on a shared machine: waits judge progress
def test_bootstrap_on_dagster_postgres_with_mlflow_on_postgres(pg_world: PgWorld):
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    w = pg_world
    instance = w.instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"

    for i, day in enumerate(DAYS):
        write_day(w.spec.source.path, day, n_rows=ROWS_PER_DAY, seed=1, day_index=i)
    auto = InlineAutomation(w.defs, instance)
    tick = auto.tick_sensor(w.names.sensor("new_data"))
    # No champion yet: all four files are validated; then one bootstrap trains on all of them,
    # and the schedules score and check each partition with the first champion.
    assert sorted(r.dagster_run.job_name for r in tick.launched) == [w.names.job("ingest")] * 4
    bootstrap = auto.tick_sensor(w.names.sensor("retrain"))
    assert [r.dagster_run.tags["mlops/trigger"] for r in bootstrap.launched] == ["bootstrap"]
    scored = auto.tick_schedule(w.names.schedule("batch_inference")).launched
    checked = auto.tick_schedule(w.names.schedule("drift_check")).launched
    assert len(scored) == 4 and len(checked) == 4
    failed = [r.run_id for r in [*tick.launched, *bootstrap.launched, *scored, *checked] if not r.success]
    assert not failed, f"runs failed: {failed}"

    # Read back from PostgreSQL itself, not through the instance.
    db = w.dagster_db
    rows = w.server.query(db, "SELECT status, count(*) FROM runs GROUP BY status")
    assert dict(rows) == {"SUCCESS": 13}
    rows = w.server.query(
        db, "SELECT asset_key, count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
            "GROUP BY asset_key")
    counts = {dg.AssetKey.from_db_string(key).path[-1]: n for key, n in rows}
    assert set(counts) == set(STAGES), counts
    assert counts["raw_data"] == 4 and counts["validated_features"] == 4 and counts["trained_model"] == 1
    partitions = w.server.query(db, "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s",
                                (w.names.partitions_name,))
    assert sorted(p for (p,) in partitions) == PARTITIONS
    assert w.server.query(db, "SELECT count(*) FROM asset_check_executions")[0][0] > 0
    assert not list(w.home.rglob("*.db")), "an sqlite store was created next to the postgres one"

    # MLflow's backend is PostgreSQL as well: the registered version and its champion alias.
    mdb = w.mlflow_db
    assert w.server.query(mdb, "SELECT name FROM registered_models") == [("demo",)]
    assert w.server.query(mdb, "SELECT alias, version FROM registered_model_aliases "
                               "WHERE name = 'demo' AND alias = 'champion'") == [("champion", 1)]
    tags = dict(w.server.query(mdb, "SELECT key, value FROM model_version_tags WHERE name = 'demo' AND version = 1"))
    assert tags["approval"] == "approved" and tags["dagster_run_id"] == bootstrap.launched[0].run_id
    assert w.server.query(mdb, "SELECT count(*) FROM runs WHERE status = 'FINISHED'")[0][0] >= 1


# -- the daemon ------------------------------------------------------------------------------
def _create_queued_run(instance, code_location, repo, job_name: str, tags: dict) -> str:
    """What `dagster job launch` does: a run with a remote origin, submitted to the queue."""
    from dagster._cli.job import _create_run

    remote_job = repo.get_full_job(job_name)
    run = _create_run(instance=instance, code_location=code_location, remote_repo=repo, remote_job=remote_job,
                      run_config=IN_PROCESS, tags=tags, op_selection=None, run_id=None)
    return run.run_id


def _stop_process_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the daemon's whole group (code server, run workers), SIGKILL what survives."""
    import psutil

    pgid = proc.pid   # start_new_session=True: the daemon leads its own group
    with_group = lambda: [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pgid]
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and with_group():
        proc.poll()
        time.sleep(0.2)
    if with_group():
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and with_group():
        time.sleep(0.1)
    assert not with_group(), "processes of the daemon's group survived SIGKILL"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    live = peak = 0
    for _, delta in points:
        live += delta
        peak = max(peak, live)
    return peak


def _step_window(instance, run_id: str, step_key: str) -> tuple[float, float]:
    start = end = None
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key != step_key:
            continue
        if event.event_type_value == "STEP_START":
            start = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            end = entry.timestamp
    assert start is not None and end is not None, f"{step_key} did not run in {run_id}"
    return start, end


@pytest.mark.timeout(1_800)   # real daemons on a shared machine: waits judge progress
def test_daemon_dequeues_within_run_and_pool_limits(pg_world: PgWorld):
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    w = pg_world
    instance = w.instance
    assert instance.get_dynamic_partitions(w.names.partitions_name), "needs the bootstrap test's partitions"
    workspace_file = w.root / "workspace.yaml"
    workspace_file.write_text(yaml.safe_dump({"load_from": [{"python_file": {
        "relative_path": str(CODE_LOCATION_FILE), "location_name": LOCATION_NAME,
    }}]}))
    runs_before = {r.run_id for r in instance.get_runs()}

    # Queue the runs first (the daemon is not running yet): 2 lifecycle runs, then 4 batch runs.
    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(workspace_file)])) as ctx:
        workspace = ctx.create_request_context()
        location = workspace.get_code_location(LOCATION_NAME)
        repo = next(iter(location.get_repositories().values()))
        train_ids = [_create_queued_run(instance, location, repo, w.names.job("bootstrap"), {"dagster/partition": p})
                     for p in PARTITIONS[:2]]
        batch_ids = [_create_queued_run(instance, location, repo, w.names.job("batch_inference"),
                                        {"dagster/partition": p}) for p in PARTITIONS]
        for run_id in train_ids + batch_ids:
            instance.submit_run(run_id, workspace)
    run_ids = train_ids + batch_ids
    assert {r.status for r in instance.get_runs(filters=dg.RunsFilter(run_ids=run_ids))} == {
        dg.DagsterRunStatus.QUEUED}

    log_path = w.root / "daemon.log"
    daemon_bin = Path(sys.executable).with_name("dagster-daemon")
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [str(daemon_bin), "run", "-w", str(workspace_file)],
            env={**os.environ, "DAGSTER_HOME": str(w.home)}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(w.root),
        )
    try:
        def finished():
            records = instance.get_run_records(filters=dg.RunsFilter(run_ids=run_ids))
            return len(records) == len(run_ids) and all(r.dagster_run.is_finished for r in records)

        def fail(reason: str) -> None:
            records = instance.get_run_records(filters=dg.RunsFilter(run_ids=run_ids))
            pending = {r.dagster_run.run_id[:8]: r.dagster_run.status.value for r in records}
            pytest.fail(f"{reason} (daemon exit {daemon.poll()}): {pending}\n--- daemon log ---\n"
                        f"{log_path.read_text()[-4000:]}")

        def alive() -> None:
            if daemon.poll() is not None:
                fail("the daemon exited")

        # Fails only when nothing moves for DAEMON_STALL_S: a loaded machine is slow, not stuck.
        wait_for(finished, lambda: run_progress(instance), what="the queued runs", on_fail=fail,
                 stall_s=DAEMON_STALL_S, alive=alive)
    finally:
        _stop_process_group(daemon)

    records = {r.dagster_run.run_id: r for r in instance.get_run_records(filters=dg.RunsFilter(run_ids=run_ids))}
    bad = {k[:8]: r.dagster_run.status.value for k, r in records.items()
           if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS}
    assert not bad, f"runs did not succeed: {bad}\n--- daemon log ---\n{log_path.read_text()[-4000:]}"
    new_runs = {r.run_id for r in instance.get_runs()} - runs_before
    assert new_runs == set(run_ids), "the daemon launched runs nobody asked for"

    # Every run waited in the queue, then the daemon launched it (STARTING) in its own process.
    for run_id in run_ids:
        kinds = {e.dagster_event.event_type_value for e in instance.all_logs(run_id) if e.dagster_event}
        assert {"PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_START", "PIPELINE_SUCCESS"} <= kinds, \
            (run_id, kinds)

    # Run level: never more than max_concurrent_runs at once -- and the limit was reached.
    windows = [(records[r].start_time, records[r].end_time) for r in run_ids]
    assert all(s and e for s, e in windows)
    assert _max_overlap(windows) == MAX_CONCURRENT_RUNS, windows

    # Op level: the two lifecycle runs ran side by side, but their training steps did not.
    step = f"{w.names.name}__trained_model"
    r1, r2 = (records[r] for r in train_ids)
    assert _max_overlap([(r1.start_time, r1.end_time), (r2.start_time, r2.end_time)]) == 2, \
        "the two lifecycle runs never overlapped, so the pool limit was not exercised"
    train_windows = [_step_window(instance, r, step) for r in train_ids]
    assert _max_overlap(train_windows) == 1, train_windows
    blocked = [e for r in train_ids for e in instance.all_logs(r)
               if e.dagster_event and e.dagster_event.step_key == step
               and f"blocked by limit for pool {TRAINING_POOL}" in (e.dagster_event.message or "")]
    assert blocked, "no training step waited for the pool"
    info = instance.event_log_storage.get_concurrency_info(TRAINING_POOL)
    assert info.slot_count == 1 and info.active_slot_count == 0   # default limit; all slots freed

    # The batch runs did their work: one prediction file per partition.
    for part in PARTITIONS:
        flt = dg.AssetRecordsFilter(asset_key=w.names.key("batch_predictions"), asset_partitions=[part])
        assert instance.fetch_materializations(flt, limit=10).records, part


@pytest.mark.timeout(1_800)   # real daemons on a shared machine: waits judge progress
def test_unreachable_postgres_fails_fast_and_names_the_host(tmp_path, postgres_server: PostgresServer,
                                                           monkeypatch):
    """dagster-postgres retries a refused connection 5 times with exponential backoff (about
    11 s in all, by design), then raises "too many retries for DB connection" chained to the
    driver's error, which names the host and port. The traceback a user sees carries both."""
    import traceback

    port = free_port()
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml(postgres_server, "postgres", port=port)))
    monkeypatch.setenv(PASSWORD_ENV, postgres_server.password)
    start = time.monotonic()
    with pytest.raises(Exception) as caught:
        dg.DagsterInstance.from_config(str(tmp_path)).get_runs(limit=1)
    seconds = time.monotonic() - start
    shown = "".join(traceback.format_exception(caught.value))
    assert f'connection to server at "{postgres_server.host}", port {port} failed' in shown, shown[-2000:]
    assert seconds < FAIL_FAST_SECONDS, f"took {seconds:.1f}s"
