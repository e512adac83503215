"""The whole lifecycle, in-process, on a real temporary Dagster instance and MLflow store.

Day 1 -> bootstrap (all seven assets); day 2 drifted -> ingest -> drift -> exactly one
retrain; a batch of bad schema -> blocked with the column named, champion untouched.
Each test builds the state it needs from scratch (fixtures below), so any one runs alone.
"""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from mlops_assets.automation.inline import InlineAutomation
from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import generate_loans, write_day
from mlops_assets.pipeline import LIFECYCLE as STAGES
from mlops_assets.pipeline import Pipeline
from mlops_assets_tests.conftest import small_spec


@pytest.fixture
def world(tmp_path):
    root = tmp_path
    spec = small_spec(root)
    defs = build_mlops_defs(spec)
    home = root / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        auto = InlineAutomation(defs, instance)
        yield spec, Pipeline(spec), defs, instance, auto


def _materialized(instance, key, partition=None):
    flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
    return [r.asset_materialization for r in instance.fetch_materializations(flt, limit=100).records]


def _registry(defs, names):
    return defs.resources[names.registry_key]


def _land_day1(world):
    spec, names, _defs, _instance, auto = world
    write_day(spec.source.path, dt.date(2026, 1, 1), n_rows=5_000, seed=1, day_index=0)
    tick = auto.tick_sensor(names.sensor("new_data"))
    assert len(tick.launched) == 1 and tick.launched[0].success
    return tick


def _land_day2(world):
    spec, names, _defs, _instance, auto = world
    write_day(spec.source.path, dt.date(2026, 1, 2), n_rows=5_000, seed=1, drift=0.9, day_index=1)
    tick = auto.tick_sensor(names.sensor("new_data"))
    assert len(tick.launched) == 1 and tick.launched[0].success
    return tick


@pytest.fixture
def bootstrapped(world):
    _land_day1(world)
    return world


@pytest.fixture
def retrained(bootstrapped):
    """Day 1 bootstrapped v1; day 2 drifted and its retrain promoted v2."""
    _land_day2(bootstrapped)
    _spec, names, defs, _instance, auto = bootstrapped
    assert len(auto.tick_sensor(names.sensor("retrain")).launched) == 1
    assert _registry(defs, names).champion(names.model_name).version == "2"
    return bootstrapped


def _rollback(world, reason: str):
    _spec, names, defs, instance, _auto = world
    return defs.resolve_job_def(names.job("rollback")).execute_in_process(
        instance=instance,
        run_config={"ops": {f"{names.name}_rollback_champion": {"config": {"reason": reason}}}},
    )


def test_day1_bootstraps_all_seven_assets(world):
    spec, names, defs, instance, _auto = world
    tick = _land_day1(world)
    for stage in STAGES:
        assert _materialized(instance, names.key(stage)), f"{stage} not materialized"

    registry = _registry(defs, names)
    champion = registry.version_by_alias(names.model_name, "champion")
    assert champion is not None and champion.version == "1"
    for tag in ("data_version", "code_version", "spec_hash", "dagster_run_id", "approval"):
        assert champion.tags.get(tag), f"champion lacks tag {tag}"
    assert champion.tags["approval"] == "approved"
    assert champion.tags["spec_hash"] == spec.spec_hash
    assert champion.tags["dagster_run_id"] == tick.launched[0].run_id

    ev = _materialized(instance, names.key("evaluation_report"))[0].metadata
    assert ev["gate_passed"].value is True
    assert ev["holdout_roc_auc"].value > 0.7
    assert ev["onnx_parity_max_abs_diff"].value <= 1e-5
    rows = ev["slices"].value.records
    assert sorted(r.data["group"] for r in rows) == ["female", "male", "nonbinary"]

    part = "loans_2026-01-01.parquet"
    preds = defs.resources[names.storage_key].read_parquet(names.layout.predictions(part, "1"))
    assert preds.columns == ["loan_id", "score", "prediction", "model_version", "scored_at"]
    assert preds.height == 5_000 and preds["score"].is_between(0, 1).all()
    drift = _materialized(instance, names.key("drift_report"), part)[0].metadata
    assert drift["dataset_drift"].value is False     # same population as the reference


def test_day2_drift_triggers_exactly_one_retrain(bootstrapped):
    spec, names, defs, instance, auto = bootstrapped
    _land_day2(bootstrapped)
    part = "loans_2026-01-02.parquet"
    drift = _materialized(instance, names.key("drift_report"), part)[0].metadata
    assert drift["dataset_drift"].value is True and drift["retrain_signal"].value is True
    assert drift["drift_share"].value >= spec.drift.share_threshold
    assert str(drift["evidently_html"].value).endswith("evidently.html")
    assert str(drift["trend_plot"].value).endswith("trend.png")
    # Prediction drift is measured on the scores the champion served for these rows.
    assert drift["prediction_drifted"].value is True and drift["prediction_drift_score"].value > 0
    assert [c.name for c in drift["drift_table"].value.schema.columns][:3] == ["name", "role", "kind"]
    storage = defs.resources[names.storage_key]
    scores = [p for p in storage.list(f"{spec.name}/drift_scores") if p.endswith(".parquet")]
    assert len(scores) == 2 and all("/day=" in p for p in scores)    # one file per drift run

    retrain = auto.tick_sensor(names.sensor("retrain"))
    assert len(retrain.launched) == 1
    again = auto.tick_sensor(names.sensor("retrain"))
    assert not again.launched
    versions = _registry(defs, names).list_versions(names.model_name)
    assert [v.version for v in versions] == ["1", "2"]
    v2 = versions[1]
    # On the drifted holdout the retrained model beats the stale champion: promoted.
    assert v2.tags["approval"] == "approved", v2.tags["gate_message"]
    assert "champion" in v2.aliases and v2.tags["previous_champion"] == "1"

    assert again.skip_reason.startswith("no retrain: nothing new to learn: champion v2 was trained on exactly")
    # Recomputing the drift reports against v2 (the drift-check schedule does) finds day 2's
    # shift in v2's own training data: ignored, no second retrain on the same data.
    auto._execute(names.job("drift"), dg.RunRequest(partition_key=part), {})
    third = auto.tick_sensor(names.sensor("retrain"))
    assert not third.launched and "nothing new to learn" in third.skip_reason


