"""The server as a real uvicorn process over a real sqlite MLflow store: the `champion` alias
moves while clients send requests continuously, and not one request fails or sees a mix."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from mlops_assets_tests.serving.serving_models import (
    free_port,
    loan_rows,
    request_rows,
    shared_served_models,
    stop_group,
)

STALL_SECONDS = 120.0     # a wait fails only after this long without progress
CLIENTS = 4
BATCH = 5
RESPONSES_PER_PHASE = 40  # per client, before and after the alias moves


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return shared_served_models(tmp_path_factory)


@pytest.fixture(scope="module")
def payloads(models):
    """Single rows and 5-row batches; each payload's expected answer under each version."""
    rows = request_rows(models.spec, loan_rows(60, seed=21))
    bodies = [rows[i] for i in range(20)] + [{"rows": rows[i : i + BATCH]} for i in range(20, 60, BATCH)]
    expected = {}
    for version in models.versions[:2]:
        bundle = models.registry.load_bundle(models.spec.name, version)
        for index, body in enumerate(bodies):
            batch = body.get("rows", [body])
            frame = pl.from_dicts([{f: r[f] for f in models.spec.feature_names} for r in batch],
                                  infer_schema_length=None)
            scores = bundle.score_frame(frame).to_dicts()
            expected[version, index] = [{"loan_id": r["loan_id"], **s} for r, s in zip(batch, scores)]
    assert expected[models.versions[0], 0] != expected[models.versions[1], 0]
    return [json.dumps(b).encode() for b in bodies], expected


class ServerProcess:
    """`python -m mlops_assets.serving.server` in its own process group, log to a file."""

    def __init__(self, models, log_dir: Path, *extra: str):
        self.port = free_port()
        self.log_path = log_dir / f"server-{self.port}.log"
        args = [sys.executable, "-m", "mlops_assets.serving.server", "--spec", str(models.spec_path),
                "--tracking-uri", models.tracking_uri, "--bundle-cache-dir", models.registry.cache_dir,
                "--port", str(self.port), "--poll-seconds", "0.3", "--log-level", "info", *extra]
        # The store in MLflow's own variables too (the registry resource leaves a default in
        # MLFLOW_REGISTRY_URI), and a scratch cwd: nothing may land in the repository.
        env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
               "MLFLOW_TRACKING_URI": models.tracking_uri, "MLFLOW_REGISTRY_URI": models.tracking_uri}
        self._log = open(self.log_path, "wb")  # noqa: SIM115  open for the process's lifetime
        self.proc = subprocess.Popen(args, cwd=log_dir, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def wait_ready(self, version: str) -> None:
        deadline = time.monotonic() + STALL_SECONDS
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log()[-4000:]}", pytrace=False)
            try:
                status, body = self.get("/readyz")
                if status == 200 and json.loads(body)["model_version"] == version:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not serving version {version}:\n{self.log()[-4000:]}", pytrace=False)
            time.sleep(0.1)

    def metric(self, name: str, **labels) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.get("/metrics")[1].decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def stop(self) -> int:
        code = stop_group(self.proc)
        self._log.close()
        return code


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    models.set_champion(models.versions[0])
    process = ServerProcess(models, tmp_path_factory.mktemp("server-logs"))
    try:
        process.wait_ready(models.versions[0])
        yield process
    finally:
        process.stop()


