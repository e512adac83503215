"""Fixtures for the streaming tests: a real Redis server, registered models, events, a worker.

- `redis_server`: `redis-server` on 127.0.0.1, a free port, its own temp dir and process
  group, for the test session; stopped at the end (SIGTERM, then SIGKILL). If the binary is
  missing the tests FAIL and say to run `scripts/install_broker.sh`; they are never skipped.
- `stream_models`: a temporary sqlite MLflow store holding three versions of the spec's
  model: 1 and 2 are small LightGBM bundles trained by the project's core; 3 has a corrupt
  ONNX file (a version that cannot be loaded). `champion` is reset to 1 for every test.
- `Worker`: the consumer as a real subprocess (`stream_worker.py`) in its own process group.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
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
import yaml

from mlops_assets.spec import PipelineSpec
from mlops_assets_tests.conftest import small_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_broker.sh"
NO_PROGRESS_SECONDS = 90.0   # a wait fails only after this long without any progress


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> int:
    """SIGTERM the process group, SIGKILL it after `grace` seconds; returns the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.wait(30)


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
@dataclass
class StreamModels:
    spec: PipelineSpec
    spec_path: Path
    tracking_uri: str
    registry: object
    versions: list[str]          # [good v1, good v2, corrupt v3]

    def set_champion(self, version: str) -> None:
        self.registry.set_alias(self.spec.name, "champion", version)


def _register(registry, spec, bundle_dir: Path, label: str) -> str:
    tags = {"dagster_run_id": f"stream-test-{label}", "approval": "approved"}
    if hasattr(registry, "log_candidate"):   # the rewritten registry API
        return registry.log_candidate(spec.name, bundle_dir, params={"label": label}, metrics={},
                                      tags=tags, run_name=label).version
    from mlops_assets.resources.registry import log_and_register

    _, _, version = log_and_register(registry, model_name=spec.name, bundle_dir=bundle_dir,
                                     params={"label": label}, metrics={}, tags=tags)
    return version


def _train_bundle(spec: PipelineSpec, seed: int, directory: Path) -> Path:
    from mlops_assets.core.bundle import PROFILE_FILE, SAMPLE_FILE
    from mlops_assets.core.features import prepare_features
    from mlops_assets.core.training import assemble_training_frame, train_from_frame
    from mlops_assets.demo.data import generate_loans

    raw = pl.from_pandas(generate_loans(4_000, day=dt.date(2026, 1, 1), seed=seed))
    outcome = train_from_frame(assemble_training_frame([prepare_features(raw, spec)], spec), spec)
    bundle_dir = outcome.bundle.save(directory)
    (bundle_dir / PROFILE_FILE).write_text(json.dumps(outcome.reference_profile, sort_keys=True))
    outcome.reference_sample.write_parquet(bundle_dir / SAMPLE_FILE)
    return bundle_dir


@pytest.fixture(scope="session")
def stream_models_session(tmp_path_factory) -> StreamModels:
    from mlops_assets.core.bundle import ONNX_FILE
    from mlops_assets.resources.registry import MLflowRegistry

    root = tmp_path_factory.mktemp("stream-models")
    data = small_spec(root).model_dump(mode="json")
    data["model"]["lightgbm"]["num_boost_round"] = 40   # about the plumbing, not model quality
    spec = PipelineSpec.from_dict(data)
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    # A unique store path: the registry's bundle cache must never match a previous session's.
    store = root / f"mlflow-{uuid.uuid4().hex[:12]}"
    store.mkdir()
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    registry = MLflowRegistry(tracking_uri=tracking_uri, artifact_location=str(root / "artifacts"))
    # Each bundle in a folder named `bundle`: the registry finds it under that artifact name.
    versions = [_register(registry, spec, _train_bundle(spec, seed, root / f"seed{seed}" / "bundle"), f"seed{seed}")
                for seed in (3, 4)]
    corrupt = root / "corrupt" / "bundle"
    shutil.copytree(root / "seed3" / "bundle", corrupt)
    (corrupt / ONNX_FILE).write_bytes(b"this is not an onnx model")
    versions.append(_register(registry, spec, corrupt, "corrupt"))
    return StreamModels(spec, spec_path, tracking_uri, registry, versions)


@pytest.fixture
def stream_models(stream_models_session) -> StreamModels:
    stream_models_session.set_champion(stream_models_session.versions[0])
    return stream_models_session


# -- events --------------------------------------------------------------------------------
def loan_events(n: int, *, id_offset: int = 0, seed: int = 11) -> list[bytes]:
    """`n` JSON events shaped like the pipeline's raw rows (id, features, and the rest)."""
    from mlops_assets.demo.data import generate_loans

    frame = pl.from_pandas(generate_loans(n, day=dt.date(2026, 2, 1), seed=seed, id_offset=id_offset))
    frame = frame.with_columns(pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S"), pl.col(pl.Float64).fill_nan(None))
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

    def __init__(self, models: StreamModels, redis_url: str, names, consumer: str, output_dir: Path,
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