def test_batch_schedule_scores_with_the_champion(retrained):
    _spec, names, defs, instance, auto = retrained
    champion = _registry(defs, names).version_by_alias(names.model_name, "champion")
    assert champion.version == "2"
    tick = auto.tick_schedule(names.schedule("batch_inference"))
    assert len(tick.launched) == 2 and all(r.success for r in tick.launched)
    assert not auto.tick_schedule(names.schedule("batch_inference")).launched
    for part in instance.get_dynamic_partitions(names.partitions_name):
        latest = _materialized(instance, names.key("batch_predictions"), part)[0].metadata
        assert str(latest["model_version"].value) == champion.version


def test_bad_schema_is_blocked_and_nothing_downstream_runs(bootstrapped):
    spec, names, defs, instance, auto = bootstrapped
    registry = _registry(defs, names)
    before = registry.version_by_alias(names.model_name, "champion").version
    bad = pl.from_pandas(generate_loans(1_000, day=dt.date(2026, 1, 3), seed=5, id_offset=30_000_000)).drop("income")
    bad.write_parquet(f"{spec.source.path}/loans_2026-01-03.parquet")
    tick = auto.tick_sensor(names.sensor("new_data"))
    assert len(tick.launched) == 1
    result = tick.launched[0]
    assert not result.success
    part = "loans_2026-01-03.parquet"
    evaluations = [
        e.event_specific_data for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == "schema"
    ]
    assert evaluations and not evaluations[0].passed
    assert "column 'income': missing column" in evaluations[0].description
    assert not _materialized(instance, names.key("batch_predictions"), part)
    assert not _materialized(instance, names.key("drift_report"), part)
    assert not defs.resources[names.storage_key].exists(names.layout.features(part))
    assert registry.version_by_alias(names.model_name, "champion").version == before


def test_champion_serves_through_mlflow_pyfunc_like_onnx(bootstrapped):
    spec, names, defs, _instance, _auto = bootstrapped
    registry = _registry(defs, names)
    champion = registry.version_by_alias(names.model_name, "champion")
    bundle = registry.load_bundle(names.model_name, champion.version)
    frame = pl.from_pandas(generate_loans(300, day=dt.date(2026, 2, 1), seed=11))
    with registry.activated() as mlflow:
        model = mlflow.pyfunc.load_model(f"models:/{names.model_name}@champion")
        served = model.predict(frame.select(spec.feature_names).to_pandas())
    expected = bundle.score(frame)
    assert list(served.columns) == ["score", "prediction"]
    assert float(abs(served["score"].to_numpy() - expected).max()) == 0.0


def test_rollback_moves_champion_back_with_reason(retrained):
    _spec, names, defs, instance, _auto = retrained
    registry = _registry(defs, names)
    result = _rollback(retrained, "v2 misprices small loans")
    assert result.success
    champion = registry.version_by_alias(names.model_name, "champion")
    assert champion.version == "1"
    assert champion.tags["rollback_reason"] == "v2 misprices small loans"
    assert champion.tags["rolled_back_from"] == "2"
    assert registry.get_version(names.model_name, "2").tags["rolled_back"] == "true"
    latest = instance.get_latest_materialization_event(names.key("registered_model")).asset_materialization
    assert latest.metadata["model_version"].value == "1"
    # The batch schedule now re-scores with the restored champion.
    from mlops_assets.automation.schedules import partitions_needing_scores

    assert partitions_needing_scores(instance, names)[0] == "1"


def test_after_rollback_schedules_rescore_and_recheck_without_a_retrain_loop(retrained):
    _spec, names, defs, _instance, auto = retrained
    assert len(auto.tick_schedule(names.schedule("batch_inference")).launched) == 2   # both scored by v2
    assert len(auto.tick_schedule(names.schedule("drift_check")).launched) == 2       # both checked vs v2
    assert _rollback(retrained, "v2 misprices small loans").success
    assert _registry(defs, names).champion(names.model_name).version == "1"
    rescored = auto.tick_schedule(names.schedule("batch_inference"))
    assert len(rescored.launched) == 2 and all(r.success for r in rescored.launched)
    checked = auto.tick_schedule(names.schedule("drift_check"))
    # Both reports were last computed against v2: each is checked against v1 again.
    assert len(checked.launched) == 2 and all(r.success for r in checked.launched)
    assert "drift report against champion v1" in auto.tick_schedule(names.schedule("drift_check")).skip_reason
    # Day 2 still drifts against v1, but retraining on it would rebuild the rolled-back v2.
    tick = auto.tick_sensor(names.sensor("retrain"))
    assert not tick.launched
    assert tick.skip_reason.splitlines()[0] == ("no retrain: nothing new to learn: this training set built v2, "
                                               "which was rolled back; it is not rebuilt until the data changes")
