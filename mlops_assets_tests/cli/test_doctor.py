"""`mlops-assets doctor` on a world with one of everything it looks for, then `--fix`.

Planted: a half-done promotion (the intent tag written and the alias moved by hand, as a run
killed between the two would leave them), a version the gate never judged whose run ended (an
orphan), a tampered bundle of a rollback target, a STARTED run whose worker is dead and still
holds a training-pool slot, and a file raw_data quarantined (landed through `ingest`). The
doctor must report each with its severity, `--fix` must repair what is safe (the promotion,
the record, the orphan, the run and its slot) and leave the rest reported, exit code 1.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import uuid

import dagster as dg
import pytest
import yaml

from mlops_assets.cli.target import DEFAULT_DAGSTER_YAML
from mlops_assets.core.promotion import PROMOTE, PromotionIntent
from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import LIFECYCLE, TRAINING_POOL, Pipeline, Stage
from mlops_assets.resources.promotions import INTENT_TAG
from mlops_assets.spec import PipelineSpec
from mlops_assets_tests.cli.helpers import run_cli
from mlops_assets_tests.conftest import small_spec


def _materialize(defs, pipeline, instance, stages, partition=None):
    result = dg.materialize(list(defs.assets), selection=pipeline.keys(stages), instance=instance,
                            resources=defs.resources, partition_key=partition, raise_on_error=False)
    return result


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("doctor")
    data = small_spec(root).model_dump(mode="json")
    data["model"]["lightgbm"]["num_boost_round"] = 40
    data["gate"].update(min_main_metric=None, max_fairness_gap=None)   # small data: v1 must be a champion
    data["state_dir"], data["source"]["path"] = ".mlops", "landing"
    (root / "world.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    spec = PipelineSpec.from_yaml(root / "world.yaml")
    pipeline, defs = Pipeline(spec), build_mlops_defs(spec)
    home = root / ".mlops" / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(DEFAULT_DAGSTER_YAML)
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.from_config(str(home))
    registry = defs.resources[pipeline.registry_key]
    model = pipeline.model_name
    try:
        days = []
        for day in (1, 2):
            path = write_day(spec.source.path, dt.date(2026, 1, day), n_rows=3_000, seed=3, day_index=day - 1)
            instance.add_dynamic_partitions(pipeline.partitions_name, [path.name])
            days.append(path.name)
        assert _materialize(defs, pipeline, instance, LIFECYCLE, days[0]).success          # v1: the champion
        assert _materialize(defs, pipeline, instance, [Stage.RAW_DATA, Stage.VALIDATED_FEATURES], days[1]).success
        judged = _materialize(defs, pipeline, instance, [Stage.TRAINED_MODEL, Stage.EVALUATION_REPORT])  # v2
        assert _materialize(defs, pipeline, instance, [Stage.TRAINED_MODEL]).success      # v3: never judged
        # The half-done promotion: intent recorded, alias moved, the run gone before it finished.
        # (What registered_model records: the gate's approval from the evaluation it read.)
        from mlops_assets.state import latest_materialization, value

        approval = value(latest_materialization(instance, pipeline.key(Stage.EVALUATION_REPORT)), "approval")
        intent = PromotionIntent(uuid.uuid4().hex[:12], PROMOTE, "2", "1", judged.run_id, approval,
                                 created_at=time.time())
        registry.set_model_tag(model, INTENT_TAG, intent.to_json())
        registry.set_alias(model, "champion", "2")
        # A tampered bundle of v1 (approved: a rollback target), in the MLflow artifact store.
        model_id = registry.get_version(model, "1").source.split("/")[-1]
        bundle = next(p for p in (root / ".mlops" / "mlartifacts").rglob("*") if p.is_file()
                      and model_id in str(p) and "/bundle/" in str(p) and p.suffix == ".onnx")
        bundle.write_bytes(bundle.read_bytes() + b"\0tampered")
        # A STARTED run whose run worker is dead, holding a training-pool slot.
        from dagster._core.events import EngineEventData
        from dagster._core.test_utils import create_run_for_test

        stuck = create_run_for_test(instance, job_name=pipeline.job("retrain"), status=dg.DagsterRunStatus.STARTED,
                                    tags={"dagster/code_location": spec.name,
                                          ".dagster/grpc_info": json.dumps({"host": "localhost", "port": 4266})})
        pid = _dead_pid()
        instance.report_engine_event(f"Started process for run (pid: {pid}).", stuck,
                                     EngineEventData(metadata={"pid": dg.MetadataValue.text(str(pid))}))
        storage = instance.event_log_storage
        storage.set_concurrency_slots(TRAINING_POOL, 1)
        storage.claim_concurrency_slot(TRAINING_POOL, stuck.run_id, "demo__trained_model")
        assert stuck.run_id in storage.get_concurrency_run_ids()
    finally:
        instance.dispose()
        mp.undo()
    # A file raw_data cannot read, landed by hand: quarantined by the pipeline itself.
    broken = root / "incoming" / "broken_2026-01-03.csv"
    broken.parent.mkdir()
    broken.write_text("loan_id,age\n1,\"unterminated\n")
    r = run_cli(["ingest", "world.yaml", str(broken)], root, timeout=300)
    assert r.returncode == 1, r
    return {"root": root, "home": home, "stuck": stuck.run_id, "pipeline": pipeline}


def _by_check(findings):
    out = {}
    for f in findings:
        out.setdefault(f["check"], []).append(f)
    return out


@pytest.mark.timeout(1_200)
def test_doctor_finds_each_problem_and_fix_repairs_the_safe_ones(world):
    root = world["root"]
    r = run_cli(["doctor", "world.yaml", "--json", "--grace", "0"], root, timeout=300)
    assert r.returncode == 1, r
    report = r.json()
    found = _by_check(report["findings"])
    print(json.dumps(report, indent=1)[:6000])
    promotion = found["promotion"][0]
    assert promotion["severity"] == "error" and "half-done promote v1 -> v2" in promotion["message"]
    assert promotion["fix"].startswith(("finish", "undo"))
    assert any(f["severity"] == "error" for f in found["aliases"])             # alias v2, record v1
    orphan = [f for f in found["versions"] if f["subject"] == "v3"]
    assert orphan and orphan[0]["severity"] == "warning" and "never judged" in orphan[0]["message"]
    dead = [f for f in found["runs"] if f["subject"] == world["stuck"][:8]]
    assert dead and dead[0]["severity"] == "error" and "free its pool slots" in dead[0]["fix"]
    tampered = [f for f in found["bundles"] if f["subject"] == "v1"]      # still the champion of record
    assert tampered and tampered[0]["severity"] == "error" and "fails verification" in tampered[0]["message"]
    assert any("broken_2026-01-03.csv" in f["subject"] for f in found["quarantine"])

    r = run_cli(["doctor", "world.yaml", "--fix", "--json", "--grace", "0"], root, timeout=300)
    assert r.returncode == 1, r                          # the bundle and the quarantined file remain
    after = r.json()
    print(json.dumps(after, indent=1)[:6000])
    left = {(f["check"], f["subject"]) for f in after["findings"] if not f["fixed"]
            and f["severity"] in ("error", "warning")}
    assert ("bundles", "v1") in left
    assert any(check == "quarantine" for check, _ in left)
    assert not [x for x in left if x[0] in ("promotion", "aliases", "versions", "runs")], left
    assert any(r.startswith("promotion: ") for r in after["repairs"]), after["repairs"]
    assert any("abandoned: v3" in r for r in after["repairs"]), after["repairs"]
    assert any(world["stuck"] in r for r in after["repairs"]), after["repairs"]

    # The state agrees afterwards: one champion everywhere, the run failed, its slot free.
    status = run_cli(["status", "world.yaml", "--json"], root, timeout=180).json()
    assert status["champion"]["agree"] is True, status["champion"]
    assert {v["version"]: v["approval"] for v in status["versions"]}["3"] == "abandoned"
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(world["home"]))
    instance = dg.DagsterInstance.from_config(str(world["home"]))
    try:
        assert instance.get_run_by_id(world["stuck"]).status == dg.DagsterRunStatus.FAILURE
        assert world["stuck"] not in instance.event_log_storage.get_concurrency_run_ids()
    finally:
        instance.dispose()
        mp.undo()

    # A second --fix finds nothing more to repair.
    again = run_cli(["doctor", "world.yaml", "--fix", "--json", "--grace", "0"], root, timeout=300).json()
    assert again["repairs"] == [], again["repairs"]
