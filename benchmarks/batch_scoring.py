"""Benchmark: streaming batch scoring (``score_parquet``) vs the bare script a user would write.

One LightGBM model is trained through the core on the demo spec (``train_from_frame`` on 200k
demo loans). Validated-feature files of 1M and 10M rows (the loans columns after
``prepare_features``; a fast vectorised generator with ``generate_loans``' columns and
feature distributions) are written to Parquet in a temp dir: the 1M file as one 1M-row row group,
the 10M file as ten (large row groups, as polars and Spark write them).

Each measurement runs in its own fresh process (so peak RSS is that run's alone), after its
imports and model load are done:

* bare: ``pl.read_parquet`` of the whole file, the bundle's ``FeatureEncoder``, the native
  LightGBM ``Booster.predict`` (its own 2 threads), the same output columns, ``write_parquet``;
* ours: ``score_parquet(bundle, source, destination, ...)`` with its defaults.

At 1M rows the pair runs ``--repeats`` times, interleaved (bare, ours, bare, ours, ...), and
the median of each side is compared, so background load hits both alike. At 10M rows one pair
runs. ``speedup_vs_bare`` is bare seconds / ours; the headline is the 1M one and
``speedup_vs_bare_min`` is the smaller of the two sizes. ``parity_max_abs`` is the largest
score difference between the two outputs over all rows (ids checked equal, in order).
``peak_rss_mb`` is the peak RSS (VmHWM, reset just before the run) of the process that scored
10M rows: absolute, so it includes the imports and the model (its RSS just before scoring is
``ours_baseline_rss_mb``).

The last printed line is JSON. Run: ``python benchmarks/batch_scoring.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCORED_AT = dt.datetime(2026, 3, 1, 6, 0, tzinfo=dt.UTC)
MODEL_VERSION = "1"
GENERATE_CHUNK = 1_000_000


def generate_validated(path: Path, rows: int, seed: int) -> None:
    """Loans as validated features (after prepare_features), written chunk by chunk."""
    import pyarrow.parquet as pq

    from mlops_assets.core.features import prepare_features
    from mlops_assets.demo import demo_spec

    spec = demo_spec(path.parent / "spec")
    writer = None
    try:
        for start in range(0, rows, GENERATE_CHUNK):
            n = min(GENERATE_CHUNK, rows - start)
            frame = prepare_features(fast_loans(n, seed=seed + start // GENERATE_CHUNK, id_offset=start), spec)
            table = frame.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=GENERATE_CHUNK)
    finally:
        if writer is not None:
            writer.close()


def fast_loans(n: int, *, seed: int, id_offset: int = 0):
    """generate_loans' columns with its feature distributions (drift 0), vectorised into
    polars: the pandas original spends most of its time building string and datetime columns.
    The labels (defaulted, grade) are simpler here: they are carried along, never scored."""
    import polars as pl

    from mlops_assets.demo.data import GENDERS, HOME_OWNERSHIP, PURPOSES, REGIONS

    rng = np.random.default_rng(seed)

    def pick(values, p):
        return pl.Series(values, dtype=pl.String).gather(rng.choice(len(values), size=n, p=p))

    age = np.clip(rng.normal(41, 12, n), 18, 85).round()
    income = np.exp(rng.normal(10.9, 0.45, n)).round(-2)
    employment_years = np.clip(rng.gamma(2.0, 3.0, n), 0, 45).round(1)
    credit_score = np.clip(rng.normal(690, 55, n), 300, 850).round()
    loan_amount = np.clip(np.exp(rng.normal(9.4, 0.6, n)), 500, 80_000).round(-1)
    term_months = np.where(rng.random(n) < 0.7, 36.0, 60.0)
    interest_rate = np.clip(4.0 + (850 - credit_score) / 28 + rng.normal(0, 1.2, n), 3.0, 36.0).round(2)
    debt_to_income = np.clip(rng.beta(2.2, 6.0, n) * 60, 0, 60).round(2)
    employment_years[rng.random(n) < 0.02] = np.nan
    debt_to_income[rng.random(n) < 0.01] = np.nan
    logit = -2.6 + 0.045 * (interest_rate - 12) - 0.012 * (credit_score - 690) + 0.035 * (np.nan_to_num(debt_to_income) - 15)
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    return pl.DataFrame({
        "loan_id": np.arange(id_offset, id_offset + n, dtype=np.int64),
        "applied_at": pl.Series(np.sort(rng.integers(0, 86_400, n)) * 1_000_000).cast(pl.Duration("us")) + start,
        "age": age, "income": income, "employment_years": employment_years, "credit_score": credit_score,
        "loan_amount": loan_amount, "term_months": term_months, "interest_rate": interest_rate,
        "debt_to_income": debt_to_income,
        "num_open_accounts": rng.poisson(6, n).astype(float), "delinquencies_2y": rng.poisson(0.3, n).astype(float),
        "purpose": pick(PURPOSES, np.array([0.42, 0.22, 0.1, 0.1, 0.08, 0.08])),
        "home_ownership": pick(HOME_OWNERSHIP, [0.4, 0.15, 0.45]),
        "region": pick(REGIONS, [0.3, 0.25, 0.25, 0.2]),
        "gender": pick(GENDERS, [0.49, 0.49, 0.02]),
        "grade": pick(list("ABCD"), [0.3, 0.4, 0.2, 0.1]),
        "defaulted": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64),
    })


def train_bundle(bundle_dir: Path) -> dict:
    import polars as pl

    from mlops_assets.core.features import prepare_features
    from mlops_assets.core.training import train_from_frame
    from mlops_assets.demo import demo_spec
    from mlops_assets.demo.data import generate_loans

    spec = demo_spec(bundle_dir.parent / "spec")
    start = time.perf_counter()
    outcome = train_from_frame(prepare_features(pl.from_pandas(generate_loans(200_000, seed=1)), spec), spec)
    outcome.bundle.save(bundle_dir)
    return {"train_s": time.perf_counter() - start, "trees": outcome.model.best_iteration,
            "features": len(outcome.bundle.encoder.feature_names)}


# --- the two contenders, each run in a fresh process by `_worker` -------------------------

def bare_script(bundle, source: str, destination: str) -> None:
    """What a user writes without the package: all rows in memory at once."""
    import lightgbm as lgb
    import polars as pl

    booster = lgb.Booster(model_str=bundle.native_bytes.decode())
    df = pl.read_parquet(source)
    score = booster.predict(bundle.encoder.transform(df))
    pl.DataFrame({
        "loan_id": df["loan_id"], "score": score,
        "prediction": (score >= bundle.threshold).astype(np.int64),
    }).with_columns(
        pl.lit(MODEL_VERSION).alias("model_version"), pl.lit(SCORED_AT).alias("scored_at"),
    ).write_parquet(destination)


def ours(bundle, source: str, destination: str) -> dict:
    from mlops_assets.core.batch import score_parquet

    result = score_parquet(bundle, source, destination, id_column="loan_id",
                           model_version=MODEL_VERSION, scored_at=SCORED_AT)
    return {"chunks": result.chunks, "threads": result.threads, "chunk_rows": result.chunk_rows}


def _worker(which: str, bundle_dir: str, source: str, destination: str) -> None:
    from mlops_assets.core.bundle import ModelBundle

    bundle = ModelBundle.load(bundle_dir)
    import lightgbm  # noqa: F401  (imports before the clock for both sides)
    import onnxruntime  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from mlops_assets.core import batch  # noqa: F401

    # Peak RSS of this run alone: ru_maxrss would keep the parent's peak across fork+exec, so
    # reset the kernel's high-water mark (VmHWM) to the current RSS and read it afterwards.
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    baseline = _status_mb("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    extra = (bare_script(bundle, source, destination) if which == "bare" else ours(bundle, source, destination)) or {}
    print(json.dumps({"seconds": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                      "peak_rss_mb": _status_mb("VmHWM"), "baseline_rss_mb": baseline, **extra}))


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _in_fresh_process(which: str, bundle_dir: Path, source: Path, destination: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", which, str(bundle_dir), str(source), str(destination)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def parity(bare_path: Path, ours_path: Path) -> float:
    import pyarrow.parquet as pq

    worst = 0.0
    bare_file, ours_file = pq.ParquetFile(bare_path), pq.ParquetFile(ours_path)
    for a, b in zip(bare_file.iter_batches(1_000_000, columns=["loan_id", "score"]),
                    ours_file.iter_batches(1_000_000, columns=["loan_id", "score"]), strict=True):
        if not a.column(0).equals(b.column(0)):
            raise AssertionError("the two outputs do not hold the same ids in the same order")
        worst = max(worst, float(np.max(np.abs(a.column(1).to_numpy() - b.column(1).to_numpy()))))
    if bare_file.metadata.num_rows != ours_file.metadata.num_rows:
        raise AssertionError("the two outputs have different row counts")
    return worst


def compare(rows: int, repeats: int, tmp: Path, bundle_dir: Path) -> dict:
    source = tmp / f"validated_{rows}.parquet"
    generate_validated(source, rows, seed=7)
    runs: dict[str, list[dict]] = {"bare": [], "ours": []}
    for _ in range(repeats):
        for which in ("bare", "ours"):
            runs[which].append(_in_fresh_process(which, bundle_dir, source, tmp / f"{which}_{rows}.parquet"))
    bare_s = statistics.median(r["seconds"] for r in runs["bare"])
    ours_s = statistics.median(r["seconds"] for r in runs["ours"])
    out = {
        "rows": rows,
        "repeats": repeats,
        "bare_s": round(bare_s, 3),
        "ours_s": round(ours_s, 3),
        "bare_runs_s": [round(r["seconds"], 3) for r in runs["bare"]],
        "ours_runs_s": [round(r["seconds"], 3) for r in runs["ours"]],
        "bare_cpu_s": round(statistics.median(r["cpu_s"] for r in runs["bare"]), 3),
        "ours_cpu_s": round(statistics.median(r["cpu_s"] for r in runs["ours"]), 3),
        "speedup_vs_bare": round(bare_s / ours_s, 3),
        "bare_rows_per_s": round(rows / bare_s),
        "ours_rows_per_s": round(rows / ours_s),
        "parity_max_abs": parity(tmp / f"bare_{rows}.parquet", tmp / f"ours_{rows}.parquet"),
        "bare_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["bare"])),
        "ours_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["ours"])),
        "ours_baseline_rss_mb": round(max(r["baseline_rss_mb"] for r in runs["ours"])),
        "ours_chunks": runs["ours"][0]["chunks"],
        "threads": runs["ours"][0]["threads"],
        "chunk_rows": runs["ours"][0]["chunk_rows"],
    }
    for path in tmp.glob(f"*_{rows}.parquet"):
        path.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3, help="interleaved pairs at 1M rows")
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--worker", nargs=4, metavar=("WHICH", "BUNDLE", "SOURCE", "DEST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp_name:
        tmp = Path(tmp_name)
        bundle_dir = tmp / "bundle"
        model = train_bundle(bundle_dir)
        print(json.dumps({"model": model}), flush=True)
        sizes = []
        for i, rows in enumerate(args.rows):
            sizes.append(compare(rows, args.repeats if i == 0 else 1, tmp, bundle_dir))
            print(json.dumps(sizes[-1]), flush=True)
    headline, largest = sizes[0], sizes[-1]
    print(json.dumps({
        "speedup_vs_bare": headline["speedup_vs_bare"],
        "speedup_rows": headline["rows"],
        "speedup_vs_bare_min": min(s["speedup_vs_bare"] for s in sizes),
        "speedup_by_rows": {s["rows"]: s["speedup_vs_bare"] for s in sizes},
        "parity_max_abs": max(s["parity_max_abs"] for s in sizes),
        "peak_rss_mb": largest["ours_peak_rss_mb"],
        "peak_rss_rows": largest["rows"],
        "bare_peak_rss_mb": largest["bare_peak_rss_mb"],
        "rows_per_s": {s["rows"]: s["ours_rows_per_s"] for s in sizes},
        "bare_rows_per_s": {s["rows"]: s["bare_rows_per_s"] for s in sizes},
        "model": model,
        "load_avg": list(os.getloadavg()),
    }))


if __name__ == "__main__":
    main()
