"""Recorded state: what the Dagster instance says happened, as plain facts.

Stages, sensors and schedules all decide from these facts (the latest materialization of
each asset and partition), never from a mutable global such as an MLflow alias.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from mlops_assets.core.retrain import (
    RetrainRun,
    Signal,
    TrainingSet,
    VersionRecord,
    training_set_identity,
)
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import (
    ACCEPTED,
    APPROVAL,
    CHAMPION_VERSION,
    DATA_VERSION,
    DELAYED_LABEL_ROWS,
    INPUT_DATA_VERSION,
    LABELLED,
    LATE_LABELLED_PARTITIONS,
    MODEL_VERSION,
    PARTITION_KEY_TAG,
    RETRAIN_SIGNAL,
    ROLLED_BACK_FROM,
    STATUS,
    TRAINABLE_LATE_LABELS,
    TRAINING_PARTITIONS,
    TRAINING_SET,
    TRAINING_SET_TAG,
)


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey,
                           partition: str | None = None) -> dg.AssetMaterialization | None:
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition is not None else None),
        limit=1,
    )
    return found.records[0].asset_materialization if found.records else None


def value(materialization: dg.AssetMaterialization | None, key: str, default=None):
    if materialization is None or key not in materialization.metadata:
        return default
    return materialization.metadata[key].value


@dataclass(frozen=True)
class PartitionFacts:
    key: str
    status: str | None          # accepted | rejected | None (not validated yet)
    labelled: bool
    data_version: str | None    # of its validated features
    rows: int

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED


def partition_facts(instance: dg.DagsterInstance, pipeline: Pipeline) -> list[PartitionFacts]:
    """Every arrival partition, in the order it was added, with its validation outcome."""
    key = pipeline.key(Stage.VALIDATED_FEATURES)
    out = []
    for partition in instance.get_dynamic_partitions(pipeline.partitions_name):
        mat = latest_materialization(instance, key, partition)
        out.append(PartitionFacts(
            key=partition, status=value(mat, STATUS), labelled=bool(value(mat, LABELLED, False)),
            data_version=value(mat, DATA_VERSION), rows=int(value(mat, "dagster/row_count", 0) or 0),
        ))
    return out


def champion_epoch(instance: dg.DagsterInstance, pipeline: Pipeline) -> int:
    """Changes with every promotion or rollback: the storage id of its registration event."""
    found = instance.fetch_materializations(pipeline.key(Stage.REGISTERED_MODEL), limit=1)
    return found.records[0].storage_id if found.records else 0


def champion_of_record(instance: dg.DagsterInstance, pipeline: Pipeline) -> str | None:
    """The champion version as the pipeline recorded it (promotion or rollback), or None."""
    version = value(latest_materialization(instance, pipeline.key(Stage.REGISTERED_MODEL)), MODEL_VERSION)
    return None if version is None else str(version)


# -- the retrain loop's inputs -------------------------------------------------------------
RECENT_EVENTS = 1_000   # older drift reports were computed against long-gone champions


def _events(instance: dg.DagsterInstance, key: dg.AssetKey, limit: int = RECENT_EVENTS):
    """Materializations of `key`, oldest first."""
    found = instance.fetch_materializations(key, limit=limit, ascending=False)
    return [r.asset_materialization for r in reversed(found.records) if r.asset_materialization is not None]


def training_recipe(pipeline: Pipeline) -> str:
    from mlops_assets.translator import stage_code_version

    return stage_code_version(pipeline.spec, Stage.TRAINED_MODEL)


def candidate_training_set(instance: dg.DagsterInstance, pipeline: Pipeline,
                           delayed_label_rows: int = 0) -> TrainingSet:
    """What a retrain started now would train on: every accepted, labelled partition."""
    from mlops_assets.sources.labels import label_files_fingerprint

    chosen = {f.key: f for f in partition_facts(instance, pipeline) if f.accepted and f.labelled}
    gt = pipeline.spec.ground_truth
    labels = label_files_fingerprint(gt.path) if gt is not None else None
    identity = training_set_identity({k: f.data_version for k, f in chosen.items()}, training_recipe(pipeline),
                                     labels)
    return TrainingSet(identity, {k: f.rows for k, f in chosen.items()}, delayed_label_rows)


def version_records(instance: dg.DagsterInstance, pipeline: Pipeline) -> list[VersionRecord]:
    """Every trained version with its training set, the gate's verdict and whether it was rolled back."""
    approvals = {str(value(m, MODEL_VERSION)): value(m, APPROVAL)
                 for m in _events(instance, pipeline.key(Stage.EVALUATION_REPORT))}
    rolled_back: dict[str, bool] = {}
    for m in _events(instance, pipeline.key(Stage.REGISTERED_MODEL)):
        left = value(m, ROLLED_BACK_FROM)
        if left is not None:
            rolled_back[str(left)] = True
        rolled_back[str(value(m, MODEL_VERSION))] = False   # (re)promoted: not rolled back now
    releases = release_states(instance, pipeline)
    records = []
    for m in _events(instance, pipeline.key(Stage.TRAINED_MODEL)):
        version, identity = value(m, MODEL_VERSION), value(m, TRAINING_SET)
        if version is None or identity is None:
            continue
        rows = value(m, TRAINING_PARTITIONS) or {}
        rows = rows if isinstance(rows, dict) else {p: 0 for p in rows}
        records.append(VersionRecord(
            version=str(version),
            training_set=TrainingSet(str(identity), {str(k): int(v) for k, v in rows.items()},
                                     int(value(m, DELAYED_LABEL_ROWS, 0) or 0),
                                     frozenset(str(k) for k in (value(m, LATE_LABELLED_PARTITIONS) or {}))),
            approval=approvals.get(str(version)),
            rolled_back=rolled_back.get(str(version), False),
            release=releases.get(str(version)),
        ))
    return records


