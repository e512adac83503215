"""The retrain loop played over simulated days, through the real sensors and schedules.

- `scenario`: a scenario as data (days labelled or not, planted shifts, late labels, a rollback,
  a killed run), the retrains it expects, and the spec it plays under (`scenario_short` for the
  test, `scenario_30` for the benchmark).
- `engine`: `LoopEngine` plays each day the way the daemon would, on a real Dagster instance
  (SQLite under a Dagster home) and a real MLflow store.
- `records` and `results`: the metrics (`measure`), read back from what was recorded, and
  `run_scenario`, the one call the benchmark and the test make.
"""

from mlops_assets.demo.loop.engine import KILL_TIMEOUT_S, DayRecord, LoopEngine
from mlops_assets.demo.loop.records import Training
from mlops_assets.demo.loop.results import measure, run_scenario, to_json
from mlops_assets.demo.loop.scenario import (
    LOOP_SETTINGS,
    START_DATE,
    Day,
    Scenario,
    changed_settings,
    expectations,
    scenario_30,
    scenario_short,
    scenario_spec,
)

__all__ = [
    "KILL_TIMEOUT_S",
    "LOOP_SETTINGS",
    "START_DATE",
    "Day",
    "DayRecord",
    "LoopEngine",
    "Scenario",
    "Training",
    "changed_settings",
    "expectations",
    "measure",
    "run_scenario",
    "scenario_30",
    "scenario_short",
    "scenario_spec",
    "to_json",
]