@dataclass
class Client:
    """One client thread on a keep-alive connection, cycling through the payloads."""

    port: int
    bodies: list[bytes]
    offset: int
    answers: list[tuple[str, int, list]] = field(default_factory=list)     # (version, payload, predictions)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        index = self.offset
        while not self.stop.is_set():
            index = (index + 1) % len(self.bodies)
            try:
                conn.request("POST", "/predict", body=self.bodies[index],
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    self.failures.append(f"HTTP {response.status}: {body[:300]!r}")
                    continue
                answer = json.loads(body)
                self.answers.append((answer["model_version"], index, answer["predictions"]))
            except Exception as exc:  # noqa: BLE001  every failure is a finding of the test
                self.failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.close()

    def count(self, version: str) -> int:
        return sum(1 for v, _, _ in self.answers if v == version)


def under_load(server: ServerProcess, bodies: list[bytes]):
    clients = [Client(server.port, bodies, offset=i * 7) for i in range(CLIENTS)]
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    return clients, threads


def wait_for_answers(clients: list[Client], server: ServerProcess, version: str, what: str) -> None:
    """Until every client has RESPONSES_PER_PHASE answers from `version`; fails on a stall."""
    def progress() -> int:
        return sum(min(c.count(version), RESPONSES_PER_PHASE) for c in clients)

    last, changed = progress(), time.monotonic()
    while last < RESPONSES_PER_PHASE * len(clients):
        if server.proc.poll() is not None:
            pytest.fail(f"server exited during {what}:\n{server.log()[-4000:]}", pytrace=False)
        if time.monotonic() - changed > STALL_SECONDS:
            failures = [f for c in clients for f in c.failures][:5]
            pytest.fail(f"no progress for {STALL_SECONDS:.0f} s during {what} ({last}); failures {failures}\n"
                        f"{server.log()[-3000:]}", pytrace=False)
        time.sleep(0.05)
        if (now := progress()) != last:
            last, changed = now, time.monotonic()


def stop_clients(clients, threads) -> None:
    for client in clients:
        client.stop.set()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a client thread did not stop"


def test_alias_moves_mid_load_with_zero_failed_requests(models, server, payloads):
    bodies, expected = payloads
    old, new = models.versions[:2]
    models.set_champion(old)
    server.wait_ready(old)
    clients, threads = under_load(server, bodies)
    try:
        wait_for_answers(clients, server, old, f"load on version {old}")
        models.set_champion(new)                         # the alias moves mid-load
        wait_for_answers(clients, server, new, f"the swap to version {new}")
    finally:
        stop_clients(clients, threads)

    assert [f for c in clients for f in c.failures] == []
    for client in clients:
        versions = [v for v, _, _ in client.answers]
        switch = versions.index(new)
        # Each client saw the old version, then only the new one: one clean switch.
        assert switch > 0 and set(versions[:switch]) == {old} and set(versions[switch:]) == {new}
        # And every answer is wholly one version's: exactly that version's scores for those rows.
        mixed = [(v, i) for v, i, predictions in client.answers if predictions != expected[v, i]]
        assert mixed == []
    assert server.metric("mlops_serving_model_info", version=new) == 1
    assert server.metric("mlops_serving_model_swaps_total") >= 2
    assert server.metric("mlops_serving_requests_total", endpoint="/predict", status="200") >= sum(
        len(c.answers) for c in clients)
    assert "serving demo version 2 (was 1" in server.log()


def test_champion_that_cannot_load_keeps_the_old_model_serving(models, server, payloads):
    bodies, expected = payloads
    good, corrupt = models.versions[1], models.versions[2]
    models.set_champion(good)
    server.wait_ready(good)
    errors_before = server.metric("mlops_serving_model_errors_total", stage="load")
    clients, threads = under_load(server, bodies)
    try:
        wait_for_answers(clients, server, good, "load before the bad alias move")
        models.set_champion(corrupt)
        deadline = time.monotonic() + STALL_SECONDS
        while server.metric("mlops_serving_model_errors_total", stage="load") < errors_before + 1:
            assert time.monotonic() < deadline, f"the failed load was never counted:\n{server.log()[-3000:]}"
            time.sleep(0.1)
        served = Counter(v for c in clients for v, _, _ in c.answers)
        for client in clients:
            client.answers.clear()
        wait_for_answers(clients, server, good, "load after the failed load")
    finally:
        stop_clients(clients, threads)
        models.set_champion(good)
    assert [f for c in clients for f in c.failures] == []
    assert set(served) == {good} and {v for c in clients for v, _, _ in c.answers} == {good}
    assert all(p == expected[v, i] for c in clients for v, i, p in c.answers)
    assert f"version {corrupt} could not be loaded" in server.log()
    status, body = server.get("/readyz")
    assert status == 200 and json.loads(body)["model_version"] == good


def test_sigterm_flushes_the_request_log(models, tmp_path):
    """A clean stop writes what the request log still buffers (no time or size flush was due)."""
    models.set_champion(models.versions[0])
    log_dir = tmp_path / "served"
    process = ServerProcess(models, tmp_path, "--request-log-dir", str(log_dir), "--flush-seconds", "3600")
    try:
        process.wait_ready(models.versions[0])
        rows = request_rows(models.spec, loan_rows(25, seed=31, id_offset=5_000))
        conn = http.client.HTTPConnection("127.0.0.1", process.port, timeout=30)
        for row in rows:
            conn.request("POST", "/predict", body=json.dumps(row), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200, response.read()
            response.read()
        conn.close()
        assert list(log_dir.rglob("*.parquet")) == []
    finally:
        code = process.stop()
    # A requested stop drains, shuts down and exits 0 (uvicorn's re-raised signal is handled).
    assert code == 0, process.log()[-3000:]
    assert "Application shutdown complete" in process.log()
    logged = pl.concat([pl.read_parquet(f) for f in log_dir.glob("date=*/*.parquet")])
    assert sorted(logged["loan_id"].to_list()) == sorted(r["loan_id"] for r in rows)
    assert set(logged["model_version"]) == {models.versions[0]}
