"""Two pipelines next to a user's own assets: no collisions, separate models, BYO raw data."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from mlops_assets import SpecError, build_pipelines_defs
from mlops_assets.automation.inline import InlineAutomation
from mlops_assets.demo.data import generate_loans, write_day
from mlops_assets.pipeline import LIFECYCLE as STAGES
from mlops_assets.pipeline import Pipeline
from mlops_assets.spec import PipelineSpec
from mlops_assets_tests.conftest import small_spec


@dg.asset(key=["warehouse", "transactions"])
def transactions() -> pd.DataFrame:
    """A user's existing asset: the raw data for the fraud pipeline."""
    return generate_loans(3_000, day=dt.date(2026, 3, 1), seed=4, id_offset=50_000_000)


@dg.asset(key=["finance", "daily_report"])
def daily_report() -> None:
    """An unrelated user asset that must keep working."""


def _specs(tmp_path):
    # Small data: a lower metric floor keeps the test about wiring, not model quality.
    gate = {**small_spec(tmp_path).gate.model_dump(mode="json"), "min_main_metric": 0.55}
    churn = small_spec(tmp_path, name="churn", gate=gate)
    fraud = small_spec(tmp_path, name="fraud", gate=gate).model_dump(mode="json")
    fraud["source"] = {"asset_key": ["warehouse", "transactions"]}
    return churn, PipelineSpec.from_dict(fraud)


def test_two_pipelines_merge_with_user_assets_without_collisions(tmp_path):
    churn, fraud = _specs(tmp_path)
    user = dg.Definitions(assets=[transactions, daily_report], jobs=[dg.define_asset_job("finance_job", [daily_report])])
    defs = dg.Definitions.merge(user, build_pipelines_defs([churn, fraud]))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    for name in ("churn", "fraud"):
        assert {dg.AssetKey([name, s]) for s in STAGES} <= keys
    # Lineage: the user's asset feeds fraud's raw_data.
    assert dg.AssetKey(["warehouse", "transactions"]) in graph.get(dg.AssetKey(["fraud", "raw_data"])).parent_keys
    sensors = {s.name for s in defs.sensors}
    assert {"churn_new_data_sensor", "fraud_new_data_sensor", "churn_retrain_sensor"} <= sensors
    assert {"churn_storage", "fraud_storage", "churn_mlflow", "fraud_mlflow"} <= set(defs.resources)
    assert defs.resolve_job_def("finance_job") and defs.resolve_job_def("fraud_bootstrap_job")


def test_same_name_twice_is_refused(tmp_path):
    churn, _ = _specs(tmp_path)
    with pytest.raises(SpecError, match="two pipelines are named 'churn'"):
        build_pipelines_defs([churn, churn])


def test_both_pipelines_run_and_register_their_own_models(tmp_path):
    churn, fraud = _specs(tmp_path)
    defs = dg.Definitions.merge(dg.Definitions(assets=[transactions, daily_report]),
                                build_pipelines_defs([churn, fraud]))
    write_day(churn.source.path, dt.date(2026, 1, 1), n_rows=3_000, seed=1)
    with dg.instance_for_test() as instance:
        dg.materialize([transactions], instance=instance)
        auto = InlineAutomation(defs, instance)
        for spec in (churn, fraud):
            tick = auto.tick_sensor(Pipeline(spec).sensor("new_data"))
            assert len(tick.launched) == 1 and tick.launched[0].success, spec.name
        # A second tick sees nothing new for either pipeline.
        assert not auto.tick_sensor("fraud_new_data_sensor").launched
        for spec in (churn, fraud):
            registry = defs.resources[Pipeline(spec).registry_key]
            champion = registry.version_by_alias(spec.name, "champion")
            assert champion is not None and champion.version == "1"
            assert registry.list_versions(spec.name)[0].name == spec.name
        fraud_raw = instance.get_latest_materialization_event(dg.AssetKey(["fraud", "raw_data"])).asset_materialization
        assert fraud_raw.metadata["source"].value == "asset warehouse/transactions"
        assert fraud_raw.metadata["dagster/row_count"].value == 3_000
