"""Benchmark: the full-data drift engine against Evidently's DataDriftPreset.

Case A (default): 1M reference + 1M current rows, 20 numeric + 5 categorical columns, a few of
them shifted (fixed seeds). Each engine runs in its own fresh process (multiprocessing 'spawn'),
one after the other, on the same Parquet files:

* ours: build_profile(reference) + build_profile(current, reference=...) + compare_profiles;
* Evidently: Report([DataDriftPreset()]).run(current, reference) on pandas frames (the import of
  evidently, ~2.8 s, is done before the clock starts).

Memory is measured per process with psutil: RSS is sampled every 5 ms while the engine runs
(``*_peak_rss_mb``, absolute, so it includes the input frames), next to the RSS just before the
run (``*_baseline_rss_mb``) and the process's lifetime ``ru_maxrss``. Time is reported as wall
seconds and as CPU seconds of the process (``*_cpu_s``, user + system over all threads): on a
shared machine the wall time of either engine grows with the load, the CPU time much less.

Case B (``--large``): writes 10M current rows x 50 columns to Parquet in 500k-row files (each file
is generated, written and freed, so the writer stays small), builds and stores a reference
profile from 1M rows, then profiles the Parquet files streaming against the stored profile in a
fresh process and reports time and peak RSS (``ru_maxrss`` of that process).

The last printed line is JSON. Run: ``python benchmarks/drift.py`` or ``... --large``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl

SHIFTED_NUMERIC = (0, 3, 7, 12)  # clear shifts (Wasserstein/std well above 0.1)
MILD_NUMERIC = (5, 9)  # small shifts that must stay below the threshold
SHIFTED_CATEGORICAL = (1, 3)


def make_frame(
    n: int, seed: int, drift: bool, n_numeric: int = 20, n_categorical: int = 5
) -> pl.DataFrame:
    """Deterministic synthetic features: normal, lognormal, uniform, integer, exponential and
    low-cardinality numerics, categoricals of 3 to 300 values, some with missing values."""
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {}
    for i in range(n_numeric):
        shift = (0.5 if i in SHIFTED_NUMERIC else 0.02 if i in MILD_NUMERIC else 0.0) * drift
        kind = i % 6
        if kind == 0:
            x = rng.normal(10.0 + shift, 2.0, n)
        elif kind == 1:
            x = rng.lognormal(0.0, 0.8, n) * (1.0 + shift)
        elif kind == 2:
            x = rng.uniform(-1.0, 1.0 + 2 * shift, n)
        elif kind == 3:
            x = rng.integers(0, 500, n).astype(np.float64) + 150 * shift
        elif kind == 4:
            x = rng.exponential(1.0 + shift, n)
        else:  # four values: Evidently treats it with Jensen-Shannon on value frequencies
            p = [0.4, 0.3, 0.2, 0.1] if shift >= 0.5 else [0.25, 0.25, 0.25, 0.25]
            x = rng.choice([0.0, 1.0, 2.0, 5.0], n, p=p)
        if i % 4 == 1:  # missing values; the rate changes in the current data
            x[rng.random(n) < (0.12 if drift else 0.05)] = np.nan
        cols[f"num_{i:02d}"] = x
    for j in range(n_categorical):
        k = (3, 12, 40, 300, 7)[j % 5]
        names = pl.Series([f"v{j}_{c:03d}" for c in range(k + 2)])
        weights = np.linspace(1.0, 2.0, k)
        if drift and j in SHIFTED_CATEGORICAL:
            weights = weights[::-1] ** 3
        codes = rng.choice(k, n, p=weights / weights.sum())
        if drift and j == 2:  # a few unseen values
            new = rng.random(n) < 0.01
            codes[new] = k + rng.integers(0, 2, int(new.sum()))
        cols[f"cat_{j}"] = names.gather(codes)
    return pl.DataFrame(cols)


def column_kinds(frame: pl.DataFrame) -> dict[str, str]:
    return {c: "numeric" if c.startswith("num_") else "categorical" for c in frame.columns}


class PeakRss:
    """Samples this process's RSS in a thread (psutil) while active."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) of this process: unlike wall time, it does not
    grow when other processes compete for the cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_ours(ref_path: str, cur_path: str, out: Any) -> None:
    from mlops_assets.core.drift import build_profile, compare_profiles

    ref, cur = pl.read_parquet(ref_path), pl.read_parquet(cur_path)
    kinds = column_kinds(ref)
    with PeakRss() as mem:
        c0 = _cpu_s()
        t0 = time.perf_counter()
        ref_profile = build_profile(ref, kinds)
        t1 = time.perf_counter()
        cur_profile = build_profile(cur, reference=ref_profile)
        t2 = time.perf_counter()
        result = compare_profiles(ref_profile, cur_profile)
        t3 = time.perf_counter()
        cpu = _cpu_s() - c0
    out.put(
        {
            "seconds": t3 - t0,
            "cpu_s": cpu,
            "reference_s": t1 - t0,
            "current_s": t2 - t1,
            "compare_s": t3 - t2,
            "verdicts": {f.name: f.drifted for f in result.features},
            "scores": {f.name: (f.method, f.score) for f in result.features},
            "peak_rss_mb": mem.peak / 2**20,
            "baseline_rss_mb": mem.baseline / 2**20,
            "ru_maxrss_mb": _maxrss_mb(),
            "profile_kb": len(ref_profile.to_json()) / 1024,
        }
    )


