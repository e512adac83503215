"""The MLflow registry resource on a real sqlite store: versions, tags, trials, the bundle cache."""

from pathlib import Path

import pytest

from mlops_assets.core.features import prepare_features
from mlops_assets.core.training import assemble_training_frame, train_from_frame
from mlops_assets.resources.registry import MLflowRegistry
from mlops_assets.spec import PipelineSpec


def test_search_trials_are_nested_runs_and_version_is_a_candidate(tmp_path, spec, loans_day1):
    data = spec.model_dump(mode="json")
    data["model"]["search"] = {"strategy": "grid", "space": {"num_leaves": {"values": [4, 16]}}}
    
    s = PipelineSpec.from_dict(data)
    out = train_from_frame(assemble_training_frame([prepare_features(loans_day1, s)], s), s)
    bundle_dir = out.bundle.save(tmp_path / "bundle")
    registry = MLflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                              artifact_location=str(tmp_path / "artifacts"))
    trials = [{"index": t.index, "params": t.params, "score": t.score, "seconds": t.seconds,
               "metric": out.search.metric, "best": t is out.search.best} for t in out.search.trials]
    ref = registry.log_candidate(
        "demo", bundle_dir, params=out.model.params, metrics={"train_rows": out.train_rows},
        tags={"dagster_run_id": "r1", "approval": "pending"}, run_name="demo test", trials=trials,
    )
    exp_id, run_id, version = ref.experiment_id, ref.run_id, ref.version
    assert version == "1"
    client = registry.client()
    children = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert len(children) == 2
    assert {c.data.tags["best"] for c in children} == {"true", "false"}
    assert all(f"valid_{out.search.metric}" in c.data.metrics for c in children)
    info = registry.get_version("demo", "1")
    assert info.tags["approval"] == "pending" and info.aliases == []
    assert registry.version_by_alias("demo", "champion") is None
    assert registry.load_bundle("demo", "1").onnx_bytes == out.bundle.onnx_bytes


def _log_model(registry, spec, frame, tmp_path, name="bundle"):
    out = train_from_frame(assemble_training_frame([prepare_features(frame, spec)], spec), spec)
    bundle_dir = out.bundle.save(tmp_path / name / "bundle")
    ref = registry.log_candidate("demo", bundle_dir, params={}, metrics={}, tags={"approval": "pending"},
                                 run_name="demo test")
    return ref, out.bundle


def test_a_recreated_store_at_the_same_path_never_serves_the_old_model(tmp_path):
    """Every `make demo` recreates its store in a new process: version 1 must then be the new
    store's version 1, though the bundle cache (shared across stores) still holds the old one."""
    import shutil
    import subprocess
    import sys

    store, cache = tmp_path / "store", tmp_path / "cache"

    def run(num_leaves: int, seed: int) -> dict:
        store.mkdir()
        out = subprocess.run(
            [sys.executable, "-m", "mlops_assets_tests.resources.store_worker", str(tmp_path / "w"), str(store),
             str(cache), str(num_leaves), str(seed)], check=False, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        line = out.stdout.strip().splitlines()[-1]
        return dict(part.split("=") for part in line.split())

    first = run(31, 1)
    shutil.rmtree(store)
    second = run(7, 2)
    assert first["logged"] != second["logged"]
    assert first["loaded"] == first["logged"] and second["loaded"] == second["logged"]
    assert len(list((cache / "demo").iterdir())) == 2     # both entries kept, keyed apart


def test_the_cache_is_private_and_a_tampered_entry_is_fetched_again(tmp_path, spec, loans_day1):
    import stat

    registry = MLflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                              artifact_location=str(tmp_path / "art"), cache_dir=str(tmp_path / "cache"))
    _, bundle = _log_model(registry, spec, loans_day1, tmp_path)
    cached = registry.bundle_dir("demo", "1")
    assert cached.is_relative_to(tmp_path / "cache")
    for folder in (tmp_path / "cache", cached.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (cached / "model.onnx").write_bytes(b"tampered")
    assert registry.load_bundle("demo", "1").onnx_bytes == bundle.onnx_bytes


def test_a_failing_registry_fails_closed_instead_of_reporting_no_champion(tmp_path, monkeypatch):
    """An HTTP 503 from the tracking server is an error, never "there is no champion"."""
    import http.server
    import threading

    from mlops_assets.resources.registry import RegistryError

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        url = f"http://user:s3cret@127.0.0.1:{server.server_address[1]}"
        registry = MLflowRegistry(tracking_uri=url, attempts=2, retry_delay_s=0.01)
        with pytest.raises(RegistryError, match="get model 'demo' failed after 2 attempts") as err:
            registry.champion("demo")
        assert "s3cret" not in str(err.value)
    finally:
        server.shutdown()


def _tiny_candidate(registry, tmp_path):
    """A version whose bundle is one small file: enough to exercise download and verification."""
    bundle = tmp_path / "tiny" / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "bundle.json").write_text("{}")
    return registry.log_candidate("demo", bundle, params={}, metrics={}, tags={"approval": "pending"},
                                  run_name="tiny")


