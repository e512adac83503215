"""Fixtures for the streaming tests: a real Redis server, registered models, events, a worker.

- `redis_server`: `redis-server` on 127.0.0.1, a free port, its own temp dir and process
  group, for the test session; stopped at the end (SIGTERM, then SIGKILL). If the binary is
  missing the tests FAIL and say to run `scripts/install_broker.sh`; they are never skipped.
- `stream_models`: the serving tests' models (`serving_models.py`: versions 1 and 2 are small
  LightGBM bundles trained by the project's core, 3 has a corrupt ONNX file) in a temporary
  sqlite MLflow store; `champion` is reset to version 1 for every test.
- `Worker`: the consumer as a real subprocess (`stream_worker.py`) in its own process group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from mlops_assets_tests.serving.serving_models import (
    ServedModels,
    free_port,
    loan_rows,
    shared_served_models,
    stop_group,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_broker.sh"
NO_PROGRESS_SECONDS = 90.0   # a wait fails only after this long without any progress


# -- the broker ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RedisServer:
    url: str
    port: int


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"redis-server is not installed; run `bash {INSTALL_SCRIPT}` (the streaming "
                    "tests need a real broker and are not skipped)", pytrace=False)
    workdir = Path(tempfile.mkdtemp(prefix="mlops-redis-"))
    port = free_port()
    log = workdir / "redis.log"
    # Append-only file on, as a deployment would run it; no RDB snapshots (they fork).
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
           "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--logfile", str(log)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import redis

        client = redis.Redis(port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text() if log.exists() else ""
                    pytest.fail(f"redis-server did not start on port {port}:\n{text[-3000:]}", pytrace=False)
                time.sleep(0.05)
        client.close()
        yield RedisServer(f"redis://127.0.0.1:{port}/0", port)
    finally:
        stop_group(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def broker(redis_server):
    from mlops_assets.serving.broker import connect_broker

    client = connect_broker(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def stream_names():
    """Fresh stream and group names for one test, on the shared session server."""
    from mlops_assets.serving.stream import StreamNames

    tag = uuid.uuid4().hex[:8]
    return StreamNames(f"t{tag}:events", f"t{tag}:scorers", f"t{tag}:scores", f"t{tag}:dead-letter")


# -- models --------------------------------------------------------------------------------
@pytest.fixture
def stream_models(tmp_path_factory) -> ServedModels:
    models = shared_served_models(tmp_path_factory)
    models.set_champion(models.versions[0])
    return models


# -- events --------------------------------------------------------------------------------
def loan_events(n: int, *, id_offset: int = 0, seed: int = 11) -> list[bytes]:
    """`n` JSON events shaped like the pipeline's raw rows (id, features, timestamp, label)."""
    frame = loan_rows(n, seed=seed, id_offset=id_offset)
    frame = frame.with_columns(pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S"),
                               pl.col(pl.Float64).fill_nan(None))
    return [json.dumps(row).encode() for row in frame.iter_rows(named=True)]


def wait_for(progress: Callable[[], float], done: Callable[[float], bool], what: str,
             stall_seconds: float = NO_PROGRESS_SECONDS, alive: Callable[[], str | None] | None = None) -> float:
    """Poll until `done(progress())`; fail only after `stall_seconds` without progress."""
    last_value, last_change = progress(), time.monotonic()
    while not done(last_value):
        if alive is not None and (problem := alive()):
            pytest.fail(f"waiting for {what}: {problem}", pytrace=False)
        if time.monotonic() - last_change > stall_seconds:
            pytest.fail(f"no progress for {stall_seconds:.0f} s waiting for {what} (at {last_value})", pytrace=False)
        time.sleep(0.1)
        value = progress()
        if value != last_value:
            last_value, last_change = value, time.monotonic()
    return last_value


# -- the consumer as a process -------------------------------------------------------------
class Worker:
    """`stream_worker.py` in its own process group; stderr goes to a log file."""

    def __init__(self, models: ServedModels, redis_url: str, names, consumer: str, output_dir: Path,
                 log_dir: Path, **options):
        self.log_path = log_dir / f"{consumer}-{time.time_ns()}.log"
        self.stats_path = self.log_path.with_suffix(".stats.json")
        args = [sys.executable, "-m", "mlops_assets_tests.serving.stream_worker",
                "--spec", str(models.spec_path), "--tracking-uri", models.tracking_uri,
                "--broker-url", redis_url, "--stream", names.events, "--group", names.group,
                "--output-stream", names.output, "--dead-letter-stream", names.dead_letter,
                "--consumer", consumer, "--output-dir", str(output_dir), "--stats-file", str(self.stats_path)]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        self._log = open(self.log_path, "wb")  # noqa: SIM115  open for the process's lifetime
        self.proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def problem(self) -> str | None:
        """None while running; else why it ended, with the log's tail."""
        if self.proc.poll() is None:
            return None
        return f"worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}"

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def terminate(self, grace: float = 120.0) -> int:
        """SIGTERM (a clean stop: finish the batch, commit, exit 0), SIGKILL after `grace`."""
        code = stop_group(self.proc, grace)
        self._log.close()
        return code

    def stats(self) -> dict:
        return json.loads(self.stats_path.read_text())


# -- reading what the consumer produced ----------------------------------------------------
def read_stream(broker, stream: str) -> list[tuple[str, dict[str, str]]]:
    entries, after = [], None
    while page := broker.read_range(stream, after=after, count=20_000):
        entries += page
        after = page[-1][0]
    return entries


def read_output_files(output_dir: Path) -> pl.DataFrame:
    files = sorted(output_dir.glob("date=*/*.parquet"))
    if not files:
        return pl.DataFrame()
    return pl.concat([pl.read_parquet(f).with_columns(pl.lit(f.name).alias("_file")) for f in files],
                     how="vertical")


def group_done(broker, names) -> Callable[[], float]:
    """Progress measure for `wait_for`: acknowledged messages of the group (lag 0, nothing pending)."""
    def progress() -> float:
        info = broker.group_info(names.events, names.group)
        return info.stream_length - (info.lag or 0) - info.pending
    return progress


class ConsumerThread:
    """A `StreamConsumer` running in a thread of the test process, stopped on exit."""

    def __init__(self, consumer):
        import threading

        self.consumer, self.stop, self.error = consumer, threading.Event(), None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.consumer.run(self.stop)
        except BaseException as exc:  # noqa: BLE001  surfaced by problem() and __exit__
            self.error = exc

    def problem(self) -> str | None:
        if self.error is not None:
            return f"consumer raised {self.error!r}"
        return None if self.thread.is_alive() else "consumer thread ended"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(120)
        assert not self.thread.is_alive(), "consumer did not stop within 120 s of stop being set"
        if self.error is not None and exc[0] is None:
            raise self.error
