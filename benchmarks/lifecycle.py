"""Benchmark: one ingest run of a 1M-row arrival, each stage as the asset vs its bare script.

A champion is trained once through the assets (raw_data -> validated_features ->
trained_model -> evaluation_report -> registered_model on a ``--train-rows`` arrival, the demo
spec, a temporary Dagster instance and MLflow store). Then a ``--rows`` arrival with the demo
schema lands and the ingest run materializes raw_data, validated_features, batch_predictions
and drift_report for its partition in one in-process ``dg.materialize``.

Each stage's asset time is its step's duration (STEP_START to STEP_SUCCESS in the run's event
log); the whole run's is the wall time of ``dg.materialize``. The bare equivalents are what a
user would script in the same process, on the same files, with the model already in hand:

* raw: ``pl.read_parquet`` of the landing file and ``write_parquet``;
* validated: read, the spec's checks in plain polars (ids, nulls, ranges, categories, row
  count, labels against the champion's label shares), ``prepare_features``, write;
* batch: read, the bundle's ``FeatureEncoder``, ``Booster.predict`` or the ONNX session
  (whichever is faster in that repeat), the predictions table, write;
* drift: read the features and the served scores, our engine's ``build_profile`` on the
  champion's reference profile and ``compare_profiles``.

The bare whole run is the sum of the bare stages. One warm-up run (cold imports, MLflow's
first lookups) is reported apart; then ``--repeats`` rounds alternate the order (asset run
first, then bare first, ...), and the median of each side is compared, so background load
hits both alike. Each round checks the two sides agree: the same features, predictions within
``1e-9`` and the same drift statistics.

Each asset run also times Dagster's own writes of its events to the instance's event log
(SQLite here; ``event_log_s`` per stage, ``ratio_without_event_log`` without them) and the
process CPU seconds of the whole run on both sides (``cpu_ratio``: less sensitive to other
work on the machine than wall time).

The last printed line is JSON: per stage ``asset_s``, ``bare_s`` and ``ratio``;
``worst_stage_ratio`` (and which stage); the whole run's ratio; rows; the load average.
Run: ``python benchmarks/lifecycle.py [--rows 1000000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)

STAGES = ("raw_data", "validated_features", "batch_predictions", "drift_report")
TRAIN_DAY, ARRIVAL_DAY = dt.date(2026, 1, 1), dt.date(2026, 1, 2)


# --- data -------------------------------------------------------------------------------------

def fast_loans(n: int, *, seed: int, day: dt.date, id_offset: int = 0):
    """``generate_loans``' columns, dtypes and distributions (drift 0), vectorised into polars:
    the pandas original spends most of its time building string and datetime columns."""
    import polars as pl

    from mlops_assets.demo.data import GENDERS, HOME_OWNERSHIP, PURPOSES, REGIONS

    rng = np.random.default_rng([seed, day.toordinal()])

    def pick(values, p):
        p = np.asarray(p, dtype=float)
        index = rng.choice(len(values), size=n, p=p / p.sum())
        return index, pl.Series(values, dtype=pl.String).gather(index)

    age = np.clip(rng.normal(41, 12, n), 18, 85).round()
    income = np.exp(rng.normal(10.9, 0.45, n)).round(-2)
    employment_years = np.clip(rng.gamma(2.0, 3.0, n), 0, 45).round(1)
    credit_score = np.clip(rng.normal(690, 55, n), 300, 850).round()
    loan_amount = np.clip(np.exp(rng.normal(9.4, 0.6, n)), 500, 80_000).round(-1)
    term_months = np.where(rng.random(n) < 0.7, 36.0, 60.0)
    interest_rate = np.clip(4.0 + (850 - credit_score) / 28 + rng.normal(0, 1.2, n), 3.0, 36.0).round(2)
    debt_to_income = np.clip(rng.beta(2.2, 6.0, n) * 60, 0, 60).round(2)
    num_open_accounts = rng.poisson(6, n).astype(float)
    delinquencies_2y = rng.poisson(0.3, n).astype(float)
    purpose_i, purpose = pick(PURPOSES, [0.42, 0.22, 0.1, 0.1, 0.08, 0.08])
    home_i, home = pick(HOME_OWNERSHIP, [0.4, 0.15, 0.45])
    _, region = pick(REGIONS, [0.3, 0.25, 0.25, 0.2])
    _, gender = pick(GENDERS, [0.49, 0.49, 0.02])
    logit = (
        -2.6 + 0.045 * (interest_rate - 12) - 0.012 * (credit_score - 690) + 0.035 * (debt_to_income - 15)
        + 0.35 * np.log(loan_amount / income * 10 + 1e-9) + 0.25 * delinquencies_2y
        - 0.04 * np.minimum(employment_years, 15) + 0.3 * (term_months == 60)
        + np.select([purpose_i == 5, purpose_i == 4, purpose_i == 3], [0.6, 0.3, -0.2], 0.0)
        + np.where(home_i == 1, -0.25, 0.0)
    )
    defaulted = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    risk = (850 - credit_score) / 55 + debt_to_income / 20 + delinquencies_2y * 0.6 + rng.normal(0, 0.7, n)
    grade = pl.Series(list("ABCD"), dtype=pl.String).gather(np.digitize(risk, [2.0, 3.2, 4.4]))
    employment_years[rng.random(n) < 0.02] = np.nan
    debt_to_income[rng.random(n) < 0.01] = np.nan
    start = dt.datetime.combine(day, dt.time(0, 0), tzinfo=dt.UTC)
    return pl.DataFrame({
        "loan_id": np.arange(id_offset, id_offset + n, dtype=np.int64),
        "applied_at": pl.Series(np.sort(rng.integers(0, 86_400, n)) * 1_000_000).cast(pl.Duration("us")) + start,
        "age": age, "income": income, "employment_years": employment_years, "credit_score": credit_score,
        "loan_amount": loan_amount, "term_months": term_months, "interest_rate": interest_rate,
        "debt_to_income": debt_to_income, "num_open_accounts": num_open_accounts,
        "delinquencies_2y": delinquencies_2y, "purpose": purpose, "home_ownership": home, "region": region,
        "gender": gender, "grade": grade, "defaulted": defaulted,
    }).with_columns(pl.col("employment_years", "debt_to_income").fill_nan(None))   # nulls, as pandas writes NaN


def land(directory: Path, day: dt.date, rows: int, seed: int, id_offset: int) -> str:
    """Write one arrival atomically (temporary name, then rename), as a producer should."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"loans_{day.isoformat()}.parquet"
    tmp = directory / f".{final.name}.tmp"
    fast_loans(rows, seed=seed, day=day, id_offset=id_offset).write_parquet(tmp)
    tmp.replace(final)
    return final.name


