"""The retrain sensor: a drift signal or a performance drop starts one retrain per data version."""

import datetime as dt
import hashlib
import json
import time

import dagster as dg

from mlops_assets.automation.jobs import PipelineJobs
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import (
    DATA_VERSION_TAG,
    INPUT_DATA_VERSION,
    PARTITION_TAG,
    RETRAIN_SIGNAL,
    RUN_KEY_TAG,
    SENSOR_NAME_TAG,
    SIGNALS_TAG,
    TRIGGER_TAG,
)

MAX_HANDLED_KEYS = 2_000


def retrain_run_key(trigger: str, data_version: str) -> str:
    """One trigger kind on one data version -> one run key -> at most one retrain."""
    return hashlib.sha256(f"{trigger}:{data_version}".encode()).hexdigest()[:24]


def _retrain_blocked(instance: dg.DagsterInstance, job_name: str, automation, now: float) -> str | None:
    """Why a retrain may not start now (cooldown, budget), or None."""
    window_start = now - automation.retrain_budget_window_hours * 3600
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name,
                              created_after=dt.datetime.fromtimestamp(window_start, dt.UTC)),
    )
    if len(records) >= automation.retrain_budget:
        return (f"retrain budget spent: {len(records)} retrains in the last "
                f"{automation.retrain_budget_window_hours:g} h (budget {automation.retrain_budget})")
    if records:
        last = max(r.create_timestamp.timestamp() for r in records)
        wait = automation.retrain_cooldown_minutes * 60 - (now - last)
        if wait > 0:
            return f"cooldown: last retrain {int((now - last) // 60)} min ago, next allowed in {int(wait // 60) + 1} min"
    return None


def build_retrain_sensor(pipeline: Pipeline, jobs: PipelineJobs) -> dg.SensorDefinition:
    """Drift share, a key feature's drift or a performance drop -> one retrain per data version."""
    spec = pipeline.spec
    auto = spec.automation
    sources = []
    if auto.retrain_on_drift:
        sources.append(("drift", pipeline.key(Stage.DRIFT_REPORT)))
    if auto.retrain_on_performance_drop and spec.ground_truth is not None:
        sources.append(("performance", pipeline.key(Stage.MODEL_PERFORMANCE)))

    @dg.sensor(
        name=pipeline.sensor("retrain"),
        job=jobs.retrain,
        minimum_interval_seconds=auto.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Drift or a performance drop -> retrain, once per (trigger, data version), "
                    "within the spec's cooldown and budget.",
    )
    def retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if not sources:
            return dg.SensorResult(skip_reason="retraining on drift and on performance drops is off in the spec")
        cursors = json.loads(context.cursor) if context.cursor else {}
        new_cursors = dict(cursors)
        handled: list[str] = list(cursors.get("handled", []))
        requests: dict[str, dg.RunRequest] = {}
        seen = 0
        for kind, key in sources:
            found = context.instance.fetch_materializations(key, limit=200, cursor=cursors.get(kind), ascending=True)
            seen += len(found.records)
            if found.records:
                new_cursors[kind] = found.cursor
            for record in found.records:
                mat = record.asset_materialization
                md = mat.metadata
                if RETRAIN_SIGNAL not in md or not md[RETRAIN_SIGNAL].value:
                    continue
                version = str(md[INPUT_DATA_VERSION].value)
                run_key = retrain_run_key(kind, version)
                requests[run_key] = dg.RunRequest(
                    run_key=run_key,
                    tags={TRIGGER_TAG: kind, DATA_VERSION_TAG: version, PARTITION_TAG: mat.partition or ""},
                )
        if not requests:
            return dg.SensorResult(skip_reason=f"no retrain signal in {seen} new drift/performance results",
                                   cursor=json.dumps(new_cursors))
        fresh = [r for r in requests.values()
                 if r.run_key not in handled and not _launched(context.instance, pipeline.sensor("retrain"), r.run_key)]
        if not fresh:
            return dg.SensorResult(skip_reason="signals already handled: a retrain ran for each (loop protection)",
                                   cursor=json.dumps(new_cursors))
        blocked = _retrain_blocked(context.instance, jobs.retrain.name, auto, time.time())
        if blocked:
            # Keep the old cursor: the signal is re-read once the cooldown or budget allows.
            return dg.SensorResult(skip_reason=blocked, cursor=context.cursor)
        # One retrain covers every pending signal (it trains on all data at once); the
        # others are remembered as handled so they never start a second one.
        first = fresh[0]
        first.tags[SIGNALS_TAG] = ",".join(sorted(r.run_key for r in fresh))[:1000]
        new_cursors["handled"] = (handled + [r.run_key for r in fresh])[-MAX_HANDLED_KEYS:]
        return dg.SensorResult(run_requests=[first], cursor=json.dumps(new_cursors))

    return retrain_sensor


def _launched(instance: dg.DagsterInstance, sensor_name: str, run_key: str) -> bool:
    return bool(instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: sensor_name}),
                                  limit=1))