DELAY = 0.0137


def test_a_bundle_download_is_retried_with_backoff_then_fails_naming_the_download(tmp_path, monkeypatch):
    import mlflow.artifacts

    from mlops_assets.resources.registry import RegistryError

    registry = MLflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "a"),
                              cache_dir=str(tmp_path / "cache"), attempts=3, retry_delay_s=DELAY)
    ref = _tiny_candidate(registry, tmp_path)
    real, calls, waits = mlflow.artifacts.download_artifacts, [], []
    # time.sleep is one function for every library: keep only the registry's own waits
    # (multiples of its odd delay), so a wait elsewhere cannot make this flaky.
    monkeypatch.setattr("time.sleep", lambda s: waits.append(s) if round(s / DELAY, 6).is_integer() else None)

    def flaky(*, artifact_uri, dst_path):
        calls.append(dst_path)
        if len(calls) == 1:       # a torn first attempt: a stray file verification would refuse
            torn = Path(dst_path) / "artifacts" / "bundle"
            torn.mkdir(parents=True)
            (torn / "half-written.bin").write_text("x")
            raise ConnectionError("connection reset by http://u:s3cret@mlflow")
        return real(artifact_uri=artifact_uri, dst_path=dst_path)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", flaky)
    assert (registry.bundle_dir("demo", ref.version) / "bundle.json").read_text() == "{}"
    assert len(calls) == 2 and waits == [DELAY]

    def down(*, artifact_uri, dst_path):
        raise ConnectionError("unreachable")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", down)
    fresh = registry.model_copy(update={"cache_dir": str(tmp_path / "cache2")})
    with pytest.raises(RegistryError, match=r"download demo v1 bundle failed after 3 attempts: ConnectionError"):
        fresh.bundle_dir("demo", ref.version)
    assert waits[1:] == [DELAY, 2 * DELAY]      # bounded: attempts - 1 waits, doubling


def test_a_gate_verdict_clears_an_earlier_abandonment(tmp_path):
    registry = MLflowRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "a"))
    ref = _tiny_candidate(registry, tmp_path)
    abandoned = {"approval": "abandoned", "abandoned_reason": "its Dagster run r1 ended before the gate judged it"}
    registry.set_tags("demo", ref.version, abandoned)
    registry.set_run_tags(ref.run_id, abandoned)
    # A pass awaits its promotion as pending: a promotion intent on an "abandoned" target is undone.
    registry.record_evaluation(ref, tags={"gate_passed": "true"})
    version = registry.get_version("demo", ref.version)
    assert version.tags["approval"] == "pending" and "abandoned_reason" not in version.tags
    run_tags = registry.client().get_run(ref.run_id).data.tags
    assert run_tags["approval"] == "pending" and "abandoned_reason" not in run_tags
    registry.set_tags("demo", ref.version, abandoned)
    registry.record_evaluation(ref, tags={"gate_passed": "false", "approval": "rejected"})
    version = registry.get_version("demo", ref.version)
    assert version.tags["approval"] == "rejected" and "abandoned_reason" not in version.tags