# --- the world: spec, definitions, instance, champion -----------------------------------------

class World:
    def __init__(self, root: Path, instance):
        from mlops_assets.definitions import build_mlops_defs
        from mlops_assets.demo import demo_spec
        from mlops_assets.pipeline import Pipeline

        self.root = root
        self.spec = demo_spec(root)
        self.pipeline = Pipeline(self.spec)
        self.defs = build_mlops_defs(self.spec)
        self.instance = instance
        self.storage = self.defs.resources[self.pipeline.storage_key]
        self.registry = self.defs.resources[self.pipeline.registry_key]

    def add_partition(self, key: str) -> None:
        self.instance.add_dynamic_partitions(self.pipeline.partitions_name, [key])

    def materialize(self, stages, partition: str | None = None):
        import dagster as dg

        result = dg.materialize(list(self.defs.assets or []), selection=self.pipeline.keys(stages),
                                instance=self.instance, resources=self.defs.resources, partition_key=partition)
        if not result.success:
            raise RuntimeError(f"materializing {stages} failed")
        return result

    def train_champion(self, rows: int) -> str:
        from mlops_assets.pipeline import Stage
        from mlops_assets.signals import MODEL_VERSION
        from mlops_assets.state import latest_materialization, value

        key = land(Path(self.spec.source.path), TRAIN_DAY, rows, seed=0, id_offset=0)
        self.add_partition(key)
        self.materialize((Stage.RAW_DATA, Stage.VALIDATED_FEATURES), key)
        self.materialize((Stage.TRAINED_MODEL, Stage.EVALUATION_REPORT, Stage.REGISTERED_MODEL))
        version = value(latest_materialization(self.instance, self.pipeline.key(Stage.REGISTERED_MODEL)),
                        MODEL_VERSION)
        if version is None:
            raise RuntimeError("the gate did not promote a champion")
        return str(version)

    def ingest(self, partition: str) -> dict:
        """One ingest run: each step's seconds (event log) and the run's wall time."""
        import dagster as dg

        from mlops_assets.pipeline import Stage

        storage = self.instance.event_log_storage
        stored: dict[str, float] = {}
        store_event = storage.store_event

        def timed_store(event):   # Dagster's own cost: writing each event to the SQLite event log
            begin = time.perf_counter()
            try:
                return store_event(event)
            finally:
                key = event.step_key or "run"
                stored[key] = stored.get(key, 0.0) + time.perf_counter() - begin

        storage.store_event = timed_store
        start, cpu = time.perf_counter(), time.process_time()
        try:
            result = self.materialize([Stage(s) for s in STAGES], partition)
        finally:
            del storage.store_event
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        begun, seconds = {}, {}
        for record in self.instance.all_logs(result.run_id):
            event = record.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.STEP_START:
                begun[event.step_key] = record.timestamp
            elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                seconds[event.step_key] = record.timestamp - begun[event.step_key]
        out = {stage: seconds[f"{self.pipeline.name}__{stage}"] for stage in STAGES}
        out.update({f"{stage}_event_log": stored.get(f"{self.pipeline.name}__{stage}", 0.0) for stage in STAGES})
        out["run"], out["run_cpu"] = wall, cpu
        out["run_event_log"] = sum(stored.values())
        return out


