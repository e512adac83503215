"""resources/promotions.py against a real (sqlite) registry: a promotion finished by the retry's
recovery keeps its id; the sweep finishes what a dead run left half done."""

import json

from mlops_assets.resources.promotions import INTENT_TAG, pending_intent
from mlops_assets.resources.registry import MLflowRegistry


def _registry_with_versions(tmp_path, n: int) -> MLflowRegistry:
    registry = MLflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "a"))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text("{}")
    for _ in range(n):
        ref = registry.log_candidate("demo", bundle, params={}, metrics={}, tags={"approval": "pending"},
                                     run_name="v")
        registry.set_tags("demo", ref.version, {"approval": "approved", "gate_passed": "true",
                                                "dagster_run_id": "done"})
    return registry


def test_a_promotion_its_own_retry_finished_reports_the_finished_promotions_id(tmp_path):
    registry = _registry_with_versions(tmp_path, 2)
    registry.promote("demo", "1", run_id="r1", approval="approved")
    # A run killed right after writing its intent: the retry's recovery finishes it.
    intent = {"id": "abc123", "kind": "promote", "to_version": "2", "from_version": "1", "run_id": "r2",
              "approval": "approved", "reason": "", "created_at": 0.0}
    registry.set_model_tag("demo", INTENT_TAG, json.dumps(intent))
    result = registry.promote("demo", "2", run_id="r3", approval="approved")
    assert result.recovered == "finished" and not result.changed
    assert result.intent_id == "abc123" == registry.get_version("demo", "2").tags["promotion_id"]
    assert pending_intent(registry, "demo") is None


def test_the_sweep_finishes_a_dead_runs_intent_and_abandons_its_unjudged_version(tmp_path):
    registry = _registry_with_versions(tmp_path, 2)
    registry.promote("demo", "1", run_id="r1", approval="approved")
    registry.set_tags("demo", "2", {"approval": "pending", "dagster_run_id": "dead"})
    registry.client().delete_model_version_tag("demo", "2", "gate_passed")
    swept = registry.sweep("demo", is_alive=lambda run_id: False)
    assert swept == {"promotion": [], "abandoned": ["2"], "orphaned_runs": []}
    assert registry.get_version("demo", "2").tags["approval"] == "abandoned"
