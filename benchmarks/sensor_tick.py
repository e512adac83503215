"""Cost of one new-data sensor tick against a landing directory's history.

A watched directory holds N files that were already ingested (the cursor from the
previous tick is past them and their dynamic partitions exist on a real temporary
instance) plus 10 new ones. One tick is timed (`build_sensor_context` + the sensor
call, the way the daemon evaluates it), repeated, median kept; N = 10,000 and N = 100.
The files are a few bytes each: the sensor never reads contents.

Last line: JSON with tick_ms_10k, tick_ms_100 and their ratio
(targets: tick_ms_10k <= 500 and ratio <= 2).

    python benchmarks/sensor_tick.py [--repeats 9] [--new 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def _write_files(directory: Path, start: int, count: int) -> list[str]:
    names = []
    for i in range(start, start + count):
        name = f"loans_{i:06d}.parquet"
        (directory / name).write_bytes(b"PAR1")
        names.append(name)
    return names


def measure(n_old: int, n_new: int, repeats: int) -> dict:
    import dagster as dg

    from mlops_assets.definitions import build_mlops_defs
    from mlops_assets.stages.common import Names
    from mlops_assets_tests.conftest import small_spec

    with tempfile.TemporaryDirectory(prefix="sensor_tick_") as tmp, dg.instance_for_test() as instance:
        spec = small_spec(tmp)
        names = Names(spec)
        defs = build_mlops_defs(spec)
        sensor_name = names.sensor("new_data")
        sensor = defs.get_sensor_def(sensor_name)
        landing = Path(spec.source.path)
        landing.mkdir(parents=True)

        def tick(cursor):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                              sensor_name=sensor_name)
            return sensor(context)

        # History: N files, ingested by a previous tick (cursor past them, partitions exist).
        old = _write_files(landing, 0, n_old)
        previous = tick(None)
        assert len(previous.run_requests) == n_old, len(previous.run_requests)
        instance.add_dynamic_partitions(names.partitions, old)
        cursor = previous.cursor
        assert not tick(cursor).run_requests          # nothing new yet

        time.sleep(0.01)                              # new files arrive strictly after the watermark
        new = _write_files(landing, n_old, n_new)

        times = []
        for _ in range(repeats + 1):                  # the first tick warms caches, not counted
            t0 = time.perf_counter()
            result = tick(cursor)
            times.append(time.perf_counter() - t0)
            assert [r.partition_key for r in result.run_requests] == new
        times = times[1:]
        return {"median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000,
                "max_ms": max(times) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--new", type=int, default=10)
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    small = measure(100, args.new, args.repeats)
    large = measure(10_000, args.new, args.repeats)
    for label, r in (("100", small), ("10k", large)):
        print(f"{label:>4} old + {args.new} new: median {r['median_ms']:.1f} ms "
              f"(min {r['min_ms']:.1f}, max {r['max_ms']:.1f})")
    print(json.dumps({
        "tick_ms_10k": round(large["median_ms"], 2),
        "tick_ms_100": round(small["median_ms"], 2),
        "ratio": round(large["median_ms"] / small["median_ms"], 2),
    }))


if __name__ == "__main__":
    main()
