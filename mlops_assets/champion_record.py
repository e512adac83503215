"""The champion of record's history, by the run that wrote it, and recording a promotion or
rollback that a recovery finished in MLflow after the run that started it died.

Two crash-consistency rules for the `registered_model` record live here:

* **Once per request.** A run and every re-execution of it (Dagster's run group: the runs that
  share its `dagster/root_run_id`) are one request. When any of them, or a recovery acting for
  one of them, already recorded the outcome, a re-execution finds it here and records nothing
  again (a second rollback record would roll back twice; a second promotion record would count
  one promotion twice).
* **Whoever finishes, records.** The registry's recovery (the sweep at the start of training,
  `doctor --fix`, and the recovery every promotion and rollback runs before its own move) can
  finish a promotion or rollback whose run died before recording it. The champion alias then
  explains itself through its tags (`promoted_by_run`, `rolled_back_by_run` and the version it
  left); this module records that move as a runless `registered_model` event carrying the
  original run's id (`RECORDED_FOR_RUN`), so the pipeline's champion of record follows the
  alias and the original run's re-execution sees the move as done.
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import APPROVAL, MODEL_VERSION, ROLLED_BACK_FROM
from mlops_assets.state import champion_of_record, value

RECORDED_FOR_RUN = "recorded_for_run"   # a runless record: the run whose promotion/rollback it records
PROMOTABLE = ("approved", "forced")
PARENT_RUN_TAG, ROOT_RUN_TAG = "dagster/parent_run_id", "dagster/root_run_id"   # set by a re-execution
RECENT_RECORDS = 200                    # a re-execution follows its run closely: older records are others'


def request_run_ids(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[str]:
    """The run, the runs it re-executes and their other re-executions: one request."""
    ids = {r for r in (run.run_id, run.parent_run_id, run.root_run_id, run.tags.get(PARENT_RUN_TAG),
                       run.tags.get(ROOT_RUN_TAG)) if r}
    group = instance.get_run_group(run.run_id)
    if group is not None:
        ids |= {r.run_id for r in group[1]}
    return ids


def recorded_for_request(instance: dg.DagsterInstance, pipeline: Pipeline, run: dg.DagsterRun, *,
                         rollback: bool, version: str | None = None) -> dg.AssetMaterialization | None:
    """The `registered_model` record this request already wrote (or a recovery wrote for it):
    a rollback record when `rollback`, else a promotion record of `version`; None if none."""
    ids = request_run_ids(instance, run)
    found = instance.fetch_materializations(pipeline.key(Stage.REGISTERED_MODEL), limit=RECENT_RECORDS)
    for record in found.records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        if record.run_id not in ids and value(materialization, RECORDED_FOR_RUN) not in ids:
            continue
        is_rollback = value(materialization, ROLLED_BACK_FROM) is not None
        if is_rollback != rollback:
            continue
        if version is None or str(value(materialization, MODEL_VERSION)) == str(version):
            return materialization
    return None


def explained_move(tags: dict[str, str], record: str | None, alive: Callable[[str | None], bool]) -> str | None:
    """'promotion' or 'rollback' when the champion alias's version says (by its tags) that a
    finished run moved it there from the champion of record `record`; None otherwise (e.g.
    moved by hand, or its run still running and about to record it itself)."""
    promoted_by, rolled_by = tags.get("promoted_by_run"), tags.get("rolled_back_by_run")
    if rolled_by and tags.get("rolled_back_from") == record and not alive(rolled_by):
        return "rollback"
    if (tags.get("approval") in PROMOTABLE and tags.get("gate_passed") == "true" and promoted_by
            and not alive(promoted_by) and tags.get("previous_champion") == record):
        return "promotion"
    return None


def record_finished_move(instance: dg.DagsterInstance, pipeline: Pipeline, registry,
                         alive: Callable[[str | None], bool], *, recorded_by: str,
                         leave: str | None = None) -> str | None:
    """Record the champion alias's move when a recovery finished it and nobody recorded it yet;
    returns what was recorded, or None when the record already follows the alias. `leave`: a
    version whose promotion the caller is about to record itself (its own, finished)."""
    record = champion_of_record(instance, pipeline)
    alias = registry.champion(pipeline.model_name)
    if alias is None or alias.version == record or alias.version == leave:
        return None
    tags = alias.tags
    how = explained_move(tags, record, alive)
    if how is None:
        return None
    rolled = how == "rollback"
    metadata = {MODEL_VERSION: alias.version, "model_name": pipeline.model_name, "alias": "champion",
                "previous_champion": record or "none", "changed": True, APPROVAL: tags.get("approval", ""),
                "bootstrap": record is None, "recorded_by": recorded_by,
                "promotion_id": tags.get("promotion_id", ""),
                RECORDED_FOR_RUN: tags.get("rolled_back_by_run" if rolled else "promoted_by_run", "")}
    if rolled:
        metadata[ROLLED_BACK_FROM] = record
        metadata["rollback_reason"] = tags.get("rollback_reason", "")
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=pipeline.key(Stage.REGISTERED_MODEL), metadata=metadata,
        description=f"champion v{alias.version} recorded by {recorded_by}: the {how} completed in MLflow, "
                    "its run ended first"))
    return f"recorded the {how} v{record or '-'} -> v{alias.version}"


def run_alive(instance: dg.DagsterInstance) -> Callable[[str | None], bool]:
    """Whether a Dagster run (by id) is still in progress on this instance."""
    def alive(run_id: str | None) -> bool:
        run = instance.get_run_by_id(run_id) if run_id else None
        return run is not None and not run.is_finished

    return alive


def sweep_and_record(instance: dg.DagsterInstance, pipeline: Pipeline, registry) -> dict[str, list[str]]:
    """What the start of every training does: the registry's sweep of what killed runs left
    behind, then the record of a promotion or rollback the sweep finished."""
    alive = run_alive(instance)
    repaired = registry.sweep(pipeline.model_name, alive)
    recorded = record_finished_move(instance, pipeline, registry, alive, recorded_by="the sweep at training start")
    return {**repaired, "recorded": [recorded] if recorded else []}


def recover_and_record(instance: dg.DagsterInstance, pipeline: Pipeline, registry, *, recorded_by: str,
                       promoting: str | None = None) -> str | None:
    """What a promotion or rollback does before its own move: finish or undo the half-done move
    a killed run left (the registry's recovery), then record a move that finished unrecorded,
    e.g. someone else's rollback, so that the caller moves on from the champion of record and
    every move is recorded once. `promoting`: the version the caller promotes; a finished
    promotion of it is the caller's own record. Returns what was done, or None for nothing."""
    recovered = registry.recover_promotion(pipeline.model_name)
    recorded = record_finished_move(instance, pipeline, registry, run_alive(instance), recorded_by=recorded_by,
                                    leave=None if promoting is None else str(promoting))
    done = [f"a half-done earlier move was {recovered}"] if recovered else []
    return "; ".join(done + ([recorded] if recorded else [])) or None


def rolled_back_after_evaluation(instance: dg.DagsterInstance, pipeline: Pipeline, version: str) -> str | None:
    """Why `version` may not be promoted from its latest evaluation: it was rolled back after
    that evaluation and has not been promoted since (the rollback's record says so). A
    re-materialized `registered_model` would otherwise undo an operator's rollback with the
    verdict the operator overruled; a new evaluation (which needs an audited force for a
    rolled-back training set) is the way back. None when the version may be promoted."""
    version = str(version)
    rolled_back_at = None
    for record in instance.fetch_materializations(pipeline.key(Stage.REGISTERED_MODEL),
                                                  limit=RECENT_RECORDS, ascending=False).records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        if str(value(materialization, MODEL_VERSION)) == version:
            return None                        # the champion since its last rollback (or never rolled back)
        if str(value(materialization, ROLLED_BACK_FROM)) == version:
            rolled_back_at = record
            break
    if rolled_back_at is None:
        return None
    for record in instance.fetch_materializations(pipeline.key(Stage.EVALUATION_REPORT),
                                                  limit=RECENT_RECORDS, ascending=False).records:
        if str(value(record.asset_materialization, MODEL_VERSION)) == version:
            if record.timestamp > rolled_back_at.timestamp:
                return None                    # evaluated again after the rollback: that verdict decides
            break
    by = value(rolled_back_at.asset_materialization, RECORDED_FOR_RUN) or rolled_back_at.run_id
    return (f"v{version} was rolled back (run {by or '-'}) after the evaluation this promotion would use; "
            "evaluate it again (a rolled-back training set needs the gate's audited force) to promote it")
