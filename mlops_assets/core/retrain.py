"""The retrain decision: act or skip, with a reason, as a pure function of recorded state.

The retrain sensor only gathers these inputs from the Dagster instance and emits the run
request; everything that makes the loop sound is decided here and unit-tested:

* a retrain is only worth running when its **training set** (the labelled data versions plus
  the training recipe) is one no model was built from yet: not the champion's, not a
  rolled-back version's, not one the gate already rejected;
* a drift or performance signal counts only when it was computed against the *current*
  champion, on a partition the champion was not trained on;
* unlabelled partitions can raise drift alerts, but cannot retrain on their own: without new
  labels the training set is the champion's, so there is nothing new to learn;
* enough new labelled rows are a reason by themselves (`retrain_on_new_data`);
* the run key is the training set's identity (plus the attempt after a crashed run), so no
  two runs train the same set and a killed run is retried, a bounded number of times.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

MAX_ATTEMPTS = 3


def training_set_identity(partitions: Mapping[str, str], recipe: str, labels: str | None = None) -> str:
    """Identity of a training set: every (partition, data version), the training recipe (the
    spec sections training reads) and, with delayed labels, the label files' fingerprint."""
    payload = {"partitions": sorted(partitions.items()), "recipe": recipe, "labels": labels}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class TrainingSet:
    identity: str
    rows_by_partition: Mapping[str, int]      # labelled rows each partition contributes
    delayed_label_rows: int = 0               # rows labelled later by ground-truth files
    late_labelled: frozenset[str] = frozenset()   # unlabelled partitions those rows came from

    @property
    def rows(self) -> int:
        return sum(self.rows_by_partition.values()) + self.delayed_label_rows

    @property
    def partitions(self) -> frozenset[str]:
        """Every partition the set learns from, labelled on arrival or later."""
        return frozenset(self.rows_by_partition) | self.late_labelled


@dataclass(frozen=True)
class VersionRecord:
    """What the pipeline recorded about one trained model version."""

    version: str
    training_set: TrainingSet
    approval: str | None = None       # approved | forced | rejected | None (not judged yet)
    rolled_back: bool = False
    release: str | None = None        # its shadow/canary release: active | promoted | ended | None


@dataclass(frozen=True)
class Signal:
    kind: str                     # drift | performance
    key: str                      # identifies "this condition on this data"
    champion_version: str | None  # the champion the signal was computed against
    partition: str | None = None
    summary: str = ""


@dataclass(frozen=True)
class RetrainRun:
    run_id: str
    training_set: str | None      # the identity the run was launched for
    state: str                    # in_flight | succeeded | failed
    created_at: float
    bootstrap: bool = False       # the first file's whole-lifecycle run: not a retrain for the budget


@dataclass(frozen=True)
class RetrainPolicy:
    on_drift: bool = True
    on_performance: bool = True
    on_new_data: bool = True
    new_data_min_rows: int = 1_000
    new_data_min_fraction: float = 0.25
    cooldown_seconds: float = 3_600.0
    budget: int = 3
    budget_window_seconds: float = 86_400.0

    @classmethod
    def from_spec(cls, automation) -> RetrainPolicy:
        return cls(
            on_drift=automation.retrain_on_drift, on_performance=automation.retrain_on_performance_drop,
            on_new_data=automation.retrain_on_new_data, new_data_min_rows=automation.new_data_min_rows,
            new_data_min_fraction=automation.new_data_min_fraction,
            cooldown_seconds=automation.retrain_cooldown_minutes * 60, budget=automation.retrain_budget,
            budget_window_seconds=automation.retrain_budget_window_hours * 3600,
        )


@dataclass(frozen=True)
class RetrainDecision:
    act: bool
    reason: str
    trigger: str | None = None
    training_set: str | None = None
    run_key: str | None = None
    counted: tuple[str, ...] = ()                       # signal keys that justify the retrain
    stages: tuple[str, ...] | None = None               # a subset of the retrain job (recovery), or all
    ignored: tuple[tuple[str, str], ...] = field(default_factory=tuple)   # (signal key, why)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """The sensor tick's text: the decision, then why each ignored signal did not count."""
        lines = [("retrain: " if self.act else "no retrain: ") + self.reason]
        lines += [f"ignored {key}: {why}" for key, why in self.ignored[:20]]
        if len(self.ignored) > 20:
            lines.append(f"... and {len(self.ignored) - 20} more ignored signals")
        return "\n".join(lines)


