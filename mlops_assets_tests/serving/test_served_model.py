"""The fast request path against the batch path, for every task, and the checks that keep a
bundle that does not fit the spec from being served."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.bundle import ModelBundle
from mlops_assets.serving.request_schema import RequestSchema
from mlops_assets.serving.served_model import ModelNotServable, ServedModel
from mlops_assets_tests.serving.serving_models import random_valid_rows, served_spec, train_bundle


@pytest.fixture(scope="module", params=["binary", "multiclass", "regression"])
def trained(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"served-{request.param}")
    spec = served_spec(root, task=request.param, num_boost_round=25)
    return spec, ModelBundle.load(train_bundle(spec, 3, root / "bundle"))


def batch_frame(spec, rows: list[dict]) -> pl.DataFrame:
    return pl.from_dicts([{f: r[f] for f in spec.feature_names} for r in rows], infer_schema_length=None)


def test_encoding_is_the_bundle_encoders_matrix(trained):
    spec, bundle = trained
    rows = random_valid_rows(spec, 400, seed=8)
    model = ServedModel.prepare("1", bundle, spec)
    parsed = RequestSchema(spec).parse({"rows": rows[:400]})
    expected = bundle.encoder.transform(batch_frame(spec, rows))
    assert np.isnan(expected).any()                      # nulls and unseen categories are in there
    assert np.array_equal(model.encode(parsed.values), expected, equal_nan=True)


def test_scores_are_score_frames_bit_for_bit(trained):
    """Same rows, same call size: identical values after a JSON round trip, for every task."""
    spec, bundle = trained
    model = ServedModel.prepare("1", bundle, spec)
    schema = RequestSchema(spec)
    rows = random_valid_rows(spec, 150, seed=9)
    for chunk in (rows, rows[:1], rows[1:2], rows[2:9]):
        parsed = schema.parse({"rows": chunk})
        served = json.loads(json.dumps(model.response_rows(parsed, model.score(parsed.values), spec.id_column)))
        expected = bundle.score_frame(batch_frame(spec, chunk))
        assert [row.pop(spec.id_column) for row in served] == [r[spec.id_column] for r in chunk]
        assert served == expected.to_dicts()
    if spec.task == "multiclass":
        assert set(served[0]) == {"prediction", "proba_A", "proba_B", "proba_C", "proba_D"}


def test_bundles_that_do_not_fit_the_spec_are_refused(tmp_path):
    spec = served_spec(tmp_path / "a", num_boost_round=10)
    bundle = ModelBundle.load(train_bundle(spec, 3, tmp_path / "bundle"))
    fewer = spec.model_copy(update={"features": [f for f in spec.features if f.name != "income"]})
    with pytest.raises(ModelNotServable, match="needs feature 'income'"):
        ServedModel.prepare("7", bundle, fewer)
    regression = served_spec(tmp_path / "b", task="regression")
    with pytest.raises(ModelNotServable, match="binary model but the spec's task is regression"):
        ServedModel.prepare("7", bundle, regression)
    flipped = spec.model_copy(update={"features": [
        f.model_copy(update={"type": "categorical", "min": None, "max": None}) if f.name == "age" else f
        for f in spec.features]})
    with pytest.raises(ModelNotServable, match="'age' is numeric in the bundle but categorical"):
        ServedModel.prepare("7", bundle, flipped)
    broken = ModelBundle(b"not onnx", bundle.encoder, dict(bundle.meta))
    with pytest.raises(ModelNotServable, match="demo v7: smoke test"):
        ServedModel.prepare("7", broken, spec)