def _run_evidently(ref_path: str, cur_path: str, out: Any) -> None:
    import evidently  # noqa: F401  (import outside the timed region)

    from mlops_assets.core.drift.evidently_report import _run, parse_snapshot

    ref, cur = pl.read_parquet(ref_path), pl.read_parquet(cur_path)
    kinds = column_kinds(ref)
    ref_pd, cur_pd = ref.to_pandas(), cur.to_pandas()
    del ref, cur
    with PeakRss() as mem:
        c0 = _cpu_s()
        t0 = time.perf_counter()
        verdicts = parse_snapshot(_run(ref_pd, cur_pd, kinds))["columns"]
        t1 = time.perf_counter()
        cpu = _cpu_s() - c0
    out.put(
        {
            "seconds": t1 - t0,
            "cpu_s": cpu,
            "verdicts": verdicts,
            "peak_rss_mb": mem.peak / 2**20,
            "baseline_rss_mb": mem.baseline / 2**20,
            "ru_maxrss_mb": _maxrss_mb(),
        }
    )


def _in_fresh_process(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{target.__name__} exited with {proc.exitcode}")
    return result


def case_a(rows: int, workdir: Path, skip_evidently: bool) -> dict[str, Any]:
    ref_path, cur_path = workdir / "reference.parquet", workdir / "current.parquet"
    make_frame(rows, seed=1, drift=False).write_parquet(ref_path)
    make_frame(rows, seed=2, drift=True).write_parquet(cur_path)
    print(f"case A: {rows:,} reference + {rows:,} current rows, 20 numeric + 5 categorical")
    ours = _in_fresh_process(_run_ours, str(ref_path), str(cur_path))
    print(
        f"  ours: {ours['seconds']:.2f} s wall, {ours['cpu_s']:.2f} s CPU (reference {ours['reference_s']:.2f} s, current "
        f"{ours['current_s']:.2f} s, compare {ours['compare_s']:.3f} s), peak RSS "
        f"{ours['peak_rss_mb']:.0f} MB (baseline {ours['baseline_rss_mb']:.0f} MB), "
        f"reference profile {ours['profile_kb']:.0f} KB"
    )
    summary: dict[str, Any] = {
        "case": "A",
        "rows": rows,
        "engine_s": round(ours["seconds"], 3),
        "engine_cpu_s": round(ours["cpu_s"], 3),
        "engine_peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "engine_baseline_rss_mb": round(ours["baseline_rss_mb"], 1),
        "memory_method": "psutil RSS sampled every 5 ms in a fresh spawned process per engine",
    }
    if skip_evidently:
        return summary
    ev = _in_fresh_process(_run_evidently, str(ref_path), str(cur_path))
    print(
        f"  Evidently: {ev['seconds']:.2f} s wall, {ev['cpu_s']:.2f} s CPU, peak RSS {ev['peak_rss_mb']:.0f} MB "
        f"(baseline {ev['baseline_rss_mb']:.0f} MB)"
    )
    names = list(ours["verdicts"])
    agree = [ours["verdicts"][n] == ev["verdicts"].get(n) for n in names]
    print(f"  {'column':8s} {'method':14s} {'score':>10s}  ours  Evidently")
    for name, ok in zip(names, agree):
        method, score = ours["scores"][name]
        print(
            f"  {name:8s} {method:14s} {score:10.4f}  {ours['verdicts'][name]!s:5s} "
            f"{ev['verdicts'].get(name)!s:5s}{'' if ok else '  MISMATCH'}"
        )
    summary.update(
        {
            "speedup_vs_evidently": round(ev["seconds"] / ours["seconds"], 1),
            "verdict_agreement": sum(agree) / len(agree),
            "evidently_s": round(ev["seconds"], 3),
            "evidently_cpu_s": round(ev["cpu_s"], 3),
            "speedup_cpu": round(ev["cpu_s"] / ours["cpu_s"], 1),
            "evidently_peak_rss_mb": round(ev["peak_rss_mb"], 1),
            "evidently_baseline_rss_mb": round(ev["baseline_rss_mb"], 1),
        }
    )
    return summary


def _run_streaming(profile_path: str, glob: str, chunk_rows: int, out: Any) -> None:
    from mlops_assets.core.drift import DatasetProfile, compare_profiles, profile_parquet

    with PeakRss() as mem:
        c0 = _cpu_s()
        t0 = time.perf_counter()
        reference = DatasetProfile.load(profile_path)
        current = profile_parquet(glob, reference=reference, chunk_rows=chunk_rows)
        result = compare_profiles(reference, current)
        seconds = time.perf_counter() - t0
        cpu = _cpu_s() - c0
    out.put(
        {
            "seconds": seconds,
            "cpu_s": cpu,
            "n_rows": current.n_rows,
            "n_chunks": current.n_chunks,
            "drifted": result.drifted_features,
            "peak_rss_mb": mem.peak / 2**20,
            "baseline_rss_mb": mem.baseline / 2**20,
            "ru_maxrss_mb": _maxrss_mb(),
        }
    )


def case_b(rows: int, workdir: Path, chunk_rows: int) -> dict[str, Any]:
    from mlops_assets.core.drift import build_profile

    n_num, n_cat, per_file = 40, 10, 500_000
    data_dir = workdir / "current"
    data_dir.mkdir()
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - start)
        make_frame(n, seed=100 + i, drift=True, n_numeric=n_num, n_categorical=n_cat).write_parquet(
            data_dir / f"part-{i:04d}.parquet", row_group_size=100_000
        )
    write_s = time.perf_counter() - t0
    size_mb = sum(p.stat().st_size for p in data_dir.iterdir()) / 2**20
    ref = make_frame(1_000_000, seed=1, drift=False, n_numeric=n_num, n_categorical=n_cat)
    profile_path = workdir / "reference_profile.json"
    build_profile(ref, column_kinds(ref)).save(profile_path)
    del ref
    print(
        f"case B: wrote {rows:,} rows x {n_num + n_cat} columns ({size_mb:.0f} MB Parquet) "
        f"in {write_s:.1f} s; reference profile {profile_path.stat().st_size / 1024:.0f} KB"
    )
    res = _in_fresh_process(
        _run_streaming, str(profile_path), str(data_dir / "*.parquet"), chunk_rows
    )
    print(
        f"  streaming profile + compare: {res['seconds']:.1f} s, {res['n_chunks']} chunks, "
        f"peak RSS {res['ru_maxrss_mb']:.0f} MB (sampled {res['peak_rss_mb']:.0f} MB), "
        f"drifted: {res['drifted']}"
    )
    return {
        "case": "B",
        "rows": res["n_rows"],
        "columns": n_num + n_cat,
        "engine_s": round(res["seconds"], 2),
        "engine_cpu_s": round(res["cpu_s"], 2),
        "rows_per_s": round(res["n_rows"] / res["seconds"]),
        "engine_peak_rss_mb": round(max(res["ru_maxrss_mb"], res["peak_rss_mb"]), 1),
        "engine_baseline_rss_mb": round(res["baseline_rss_mb"], 1),
        "n_chunks": res["n_chunks"],
        "chunk_rows": chunk_rows,
        "parquet_mb": round(size_mb, 1),
        "n_drifted": len(res["drifted"]),
        "memory_method": "ru_maxrss of a fresh spawned process (and psutil samples)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="case A rows per side")
    parser.add_argument("--large", action="store_true", help="run case B instead of case A")
    parser.add_argument("--large-rows", type=int, default=10_000_000)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--workdir", default=None, help="keep the data here (default: temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="drift-bench-", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        if args.large:
            summary = case_b(args.large_rows, workdir, args.chunk_rows)
        else:
            summary = case_a(args.rows, workdir, args.skip_evidently)
    summary["loadavg_1min_at_end"] = os.getloadavg()[0]  # > cores: other processes competed
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
