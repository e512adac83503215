"""The ASGI app in-process over a real sqlite MLflow store: contract, errors, metrics,
readiness, a failed load, and the request log."""

from __future__ import annotations

import json
import time
import warnings

import polars as pl
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # starlette 1.x suggests httpx2 for its TestClient; httpx works
    from starlette.testclient import TestClient

from mlops_assets.serving.model_source import RegistryModelSource
from mlops_assets.serving.request_log import RequestLogConfig, sampled
from mlops_assets.serving.server import create_app
from mlops_assets_tests.serving.serving_models import (
    loan_rows,
    random_valid_rows,
    request_rows,
    shared_served_models,
)

WAIT_SECONDS = 60.0   # a deadline for the watcher to act, not a speed expectation


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return shared_served_models(tmp_path_factory)


@pytest.fixture(scope="module")
def rows(models):
    return request_rows(models.spec, loan_rows(40))


def wait_until(condition, what: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def ready_version(client: TestClient) -> str | None:
    response = client.get("/readyz")
    return response.json()["model_version"] if response.status_code == 200 else None


def serving(models, *, champion: str, **options) -> TestClient:
    models.set_champion(champion)
    options.setdefault("poll_seconds", 0.2)
    app = create_app(models.spec, RegistryModelSource(models.registry, models.spec.name), **options)
    return TestClient(app)


def metric(client: TestClient, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = None
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total = (total or 0.0) + sample.value
    return 0.0 if total is None else total


def expected_scores(models, version: str, rows: list[dict]) -> pl.DataFrame:
    bundle = models.registry.load_bundle(models.spec.name, version)
    frame = pl.from_dicts([{f: r[f] for f in models.spec.feature_names} for r in rows], infer_schema_length=None)
    return bundle.score_frame(frame)


def test_scores_match_batch_scoring_bit_for_bit(models):
    """Random valid rows (nulls, unseen categories, ints, bounds) give exactly score_frame's values."""
    rows = random_valid_rows(models.spec, 300, seed=5)
    assert any(r["region"] == "atlantis" for r in rows) and any(r["employment_years"] is None for r in rows)
    with serving(models, champion=models.versions[0]) as client:
        wait_until(lambda: ready_version(client) == models.versions[0], "version 1")
        response = client.post("/predict", content=json.dumps({"rows": rows}))
        single = [client.post("/predict", json=row).json()["predictions"][0] for row in rows[:20]]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == models.versions[0]
    expected = expected_scores(models, models.versions[0], rows)
    got = body["predictions"]
    assert [p["loan_id"] for p in got] == [r["loan_id"] for r in rows]
    assert [p["score"] for p in got] == expected["score"].to_list()
    assert [p["prediction"] for p in got] == expected["prediction"].to_list()
    # Single rows against 1-row frames: onnxruntime may sum a row's trees in another order in
    # a 300-row call, so the same-size call is the exact comparison.
    for row, served in zip(rows[:20], single):
        alone = expected_scores(models, models.versions[0], [row]).row(0, named=True)
        assert served == {"loan_id": row["loan_id"], **alone}


def test_single_row_batch_and_id_contract(models, rows):
    with serving(models, champion=models.versions[0]) as client:
        wait_until(lambda: ready_version(client) == models.versions[0], "version 1")
        one = client.post("/predict", json=rows[0]).json()
        anonymous = client.post("/predict", json={k: v for k, v in rows[1].items() if k != "loan_id"}).json()
        batch = client.post("/predict", json={"rows": rows[:5]}).json()
    assert one == {"model_version": models.versions[0], "predictions": [batch["predictions"][0]]}
    assert set(one["predictions"][0]) == {"loan_id", "score", "prediction"}
    assert set(anonymous["predictions"][0]) == {"score", "prediction"}
    assert len(batch["predictions"]) == 5


def test_not_ready_until_a_champion_exists(models, rows):
    source = RegistryModelSource(models.registry, models.spec.name, alias="nobody-points-here")
    with TestClient(create_app(models.spec, source, poll_seconds=0.2)) as client:
        assert client.get("/healthz").status_code == 200
        wait_until(lambda: client.app.state.watcher.last_error is not None, "the first alias lookup")
        ready = client.get("/readyz")
        predict = client.post("/predict", json=rows[0])
        assert metric(client, "mlops_serving_model_loaded") == 0
        assert metric(client, "mlops_serving_errors_total", kind="not_ready") == 1
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert predict.status_code == 503
    assert predict.json()["detail"][0]["rule"] == "ready"


def test_http_errors_name_the_field_and_rule(models, rows):
    with serving(models, champion=models.versions[0], max_batch_rows=10, max_body_bytes=20_000) as client:
        wait_until(lambda: ready_version(client) is not None, "a model")
        invalid = client.post("/predict", json={"rows": [rows[0], {**rows[1], "age": 3}]})
        too_many = client.post("/predict", json={"rows": rows[:11]})
        too_big = client.post("/predict", content=b"{" + b" " * 30_000 + b"}")
        not_json = client.post("/predict", content=b"{'age': 3")
        assert metric(client, "mlops_serving_errors_total", endpoint="/predict", kind="validation") == 1
        assert metric(client, "mlops_serving_errors_total", kind="too_large") == 2
        assert metric(client, "mlops_serving_errors_total", kind="bad_json") == 1
    assert invalid.status_code == 422
    assert invalid.json()["detail"] == [{"loc": ["rows", 1, "age"], "field": "age", "row": 1, "rule": "min",
                                         "msg": "3 is below the minimum 18"}]
    assert too_many.status_code == 413 and too_many.json()["detail"][0]["rule"] == "max_batch_rows"
    assert too_big.status_code == 413 and too_big.json()["detail"][0]["rule"] == "max_body_bytes"
    assert not_json.status_code == 400 and not_json.json()["detail"][0]["field"] == "body"


def test_metrics_count_requests_rows_latency_and_version(models, rows):
    with serving(models, champion=models.versions[0]) as client:
        wait_until(lambda: ready_version(client) is not None, "a model")
        for row in rows[:7]:
            client.post("/predict", json=row)
        client.post("/predict", json={"rows": rows[:10]})
        client.post("/predict", json={**rows[0], "age": -1})
        text = client.get("/metrics")
        assert text.headers["content-type"].startswith("text/plain")
        assert metric(client, "mlops_serving_requests_total", endpoint="/predict", status="200") == 8
        assert metric(client, "mlops_serving_requests_total", endpoint="/predict", status="422") == 1
        assert metric(client, "mlops_serving_rows_scored_total") == 17
        assert metric(client, "mlops_serving_request_duration_seconds_count", endpoint="/predict") == 9
        assert metric(client, "mlops_serving_request_duration_seconds_bucket", endpoint="/predict", le="+Inf") == 9
        assert metric(client, "mlops_serving_model_info", version=models.versions[0], pipeline="demo") == 1
        assert metric(client, "mlops_serving_model_swaps_total") == 1


def test_a_champion_that_fails_to_load_is_not_served(models, rows):
    """The alias moves to a corrupt bundle: the old version keeps serving, the error is counted,
    and the next good champion is picked up."""
    good, other, corrupt = models.versions
    with serving(models, champion=good) as client:
        wait_until(lambda: ready_version(client) == good, "the first version")
        models.set_champion(corrupt)
        wait_until(lambda: metric(client, "mlops_serving_model_errors_total", stage="load") >= 2,
                   "two failed loads (a retry)")
        assert client.post("/predict", json=rows[0]).json()["model_version"] == good
        ready = client.get("/readyz").json()
        assert ready["model_version"] == good and ready["champion"] == corrupt
        assert "could not be loaded" in client.app.state.watcher.last_error
        models.set_champion(other)
        wait_until(lambda: ready_version(client) == other, "the next good champion")
        assert client.post("/predict", json=rows[0]).json()["model_version"] == other
        assert metric(client, "mlops_serving_model_info", version=other) == 1


def test_request_log_writes_sampled_parquet_partitions(models, rows, tmp_path):
    """Sampled by id hash, flushed by size and on shutdown; the files carry the raw columns."""
    spec = models.spec
    config = RequestLogConfig(tmp_path / "served", sample_rate=0.5, flush_rows=8, flush_seconds=3600)
    with serving(models, champion=models.versions[0], request_log=config) as client:
        wait_until(lambda: ready_version(client) is not None, "a model")
        for row in rows[:30]:
            client.post("/predict", json=row)
        client.post("/predict", json={"rows": [{k: v for k, v in rows[30].items() if k != "loan_id"}] * 4})
        client.post("/predict", json={**rows[31], "applied_at": "2026-02-03T04:05:06Z", "gender": "female"})
        wait_until(lambda: len(list(config.directory.rglob("*.parquet"))) >= 1, "a size-triggered flush")
    files = sorted(config.directory.glob("date=*/*.parquet"))
    assert files and not list(config.directory.rglob(".*"))          # no temporary files left
    logged = pl.concat([pl.read_parquet(f) for f in files])
    assert logged.columns == [spec.id_column, spec.timestamp_column, spec.group_column, *spec.feature_names,
                              "model_version", "score", "prediction", "received_at"]
    with_ids = [r["loan_id"] for r in rows[:30] + rows[31:32] if sampled(r["loan_id"], 0.5)]
    assert 0 < len(with_ids) < 31
    assert sorted(logged[spec.id_column].drop_nulls().to_list()) == sorted(with_ids)
    assert logged.schema["income"] == pl.Float64 and logged.schema["purpose"] == pl.String
    assert logged.schema["received_at"] == pl.Datetime("us", "UTC")
    assert set(logged["model_version"]) == {models.versions[0]}
    day = logged["received_at"].dt.date().to_list()
    assert {f.parent.name for f in files} == {f"date={d.isoformat()}" for d in day}
    if rows[31]["loan_id"] in with_ids:
        given = logged.filter(pl.col("loan_id") == rows[31]["loan_id"])
        assert given["gender"].to_list() == ["female"]
        assert given["applied_at"].dt.hour().to_list() == [4]
    # The logged features score to the logged scores (each was served as one row): the file
    # is a faithful record.
    bundle = models.registry.load_bundle(spec.name, models.versions[0])
    identified = logged.filter(pl.col("loan_id").is_not_null())
    rescored = [bundle.score_frame(identified[i : i + 1])["score"][0] for i in range(identified.height)]
    assert rescored == identified["score"].to_list()
    # The pipeline's own validation takes it as raw data: columns, types, keys and values pass;
    # only the batch-size rules (row count, null share of 16 rows) can object to a file this small.
    from mlops_assets.core.validation import validate_batch

    report = validate_batch(identified, spec)
    assert {v.check for v in report.violations} <= {"row_count", "nulls"}, report.message()
    assert report.for_check("row_count")


def test_request_log_config_names_the_bad_field(tmp_path):
    with pytest.raises(ValueError, match="sample_rate"):
        RequestLogConfig(tmp_path, sample_rate=1.5)
    with pytest.raises(ValueError, match="max_buffer_rows"):
        RequestLogConfig(tmp_path, flush_rows=100, max_buffer_rows=10)
