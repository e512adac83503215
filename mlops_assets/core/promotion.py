"""Promotion and rollback as a small state machine that survives a kill at any step.

Every alias move starts by recording an *intent* (which version, from which, why, by which
run) on the registered model. The steps after it are idempotent and computed from the intent
alone, never from the aliases they are moving, so a re-run after a crash finishes the same
promotion (or undoes it, when the target is no longer promotable) and never records a
version as its own previous champion. Pure: the registry resource executes the plan.

  intent written -> target tagged (and, for a rollback, the old champion marked)
  -> `champion` moved -> `challenger` cleared if it labelled the target -> intent cleared
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from mlops_assets.core.gate import Approval

PROMOTE = "promote"
ROLLBACK = "rollback"


class PromotionStateError(RuntimeError):
    pass


@dataclass(frozen=True)
class PromotionIntent:
    id: str
    kind: str                      # promote | rollback
    to_version: str
    from_version: str | None       # the champion when the intent was recorded
    run_id: str
    approval: str                  # the target's approval (promote: the gate's; rollback: as recorded)
    reason: str = ""
    created_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PromotionIntent:
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as exc:
            raise PromotionStateError(f"unreadable promotion intent: {exc}") from exc


def target_tags(intent: PromotionIntent) -> dict[str, str]:
    """Tags the target version carries once the intent is applied."""
    if intent.kind == PROMOTE:
        tags = {"approval": intent.approval, "promoted_by_run": intent.run_id, "promotion_id": intent.id}
        if intent.from_version and intent.from_version != intent.to_version:
            tags["previous_champion"] = intent.from_version
        return tags
    # A rollback does not overwrite `previous_champion`: rolling back again goes further back
    # (to what this version once replaced), never forth to the version just left.
    tags = {"rolled_back_by_run": intent.run_id, "rollback_reason": intent.reason, "promotion_id": intent.id}
    if intent.from_version:
        tags["rolled_back_from"] = intent.from_version
    return tags


def left_tags(intent: PromotionIntent) -> dict[str, str]:
    """Tags on the version a rollback leaves."""
    if intent.kind != ROLLBACK or not intent.from_version or intent.from_version == intent.to_version:
        return {}
    return {"rolled_back": "true", "rollback_reason": intent.reason}


def recovery_action(intent: PromotionIntent, target_approval: str | None) -> str:
    """For an intent found on a later run: 'finish' it, or 'undo' it when its target has since
    become something the champion alias must not point at."""
    if target_approval in (Approval.REJECTED, Approval.ABANDONED):
        return "undo"
    if intent.kind == ROLLBACK:
        try:
            return "finish" if Approval(target_approval or "").promotable else "undo"
        except ValueError:
            return "undo"
    # A promotion's approval is the gate's, recorded in the intent before any tag was written.
    return "finish" if Approval(intent.approval).promotable else "undo"