# --- the bare equivalents -------------------------------------------------------------------

class Bare:
    """The same four steps as a user's script: the model and its reference profile in hand."""

    def __init__(self, world: World, version: str, landing: str):
        self.world = world
        self.spec = world.spec
        self.version = version
        self.landing = landing
        self.bundle = world.registry.load_bundle(world.pipeline.model_name, version)
        self.reference_json = self.bundle.reference_profile
        self.label_shares = (self.bundle.meta.get("label_profile") or {}).get("shares")
        out = world.root / "bare"
        out.mkdir(exist_ok=True)
        self.raw_path, self.features_path = out / "raw.parquet", out / "features.parquet"
        self.predictions_path = out / "predictions.parquet"
        self.drift = None

    def raw(self) -> None:
        import polars as pl

        pl.read_parquet(self.landing).write_parquet(self.raw_path)

    def validated(self) -> None:
        import polars as pl

        from mlops_assets.core.features import prepare_features

        spec = self.spec
        df = pl.read_parquet(self.raw_path)
        problems = check_plain(df, spec, self.label_shares)
        if problems:
            raise RuntimeError(f"bare checks failed: {problems}")
        prepare_features(df, spec).write_parquet(self.features_path)

    def batch(self, engine: str) -> None:
        import polars as pl

        spec = self.spec
        df = pl.read_parquet(self.features_path)
        x = self.bundle.encoder.transform(df)
        if engine == "booster":
            score = self.booster.predict(x)
        else:
            score = self.bundle.scorer.predict(x)
        pl.DataFrame({
            spec.id_column: df[spec.id_column], "score": score,
            "prediction": (score >= self.bundle.threshold).astype(np.int64),
        }).with_columns(pl.lit(self.version).alias("model_version"),
                        pl.lit(dt.datetime.now(dt.UTC)).alias("scored_at")).write_parquet(self.predictions_path)

    @property
    def booster(self):
        if not hasattr(self, "_booster"):
            import lightgbm as lgb

            self._booster = lgb.Booster(model_str=self.bundle.native_bytes.decode())
        return self._booster

    def drift_report(self) -> None:
        import polars as pl

        from mlops_assets.core.drift import DatasetProfile, build_profile, compare_profiles
        from mlops_assets.core.predictions import MONITORED_COLUMN
        from mlops_assets.stages.drift_report import drift_config

        spec = self.spec
        reference = DatasetProfile.from_dict(self.reference_json)
        current = pl.read_parquet(self.features_path, columns=spec.feature_names)
        score = pl.read_parquet(self.predictions_path, columns=["score"])["score"]
        current = current.with_columns(score.alias(MONITORED_COLUMN))
        profile = build_profile(current, dict(spec.feature_types), reference=reference,
                                prediction_column=MONITORED_COLUMN)
        self.drift = compare_profiles(reference, profile, drift_config(spec))


