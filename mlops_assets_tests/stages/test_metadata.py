"""The pure metadata helpers: native tables, embedded plots, column schemas and descriptions,
MLflow links, and the lineage tags training records."""

import base64
import io
import math
import subprocess
from types import SimpleNamespace

import dagster as dg
import numpy as np
import polars as pl
import pytest

from mlops_assets.core.plots import EMBED_MAX_BYTES, compact_png, learning_curve_plot
from mlops_assets.lineage import code_location_dir, git_sha, lineage_tags
from mlops_assets.stages.metadata import (
    column_descriptions,
    image_md,
    metrics_table,
    mlflow_artifact_url,
    model_training_view,
    table,
    table_schema,
)
from mlops_assets.version import __version__


def _serialized(value) -> int:
    return len(dg.serialize_value(value))


def test_a_wide_frame_keeps_its_column_schema_a_few_kb():
    wide = pl.DataFrame({f"feature_{i:05d}": [1.0] for i in range(10_000)})
    schema = table_schema(wide, {n: "numeric feature; no nulls" for n in wide.columns})
    assert _serialized(dg.MetadataValue.table_schema(schema)) < 16_000
    *listed, marker = schema.columns
    assert marker.type == "omitted" and f"{10_000 - len(listed):,} of 10,000 columns" in marker.description
    assert [c.name for c in listed] == wide.columns[:len(listed)] and listed[0].description

    narrow = pl.DataFrame({"a": [1], "b": ["x"]})
    assert [(c.name, c.type, c.description) for c in table_schema(narrow, {"a": "rule"}).columns] == [
        ("a", "Int64", "rule"), ("b", "String", None)]


def test_column_descriptions_come_from_the_spec_rules(spec):
    described = column_descriptions(spec)
    for f in spec.features:
        text = described[f.name]
        assert text.startswith(f"{f.type} feature")
        if f.min is not None:
            assert f"{f.min:g}" in text
        if f.categories:
            assert "one of " + str(f.categories[0]) in text
        assert ("no nulls" in text) == (f.max_null_fraction == 0)
    assert described[spec.target].startswith("target: label 0/1")
    assert "unique" in described[spec.id_column]
    assert "holdout" in described["_split"]


def test_tables_are_typed_and_carry_plain_values():
    value = table([{"name": "a", "n": 3, "score": 0.123456789, "ok": True, "extra": {"k": 1}},
                   {"name": "b", "n": np.int64(4), "score": math.nan, "ok": False, "extra": None},
                   {"name": "c", "n": 5, "score": math.inf, "ok": None, "extra": [1]}])
    assert isinstance(value, dg.TableMetadataValue)
    types = {c.name: c.type for c in value.schema.columns}
    assert types == {"name": "string", "n": "int", "score": "float", "ok": "bool", "extra": "string"}
    rows = [r.data for r in value.records]
    assert rows[0]["score"] == 0.123457 and rows[1]["score"] is None and rows[2]["score"] is None
    assert rows[1]["n"] == 4 and rows[0]["extra"] == '{"k": 1}'
    assert _serialized(value) > 0      # survives the event log's serializer

    metrics = metrics_table({"roc_auc": 0.8, "log_loss": 0.4}, {"roc_auc": 0.75})
    first, second = (r.data for r in metrics.records)
    assert first == {"metric": "roc_auc", "challenger": 0.8, "champion": 0.75, "delta": 0.05}
    assert second["champion"] is None and second["delta"] is None
    assert [c.name for c in metrics_table({"a": 1.0}).schema.columns] == ["metric", "challenger"]


