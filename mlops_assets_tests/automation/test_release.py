"""Shadow and canary releases on a real temporary Dagster instance and MLflow store.

Each scenario: day 1 bootstraps champion v1; day 2 trains v2, which the gate approves and
`registered_model` puts under release (the champion stays v1); day 3 is scored by both;
labels for day 3 arrive; `model_performance` compares the arms on the same days and records
the release rule's decision; the release sensor launches the release job, which promotes v2
through the registry's promotion or ends its release.

The gate here has no metric floor and no regression rules (only the ONNX infra rules), so a
candidate trained on poisoned labels gets through it; the release must catch it on real
outcomes.
"""

import datetime as dt
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from mlops_assets.automation.inline import InlineAutomation
from mlops_assets.core.release import canary_mask, canary_seed
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import Stage
from mlops_assets.stages.batch_predictions import canary_predictions_path, shadow_predictions_path
from mlops_assets.state import champion_of_record, release_of_record
from mlops_assets_tests.conftest import small_spec
from mlops_assets_tests.stages.harness import UP_TO_CHAMPION, StageWorld

LENIENT_GATE = {"min_main_metric": None, "max_fairness_gap": None, "max_regression": None,
                "max_regression_on_champion_holdout": None}


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def release_world(tmp_path, instance, mode: str, **release) -> StageWorld:
    base = small_spec(tmp_path)
    return StageWorld(
        tmp_path, instance, gate={**base.gate.model_dump(mode="json"), **LENIENT_GATE},
        ground_truth={"path": str(tmp_path / "labels"), "time_column": "labelled_at"},
        release={"mode": mode, "canary_fraction": 0.5, "min_labelled_rows": 2_000, "max_metric_drop": 0.02,
                 **release},
    )


def land_poisoned(world: StageWorld, day: int) -> str:
    """A day whose labels were inverted upstream, keeping the default rate (the label checks pass):
    the safest applicants 'default'."""
    scratch = Path(world.spec.state_dir) / "scratch"
    frame = pl.read_parquet(write_day(scratch, dt.date(2026, 1, day), n_rows=3_000, day_index=day - 1))
    k = int(frame["defaulted"].sum())
    frame = frame.with_columns((frame["credit_score"].rank("ordinal", descending=True) <= k).cast(pl.Int64)
                               .alias("defaulted"))
    path = Path(world.spec.source.path) / f"loans_2026-01-{day:02d}.parquet"
    frame.write_parquet(path)
    world.instance.add_dynamic_partitions(world.pipeline.partitions_name, [path.name])
    return path.name


def train_candidate(world: StageWorld, partition: str) -> None:
    assert world.materialize(UP_TO_CHAMPION[:2], partition).success
    assert world.materialize(UP_TO_CHAMPION[2:]).success


def score(world: StageWorld, partition: str) -> dict:
    assert world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES, Stage.BATCH_PREDICTIONS], partition).success
    return world.metadata(Stage.BATCH_PREDICTIONS, partition)


def label(world: StageWorld, partition: str) -> None:
    """The outcomes of a scored day arrive, spread over two days."""
    truth = pl.read_parquet(Path(world.spec.source.path) / partition).select("loan_id", "defaulted")
    truth = truth.with_columns(pl.Series("labelled_at", [dt.datetime(2026, 2, 1 + i % 2) for i in range(truth.height)]))
    folder = Path(world.spec.ground_truth.path)
    folder.mkdir(exist_ok=True)
    truth.write_parquet(folder / f"labels_{partition}")


def setup_release(world: StageWorld, poisoned: bool = False) -> str:
    """v1 champion, v2 under release, day 3 scored under the release; returns day 3's partition."""
    world.bootstrap(world.land(day=1))
    train_candidate(world, land_poisoned(world, 2) if poisoned else world.land(day=2))
    return world.land(day=3, n_rows=20_000)


def release_tick(world: StageWorld):
    return InlineAutomation(world.defs, world.instance).tick_sensor(world.pipeline.sensor("release"))


