"""The PyTorch MLP chosen in the spec, through the whole Dagster lifecycle."""

import datetime as dt

import dagster as dg

from mlops_assets.automation.inline import InlineAutomation
from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import LIFECYCLE as STAGES
from mlops_assets.pipeline import Pipeline
from mlops_assets_tests.conftest import small_spec


def test_mlp_bootstraps_and_serves(tmp_path):
    base = small_spec(tmp_path)
    spec = small_spec(
        tmp_path,
        model={**base.model.model_dump(mode="json"), "trainer": "mlp",
               "mlp": {"hidden_sizes": [32, 16], "max_epochs": 30, "num_threads": 1}},
        # Wiring, not model quality: a small MLP on 3.5k rows sits near AUC 0.6.
        gate={**base.gate.model_dump(mode="json"), "min_main_metric": 0.55, "max_fairness_gap": None},
    )
    names, defs = Pipeline(spec), build_mlops_defs(spec)
    write_day(spec.source.path, dt.date(2026, 1, 1), n_rows=5_000, seed=1)
    with dg.instance_for_test() as instance:
        tick = InlineAutomation(defs, instance).tick_sensor(names.sensor("new_data"))
        assert len(tick.launched) == 1 and tick.launched[0].success
        for stage in STAGES:
            assert instance.get_latest_materialization_event(names.key(stage)), stage
        ev = instance.get_latest_materialization_event(names.key("evaluation_report")).asset_materialization
        assert ev.metadata["onnx_parity_max_abs_diff"].value <= 1e-4
        assert "onnx_parity" in {r.data["rule"] for r in ev.metadata["gate"].value.records}
    champion = defs.resources[names.registry_key].version_by_alias(spec.name, "champion")
    assert champion.tags["trainer"] == "mlp" and champion.tags["approval"] == "approved"
    # The checkpoint is removed once the export succeeded.
    assert not any((tmp_path / "state" / "checkpoints").rglob("*.pt"))
