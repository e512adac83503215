"""Shadow and canary in the real-time server, as a real uvicorn process over a real sqlite
MLflow store: the release is what the pipeline records on the registry (the `challenger`
alias and its `release_*` tags), and the server follows it without a restart."""

from __future__ import annotations

import dataclasses
import http.client
import json
import statistics
import time

import polars as pl
import pytest
import yaml

from mlops_assets.core.release import Release, canary_arms, canary_seed
from mlops_assets_tests.serving.serving_models import loan_rows, request_rows, shared_served_models
from mlops_assets_tests.serving.test_hot_swap import STALL_SECONDS, ServerProcess

CANDIDATE_TAGS = ("release_state", "release_mode", "release_champion", "canary_fraction", "release_started_at",
                  "release_reason")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The shared served models, with a spec that turns releases on (the served spec has them off)."""
    shared = shared_served_models(tmp_path_factory)
    data = shared.spec.model_dump(mode="json")
    data["release"] = {"mode": "canary", "canary_fraction": 0.5}
    # A release is judged on delayed labels, so the spec refuses one without a label source.
    folder = tmp_path_factory.mktemp("release-spec")
    data["ground_truth"] = {"path": str(folder / "labels")}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return dataclasses.replace(shared, spec_path=path)


@pytest.fixture
def released(models):
    """v1 champion; v2 recorded under release by `release(mode)`; everything undone afterwards."""
    champion, candidate = models.versions[:2]
    registry = models.registry
    models.set_champion(champion)

    def release(mode: str, fraction: float = 0.5, state: str = "active") -> None:
        tags = Release(candidate, champion, mode, fraction, time.time(), status=state).to_tags()
        registry.set_tags(models.spec.name, candidate, tags)
        registry.set_alias(models.spec.name, "challenger", candidate)

    try:
        yield release
    finally:
        registry.delete_alias(models.spec.name, "challenger")
        registry.set_tags(models.spec.name, candidate, {"release_state": "ended", "release_reason": "test over"})
        models.set_champion(champion)


def post(port: int, body) -> tuple[dict, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        started = time.perf_counter()
        conn.request("POST", "/predict", body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        assert response.status == 200, payload[:500]
        return json.loads(payload), elapsed
    finally:
        conn.close()


def wait_for(server: ServerProcess, what: str, ready) -> dict:
    """Poll /readyz until `ready(body)`; fails only after STALL_SECONDS without it."""
    deadline = time.monotonic() + STALL_SECONDS
    while True:
        if server.proc.poll() is not None:
            pytest.fail(f"server exited:\n{server.log()[-4000:]}", pytrace=False)
        try:
            status, body = server.get("/readyz")
            if status == 200 and ready(json.loads(body)):
                return json.loads(body)
        except OSError:
            pass     # not listening yet
        if time.monotonic() > deadline:
            pytest.fail(f"server never reached: {what}\n{server.log()[-3000:]}", pytrace=False)
        time.sleep(0.1)


def expected_scores(models, version: str, rows: list[dict]) -> list[dict]:
    bundle = models.registry.load_bundle(models.spec.name, version)
    frame = pl.from_dicts([{f: r[f] for f in models.spec.feature_names} for r in rows], infer_schema_length=None)
    return bundle.score_frame(frame).to_dicts()


def test_canary_then_shadow_then_ended(models, released, tmp_path):
    champion, candidate = models.versions[:2]
    seed = canary_seed(models.spec.split.seed)
    rows = request_rows(models.spec, loan_rows(120, seed=41, id_offset=70_000))
    arms = canary_arms([r["loan_id"] for r in rows], 0.5, seed)
    assert 20 < sum(arms) < 100
    by_version = {v: expected_scores(models, v, rows) for v in (champion, candidate)}
    log_dir = tmp_path / "served"
    released("canary")
    server = ServerProcess(models, tmp_path, "--request-log-dir", str(log_dir), "--flush-seconds", "0.5")
    try:
        ready = wait_for(server, "the canary release", lambda b: b.get("release", {}).get("mode") == "canary")
        assert ready["model_version"] == champion and ready["release"]["candidate"] == candidate

        # Canary, one row per request: the id's arm answers, and says so.
        for row, hit in zip(rows[:60], arms[:60]):
            answer, _ = post(server.port, row)
            version = candidate if hit else champion
            assert answer["model_version"] == version
            (prediction,) = answer["predictions"]
            assert prediction["model_version"] == version and prediction["loan_id"] == row["loan_id"]
            # (scored here in one 120-row call: onnxruntime may differ in the last bit, see ServedModel)
            assert prediction["score"] == pytest.approx(by_version[version][rows.index(row)]["score"], abs=1e-12)
        # A batch spanning both arms: each row from its arm; a row without an id: the champion.
        batch = rows[60:90] + [{k: v for k, v in rows[90].items() if k != "loan_id"}]
        answer, _ = post(server.port, {"rows": batch})
        assert answer["model_version"] == champion
        for i, prediction in enumerate(answer["predictions"][:-1]):
            version = candidate if arms[60 + i] else champion
            assert prediction["model_version"] == version
            assert prediction["score"] == pytest.approx(by_version[version][60 + i]["score"], abs=1e-12)
        assert answer["predictions"][-1]["model_version"] == champion
        assert server.metric("mlops_serving_canary_rows_total", arm="candidate") == sum(arms[:90])

        # The pipeline switches the release to shadow: the champion answers everything, and the
        # candidate's scores land in the request log beside the champion's.
        released("shadow")
        wait_for(server, "the shadow release", lambda b: b.get("release", {}).get("mode") == "shadow")
        shadow_latency = []
        for index in range(90, 120):
            answer, elapsed = post(server.port, rows[index])
            shadow_latency.append(elapsed)
            assert answer["model_version"] == champion
            assert "model_version" not in answer["predictions"][0]
            assert answer["predictions"][0]["score"] == pytest.approx(by_version[champion][index]["score"], abs=1e-12)
        deadline = time.monotonic() + STALL_SECONDS
        while server.metric("mlops_serving_shadow_rows_total") < 30:
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.1)
        assert server.metric("mlops_serving_shadow_dropped_rows_total") == 0
        assert server.metric("mlops_serving_shadow_abs_score_diff_count") == 30

        # The release ends: the champion alone, no restart.
        released("shadow", state="ended")
        wait_for(server, "no release", lambda b: "release" not in b)
        plain_latency = [post(server.port, rows[i])[1] for i in range(90, 120)]
    finally:
        code = server.stop()
    assert code in (0, -15), server.log()[-3000:]
    assert "releasing demo version 2 beside champion 1 (canary 50%)" in server.log()

    logged = pl.concat([pl.read_parquet(f) for f in log_dir.glob("date=*/*.parquet")], how="diagonal_relaxed")
    assert logged.height == 121 + 30
    canary = logged.filter(pl.col("shadow_model_version").is_null()).head(121)
    assert set(canary["model_version"]) == {champion, candidate}
    shadowed = logged.filter(pl.col("shadow_model_version") == candidate).sort("loan_id")
    assert shadowed.height == 30 and set(shadowed["model_version"]) == {champion}
    expected = {rows[i]["loan_id"]: by_version[candidate][i]["score"] for i in range(90, 120)}
    assert shadowed["shadow_score"].to_list() == pytest.approx([expected[i] for i in shadowed["loan_id"].to_list()],
                                                               abs=1e-12)
    # Shadow scoring happens after the answer: its latency stays the champion's (reported, loosely held).
    shadow_p50, plain_p50 = statistics.median(shadow_latency), statistics.median(plain_latency)
    print(f"single-row p50: shadow {shadow_p50 * 1e3:.2f} ms, champion alone {plain_p50 * 1e3:.2f} ms")
    assert shadow_p50 <= 3 * plain_p50 + 0.005