def test_canary_promotes_the_candidate_once_labels_show_it_is_no_worse(tmp_path, instance):
    world = release_world(tmp_path, instance, "canary")
    registry = world.resource("registry")
    day3 = setup_release(world)

    # Under release: the champion of record and its alias stay v1; v2 is the challenger.
    md = world.metadata(Stage.REGISTERED_MODEL)
    assert md["model_version"] == "1" and md["release_version"] == "2" and md["release_state"] == "active"
    assert md["changed"] is False and md["release_mode"] == "canary"
    assert champion_of_record(instance, world.pipeline) == "1" and registry.champion("demo").version == "1"
    candidate = registry.version_by_alias("demo", "challenger")
    assert candidate.version == "2" and candidate.tags["release_state"] == "active"
    assert candidate.tags["release_champion"] == "1" and candidate.tags["release_mode"] == "canary"
    started = release_of_record(instance, world.pipeline).started_at
    # Re-running registered_model (the retrain sensor's recovery does) keeps the same release.
    assert world.materialize([Stage.REGISTERED_MODEL]).success
    assert release_of_record(instance, world.pipeline).started_at == started

    # Day 3: one table, each id scored by its arm, beside (not over) the champion's plain table.
    scored = score(world, day3)
    table = world.resource("storage").read_parquet(canary_predictions_path(world.pipeline, day3, "1", "2"))
    assert not world.resource("storage").exists(world.pipeline.layout.predictions(day3, "1"))
    assert table.columns == ["loan_id", "score", "prediction", "model_version", "scored_at", "arm"]
    hit = canary_mask(table["loan_id"], 0.5, canary_seed(world.spec.split.seed))
    assert table["model_version"].to_list() == np.where(hit, "2", "1").tolist()
    assert table["arm"].to_list() == np.where(hit, "candidate", "champion").tolist()
    features = world.resource("storage").read_parquet(world.pipeline.layout.features(day3))
    expected = np.where(hit, registry.load_bundle("demo", "2").score(features),
                        registry.load_bundle("demo", "1").score(features))
    np.testing.assert_allclose(table["score"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert scored["model_version"] == "1" and scored["release_version"] == "2"
    assert scored["canary_rows"] == int(hit.sum()) and scored["canary_rows"] + scored["champion_rows"] == 20_000
    assert 0 < scored["agreement_mean_abs_diff"] < 0.2 and scored["agreement_rows"] == 20_000

    # No labels yet: the rule waits, and the tick says so.
    tick = release_tick(world)
    assert not tick.launched and "no labelled predictions" in tick.skip_reason

    label(world, day3)
    assert world.materialize([Stage.MODEL_PERFORMANCE]).success
    perf = world.metadata(Stage.MODEL_PERFORMANCE)
    assert perf["release_action"] == "promote", perf["release_reason"]
    arms = perf["release_arms"]
    assert arms["days"] == ["2026-02-01", "2026-02-02"]
    assert arms["champion"]["rows"] + arms["candidate"]["rows"] == 20_000
    assert perf["champion_version"] == "1" and "retrain_signal" in perf     # the retrain loop's inputs stay

    tick = release_tick(world)
    assert len(tick.launched) == 1 and tick.launched[0].success
    champion = registry.champion("demo")
    assert champion.version == "2" and champion.tags["release_state"] == "promoted"
    assert champion.tags["approval"] == "approved" and champion.tags["previous_champion"] == "1"
    assert champion.tags["promoted_by_run"] == tick.run_ids[0]
    assert registry.version_by_alias("demo", "challenger") is None
    assert champion_of_record(instance, world.pipeline) == "2"
    md = world.metadata(Stage.REGISTERED_MODEL)
    assert md["release_state"] == "promoted" and md["previous_champion"] == "1" and md["changed"] is True

    # Done once: the next tick has nothing to do, and a re-run of the job only records it again.
    after = release_tick(world)
    assert not after.launched and "the release of v2 is promoted" in after.skip_reason
    again = world.defs.resolve_job_def(world.pipeline.job("release")).execute_in_process(
        instance=instance, tags=instance.get_run_by_id(tick.run_ids[0]).tags)
    assert again.success and registry.champion("demo").version == "2"
    # With the release over, a new partition is scored by the new champion alone.
    plain = score(world, world.land(day=4, n_rows=500))
    assert plain["model_version"] == "2" and "release_version" not in plain


def test_canary_ends_the_release_of_a_worse_candidate(tmp_path, instance):
    world = release_world(tmp_path, instance, "canary")
    registry = world.resource("registry")
    day3 = setup_release(world, poisoned=True)
    assert world.metadata(Stage.EVALUATION_REPORT)["gate_passed"] is True      # the lenient gate let it in
    score(world, day3)
    label(world, day3)
    assert world.materialize([Stage.MODEL_PERFORMANCE]).success
    perf = world.metadata(Stage.MODEL_PERFORMANCE)
    assert perf["release_action"] == "end" and "the candidate is worse" in perf["release_reason"]

    tick = release_tick(world)
    assert len(tick.launched) == 1 and tick.launched[0].success
    assert registry.champion("demo").version == "1"
    assert registry.version_by_alias("demo", "challenger") is None
    ended = registry.get_version("demo", "2")
    assert ended.tags["release_state"] == "ended" and "the candidate is worse" in ended.tags["release_reason"]
    assert ended.tags["approval"] != "approved"     # never promoted: not a rollback target either
    assert champion_of_record(instance, world.pipeline) == "1"
    md = world.metadata(Stage.REGISTERED_MODEL)
    assert md["model_version"] == "1" and md["release_state"] == "ended" and md["changed"] is False
    assert not release_tick(world).launched

    # registered_model re-run for v2 (what the retrain sensor's recovery rule launches today for
    # an approved version newer than the champion): the ended release is not started again.
    assert world.materialize([Stage.REGISTERED_MODEL]).success
    assert registry.champion("demo").version == "1" and registry.version_by_alias("demo", "challenger") is None
    assert release_of_record(instance, world.pipeline).status == "ended"
    # Day 3's canary rows stay what they were: served history.
    later = score(world, world.land(day=4, n_rows=500))
    assert later["model_version"] == "1" and "release_version" not in later


def test_shadow_scores_beside_the_champion_and_judges_on_the_same_rows(tmp_path, instance):
    world = release_world(tmp_path, instance, "shadow", min_labelled_rows=5_000)
    registry = world.resource("registry")
    day3 = setup_release(world)
    scored = score(world, day3)
    storage = world.resource("storage")
    served = storage.read_parquet(world.pipeline.layout.predictions(day3, "1"))
    shadow = storage.read_parquet(shadow_predictions_path(world.pipeline, day3, "2"))
    # The champion's table is as without a release; the candidate's is beside it, never served.
    assert served.columns == ["loan_id", "score", "prediction", "model_version", "scored_at"]
    assert set(served["model_version"]) == {"1"} and set(shadow["model_version"]) == {"2"}
    assert shadow["loan_id"].equals(served["loan_id"]) and not shadow_predictions_path(
        world.pipeline, day3, "2").startswith(world.pipeline.layout.predictions_prefix() + "/")
    diff = np.abs(served["score"].to_numpy() - shadow["score"].to_numpy())
    assert scored["agreement_mean_abs_diff"] == pytest.approx(diff.mean(), rel=1e-9)
    assert scored["agreement_max_abs_diff"] == pytest.approx(diff.max(), rel=1e-9)
    assert scored["agreement_label_agreement"] == pytest.approx(
        (served["prediction"] == shadow["prediction"]).mean())
    assert scored["agreement_correlation"] == pytest.approx(
        np.corrcoef(served["score"].to_numpy(), shadow["score"].to_numpy())[0, 1], rel=1e-9)
    assert scored["release_mode"] == "shadow" and "shadow_uri" in scored

    label(world, day3)
    assert world.materialize([Stage.MODEL_PERFORMANCE]).success
    perf = world.metadata(Stage.MODEL_PERFORMANCE)
    arms = perf["release_arms"]
    # Shadow: both arms are the same 20,000 labelled rows.
    assert arms["champion"]["rows"] == arms["candidate"]["rows"] == 20_000
    # v2 learnt from twice the clean data: on the very same rows it is no worse.
    assert perf["release_action"] == "promote", perf["release_reason"]
    tick = release_tick(world)
    assert len(tick.launched) == 1 and tick.launched[0].success
    assert registry.champion("demo").version == "2" == champion_of_record(instance, world.pipeline)


def record(instance, key, partition=None, **metadata) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition,
                                                                metadata=metadata))


