"""What a fault world records, as plain data, and the invariants it must keep."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

PROMOTABLE = ("approved", "forced")
INTENT_TAG = "promotion_intent"


@dataclass
class WorldState:
    """What the registry and the Dagster instance say, as plain data."""

    versions: dict[str, dict[str, str]]          # version -> tags
    aliases: dict[str, str]                      # alias -> version
    model_tags: dict[str, str]
    registered: list[dict]                       # registered_model materializations, oldest first
    running_mlflow_runs: list[str]
    champion_of_record: str | None
    in_progress_runs: list[str] = field(default_factory=list)

    @property
    def champion(self) -> str | None:
        return self.aliases.get("champion")

    def identity(self, version: str | None) -> str | None:
        """A version by what it was trained on (renumbering-proof: a retried retrain gets a new number)."""
        if version is None:
            return None
        tags = self.versions.get(str(version), {})
        return tags.get("data_version", f"untagged-v{version}")

    def signature(self) -> dict:
        """The end state, comparable between an interrupted and an uninterrupted history."""
        live = {v: t for v, t in self.versions.items() if t.get("approval") != "abandoned"}
        return {
            "champion": self.identity(self.champion),
            "champion_approval": self.versions.get(self.champion or "", {}).get("approval"),
            "champion_previous": self.identity(self.versions.get(self.champion or "", {}).get("previous_champion")),
            "approvals": sorted((self.identity(v), t.get("approval"), t.get("rolled_back", ""))
                                for v, t in live.items()),
            "aliases": sorted(self.aliases),
            "registered": [(self.identity(r["version"]), self.identity(r["rolled_back_from"]))
                           for r in self.registered],
            "intent": self.model_tags.get(INTENT_TAG),
        }



# -- invariants --------------------------------------------------------------------------------
def safety_violations(state: WorldState) -> list[str]:
    """What must hold at every instant, even right after a SIGKILL."""
    problems = []
    if state.champion is not None:
        approval = state.versions.get(state.champion, {}).get("approval")
        if approval not in PROMOTABLE:
            problems.append(f"champion alias on v{state.champion} whose approval is {approval!r}")
    for version, tags in state.versions.items():
        for key in ("previous_champion", "rolled_back_from"):
            if tags.get(key) == version:
                problems.append(f"v{version} records itself as its {key}")
    promoted = Counter(r["version"] for r in state.registered if r["rolled_back_from"] is None)
    problems += [f"v{v} has {n} registered_model materializations for one promotion"
                 for v, n in promoted.items() if n > 1]
    for r in state.registered:
        if r["rolled_back_from"] == r["version"]:
            problems.append(f"a rollback recorded v{r['version']} -> itself")
    return problems


def convergence_violations(state: WorldState) -> list[str]:
    """What must hold once the recovery the product offers has run."""
    problems = safety_violations(state)
    if state.model_tags.get(INTENT_TAG):
        problems.append(f"a promotion intent is still open: {state.model_tags[INTENT_TAG]}")
    if state.champion_of_record != state.champion:
        problems.append(f"champion of record v{state.champion_of_record} but the alias is on v{state.champion}")
    pending = [v for v, t in state.versions.items() if t.get("approval") in (None, "pending")
               and t.get("gate_passed") is None]
    if pending:
        problems.append(f"versions never judged nor abandoned: {pending}")
    if state.running_mlflow_runs:
        problems.append(f"MLflow runs left RUNNING: {state.running_mlflow_runs}")
    if state.in_progress_runs:
        problems.append(f"Dagster runs still in progress: {state.in_progress_runs}")
    return problems

