"""Real-time serving: our server vs `mlflow models serve`, same model, same rows, one run.

    .venv/bin/python benchmarks/serving.py [--seconds 8] [--warmup 2] [--trees 200]

One LightGBM bundle, trained by the project's core, is registered in a temporary sqlite
MLflow store. Both servers are started from it as processes (one uvicorn worker each):
  ours    python -m mlops_assets.serving.server   POST /predict      {<features>}
  mlflow  mlflow models serve --env-manager local  POST /invocations  {"dataframe_records": [{<features>}]}
Both are warmed, checked to return the same scores for the same rows, then loaded with
single-row requests at 1, 8 and 32 concurrent clients (closed loop: each client sends its
next request when the previous answer is in). Our server is also run with the ONNX call in
the threadpool instead of inline (`--inline-max-rows 0`), at 1 and 8 clients.

The load generator is a hand-written asyncio HTTP/1.1 client on uvloop, in this process:
pre-encoded requests on keep-alive connections, reading only the status line and
Content-Length. A general client (httpx, aiohttp) spends more CPU per request than the
server under test, and on 2 cores it would measure itself; this one costs a few µs per request.

Prints one JSON line last: per server and concurrency p50/p99 latency (ms) and throughput
(requests/s), plus `p99_ratio_vs_mlflow` and `throughput_ratio_vs_mlflow` (ours / MLflow's,
at 8 clients; goal <= 1/3 and >= 3) and the load average around the run.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mlops_assets_tests.serving.serving_models import (
    build_served_models,
    free_port,
    loan_rows,
    request_rows,
    stop_group,
)

BIN = Path(sys.executable).parent
START_SECONDS = 300.0


class Server:
    def __init__(self, name: str, args: list[str], port: int, predict_path: str, wrap, env: dict, workdir: Path):
        self.name, self.port, self.predict_path, self.wrap = name, port, predict_path, wrap
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  open for the process's lifetime
        self.proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, path: str) -> float:
        started = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, _ = self.call("GET", path)
                if status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            if time.monotonic() - started > START_SECONDS:
                raise RuntimeError(f"{self.name} not ready after {START_SECONDS:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def predict(self, row: dict) -> dict:
        status, body = self.call("POST", self.predict_path, json.dumps(self.wrap(row)).encode())
        if status != 200:
            raise RuntimeError(f"{self.name} answered {status}: {body[:500]!r}")
        answer = json.loads(body)
        return answer["predictions"][0]

    def request_bytes(self, row: dict) -> bytes:
        body = json.dumps(self.wrap(row)).encode()
        head = (f"POST {self.predict_path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        return head.encode() + body

    def log_tail(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def cpu_seconds(self) -> float:
        """CPU time of the server's whole process tree (MLflow's CLI runs uvicorn as a child)."""
        import psutil

        root = psutil.Process(self.proc.pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        stop_group(self.proc)
        self._log.close()


# -- the load generator --------------------------------------------------------------------
async def _client(port: int, requests: list[bytes], offset: int, warm_until: float, stop_at: float,
                  latencies: list[int], failures: list[str], completed: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    index, count = offset, len(requests)
    try:
        while True:
            started = time.perf_counter_ns()
            if started / 1e9 >= stop_at:
                return
            writer.write(requests[index % count])
            index += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = _content_length(head)
            await reader.readexactly(length)
            completed[0] += 1
            if started / 1e9 >= warm_until:
                latencies.append(time.perf_counter_ns() - started)
                if head[9:12] != b"200":
                    failures.append(head[:12].decode())
    finally:
        writer.close()


def _content_length(head: bytes) -> int:
    lowered = head.lower()
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
    end = lowered.find(b"\r\n", at + 2)
    return int(lowered[at + 17 : end])


def run_load(server: Server, requests: list[bytes], clients: int, warmup: float, seconds: float) -> dict:
    """Closed-loop load; also the CPU the server and this client used (a client near one
    full core would mean the numbers are the client's, not the server's)."""
    import resource

    import uvloop

    latencies: list[int] = []
    failures: list[str] = []
    completed = [0]       # warm-up included: the CPU figures cover the same window
    server_cpu, client_cpu = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)

    async def main():
        now = time.perf_counter()
        warm_until, stop_at = now + warmup, now + warmup + seconds
        await asyncio.gather(*(_client(server.port, requests, i * 97, warm_until, stop_at, latencies, failures,
                                       completed)
                               for i in range(clients)))

    uvloop.run(main())
    server_seconds = server.cpu_seconds() - server_cpu
    client_after = resource.getrusage(resource.RUSAGE_SELF)
    client_seconds = (client_after.ru_utime - client_cpu.ru_utime) + (client_after.ru_stime - client_cpu.ru_stime)
    ms = np.asarray(latencies, dtype=np.float64) / 1e6
    wall = warmup + seconds
    return {"clients": clients, "requests": len(latencies), "failed": len(failures),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "throughput_rps": round(len(latencies) / seconds, 1),
            "server_cpu_cores": round(server_seconds / wall, 2),
            # CPU per request: the figure least moved by other work on a shared machine.
            "server_cpu_ms_per_request": round(server_seconds * 1e3 / max(completed[0], 1), 3),
            "client_cpu_cores": round(client_seconds / wall, 2)}


# -- the run -------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per load level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each level")
    parser.add_argument("--trees", type=int, default=200, help="LightGBM trees (no early stopping)")
    parser.add_argument("--rows", type=int, default=2000, help="distinct request rows, cycled")
    parser.add_argument("--concurrency", default="1,8,32")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    load_before = os.getloadavg()

    workdir = Path(tempfile.mkdtemp(prefix="mlops-serving-bench-"))
    servers: list[Server] = []
    try:
        started = time.perf_counter()
        models = build_served_models(workdir / "models", seeds=(3,), corrupt=False, num_boost_round=args.trees,
                                     early_stopping=False)
        build_seconds = time.perf_counter() - started
        version = models.versions[0]
        bundle = models.registry.load_bundle(models.spec.name, version)
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "MLFLOW_TRACKING_URI": models.tracking_uri, "MLFLOW_REGISTRY_URI": models.tracking_uri,
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}

        def ours(name: str, *extra: str) -> Server:
            port = free_port()
            command = [sys.executable, "-m", "mlops_assets.serving.server", "--spec", str(models.spec_path),
                       "--tracking-uri", models.tracking_uri, "--bundle-cache-dir", models.registry.cache_dir,
                       "--port", str(port), "--log-level", "warning", *extra]
            return Server(name, command, port, "/predict", lambda row: row, env, workdir)

        mlflow_port = free_port()
        servers = [
            ours("ours"),
            ours("ours_threadpool", "--inline-max-rows", "0"),
            Server("mlflow", [str(BIN / "mlflow"), "models", "serve",
                              "-m", f"models:/{models.spec.name}/{version}", "--env-manager", "local",
                              "--host", "127.0.0.1", "--port", str(mlflow_port)],
                   mlflow_port, "/invocations", lambda row: {"dataframe_records": [row]}, env, workdir),
        ]
        startup = {s.name: round(s.wait_ready("/readyz" if s.name.startswith("ours") else "/ping"), 2)
                   for s in servers}

        # Same rows to every server: features only (MLflow would log a warning per request for
        # a column outside its signature).
        rows = request_rows(models.spec, loan_rows(args.rows, seed=23), with_id=False)
        check = rows[:200]
        answers = {s.name: [s.predict(r) for r in check] for s in servers}
        reference = answers["mlflow"]
        diffs = [max(abs(a["score"] - b["score"]) for a, b in zip(answers[s.name], reference)) for s in servers]
        labels_match = all([a["prediction"] for a in answers[s.name]] == [b["prediction"] for b in reference]
                           for s in servers)
        if max(diffs) > 1e-12 or not labels_match:
            raise RuntimeError(f"servers disagree on the same rows: max score difference {max(diffs)}")

        results: dict[str, dict[str, dict]] = {s.name: {} for s in servers}
        for clients in levels:      # interleaved, so a change in background load hits every server
            for server in servers:
                if server.name == "ours_threadpool" and clients > 8:
                    continue
                requests = [server.request_bytes(r) for r in rows]
                results[server.name][str(clients)] = run_load(server, requests, clients, args.warmup, args.seconds)
                print(f"{server.name:16s} {clients:3d} clients: {results[server.name][str(clients)]}",
                      file=sys.stderr, flush=True)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    at8_ours, at8_mlflow = results["ours"].get("8"), results["mlflow"].get("8")
    summary = {
        "benchmark": "serving",
        "p99_ratio_vs_mlflow": round(at8_ours["p99_ms"] / at8_mlflow["p99_ms"], 4) if at8_ours else None,
        "throughput_ratio_vs_mlflow": (round(at8_ours["throughput_rps"] / at8_mlflow["throughput_rps"], 3)
                                       if at8_ours else None),
        "cpu_per_request_ratio_vs_mlflow": (
            round(at8_ours["server_cpu_ms_per_request"] / at8_mlflow["server_cpu_ms_per_request"], 4)
            if at8_ours else None),
        "ours": results["ours"],
        "mlflow": results["mlflow"],
        "ours_threadpool": results["ours_threadpool"],
        "scores_match": True,
        "max_abs_score_diff_vs_mlflow": max(diffs),
        "model": {"trainer": bundle.trainer, "num_boost_round": args.trees,
                  "trees": (bundle.native_bytes or b"").count(b"\nTree="),
                  "features": len(bundle.encoder.feature_names), "onnx_bytes": len(bundle.onnx_bytes)},
        "seconds_per_level": args.seconds,
        "startup_seconds": startup,
        "model_build_seconds": round(build_seconds, 1),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