@pytest.mark.parametrize("state", ["active", "ended"])
def test_the_retrain_loop_leaves_a_released_version_to_the_release_rule(tmp_path, instance, state):
    """Recorded state only (no training): v1 champion, v2 approved and under release (or its
    release ended). The retrain decision must not 'finish the promotion' of v2."""
    from mlops_assets.automation.jobs import build_jobs
    from mlops_assets.automation.retrain import decide_now
    from mlops_assets.core.release import Release

    world = release_world(tmp_path, instance, "canary")
    p = world.pipeline
    instance.add_dynamic_partitions(p.partitions_name, ["a.parquet", "b.parquet"])
    for partition in ("a.parquet", "b.parquet"):
        record(instance, p.key(Stage.VALIDATED_FEATURES), partition, status="accepted", labelled=True,
               data_version=f"dv-{partition}", **{"dagster/row_count": 3_000})
    for version, partitions in (("1", {"a.parquet": 3_000}), ("2", {"a.parquet": 3_000, "b.parquet": 3_000})):
        record(instance, p.key(Stage.TRAINED_MODEL), model_version=version, training_set=f"set-{version}",
               training_partitions=dg.MetadataValue.json(partitions))
        record(instance, p.key(Stage.EVALUATION_REPORT), model_version=version, approval="approved", gate_passed=True)
    record(instance, p.key(Stage.REGISTERED_MODEL), model_version="1", approval="approved")
    release = Release("2", "1", "canary", 0.5, 0.0)
    release = release if state == "active" else release.finished("ended", "the candidate is worse")
    record(instance, p.key(Stage.REGISTERED_MODEL), model_version="1", release=dg.MetadataValue.json(release.to_dict()),
           release_version="2", release_state=release.status)
    decision = decide_now(instance, p, build_jobs(p))
    assert decision.training_set != "promote:v2", decision.describe()