def retrain_signals(instance: dg.DagsterInstance, pipeline: Pipeline) -> list[Signal]:
    """The latest drift report per partition and the latest performance result that raised a signal."""
    latest: dict[str, dg.AssetMaterialization] = {}
    for m in _events(instance, pipeline.key(Stage.DRIFT_REPORT)):
        latest[m.partition] = m
    signals = [
        Signal("drift", f"drift:{p}:{value(m, INPUT_DATA_VERSION)}", str(value(m, CHAMPION_VERSION)), p,
               str(value(m, "signal_summary", value(m, "summary", ""))))
        for p, m in latest.items() if value(m, RETRAIN_SIGNAL)
    ]
    if pipeline.spec.ground_truth is not None:
        perf = _events(instance, pipeline.key(Stage.MODEL_PERFORMANCE), limit=1)
        if perf and value(perf[-1], RETRAIN_SIGNAL):
            m = perf[-1]
            signals.append(Signal("performance", f"performance:{value(m, INPUT_DATA_VERSION)}",
                                  str(value(m, CHAMPION_VERSION)), None, str(value(m, "summary", ""))))
    return signals


def delayed_label_rows(instance: dg.DagsterInstance, pipeline: Pipeline) -> int:
    if pipeline.spec.ground_truth is None:
        return 0
    """Rows a retrain started now would gain from delayed labels: only those of partitions that
    arrived unlabelled (a labelled arrival trains on its own labels)."""
    perf = _events(instance, pipeline.key(Stage.MODEL_PERFORMANCE), limit=1)
    return int(value(perf[-1], TRAINABLE_LATE_LABELS, 0) or 0) if perf else 0


IN_FLIGHT = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED)
FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.CANCELING)