def check_plain(df, spec, label_shares: dict | None) -> list[str]:
    """The spec's blocking checks as one polars select a user would write."""
    import polars as pl
    from scipy import stats

    exprs = [pl.col(spec.id_column).null_count().alias("id_nulls"),
             (pl.len() - pl.col(spec.id_column).n_unique()).alias("id_dups")]
    for f in spec.features:
        c = pl.col(f.name)
        if f.type == "numeric":
            missing = c.null_count() + c.is_nan().sum()
            exprs.append(c.is_infinite().sum().alias(f"{f.name}:inf"))
            if f.min is not None:
                exprs.append((c < f.min).sum().alias(f"{f.name}:below"))
            if f.max is not None:
                exprs.append((c > f.max).sum().alias(f"{f.name}:above"))
        else:
            missing = c.null_count()
            if f.categories is not None:
                exprs.append((c.is_not_null() & ~c.is_in(f.categories)).sum().alias(f"{f.name}:unknown"))
        exprs.append((missing / pl.len() > f.max_null_fraction).alias(f"{f.name}:nulls"))
    y = pl.col(spec.target)
    exprs += [y.null_count().alias("label_nulls"), (~y.is_in([0, 1])).sum().alias("label_not01"),
              y.sum().alias("positives"), y.drop_nulls().len().alias("labelled")]
    row = df.select(exprs).row(0, named=True)
    problems = [k for k, v in row.items() if k not in ("positives", "labelled") and v]
    if df.height < spec.min_rows:
        problems.append("row_count")
    if label_shares and row["labelled"] >= spec.labels.min_rows:
        expected, observed = label_shares.get("1", 0.0), row["positives"] / row["labelled"]
        ratio = max(observed, 1e-12) / max(expected, 1e-12)
        p = stats.binomtest(row["positives"], row["labelled"], expected).pvalue
        if (ratio > spec.labels.max_rate_ratio or ratio < 1 / spec.labels.max_rate_ratio) and p < spec.labels.alpha:
            problems.append("label_distribution")
    return problems


# --- agreement of the two sides ---------------------------------------------------------------

def check_agreement(world: World, bare: Bare, partition: str, version: str) -> dict:
    """The asset's outputs and the bare script's: the same features, scores and drift statistics."""
    import polars as pl
    from polars.testing import assert_frame_equal

    layout, storage = world.pipeline.layout, world.storage
    assert_frame_equal(storage.read_parquet(layout.raw(partition)), pl.read_parquet(bare.raw_path))
    assert_frame_equal(storage.read_parquet(layout.features(partition)), pl.read_parquet(bare.features_path))
    ours = storage.read_parquet(layout.predictions(partition, version))
    theirs = pl.read_parquet(bare.predictions_path)
    if not ours[world.spec.id_column].equals(theirs[world.spec.id_column]):
        raise AssertionError("the two sides scored different ids")
    score_diff = float(np.max(np.abs(ours["score"].to_numpy() - theirs["score"].to_numpy())))
    if score_diff > 1e-9:
        raise AssertionError(f"scores differ by up to {score_diff}")
    report = storage.read_json(f"{layout.drift_dir(partition, version)}/report.json")
    mine = {f["name"]: f["score"] for f in report["features"]}
    other = {f.name: f.score for f in bare.drift.features}
    if mine.keys() != other.keys() or any(abs(mine[k] - other[k]) > 1e-12 for k in mine):
        raise AssertionError(f"drift scores differ: {mine} vs {other}")
    return {"score_max_abs_diff": score_diff, "drift_share": report["drift_share"],
            "dataset_drift": report["dataset_drift"]}


# --- the run ----------------------------------------------------------------------------------

def timed(fn, *args) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; CPU is the whole process's, every thread."""
    start, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - start, time.process_time() - cpu


