"""Registry errors and edited records: neither ever promotes.

* A tracking server answering 503 at the evaluation's champion lookup fails the run with the
  cause: no verdict is recorded (no bootstrap verdict "no champion yet") and nothing is
  promoted; the retrain sensor's next attempt evaluates the version against the real champion.
* A 503 at the alias move leaves the old champion serving and an open intent that the next
  promotion run finishes, once.
* A 503 during a bundle download is retried (bounded, with backoff), then fails closed with a
  message that names the download and carries none of the URI's credentials.
* An edited evaluation record (the report in the artifact store, the evaluation's verdict in
  Dagster, or the version's MLflow tag alone) never gets a rejected candidate promoted.
"""

from __future__ import annotations

import dagster as dg
import pytest

from mlops_assets.automation.jobs import RETRAIN_STAGES
from mlops_assets.pipeline import Stage
from mlops_assets.resources.registry import MLflowRegistry
from mlops_assets.signals import APPROVAL, CHAMPION_VERSION, GATE_PASSED, MODEL_VERSION
from mlops_assets_tests.faults.harness import (
    FaultWorld,
    FlakyTrackingServer,
    convergence_violations,
    drill_spec,
    safety_violations,
    scratch,
)
from mlops_assets_tests.stages.harness import failure_text

GET_MODEL = "/registered-models/get"
ALIAS = "/registered-models/alias"
DOWNLOAD_URI = "/model-versions/get-download-uri"


@pytest.fixture
def quiet_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")     # MLflow's own retries: none
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")


@pytest.fixture
def scratch_dir(tmp_path_factory):
    with scratch(tmp_path_factory, "registry-faults") as path:
        yield path


@pytest.fixture
def served(scratch_dir, quiet_mlflow):
    """A world whose registry is an MLflow tracking server that can be told to answer 503."""
    state = scratch_dir / "server"
    state.mkdir()
    server = FlakyTrackingServer(f"sqlite:///{state / 'mlflow.db'}", (state / "artifacts").as_uri())
    root = scratch_dir / "world"
    registry = MLflowRegistry(tracking_uri=server.url, artifact_location=str(state / "artifacts"),
                              cache_dir=str(scratch_dir / "bundles"), attempts=2, retry_delay_s=0.05)
    try:
        yield FaultWorld(root, spec=drill_spec(root), registry=registry), server
    finally:
        server.close()


def evaluations(world: FaultWorld, instance) -> list[dict]:
    found = instance.fetch_materializations(world.pipeline.key(Stage.EVALUATION_REPORT), limit=100,
                                            ascending=True)
    return [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in found.records]


def test_registry_errors_never_promote_and_the_recovery_converges(served):
    world, server = served
    with world.instance() as instance:
        world.land(instance, 1)
        assert world.materialize(instance, RETRAIN_STAGES).success            # v1, the champion
        world.land(instance, 2)
        assert world.materialize(instance, [Stage.TRAINED_MODEL]).success     # v2, not judged yet

        # 1. A 503 at the evaluation's champion lookup. The evaluation reads v2 (its bundle
        #    download also reads the model), then the champion: the first model read after the
        #    download is the champion lookup.
        server.arm(GET_MODEL, after=DOWNLOAD_URI)
        (tick,) = world.tick_retrain(instance, max_ticks=1)                   # evaluate:v2
        (run,) = tick.launched
        assert not run.success and server.refused
        failure = failure_text(run)
        assert "get model 'demo' failed after 2 attempts" in failure and "503" in failure, failure
        assert [e.step_key for e in run.get_step_failure_events()] == ["demo__evaluation_report"]
        server.arm()
        # No verdict on v2 anywhere (no "no champion yet" bootstrap verdict), nothing promoted.
        assert [e[MODEL_VERSION] for e in evaluations(world, instance)] == ["1"]
        v2 = world.registry.get_version("demo", "2")
        assert v2.tags["approval"] == "pending" and GATE_PASSED not in v2.tags
        assert GATE_PASSED not in world.registry.client().get_run(v2.run_id).data.tags
        assert not world.storage.exists(world.pipeline.layout.evaluation("2"))
        state = world.observe(instance)
        assert state.champion == "1" and [r["version"] for r in state.registered] == ["1"]
        assert not safety_violations(state)

        # 2. The next attempt evaluates v2 against the real champion; a 503 at the alias move
        #    keeps v1 serving and leaves the intent open.
        server.arm(ALIAS)
        (tick,) = world.tick_retrain(instance, max_ticks=1)                   # evaluate:v2, again
        (run,) = tick.launched
        assert not run.success and "set alias champion failed after 2 attempts" in failure_text(run)
        server.arm()
        judged = evaluations(world, instance)[-1]
        assert judged[MODEL_VERSION] == "2" and judged[CHAMPION_VERSION] == "1", judged
        state = world.observe(instance)
        assert state.champion == "1" and not safety_violations(state)
        assert state.model_tags.get("promotion_intent"), "the intent stays until a run finishes it"
        assert [r["version"] for r in state.registered] == ["1"]

        # 3. The registry answers again: the sensor's next run finishes the promotion, once.
        world.tick_retrain(instance)                                          # promote:v2
        state = world.observe(instance)
        assert state.champion == "2" and [r["version"] for r in state.registered] == ["1", "2"]
        assert not convergence_violations(state), convergence_violations(state)


