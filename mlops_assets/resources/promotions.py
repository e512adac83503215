"""Executing the promotion state machine of `core/promotion.py` against the registry.

Each step is idempotent and derived from the recorded intent, so a SIGKILL between any two
steps leaves a state the next call finishes (or undoes) to the same end.
"""

from __future__ import annotations

import time
import uuid

from mlops_assets.core.gate import Approval
from mlops_assets.core.promotion import (
    PROMOTE,
    ROLLBACK,
    PromotionIntent,
    left_tags,
    recovery_action,
    target_tags,
)

INTENT_TAG = "promotion_intent"
CHAMPION = "champion"
CHALLENGER = "challenger"


def pending_intent(registry, model_name: str) -> PromotionIntent | None:
    raw = registry.model_tags(model_name).get(INTENT_TAG)
    return PromotionIntent.from_json(raw) if raw else None


def _tag_version_and_run(registry, model_name: str, version: str, tags: dict) -> None:
    """The version's tags, mirrored on the MLflow run that logged it (people read either)."""
    registry.set_tags(model_name, version, tags)
    run_id = registry.get_version(model_name, version).run_id
    if run_id:
        registry.set_run_tags(run_id, tags)


def _apply(registry, model_name: str, intent: PromotionIntent) -> None:
    _tag_version_and_run(registry, model_name, intent.to_version, target_tags(intent))
    left = left_tags(intent)
    if left:
        _tag_version_and_run(registry, model_name, intent.from_version, left)
    registry.set_alias(model_name, CHAMPION, intent.to_version)
    challenger = registry.version_by_alias(model_name, CHALLENGER)
    if challenger is not None and challenger.version == intent.to_version:
        registry.delete_alias(model_name, CHALLENGER)
    registry.delete_model_tag(model_name, INTENT_TAG)


def _undo(registry, model_name: str, intent: PromotionIntent) -> None:
    if intent.from_version:
        registry.set_alias(model_name, CHAMPION, intent.from_version)
    else:
        registry.delete_alias(model_name, CHAMPION)
    registry.delete_model_tag(model_name, INTENT_TAG)


def recover(registry, model_name: str) -> str | None:
    intent = pending_intent(registry, model_name)
    if intent is None:
        return None
    approval = registry.get_version(model_name, intent.to_version).tags.get("approval")
    if recovery_action(intent, approval) == "finish":
        _apply(registry, model_name, intent)
        return "finished"
    _undo(registry, model_name, intent)
    return "undone"


def _run(registry, model_name: str, intent: PromotionIntent, recovered: str | None):
    from mlops_assets.resources.registry import PromotionResult

    registry.set_model_tag(model_name, INTENT_TAG, intent.to_json())
    _apply(registry, model_name, intent)
    return PromotionResult(intent.to_version, intent.from_version, True, intent.id, recovered)


def promote(registry, model_name: str, version: str, *, run_id: str, approval: str):
    from mlops_assets.resources.registry import PromotionResult

    recovered = recover(registry, model_name)
    current = registry.champion(model_name)
    if current is not None and current.version == version:
        # Already the champion (often: the recovery above just finished this very promotion):
        # report the id of the promotion that made it so, which the version carries.
        return PromotionResult(version, current.tags.get("previous_champion"), False,
                               current.tags.get("promotion_id"), recovered)
    if not Approval(approval).promotable:
        raise ValueError(f"v{version} has approval {approval!r}: only approved or forced versions are promoted")
    intent = PromotionIntent(uuid.uuid4().hex[:12], PROMOTE, version, current.version if current else None,
                             run_id, Approval(approval).value, created_at=time.time())
    return _run(registry, model_name, intent, recovered)


def rollback(registry, model_name: str, to_version: str, *, from_version: str | None, run_id: str, reason: str):
    """Champion `from_version` -> `to_version`. `from_version` is the caller's champion of record,
    not read from the alias: a re-run after a crash that already moved it repeats the same step."""
    recovered = recover(registry, model_name)
    if from_version is None:
        current = registry.champion(model_name)
        from_version = current.version if current else None
    target = registry.get_version(model_name, to_version)
    intent = PromotionIntent(uuid.uuid4().hex[:12], ROLLBACK, to_version, from_version,
                             run_id, target.tags.get("approval", ""), reason, time.time())
    return _run(registry, model_name, intent, recovered)


def sweep(registry, model_name: str, is_alive) -> dict[str, list[str]]:
    """Repair what killed runs left behind (`MLflowRegistry.sweep`): finish or undo a half-done
    promotion, mark versions whose run died before the gate judged them `abandoned`, and fail
    their open MLflow runs. Recording a finished move is the caller's (champion_record.py)."""
    recovered = recover(registry, model_name)
    abandoned = []
    for info in registry.list_versions(model_name):
        judged = info.tags.get("gate_passed") is not None or info.tags.get("approval") not in (None, "pending")
        owner = info.tags.get("dagster_run_id")
        if judged or (owner is not None and is_alive(owner)):
            continue
        tags = {"approval": "abandoned", "abandoned_reason": f"its Dagster run {owner} ended before the gate "
                                                             "judged it"}
        registry.set_tags(model_name, info.version, tags)
        if info.run_id:
            registry.set_run_tags(info.run_id, tags)
        abandoned.append(info.version)
    return {"promotion": [recovered] if recovered else [], "abandoned": abandoned,
            "orphaned_runs": registry.fail_orphaned_runs(model_name, is_alive)}
