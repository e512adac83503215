"""The translator: per-stage code versions, owners and tags, and a subclass that renames keys."""

import dagster as dg

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.pipeline import LIFECYCLE, Pipeline, Stage
from mlops_assets.translator import MLOpsTranslator, stage_code_version
from mlops_assets_tests.conftest import small_spec


def _with(spec, section: str, **changes):
    data = spec.model_dump(mode="json")
    data[section] = {**data[section], **changes}
    return type(spec).from_dict(data)


def test_a_drift_threshold_makes_only_the_drift_report_stale(tmp_path):
    spec = small_spec(tmp_path)
    changed = _with(spec, "drift", share_threshold=0.3)
    stale = [s for s in LIFECYCLE if stage_code_version(spec, s) != stage_code_version(changed, s)]
    assert stale == [Stage.DRIFT_REPORT]


def test_model_settings_make_training_stale_but_not_ingestion(tmp_path):
    spec = small_spec(tmp_path)
    data = spec.model_dump(mode="json")
    data["model"]["lightgbm"]["num_leaves"] = 15
    changed = type(spec).from_dict(data)
    stale = {s for s in LIFECYCLE if stage_code_version(spec, s) != stage_code_version(changed, s)}
    assert stale == {Stage.TRAINED_MODEL}


def test_a_gate_rule_makes_evaluation_and_registration_stale(tmp_path):
    spec = small_spec(tmp_path)
    changed = _with(spec, "gate", max_regression=0.05)
    stale = {s for s in LIFECYCLE if stage_code_version(spec, s) != stage_code_version(changed, s)}
    assert stale == {Stage.EVALUATION_REPORT, Stage.REGISTERED_MODEL}


def test_owners_and_tags_reach_every_asset(tmp_path):
    spec = small_spec(tmp_path, owners=["team:ml-platform", "ana@example.com"], tags={"domain": "lending"})
    graph = build_mlops_defs(spec).resolve_asset_graph()
    for stage in LIFECYCLE:
        node = graph.get(Pipeline(spec).key(stage))
        assert node.owners == ["team:ml-platform", "ana@example.com"]
        assert node.tags["domain"] == "lending"


class PrefixedTranslator(MLOpsTranslator):
    """Puts every asset under the user's own `ml/` key prefix and team."""

    def get_asset_key(self, stage, spec):
        return super().get_asset_key(stage, spec).with_prefix("ml")

    def get_group_name(self, stage, spec):
        return "machine_learning"


def test_a_translator_subclass_changes_keys_everywhere(tmp_path):
    spec = small_spec(tmp_path)
    defs = build_mlops_defs(spec, translator=PrefixedTranslator())
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {f"ml/demo/{s.value}" for s in LIFECYCLE}
    drift = graph.get(dg.AssetKey(["ml", "demo", "drift_report"]))
    assert set(drift.parent_keys) == {dg.AssetKey(["ml", "demo", "validated_features"]),
                                      dg.AssetKey(["ml", "demo", "batch_predictions"])}
    assert drift.group_name == "machine_learning"
    job = defs.resolve_job_def("demo_ingest_job")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "ml/demo/raw_data", "ml/demo/validated_features", "ml/demo/batch_predictions", "ml/demo/drift_report"}