def _plot(path, size=(5, 4), dpi=100, noise=False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    x = np.linspace(0, 1, 200)
    ax.plot(x, x ** 0.3, label="challenger")
    if noise:
        ax.imshow(np.random.default_rng(0).random((300, 300, 3)), extent=(0, 1, 0, 1), aspect="auto")
    ax.legend()
    fig.savefig(path)
    plt.close(fig)
    return path


def test_plots_are_embedded_small_enough_for_the_event_log(tmp_path):
    from PIL import Image

    md = image_md(_plot(tmp_path / "roc.png"), "ROC curve", uri="s3://bucket/roc.png")
    text = md.value
    assert text.startswith("**ROC curve**\n\n![ROC curve](data:image/png;base64,")
    assert text.endswith("Full size: `s3://bucket/roc.png`")
    data = base64.b64decode(text.split("base64,")[1].split(")")[0])
    assert Image.open(io.BytesIO(data)).format == "PNG" and len(data) < 25_000

    # A busy, large image is scaled down until it fits the budget.
    big = _plot(tmp_path / "big.png", size=(12, 9), dpi=100, noise=True)
    assert big.stat().st_size > EMBED_MAX_BYTES
    small = compact_png(big)
    assert len(small) <= EMBED_MAX_BYTES
    assert Image.open(io.BytesIO(small)).width < Image.open(big).width


def test_learning_curve_plot(tmp_path):
    assert learning_curve_plot({}, tmp_path / "none.png") is None
    assert learning_curve_plot({"auc": [math.nan]}, tmp_path / "nan.png") is None
    path = learning_curve_plot({"binary_logloss": [0.6, 0.5, 0.45], "auc": [0.7, 0.75, 0.76]},
                               tmp_path / "curve.png", best_iteration=3)
    assert path.exists() and path.stat().st_size > 1_000


def test_mlflow_links_open_the_model_training_view():
    run = "http://mlflow:5000/#/experiments/3/runs/abc"
    assert model_training_view(run) == run + "?workflowType=machine_learning"
    assert model_training_view(run + "?x=1") == run + "?x=1&workflowType=machine_learning"
    assert mlflow_artifact_url(model_training_view(run), "drift/p/evidently.html") == (
        run + "/artifacts/drift/p/evidently.html?workflowType=machine_learning")


# -- lineage -----------------------------------------------------------------------------------
def _run_from(python_file=None, module_name=None, working_directory=None, pointer=False):
    """A run as Dagster records it: the run worker's code pointer (CLI and launched runs), or
    only the launching code location's loadable target."""
    if pointer:
        code = SimpleNamespace(python_file=python_file, module=module_name, working_directory=working_directory)
        return SimpleNamespace(job_code_origin=SimpleNamespace(repository_origin=SimpleNamespace(code_pointer=code)),
                               remote_job_origin=None)
    target = SimpleNamespace(python_file=python_file, module_name=module_name, package_name=None,
                             working_directory=working_directory)
    location = SimpleNamespace(loadable_target_origin=target)
    return SimpleNamespace(job_code_origin=None, remote_job_origin=SimpleNamespace(
        repository_origin=SimpleNamespace(code_location_origin=location)))


@pytest.fixture
def user_repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_GIT_SHA", raising=False)
    repo = tmp_path / "user_project"
    repo.mkdir()
    (repo / "defs.py").write_text("x = 1\n")

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", "defs.py")
    git("commit", "-q", "-m", "first")
    return repo, git("rev-parse", "HEAD"), git


def test_git_sha_is_the_users_code_location_commit(user_repo):
    repo, head, _git = user_repo
    run = _run_from(python_file="defs.py", working_directory=str(repo))
    assert code_location_dir(run) == str(repo.resolve())
    assert lineage_tags(run) == {"mlops_assets_version": __version__, "git_sha": head}
    launched = _run_from(python_file="defs.py", working_directory=str(repo), pointer=True)
    assert lineage_tags(launched)["git_sha"] == head
    module = _run_from(module_name="mlops_assets_tests.stages.test_metadata", pointer=True)
    assert code_location_dir(module).endswith("mlops_assets_tests/stages")
    (repo / "defs.py").write_text("x = 2\n")
    assert lineage_tags(run)["git_dirty"] == "true"


def test_git_sha_is_absent_rather_than_wrong(monkeypatch, tmp_path):
    monkeypatch.delenv("MLOPS_GIT_SHA", raising=False)
    in_process = SimpleNamespace(job_code_origin=None, remote_job_origin=None)
    assert code_location_dir(in_process) is None
    assert lineage_tags(in_process) == {"mlops_assets_version": __version__}    # not this library's checkout
    outside_git = _run_from(working_directory=str(tmp_path))
    assert "git_sha" not in lineage_tags(outside_git)
    monkeypatch.setenv("MLOPS_GIT_SHA", "abc123")
    assert git_sha(None) == "abc123" and lineage_tags(in_process)["git_sha"] == "abc123"
