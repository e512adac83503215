"""The loop scenarios as data, what each one expects, and the spec it plays under.

A scenario is a list of days, each labelled or not, with a planted population shift, concept
drift (the features stay, the label's dependence on them changes), labels arriving late for
earlier unlabelled days, an operator rollback, or a run killed mid-training.

The expected retrains come from the scenario (`expectations`): day 1 bootstraps; a planted
shift, once its rows are labelled, and a performance drop, on the day the labels that show
it arrive, each retrain with their trigger; every other day retrains on new data exactly
when the labelled rows no model has trained on (neither the champion nor a rolled-back
version) reach `max(new_data_min_rows, new_data_min_fraction x champion's rows)`. Every
expected retrain is assumed to pass the gate (the scenario's gate settings make it so).

Cooldown and budget are wall-clock rules: a scenario plays 30 days in minutes, so its spec
sets `retrain_cooldown_minutes: 0` and a large budget (their rules are unit-tested in
mlops_assets_tests/core/test_retrain.py). Every setting changed from the demo spec is
listed by `changed_settings`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

START_DATE = dt.date(2026, 3, 1)


@dataclass(frozen=True)
class Day:
    """One simulated day. `labels_for`: earlier days (1-based) whose labels arrive today."""

    labelled: bool = True
    rows: int | None = None         # None: the scenario's rows_per_day
    drift: float = 0.0              # population shift (demo.data.generate_loans `drift`)
    concept_drift: float = 0.0      # label dependence changes; the features do not
    labels_for: tuple[int, ...] = ()
    rollback: bool = False          # the operator rolls the champion back at the end of the day
    kill: bool = False              # the retrain run of the day is SIGKILLed once training started
    expect: str | None = None       # a planted trigger: "drift" | "performance" (others are derived)
    note: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    days: tuple[Day, ...]
    rows_per_day: int = 5_000
    seed: int = 7
    # Dotted spec settings on top of the demo spec (see `scenario_spec`).
    settings: dict = field(default_factory=dict)

    def rows(self, n: int) -> int:
        day = self.days[n - 1]
        return self.rows_per_day if day.rows is None else day.rows


# Settings every scenario needs, on top of the demo spec (each is listed in the results):
LOOP_SETTINGS = {
    # Wall-clock rules: 30 simulated days take minutes (the rules are unit-tested elsewhere).
    "automation.retrain_cooldown_minutes": 0,
    "automation.retrain_budget": 1_000,
    # A file is complete when written (the engine writes it atomically).
    "source.settle_seconds": 0.0,
    # Speed: 80 trees (as the tests' small spec) instead of the demo's 300.
    "model.lightgbm.num_boost_round": 80,
    # A floor every model clears (holdout AUC 0.68-0.76 measured on 5,000-row days), so the
    # scenario is about the loop, not the generator's noise. With 5,000-row days the gate's
    # paired comparisons move by sd 0.005-0.01 between consecutive models (8 seeds: never below
    # -0.007), inside max_regression 0.02 (demo) and max_regression_on_champion_holdout 0.01
    # (default); at 2,000 rows they moved by sd 0.03-0.045 and blocked the first retrain.
    "gate.min_main_metric": 0.6,
    # Rendering only: Evidently's HTML page costs ~1.5 s per drifted report (measured here);
    # the drift statistics and the retrain signal are our engine's, unchanged.
    "drift.evidently_html": "never",
}


def scenario_30() -> Scenario:
    """30 days: i.i.d. labelled days; unlabelled days (days 5-6 labelled late, together, on day
    11; day 26 on day 28); a killed retrain (day 9); an operator rollback (end of day 11) followed
    by a small labelled day (not enough new rows on its own); one planted shift (day 16,
    labelled); a late-label performance drop (concept drift on unlabelled days 19-21, their
    labels on day 23)."""
    days = [Day() for _ in range(30)]

    def put(n: int, **kw) -> None:
        days[n - 1] = Day(**kw)

    put(5, labelled=False, note="unlabelled i.i.d.")
    put(6, labelled=False, note="unlabelled i.i.d.")
    put(9, kill=True, note="the retrain is killed mid-training; the next tick retries it")
    put(11, labels_for=(5, 6), rollback=True,
        note="late labels for days 5-6 (i.i.d.); the operator rolls the new champion back at the end of the day")
    put(12, rows=600, note="a small labelled day after the rollback")
    put(16, drift=1.0, expect="drift", note="planted population shift, labelled")
    put(19, labelled=False, concept_drift=1.0, note="unlabelled, concept drift")
    put(20, labelled=False, concept_drift=1.0, note="unlabelled, concept drift")
    put(21, labelled=False, concept_drift=1.0, note="unlabelled, concept drift")
    put(23, labels_for=(19, 20, 21), expect="performance", note="late labels for days 19-21: performance drop")
    put(26, labelled=False, note="unlabelled i.i.d.")
    put(28, labels_for=(26,), note="late labels for day 26 (i.i.d.)")
    return Scenario("loop-30", tuple(days), settings=dict(LOOP_SETTINGS))


def scenario_short() -> Scenario:
    """11 days with every event type, for the test: a killed retrain whose retried model the
    operator then rolls back (day 4), a small labelled day after it (5), late labels for an
    unlabelled day (3, on day 6), a planted shift (7), a late-label performance drop (concept
    drift on unlabelled days 8-9, their labels on day 10) and a quiet labelled day (11)."""
    days = [Day() for _ in range(11)]

    def put(n: int, **kw) -> None:
        days[n - 1] = Day(**kw)

    put(3, labelled=False, note="unlabelled i.i.d.")
    put(4, kill=True, rollback=True, note="the retrain is killed mid-training and retried by the next tick; "
                                          "the operator rolls its model back at the end of the day")
    put(5, rows=600, note="a small labelled day after the rollback")
    put(6, labels_for=(3,), note="late labels for day 3 (i.i.d.)")
    put(7, drift=1.0, expect="drift", note="planted population shift, labelled")
    put(8, labelled=False, concept_drift=1.0, note="unlabelled, concept drift")
    put(9, labelled=False, concept_drift=1.0, note="unlabelled, concept drift")
    put(10, labels_for=(8, 9), expect="performance", note="late labels for days 8-9: performance drop")
    return Scenario("loop-11", tuple(days), settings=dict(LOOP_SETTINGS))


# -- what the scenario expects ----------------------------------------------------------------


def expectations(scenario: Scenario, spec) -> list[str | None]:
    """The retrain each day should cause ("bootstrap", "new_data", "drift", "performance") or
    None, from the scenario alone: rows arithmetic with the spec's new-data rule, the planted
    triggers as declared, every retrain promoted, a rollback restoring the previous champion."""
    auto = spec.automation
    labelled_on: dict[int, int] = {}          # day -> the day its labels became available
    for n, day in enumerate(scenario.days, start=1):
        if day.labelled:
            labelled_on[n] = n
        for k in day.labels_for:
            labelled_on[k] = n
    out: list[str | None] = []
    champions: list[frozenset[int]] = []      # promoted training sets, newest last
    rolled_back: set[int] = set()
    for n, day in enumerate(scenario.days, start=1):
        available = frozenset(k for k, when in labelled_on.items() if when <= n)
        trigger = None
        if not champions:
            trigger = "bootstrap" if available else None
        elif day.expect is not None:
            trigger = day.expect
        elif auto.retrain_on_new_data and available != champions[-1]:
            new = sum(scenario.rows(k) for k in available - champions[-1] - rolled_back)
            needed = max(auto.new_data_min_rows,
                         auto.new_data_min_fraction * sum(scenario.rows(k) for k in champions[-1]))
            trigger = "new_data" if new >= needed else None
        if trigger is not None:
            champions.append(available)
        if day.rollback and len(champions) >= 2:
            rolled_back |= champions.pop() - champions[-1]
        out.append(trigger)
    return out


# -- the spec -------------------------------------------------------------------------------------


def _set(data: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for part in path:
        data = data.setdefault(part, {})
    data[last] = value


def scenario_spec(root: Path, scenario: Scenario):
    from mlops_assets.demo import demo_spec
    from mlops_assets.spec import PipelineSpec

    data = demo_spec(root).model_dump(mode="json")
    for dotted, value in scenario.settings.items():
        _set(data, dotted, value)
    data["ground_truth"] = {"path": str(Path(root).resolve() / "labels")}
    return PipelineSpec.from_dict(data)


def changed_settings(spec) -> dict:
    """Every setting of `spec` that differs from the demo spec's, as dotted keys (paths aside)."""
    from mlops_assets.demo import demo_spec

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            out.update(flat(v, key + ".") if isinstance(v, dict) else {key: v})
        return out

    base_spec = demo_spec("/nonexistent").model_dump(mode="json")
    mine, base = flat(spec.model_dump(mode="json")), flat(base_spec)
    skip = ("state_dir", "source.path")
    out = {}
    for key, value in sorted(mine.items()):
        section = key.split(".", 1)[0]
        if key in skip or base.get(key, "<unset>") == value:
            continue
        if base_spec.get(section, "<unset>") is None:      # a section the demo spec leaves out
            out[section] = "added (delayed labels: the scenario's label files)" if section == "ground_truth" \
                else "added"
        else:
            out[key] = value
    return out
