"""What a played scenario left recorded, read back as plain rows: the training runs, the
registered_model events, each version's training set and model bytes.

`results.measure` judges these rows; nothing here comes from the engine's own bookkeeping
except the time each day started, to date the runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass
class Training:
    run_id: str
    job: str
    day: int
    trigger: str | None
    training_set: str | None
    run_key: str | None
    status: str
    started_at: float
    finished_training: bool        # trained_model materialized in this run
    killed: bool                   # training started, the step never ended, the run failed
    version: str | None
    error: str | None = None       # the training step failed: the first line of why

    @property
    def ran(self) -> bool:
        """A training that ran: it completed, or it was killed mid-way (not one that crashed)."""
        return self.finished_training or self.killed


def day_of(timestamp: float, starts: list[float]) -> int:
    """The day (1-based) `timestamp` falls in, given when each day started; 0 before day 1."""
    day = 0
    for i, start in enumerate(starts, start=1):
        if timestamp >= start:
            day = i
    return day


def read_trainings(instance, pipeline, starts: list[float]) -> list[Training]:
    import dagster as dg

    from mlops_assets.pipeline import Stage
    from mlops_assets.signals import (
        MODEL_VERSION,
        RUN_KEY_TAG,
        TRAINING_SET,
        TRAINING_SET_TAG,
        TRIGGER_TAG,
    )

    key = pipeline.key(Stage.TRAINED_MODEL)
    out = []
    for job in (pipeline.job("bootstrap"), pipeline.job("retrain")):
        for record in instance.get_run_records(dg.RunsFilter(job_name=job)):
            run = record.dagster_run
            steps = {}
            for entry in instance.all_logs(run.run_id, of_type={
                    dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
                    dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.ASSET_MATERIALIZATION}):
                if "trained_model" in (entry.step_key or ""):
                    steps.setdefault(entry.dagster_event.event_type, entry)
            start = steps.get(dg.DagsterEventType.STEP_START)
            if start is None:
                continue                      # recovery runs (evaluate, promote) train nothing
            mat = steps.get(dg.DagsterEventType.ASSET_MATERIALIZATION)
            metadata = mat.dagster_event.event_specific_data.materialization.metadata if mat else {}
            ended = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE} & set(steps)
            failure = steps.get(dg.DagsterEventType.STEP_FAILURE)
            identity = metadata[TRAINING_SET].value if TRAINING_SET in metadata else run.tags.get(TRAINING_SET_TAG)
            assert mat is None or mat.dagster_event.asset_key == key
            out.append(Training(
                run_id=run.run_id, job=job, day=day_of(start.timestamp, starts),
                trigger=run.tags.get(TRIGGER_TAG), training_set=identity, run_key=run.tags.get(RUN_KEY_TAG),
                status=run.status.value, started_at=start.timestamp, finished_training=mat is not None,
                killed=not ended and run.status == dg.DagsterRunStatus.FAILURE,
                version=str(metadata[MODEL_VERSION].value) if MODEL_VERSION in metadata else None,
                error=_first_error_line(failure.dagster_event.event_specific_data.error) if failure else None,
            ))
    return sorted(out, key=lambda t: t.started_at)


def _first_error_line(error) -> str | None:
    while error is not None and error.cause is not None:
        error = error.cause
    return None if error is None else error.message.strip().splitlines()[0][:200]


def materializations(instance, key):
    """Every materialization record of `key`, oldest first (paged: storage caps one fetch)."""
    out, cursor = [], None
    while True:
        found = instance.fetch_materializations(key, limit=5_000, cursor=cursor, ascending=True)
        out.extend(found.records)
        if not found.has_more:
            return out
        cursor = found.cursor


def read_registrations(instance, pipeline):
    """registered_model events, oldest first: (storage_id, timestamp, version, rolled_back_from, run_id)."""
    from mlops_assets.pipeline import Stage
    from mlops_assets.signals import MODEL_VERSION, ROLLED_BACK_FROM

    out = []
    for r in materializations(instance, pipeline.key(Stage.REGISTERED_MODEL)):
        md = r.asset_materialization.metadata
        out.append({"storage_id": r.storage_id, "timestamp": r.timestamp,
                    "version": str(md[MODEL_VERSION].value) if MODEL_VERSION in md else None,
                    "rolled_back_from": str(md[ROLLED_BACK_FROM].value) if ROLLED_BACK_FROM in md else None,
                    "changed": md["changed"].value if "changed" in md else None, "run_id": r.run_id})
    return out


def read_version_training_sets(instance, pipeline) -> dict[str, str]:
    from mlops_assets.pipeline import Stage
    from mlops_assets.signals import MODEL_VERSION, TRAINING_SET

    out = {}
    for r in materializations(instance, pipeline.key(Stage.TRAINED_MODEL)):
        md = r.asset_materialization.metadata
        if MODEL_VERSION in md and TRAINING_SET in md:
            out[str(md[MODEL_VERSION].value)] = str(md[TRAINING_SET].value)
    return out


def native_model_hash(storage, pipeline, version: str) -> str | None:
    prefix = f"{pipeline.layout.model_dir(version)}/bundle"
    files = [p for p in storage.list(prefix) if p.rsplit("/", 1)[-1].startswith("model.")]
    if not files:
        return None
    return hashlib.sha256(storage.read_bytes(files[0])).hexdigest()
