import pytest

from mlops_assets.automation.rollback import RollbackError, choose_rollback_target
from mlops_assets.resources.registry import VersionInfo


def _v(version, approval, **tags):
    return VersionInfo("m", str(version), None, {"approval": approval, **tags}, [])


VERSIONS = [_v(1, "approved"), _v(2, "rejected"), _v(3, "forced"), _v(4, "approved", previous_champion="3")]


def test_default_target_is_previous_champion():
    assert choose_rollback_target(VERSIONS, VERSIONS[3], None).version == "3"


def test_falls_back_to_latest_older_approved_version():
    current = _v(4, "approved")
    assert choose_rollback_target(VERSIONS, current, None).version == "3"
    assert choose_rollback_target(VERSIONS[:2] + [_v(3, "approved")], _v(3, "approved"), None).version == "1"


def test_refuses_unapproved_missing_or_current_versions():
    with pytest.raises(RollbackError, match="never approved"):
        choose_rollback_target(VERSIONS, VERSIONS[3], "2")
    with pytest.raises(RollbackError, match="does not exist"):
        choose_rollback_target(VERSIONS, VERSIONS[3], "9")
    with pytest.raises(RollbackError, match="already the champion"):
        choose_rollback_target(VERSIONS, VERSIONS[3], "4")
    with pytest.raises(RollbackError, match="no approved version"):
        choose_rollback_target([_v(1, "approved")], _v(1, "approved"), None)


def test_re_executing_a_recorded_rollback_does_not_roll_back_again(tmp_path):
    """A rollback run killed after its record was stored is re-executed (same root run): the
    champion stays where the rollback put it; a new rollback run still goes further back."""
    import dagster as dg

    from mlops_assets.definitions import build_mlops_defs
    from mlops_assets.pipeline import Pipeline, Stage
    from mlops_assets.resources.registry import MLflowRegistry
    from mlops_assets.signals import MODEL_VERSION, ROLLED_BACK_FROM
    from mlops_assets_tests.conftest import small_spec

    spec = small_spec(tmp_path)
    pipeline = Pipeline(spec)
    registry = MLflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "a"))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text("{}")
    job = build_mlops_defs(spec, registry=registry).resolve_job_def(pipeline.job("rollback"))
    config = {"ops": {f"{pipeline.name}_rollback_champion": {"config": {"reason": "test"}}}}
    with dg.instance_for_test() as instance:
        for _ in range(3):                       # v1 -> v2 -> v3, each promotion recorded
            ref = registry.log_candidate("demo", bundle, params={}, metrics={}, tags={}, run_name="v")
            registry.set_tags("demo", ref.version, {"gate_passed": "true"})
            registry.promote("demo", ref.version, run_id="r", approval="approved")
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=pipeline.key(Stage.REGISTERED_MODEL), metadata={MODEL_VERSION: ref.version}))

        def rollbacks():
            found = instance.fetch_materializations(pipeline.key(Stage.REGISTERED_MODEL), limit=20, ascending=True)
            md = [r.asset_materialization.metadata for r in found.records]
            return [(m[ROLLED_BACK_FROM].value, m[MODEL_VERSION].value) for m in md if ROLLED_BACK_FROM in m]

        first = job.execute_in_process(instance=instance, run_config=config)
        assert registry.champion("demo").version == "2" and rollbacks() == [("3", "2")]
        again = job.execute_in_process(instance=instance, run_config=config,
                                       tags={"dagster/parent_run_id": first.run_id, "dagster/root_run_id": first.run_id})
        assert again.success and registry.champion("demo").version == "2" and rollbacks() == [("3", "2")]
        assert job.execute_in_process(instance=instance, run_config=config).success
        assert registry.champion("demo").version == "1" and rollbacks() == [("3", "2"), ("2", "1")]
