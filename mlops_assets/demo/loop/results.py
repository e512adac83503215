"""The scenario's metrics, judged from what was recorded (`records`), and `run_scenario`, the
one call the benchmark and the test make.

Every metric is read back from the instance's runs, their events and materializations, and the
model bundles in the artifact store, never from the engine's own bookkeeping; the engine only
keeps the time each day started, to date runs.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from mlops_assets.demo.loop.engine import LoopEngine
from mlops_assets.demo.loop.records import (
    Training,
    day_of,
    materializations,
    native_model_hash,
    read_registrations,
    read_trainings,
    read_version_training_sets,
)
from mlops_assets.demo.loop.scenario import Scenario, changed_settings

RUN_JOBS = ("ingest", "bootstrap", "retrain", "batch_inference", "drift", "performance", "rollback")


def measure(engine: LoopEngine) -> dict:
    """The scenario's results, read from the instance, the registry's records and the store."""
    from mlops_assets.pipeline import Stage

    instance, pipeline = engine.instance, engine.pipeline
    starts = [r.started_at for r in engine.records]
    trainings = read_trainings(instance, pipeline, starts)
    registrations = read_registrations(instance, pipeline)
    sets = read_version_training_sets(instance, pipeline)
    storage = engine.defs.resources[pipeline.storage_key]

    retrains, duplicate_trainings = _retrains(trainings)
    crashed = [t for t in trainings if t.error is not None]
    dup_partition_runs, dup_mats, dup_detail = _partition_duplicates(instance, pipeline, registrations)
    promotions = [r for r in registrations if r["rolled_back_from"] is None and r["changed"] is not False]
    identical = _identical_promotions(promotions, sets, storage, pipeline)
    false_retrains, missed = _against_expectations(retrains, engine.scenario, engine.expected)
    expected_retrains = sum(1 for e in engine.expected if e)
    rollback = _rollback_held(engine, trainings, registrations, sets)
    killed = [t for t in trainings if t.killed]
    retried = [t for t in trainings if any(k.training_set == t.training_set and k.started_at < t.started_at
                                           for k in killed)]
    latest = instance.fetch_materializations(pipeline.key(Stage.REGISTERED_MODEL), limit=1).records
    runs_by_job, run_seconds = _runs_by_job(instance, pipeline)
    wasted = _drift_reports_on_trained_partitions(instance, pipeline)
    return {
        "retrains": len(retrains),
        "expected_retrains": expected_retrains,
        "identical_models_promoted": len(identical),
        "duplicate_runs": len(duplicate_trainings) + dup_partition_runs,
        "missed_shifts": len(missed),
        "false_retrains": len(false_retrains),
        "rollback_held": rollback["held"],
        "promotions": len(promotions),
        "training_runs": len(trainings),
        "killed_runs": len(killed),
        "retried_runs": len(retried),
        "crashed_trainings": len(crashed),
        "gate_rejected": sum(1 for t in trainings if t.finished_training and not any(
            p["version"] == t.version for p in promotions)),
        "champion": latest[0].asset_materialization.metadata["model_version"].value if latest else None,
        "duplicate_materializations": dup_mats,
        "runs_by_job": runs_by_job,
        "run_seconds_by_job": run_seconds,
        "drift_reports_on_trained_partitions": wasted,
        "details": {
            "false_retrains": false_retrains, "missed_shifts": missed, "identical_models_promoted": identical,
            "duplicate_trainings": duplicate_trainings, "duplicate_partition_runs": dup_detail,
            "rollback": rollback["detail"],
            "training_runs": [f"day {t.day}: {t.trigger} ({'killed' if t.killed else t.status.lower()}"
                              f"{', v' + t.version if t.version else ''}{', ' + t.error if t.error else ''})"
                              for t in trainings],
        },
    }


def _retrains(trainings: list[Training]) -> tuple[list[Training], list[str]]:
    """One retrain per training set that ran (completed or killed): a killed run and its retry
    are one retrain; trainings that crashed are counted apart (`crashed_trainings`). Also the
    run ids of duplicate trainings."""
    by_set: dict[str, list[Training]] = defaultdict(list)
    for t in trainings:
        by_set[t.training_set or t.run_id].append(t)
    retrains = sorted((next(t for t in runs if t.ran) for runs in by_set.values() if any(t.ran for t in runs)),
                      key=lambda t: t.started_at)
    duplicates = []
    for runs in by_set.values():
        for i, t in enumerate(runs[1:], start=1):
            earlier = runs[:i]
            # A duplicate: the same set again after one finished training, or while one was in flight.
            if any(e.finished_training or (not e.killed and e.status in ("STARTED", "STARTING")) for e in earlier):
                duplicates.append(t.run_id)
    return retrains, duplicates


def _identical_promotions(promotions: list[dict], sets: dict[str, str], storage, pipeline) -> list[str]:
    """Promotions of a model already promoted before: the same training set or the same bytes."""
    identical, seen_sets, seen_bytes = [], {}, {}
    for p in promotions:
        v = p["version"]
        identity, digest = sets.get(v), native_model_hash(storage, pipeline, v)
        twin = seen_sets.get(identity) if identity else None
        twin = twin or (seen_bytes.get(digest) if digest else None)
        if twin is not None and twin != v:
            identical.append(f"v{v} = v{twin}")
        if identity:
            seen_sets.setdefault(identity, v)
        if digest:
            seen_bytes.setdefault(digest, v)
    return identical


def _against_expectations(retrains: list[Training], scenario: Scenario,
                          expected: list[str | None]) -> tuple[list[str], list[str]]:
    """Day by day against the scenario: retrains it did not expect (or with another trigger, or a
    second one the same day), and planted triggers no retrain followed."""
    by_day: dict[int, list[Training]] = defaultdict(list)
    for t in retrains:
        by_day[t.day].append(t)
    false_retrains, missed = [], []
    for n in range(1, len(scenario.days) + 1):
        want, got = expected[n - 1], by_day.get(n, [])
        for i, t in enumerate(got):
            if want is None or i > 0 or t.trigger != want:
                false_retrains.append(f"day {n}: {t.trigger} (expected {want or 'none'})")
        if scenario.days[n - 1].expect and not got:
            missed.append(f"day {n}: no retrain after the planted {scenario.days[n - 1].expect}")
    return false_retrains, missed


def _runs_by_job(instance, pipeline) -> tuple[dict[str, int], dict[str, float]]:
    """Per job of the pipeline: how many runs, and their seconds in total."""
    import dagster as dg

    counts, seconds = {}, {}
    for job in (pipeline.job(n) for n in RUN_JOBS):
        records = instance.get_run_records(dg.RunsFilter(job_name=job))
        counts[job] = len(records)
        seconds[job] = round(sum(r.end_time - r.start_time for r in records if r.start_time and r.end_time), 1)
    return counts, seconds


def _partition_duplicates(instance, pipeline, registrations) -> tuple[int, int, list[str]]:
    """Runs (ingest, batch inference, drift check) doing the same partition's work twice in one
    champion epoch, and batch_predictions / drift_report materializations repeated in one epoch."""
    import bisect

    import dagster as dg

    from mlops_assets.pipeline import Stage
    from mlops_assets.signals import PARTITION_KEY_TAG

    times = [r["timestamp"] for r in registrations]
    ids = [r["storage_id"] for r in registrations]
    runs = defaultdict(list)
    for job in (pipeline.job("ingest"), pipeline.job("batch_inference"), pipeline.job("drift")):
        for record in instance.get_run_records(dg.RunsFilter(job_name=job)):
            run = record.dagster_run
            if run.status != dg.DagsterRunStatus.SUCCESS:
                continue
            epoch = bisect.bisect_right(times, record.create_timestamp.timestamp())
            runs[(job, run.tags.get(PARTITION_KEY_TAG), epoch)].append(run.run_id)
    dup_runs = {k: v for k, v in runs.items() if len(v) > 1}
    mats = defaultdict(int)
    for stage in (Stage.BATCH_PREDICTIONS, Stage.DRIFT_REPORT):
        for r in materializations(instance, pipeline.key(stage)):
            epoch = bisect.bisect_left(ids, r.storage_id)
            mats[(stage.value, r.asset_materialization.partition, epoch)] += 1
    dup_mats = sum(n - 1 for n in mats.values() if n > 1)
    detail = [f"{job} {part} epoch {epoch}: {len(v)} runs" for (job, part, epoch), v in dup_runs.items()]
    return sum(len(v) - 1 for v in dup_runs.values()), dup_mats, detail



def _drift_reports_on_trained_partitions(instance, pipeline) -> dict:
    """Drift reports computed against a champion that was trained on that very partition: the
    retrain decision ignores their signal, so the run bought nothing for the loop."""
    from mlops_assets.pipeline import Stage
    from mlops_assets.signals import CHAMPION_VERSION, MODEL_VERSION, TRAINING_PARTITIONS

    trained = {}
    for r in materializations(instance, pipeline.key(Stage.TRAINED_MODEL)):
        md = r.asset_materialization.metadata
        if MODEL_VERSION in md and TRAINING_PARTITIONS in md:
            trained[str(md[MODEL_VERSION].value)] = set(md[TRAINING_PARTITIONS].value or {})
    total = wasted = 0
    for r in materializations(instance, pipeline.key(Stage.DRIFT_REPORT)):
        total += 1
        champion = r.asset_materialization.metadata.get(CHAMPION_VERSION)
        if champion is not None and r.asset_materialization.partition in trained.get(str(champion.value), ()):
            wasted += 1
    return {"reports": total, "on_a_partition_the_champion_trained_on": wasted}


def _rollback_held(engine: LoopEngine, trainings, registrations, sets) -> dict:
    """After each rollback: nothing rebuilds the rolled-back training set, and the champion stays
    on the rollback target (no training, no promotion) until the next day the scenario expects
    a retrain."""
    starts = [r.started_at for r in engine.records]
    problems, seen = [], 0
    for i, reg in enumerate(registrations):
        if reg["rolled_back_from"] is None:
            continue
        seen += 1
        left, target = reg["rolled_back_from"], reg["version"]
        bad_set = sets.get(left)
        day = day_of(reg["timestamp"], starts)
        nxt = next((n for n in range(day + 1, len(engine.expected) + 1) if engine.expected[n - 1]), None)
        until = starts[nxt - 1] if nxt is not None and nxt <= len(starts) else float("inf")
        for t in trainings:
            if t.started_at > reg["timestamp"] and bad_set and t.training_set == bad_set:
                problems.append(f"day {t.day}: run {t.run_id[:8]} rebuilt v{left}'s training set")
            if reg["timestamp"] < t.started_at < until:
                problems.append(f"day {t.day}: a {t.trigger} retrain before the next expected one "
                                f"(day {nxt or '-'})")
        for later in registrations[i + 1:]:
            if later["timestamp"] < until and later["version"] != target:
                problems.append(f"champion left v{target} for v{later['version']} before day {nxt or '-'}")
                break
    return {"held": seen > 0 and not problems,
            "detail": problems or ([f"{seen} rollback(s) held"] if seen else ["no rollback recorded"])}


# -- one call for the benchmark and the test -----------------------------------------------------


def run_scenario(scenario: Scenario, root: str | Path, log: Callable[[str], None] | None = None) -> dict:
    """Play `scenario` under `root` and return its metrics, the per-day decisions and timings."""
    t0 = time.perf_counter()
    engine = LoopEngine(root, scenario, log=log)
    try:
        engine.play()
        played = time.perf_counter() - t0
        results = measure(engine)
        results.update({
            "scenario": scenario.name,
            "days": len(scenario.days),
            "rows_per_day": scenario.rows_per_day,
            "settings_changed_from_demo_spec": changed_settings(engine.spec),
            "settings_base": "mlops_assets/demo/demo_spec.yaml (gate: min_main_metric 0.70, max_regression 0.02, "
                             "max_fairness_gap 0.10, max_p99_latency_ms 50; other sections: package defaults)",
            "cooldown_and_budget": "wall-clock rules: cooldown 0 and budget 1000 in this scenario; "
                                   "unit-tested in mlops_assets_tests/core/test_retrain.py",
            "per_day": [{"day": r.day, "expected": r.expected, "decisions": r.decisions, "seconds": r.seconds,
                         **({"note": r.note} if r.note else {})} for r in engine.records],
            "seconds": {"play": round(played, 1), "measure": round(time.perf_counter() - t0 - played, 1),
                        "slowest_day": max((r.seconds for r in engine.records), default=0.0)},
        })
        return results
    finally:
        engine.close()


def to_json(results: dict) -> str:
    return json.dumps(results, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