def _skip(reason: str, ignored=()) -> RetrainDecision:
    return RetrainDecision(False, reason, ignored=tuple(ignored))


def _budget_block(runs: list[RetrainRun], policy: RetrainPolicy, now: float,
                  retrying: str | None = None) -> str | None:
    recent = [r for r in runs if r.created_at >= now - policy.budget_window_seconds and not r.bootstrap]
    if len(recent) >= policy.budget:
        hours = policy.budget_window_seconds / 3600
        return f"retrain budget spent: {len(recent)} retrains in the last {hours:g} h (budget {policy.budget})"
    # A failed run of the set now retried (`retrying`) produced no model to let settle: its
    # retry is the same retrain finishing, not a new one, so it does not start the cooldown.
    # It still counts for the budget (its compute was spent); MAX_ATTEMPTS bounds the retries.
    settling = [r for r in recent if not (r.state == "failed" and retrying and r.training_set == retrying)]
    if settling:
        last = max(r.created_at for r in settling)
        wait = policy.cooldown_seconds - (now - last)
        if wait > 0:
            return (f"cooldown: the last retrain started {int((now - last) // 60)} min ago; "
                    f"the next may start in {int(wait // 60) + 1} min")
    return None


def _sort_signals(champion: VersionRecord, signals: list[Signal], policy: RetrainPolicy,
                  rolled_back: list[VersionRecord]):
    counted, ignored = [], []
    enabled = {"drift": policy.on_drift, "performance": policy.on_performance}
    # The data behind a rolled-back model is data an operator has seen and turned away from:
    # its drift is no reason to learn it again (new labelled data still is).
    seen = {p: v.version for v in rolled_back for p in v.training_set.partitions}
    for signal in signals:
        if not enabled.get(signal.kind, False):
            ignored.append((signal.key, f"retraining on {signal.kind} is off in the spec"))
        elif signal.champion_version != champion.version:
            why = f"computed against v{signal.champion_version}, not the current champion v{champion.version}"
            ignored.append((signal.key, why))
        elif signal.partition is not None and signal.partition in champion.training_set.partitions:
            why = f"partition {signal.partition} is in champion v{champion.version}'s training set"
            ignored.append((signal.key, why))
        elif signal.partition is not None and signal.partition in seen:
            why = f"partition {signal.partition} trained v{seen[signal.partition]}, which was rolled back"
            ignored.append((signal.key, why))
        else:
            counted.append(signal)
    return counted, ignored


def _new_rows(candidate: TrainingSet, champion: VersionRecord, rolled_back: list[VersionRecord]) -> int:
    """Labelled rows no model was built from: not the champion's, and not a rolled-back
    version's either (after a rollback, the data behind the rolled-back model is not news)."""
    learned = [champion, *rolled_back]
    seen = frozenset().union(*(v.training_set.partitions for v in learned))
    rows = sum(n for p, n in candidate.rows_by_partition.items() if p not in seen)
    return rows + max(0, candidate.delayed_label_rows - max(v.training_set.delayed_label_rows for v in learned))


def _same_set_as_a_judged_version(versions: list[VersionRecord], identity: str) -> str | None:
    for record in sorted(versions, key=lambda v: int(v.version), reverse=True):
        if record.training_set.identity != identity:
            continue
        if record.rolled_back:
            return (f"nothing new to learn: this training set built v{record.version}, which was rolled "
                    "back; it is not rebuilt until the data changes")
        if record.approval == "rejected":
            return (f"nothing new to learn: v{record.version} was trained on exactly this data and the gate "
                    "rejected it")
        if record.release == "ended":
            return (f"nothing new to learn: v{record.version} was trained on exactly this data and its release "
                    "was ended (see its release_reason)")
    return None