def test_a_503_during_a_bundle_download_fails_closed_without_the_uris_credentials(scratch_dir, quiet_mlflow):
    from mlops_assets.resources.registry import RegistryError

    tmp_path = scratch_dir
    state = tmp_path / "server"
    state.mkdir()
    server = FlakyTrackingServer(f"sqlite:///{state / 'mlflow.db'}", (state / "artifacts").as_uri())
    try:
        url = server.url.replace("http://", "http://drill:s3cret@")
        registry = MLflowRegistry(tracking_uri=url, artifact_location=str(state / "artifacts"),
                                  cache_dir=str(tmp_path / "bundles"), attempts=2, retry_delay_s=0.05)
        bundle = tmp_path / "bundle"
        bundle.mkdir()
        (bundle / "bundle.json").write_text("{}")
        ref = registry.log_candidate("demo", bundle, params={}, metrics={}, tags={}, run_name="drill")
        server.arm(DOWNLOAD_URI)
        with pytest.raises(RegistryError, match="failed after 2 attempts") as err:
            registry.bundle_dir("demo", ref.version)
        assert "s3cret" not in str(err.value) and "download demo v1 bundle" in str(err.value), err.value
        assert server.refused == ["/api/2.0/mlflow" + DOWNLOAD_URI] * 2
        # Once the registry answers again, the same call downloads and verifies the bundle.
        server.arm()
        assert (registry.bundle_dir("demo", ref.version) / "bundle.json").read_text() == "{}"
    finally:
        server.close()


def test_an_edited_evaluation_record_never_promotes_a_rejected_candidate(scratch_dir, quiet_mlflow):
    root = scratch_dir / "world"
    world = FaultWorld(root)
    strict = drill_spec(root, gate={**world.spec.gate.model_dump(mode="json"), "min_main_metric": 0.999})
    judge = FaultWorld(root, spec=strict)                       # same stores, a gate v2 cannot pass
    layout, registry, model = world.pipeline.layout, world.registry, world.model
    with world.instance() as instance:
        world.land(instance, 1)
        assert world.materialize(instance, RETRAIN_STAGES).success
        world.land(instance, 2)
        judge.materialize(instance, [Stage.TRAINED_MODEL, Stage.EVALUATION_REPORT], raise_on_error=False)
        assert evaluations(world, instance)[-1][APPROVAL] == "rejected"
        assert registry.get_version(model, "2").tags[GATE_PASSED] == "false"

        def refused(why: str) -> None:
            result = world.materialize(instance, [Stage.REGISTERED_MODEL], raise_on_error=False)
            assert not result.success and why in failure_text(result), failure_text(result)
            state = world.observe(instance)
            assert state.champion == "1" and [r["version"] for r in state.registered] == ["1"]
            assert not safety_violations(state)

        # 1. The report in the artifact store says it passed: nothing reads it to promote.
        report = world.storage.read_json(layout.evaluation("2"))
        report["gate"]["passed"], report["gate"]["approval"] = True, "approved"
        world.storage.write_json(layout.evaluation("2"), report)
        refused("the evaluation says approval=rejected")

        # 2. The version's MLflow record alone says it passed: the evaluation still says rejected.
        registry.set_tags(model, "2", {GATE_PASSED: "true", APPROVAL: "approved"})
        refused("the evaluation says approval=rejected")
        registry.set_tags(model, "2", {GATE_PASSED: "false", APPROVAL: "rejected"})

        # 3. The evaluation's verdict in Dagster is forged: MLflow's record of the gate disagrees.
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=world.pipeline.key(Stage.EVALUATION_REPORT),
            metadata={MODEL_VERSION: "2", APPROVAL: "approved", GATE_PASSED: True, CHAMPION_VERSION: "1"}))
        refused("MLflow records gate_passed=false")

        # 4. The retrain sensor believes the forged verdict ("passed, promotion unfinished"): its
        #    promotion runs are refused the same way, and it gives up after a bounded number.
        outcomes = world.tick_retrain(instance)
        assert all(not run.success for o in outcomes for run in o.launched)
        assert "gave up after 3 failed attempts" in outcomes[-1].skip_reason, outcomes[-1].skip_reason
        state = world.observe(instance)
        assert state.champion == "1" and state.versions["2"]["approval"] == "rejected"
        assert [r["version"] for r in state.registered] == ["1"] and not safety_violations(state)