def bare_round(bare: Bare) -> dict:
    out, cpu = {}, 0.0
    for stage, fn in (("raw_data", bare.raw), ("validated_features", bare.validated)):
        out[stage], used = timed(fn)
        cpu += used
    engines = {engine: timed(bare.batch, engine) for engine in ("booster", "onnx")}
    out["batch_engine"] = min(engines, key=lambda e: engines[e][0])
    out["batch_predictions"], used = engines[out["batch_engine"]]
    cpu += used
    out["drift_report"], used = timed(bare.drift_report)
    out["run"], out["run_cpu"] = sum(out[s] for s in STAGES), cpu + used
    return out


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> dict:
    import dagster as dg

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--train-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    load_start = load_average()

    with tempfile.TemporaryDirectory(prefix="mlops-lifecycle-") as tmp, \
            dg.instance_for_test(temp_dir=tmp) as instance:
        world = World(Path(tmp) / "world", instance)
        start = time.perf_counter()
        version = world.train_champion(args.train_rows)
        train_s = time.perf_counter() - start
        partition = land(Path(world.spec.source.path), ARRIVAL_DAY, args.rows, seed=1, id_offset=10_000_000)
        world.add_partition(partition)
        cold = world.ingest(partition)
        print(json.dumps({"warmup_run": {k: round(v, 3) for k, v in cold.items()}}), file=sys.stderr)
        bare = Bare(world, version, str(Path(world.spec.source.path) / partition))
        bare_round(bare)   # warms the bare side's imports and model too

        asset_runs, bare_runs, agreement = [], [], None
        for i in range(args.repeats):
            order = ("asset", "bare") if i % 2 == 0 else ("bare", "asset")
            for side in order:
                if side == "asset":
                    asset_runs.append(world.ingest(partition))
                else:
                    bare_runs.append(bare_round(bare))
            agreement = check_agreement(world, bare, partition, version)
            print(json.dumps({"round": i, "asset": {k: round(v, 3) for k, v in asset_runs[-1].items()},
                              "bare": {k: (round(v, 3) if isinstance(v, float) else v)
                                       for k, v in bare_runs[-1].items()}}), file=sys.stderr)

    def median(runs, key):
        return statistics.median(r[key] for r in runs)

    stages = {}
    for stage in STAGES:
        a, b = median(asset_runs, stage), median(bare_runs, stage)
        events = median(asset_runs, f"{stage}_event_log")
        stages[stage] = {"asset_s": round(a, 3), "bare_s": round(b, 3), "ratio": round(a / b, 3),
                         "event_log_s": round(events, 3),
                         # What is left once Dagster's own event writes (SQLite here) are taken out.
                         "ratio_without_event_log": round((a - events) / b, 3)}
    worst = max(stages, key=lambda s: stages[s]["ratio"])
    run_a, run_b = median(asset_runs, "run"), median(bare_runs, "run")
    cpu_a, cpu_b = median(asset_runs, "run_cpu"), median(bare_runs, "run_cpu")
    result = {
        "benchmark": "lifecycle",
        "rows": args.rows,
        "repeats": args.repeats,
        "stages": stages,
        "worst_stage_ratio": stages[worst]["ratio"],
        "worst_stage": worst,
        "run": {"asset_s": round(run_a, 3), "bare_s": round(run_b, 3), "ratio": round(run_a / run_b, 3),
                "asset_cpu_s": round(cpu_a, 3), "bare_cpu_s": round(cpu_b, 3), "cpu_ratio": round(cpu_a / cpu_b, 3),
                "event_log_s": round(median(asset_runs, "run_event_log"), 3)},
        # Per round, asset/bare of runs next to each other in time: less exposed to load bursts.
        "round_ratios": {stage: round(statistics.median(a[stage] / b[stage] for a, b in zip(asset_runs, bare_runs)), 3)
                         for stage in (*STAGES, "run")},
        "bare_batch_engine": statistics.mode(r["batch_engine"] for r in bare_runs),
        "warmup_run_s": round(cold["run"], 3),
        "train_s": round(train_s, 1),
        "agreement": agreement,
        "load_avg_start": load_start,
        "load_avg_end": load_average(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