def _unfinished(champion: str | None, versions: list[VersionRecord], candidate: TrainingSet,
                runs: list[RetrainRun], now: float, policy: RetrainPolicy) -> RetrainDecision | None:
    """A newer version than the champion whose run died before it was judged or promoted:
    finish that work instead of training the same thing again."""
    newer = [v for v in versions if champion is None or int(v.version) > int(champion)]
    if not newer:
        return None
    latest = max(newer, key=lambda v: int(v.version))
    if latest.rolled_back or latest.release == "ended":
        return None
    if latest.release == "active":
        # The release rule promotes or ends it (within release.max_days); no retrain meanwhile.
        return _skip(f"v{latest.version} is under a shadow/canary release: the release rule promotes or ends it "
                     "before another retrain")
    if latest.approval is None and latest.training_set.identity == candidate.identity:
        key, stages = f"evaluate:v{latest.version}", ("evaluation_report", "registered_model")
        reason = f"v{latest.version} was trained on this data but its run ended before the gate judged it: evaluate it"
    elif latest.approval in ("approved", "forced"):
        key, stages = f"promote:v{latest.version}", ("registered_model",)
        reason = f"v{latest.version} passed the gate but its promotion did not finish: finish it"
    else:
        return None
    attempts = sum(1 for r in runs if r.training_set == key and r.state == "failed")
    if attempts >= MAX_ATTEMPTS:
        return _skip(f"{reason} -- gave up after {attempts} failed attempts; see the failed runs")
    return RetrainDecision(True, reason, trigger="recovery", training_set=key, run_key=f"{key}:{attempts}",
                           stages=stages)


def decide_retrain(
    *,
    champion: str | None,
    versions: list[VersionRecord],
    candidate: TrainingSet,
    signals: list[Signal],
    runs: list[RetrainRun],
    policy: RetrainPolicy,
    now: float,
) -> RetrainDecision:
    if candidate.rows == 0:
        return _skip("no labelled data to train on yet")
    in_flight = [r for r in runs if r.state == "in_flight"]
    if in_flight:
        return _skip(f"a retrain is already queued or running (run {in_flight[0].run_id[:8]})")
    by_version = {v.version: v for v in versions}
    unfinished = _unfinished(champion, versions, candidate, runs, now, policy)
    if unfinished is not None:
        return unfinished
    judged = _same_set_as_a_judged_version(versions, candidate.identity)
    ignored: list[tuple[str, str]] = []

    if champion is None:
        if judged:
            return _skip(judged)
        trigger, counted = "bootstrap", []
        reason = (f"no champion yet: train the first model on {candidate.rows} labelled rows from "
                  f"{len(candidate.partitions)} partitions")
    else:
        record = by_version.get(champion)
        if record is None:
            return _skip(f"champion v{champion} has no recorded training set; retrain it by hand once")
        counted, ignored = _sort_signals(record, signals, policy, [v for v in versions if v.rolled_back])
        unlabelled_note = ""
        if record.training_set.identity == candidate.identity:
            if counted:
                unlabelled_note = (f"; {len(counted)} signal(s) on unlabelled data raise alerts only: "
                                   "label them to retrain")
            return _skip(f"nothing new to learn: champion v{champion} was trained on exactly these "
                         f"{candidate.rows} labelled rows{unlabelled_note}", ignored)
        if judged:
            return _skip(judged, ignored)
        new_rows = _new_rows(candidate, record, [v for v in versions if v.rolled_back])
        needed = max(policy.new_data_min_rows, policy.new_data_min_fraction * record.training_set.rows)
        if counted:
            trigger = counted[0].kind
            reason = f"{trigger} against champion v{champion}: {counted[0].summary or counted[0].key}"
        elif policy.on_new_data and new_rows >= needed:
            trigger = "new_data"
            reason = (f"{new_rows} new labelled rows since champion v{champion}'s training set "
                      f"(needs {int(needed)})")
        else:
            why = f"{new_rows} new labelled rows since champion v{champion} (a retrain needs {int(needed)})"
            if not policy.on_new_data:
                why = "retraining on new data is off in the spec"
            return _skip(f"no retrain signal against champion v{champion}; {why}", ignored)

    blocked = _budget_block(runs, policy, now, retrying=candidate.identity)
    if blocked:
        return _skip(f"{reason} -- held: {blocked}", ignored)
    attempts = sum(1 for r in runs if r.training_set == candidate.identity and r.state == "failed")
    if attempts >= MAX_ATTEMPTS:
        return _skip(f"training this set failed {attempts} times; fix the cause and retrain by hand", ignored)
    return RetrainDecision(
        act=True, reason=reason, trigger=trigger, training_set=candidate.identity,
        run_key=f"{candidate.identity}:{attempts}", counted=tuple(s.key for s in counted), ignored=tuple(ignored),
    )