def training_runs(instance: dg.DagsterInstance, job_names: list[str], limit: int = 200,
                  bootstrap_job: str | None = None) -> list[RetrainRun]:
    """Runs that train (retrain and bootstrap jobs), newest first, as plain facts."""
    out = []
    for job in job_names:
        for record in instance.get_run_records(filters=dg.RunsFilter(job_name=job), limit=limit):
            run = record.dagster_run
            state = ("in_flight" if run.status in IN_FLIGHT else "failed" if run.status in FAILED else "succeeded")
            out.append(RetrainRun(run.run_id, run.tags.get(TRAINING_SET_TAG), state,
                                  record.create_timestamp.timestamp(), bootstrap=job == bootstrap_job))
    return sorted(out, key=lambda r: -r.created_at)


def in_flight_partitions(instance: dg.DagsterInstance, job_names: list[str]) -> set[str]:
    """Partitions that a queued or running run of these jobs is working on."""
    busy = set()
    for job in job_names:
        for run in instance.get_runs(filters=dg.RunsFilter(job_name=job, statuses=list(IN_FLIGHT))):
            partition = run.tags.get(PARTITION_KEY_TAG)
            if partition:
                busy.add(partition)
    return busy


# -- releases (shadow and canary) ----------------------------------------------------------
def release_from(materialization: dg.AssetMaterialization | None):
    """The release a materialization records (`registered_model`, the release job), or None."""
    from mlops_assets.core.release import Release
    from mlops_assets.signals import RELEASE

    return Release.from_dict(value(materialization, RELEASE))


def release_of_record(instance: dg.DagsterInstance, pipeline: Pipeline):
    """The latest release `registered_model` recorded (active, promoted or ended), or None.

    Scans back past materializations without one (a rollback, a plain promotion), so a release
    is never forgotten while still active: the release rule ends it when its champion moved."""
    for m in reversed(_events(instance, pipeline.key(Stage.REGISTERED_MODEL))):
        found = release_from(m)
        if found is not None:
            return found
    return None


def release_states(instance: dg.DagsterInstance, pipeline: Pipeline) -> dict[str, str]:
    """Each released version's latest release state (active | promoted | ended)."""
    states: dict[str, str] = {}
    for m in _events(instance, pipeline.key(Stage.REGISTERED_MODEL)):
        found = release_from(m)
        if found is not None:
            states[found.version] = found.status
    return states


def evaluation_of(instance: dg.DagsterInstance, pipeline: Pipeline, version: str) -> dg.AssetMaterialization | None:
    """The latest `evaluation_report` of one model version (the gate's verdict on it)."""
    for m in reversed(_events(instance, pipeline.key(Stage.EVALUATION_REPORT))):
        if str(value(m, MODEL_VERSION)) == str(version):
            return m
    return None


def latest_release_judgement(instance: dg.DagsterInstance, pipeline: Pipeline, version: str):
    """The arm comparison `model_performance` last recorded for this candidate, or None."""
    from mlops_assets.core.performance import ArmComparison
    from mlops_assets.signals import RELEASE_ARMS, RELEASE_VERSION

    if pipeline.spec.ground_truth is None:
        return None
    perf = _events(instance, pipeline.key(Stage.MODEL_PERFORMANCE), limit=1)
    if not perf or str(value(perf[-1], RELEASE_VERSION)) != str(version):
        return None
    return ArmComparison.from_dict(value(perf[-1], RELEASE_ARMS))


def release_runs(instance: dg.DagsterInstance, job_name: str, version: str, action: str) -> list[RetrainRun]:
    """Runs of the release job for one (candidate, action), newest first, as plain facts."""
    from mlops_assets.signals import RELEASE_ACTION_TAG, RELEASE_VERSION_TAG

    out = []
    tags = {RELEASE_VERSION_TAG: str(version), RELEASE_ACTION_TAG: action}
    for record in instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, tags=tags), limit=50):
        run = record.dagster_run
        state = "in_flight" if run.status in IN_FLIGHT else "failed" if run.status in FAILED else "succeeded"
        out.append(RetrainRun(run.run_id, f"release:v{version}:{action}", state,
                              record.create_timestamp.timestamp()))
    return sorted(out, key=lambda r: -r.created_at)
