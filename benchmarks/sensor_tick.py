"""Cost of one new-data sensor tick against a landing directory's history.

A watched directory holds N files that were already ingested (the cursor from the
previous tick is past them and their dynamic partitions exist on a real temporary
instance) plus 10 new ones. One tick is timed (`build_sensor_context` + the sensor
call, the way the daemon evaluates it), for N = 10,000 and N = 100, interleaved and
repeated, median kept. The files are a few bytes each: the sensor never reads contents.

Last line: JSON with tick_ms_10k, tick_ms_100 and their ratio
(targets: tick_ms_10k <= 500 and ratio <= 2).

    python benchmarks/sensor_tick.py [--repeats 15] [--new 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path


def _tiny_parquet() -> bytes:
    """A real, complete Parquet file (the sensor checks the footer before it takes a file)."""
    import io

    import polars as pl

    buf = io.BytesIO()
    pl.DataFrame({"loan_id": [1, 2]}).write_parquet(buf)
    return buf.getvalue()


def _write_files(directory: Path, start: int, count: int) -> list[str]:
    names, payload = [], _tiny_parquet()
    for i in range(start, start + count):
        name = f"loans_{i:06d}.parquet"
        (directory / name).write_bytes(payload)
        names.append(name)
    return names


class World:
    """A landing directory with `n_old` ingested files and `n_new` new ones, on its own instance."""

    def __init__(self, stack: contextlib.ExitStack, n_old: int, n_new: int):
        import dagster as dg

        from mlops_assets.definitions import build_mlops_defs
        from mlops_assets.demo import demo_spec
        from mlops_assets.pipeline import Pipeline
        from mlops_assets.spec import PipelineSpec

        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sensor_tick_"))
        self.instance = stack.enter_context(dg.instance_for_test())
        data = demo_spec(tmp).model_dump(mode="json")
        data["source"]["settle_seconds"] = 0.0        # every file is complete at once
        spec = PipelineSpec.from_dict(data)
        names = Pipeline(spec)
        self.spec = spec
        self.defs = build_mlops_defs(spec)
        self.sensor_name = names.sensor("new_data")
        self.sensor = self.defs.resolve_sensor_def(self.sensor_name)
        landing = Path(spec.source.path)
        landing.mkdir(parents=True, exist_ok=True)   # the definitions create it when they load

        # History: N files, ingested by a previous tick (cursor past them, partitions exist).
        old = _write_files(landing, 0, n_old)
        previous = self.tick(None)
        assert len(previous.run_requests) == n_old, len(previous.run_requests)
        self.instance.add_dynamic_partitions(names.partitions_name, old)
        self.cursor = previous.cursor
        assert not self.tick(self.cursor).run_requests      # nothing new yet

        time.sleep(0.01)                              # new files arrive strictly after the watermark
        self.new = _write_files(landing, n_old, n_new)
        self.times: list[float] = []

    def fresh_sensor(self):
        from mlops_assets.definitions import build_mlops_defs

        self.defs = build_mlops_defs(self.spec)
        return self.defs.resolve_sensor_def(self.sensor_name)

    def tick(self, cursor):
        import dagster as dg

        resources = {k: self.defs.resources[k] for k in self.sensor.required_resource_keys}
        context = dg.build_sensor_context(instance=self.instance, cursor=cursor, definitions=self.defs,
                                          sensor_name=self.sensor_name, resources=resources or None)
        return self.sensor(context)

    def timed_tick(self) -> None:
        t0 = time.perf_counter()
        result = self.tick(self.cursor)
        self.times.append(time.perf_counter() - t0)
        assert [r.partition_key for r in result.run_requests] == self.new

    def summary(self) -> dict:
        times = self.times[1:]                        # the first tick warms caches, not counted
        return {"median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000,
                "max_ms": max(times) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--new", type=int, default=10)
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    with contextlib.ExitStack() as stack:
        small = World(stack, 100, args.new)
        large = World(stack, 10_000, args.new)
        # Interleaved, so background load on a shared machine hits both sides alike.
        for _ in range(args.repeats + 1):
            small.timed_tick()
            large.timed_tick()
        small_r, large_r = small.summary(), large.summary()
        # A restarted code server: the first tick of a fresh sensor object.
        cold = []
        for _ in range(3):
            large.sensor = large.fresh_sensor()
            t0 = time.perf_counter()
            large.tick(large.cursor)
            cold.append((time.perf_counter() - t0) * 1000)
    print(f"10k old + {args.new} new, first tick of a fresh code server: median {statistics.median(cold):.1f} ms")
    for label, r in (("100", small_r), ("10k", large_r)):
        print(f"{label:>4} old + {args.new} new: median {r['median_ms']:.1f} ms "
              f"(min {r['min_ms']:.1f}, max {r['max_ms']:.1f})")
    print(json.dumps({
        "tick_ms_10k": round(large_r["median_ms"], 2),
        "tick_ms_100": round(small_r["median_ms"], 2),
        "ratio": round(large_r["median_ms"] / small_r["median_ms"], 2),
        "tick_ms_10k_cold": round(statistics.median(cold), 2),
    }))


if __name__ == "__main__":
    main()
