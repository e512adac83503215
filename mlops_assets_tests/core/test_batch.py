"""Streaming batch scoring: same table as the asset's in-memory path, in bounded chunks."""

import datetime as dt
import math

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from mlops_assets.core.batch import BatchInputError, score_parquet
from mlops_assets.core.bundle import ModelBundle
from mlops_assets.core.features import FeatureEncoder, prepare_features
from mlops_assets.core.predictions import predictions_table
from mlops_assets.core.training import train_from_frame
from mlops_assets.spec import PipelineSpec
from mlops_assets_tests.conftest import small_spec

SCORED_AT = dt.datetime(2026, 3, 1, 6, 30, tzinfo=dt.UTC)
TARGETS = {"binary": "defaulted", "multiclass": "grade", "regression": "loan_amount"}


def _task_spec(root, task: str) -> PipelineSpec:
    data = small_spec(root).model_dump(mode="json")
    target = TARGETS[task]
    data["task"], data["target"] = task, target
    data["features"] = [f for f in data["features"] if f["name"] != target]
    data["drift"]["key_features"] = [k for k in data["drift"]["key_features"] if k != target]
    data["model"]["lightgbm"]["num_boost_round"] = 30
    data["gate"]["min_main_metric"] = 0.0 if task != "regression" else 1e12
    return PipelineSpec.from_dict(data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, loans_day1):
    """One small model per task, with the validated features file it scores."""
    out = {}
    for task in TARGETS:
        root = tmp_path_factory.mktemp(task)
        spec = _task_spec(root, task)
        features = prepare_features(loans_day1, spec)
        bundle = train_from_frame(features, spec).bundle
        path = root / "features.parquet"
        features.write_parquet(path)  # polars: one row group for all 6,000 rows
        out[task] = (spec, bundle, features, path)
    return out


def _asset_table(bundle: ModelBundle, features: pl.DataFrame, id_column: str) -> pl.DataFrame:
    """What batch_predictions writes today: the whole partition scored in memory."""
    return predictions_table(features[id_column], bundle.score_frame(features), "7", SCORED_AT)


def _assert_same_table(ours: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert ours.schema == expected.schema
    assert ours.height == expected.height
    for name in expected.columns:
        if expected.schema[name] == pl.Float64:
            # onnxruntime sums trees in another order on more intra-op threads (~4e-16).
            np.testing.assert_allclose(ours[name].to_numpy(), expected[name].to_numpy(), rtol=0, atol=1e-12)
        else:
            assert ours[name].equals(expected[name]), name


@pytest.mark.parametrize("task", list(TARGETS))
def test_output_is_the_asset_table_for_every_task(trained, tmp_path, task):
    spec, bundle, features, path = trained[task]
    dest = tmp_path / "out" / "predictions.parquet"
    result = score_parquet(bundle, path, dest, id_column=spec.id_column, model_version="7",
                           scored_at=SCORED_AT, chunk_rows=1000, threads=2)
    expected = _asset_table(bundle, features, spec.id_column)
    ours = pl.read_parquet(dest)
    _assert_same_table(ours, expected)
    assert result.rows == features.height == 6000
    assert result.destination == dest
    assert result.column_schema == {name: str(dtype) for name, dtype in expected.schema.items()}
    assert next(iter(result.column_schema)) == spec.id_column
    assert list(result.column_schema)[-2:] == ["model_version", "scored_at"]
    if task == "binary":
        assert result.mean_score == pytest.approx(float(ours["score"].mean()), rel=1e-12)
        assert result.positive_rate == pytest.approx(float(ours["prediction"].mean()), rel=1e-12)
        assert 0.0 < result.mean_score < 1.0
    elif task == "regression":
        assert result.mean_score == pytest.approx(float(ours["prediction"].mean()), rel=1e-12)
        assert result.positive_rate is None
    else:
        counts = ours["prediction"].value_counts()
        assert result.class_counts == dict(sorted(zip(counts["prediction"], counts["count"])))
        assert sum(result.class_counts.values()) == 6000
        assert result.mean_score is None


def test_one_huge_row_group_is_read_in_chunks(trained, tmp_path):
    spec, bundle, _, path = trained["binary"]
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    result = score_parquet(bundle, path, tmp_path / "p.parquet", id_column=spec.id_column,
                           model_version="7", scored_at=SCORED_AT, chunk_rows=777, threads=2)
    assert result.chunks == math.ceil(6000 / 777)
    assert result.chunk_rows == 777 and result.threads == 2
    assert result.rows_per_s > 0


def test_result_does_not_depend_on_chunking_or_threads(trained, tmp_path):
    spec, bundle, _, path = trained["multiclass"]
    tables = []
    for i, (chunk_rows, threads) in enumerate([(6000, 1), (64, 2), (1001, 3)]):
        dest = tmp_path / f"p{i}.parquet"
        score_parquet(bundle, path, dest, id_column=spec.id_column, model_version="7",
                      scored_at=SCORED_AT, chunk_rows=chunk_rows, threads=threads)
        tables.append(pl.read_parquet(dest))
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])  # bit for bit


def test_input_with_many_row_groups_and_string_ids(trained, tmp_path):
    spec, bundle, features, _ = trained["binary"]
    features = features.with_columns(pl.format("loan-{}", spec.id_column).alias(spec.id_column))
    path = tmp_path / "in.parquet"
    features.write_parquet(path, row_group_size=500)
    assert pq.ParquetFile(path).metadata.num_row_groups == 12
    dest = tmp_path / "p.parquet"
    score_parquet(bundle, path, dest, id_column=spec.id_column, model_version="7",
                  scored_at=SCORED_AT, chunk_rows=2048, threads=2)
    _assert_same_table(pl.read_parquet(dest), _asset_table(bundle, features, spec.id_column))


def test_scored_at_is_stored_in_utc(trained, tmp_path):
    spec, bundle, _, path = trained["binary"]
    local = dt.datetime(2026, 3, 1, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    dest = tmp_path / "p.parquet"
    score_parquet(bundle, path, dest, id_column=spec.id_column, model_version="7", scored_at=local)
    stamps = pl.read_parquet(dest)["scored_at"].unique().to_list()
    assert stamps == [SCORED_AT]
    with pytest.raises(ValueError, match="timezone-aware"):
        score_parquet(bundle, path, dest, id_column=spec.id_column, model_version="7",
                      scored_at=dt.datetime(2026, 3, 1))


def test_empty_file_gives_zero_rows_with_the_schema(trained, tmp_path):
    for task in ("binary", "multiclass"):
        spec, bundle, features, _ = trained[task]
        empty = features.head(0)
        path = tmp_path / f"{task}-empty.parquet"
        empty.write_parquet(path)
        dest = tmp_path / f"{task}-out.parquet"
        result = score_parquet(bundle, path, dest, id_column=spec.id_column, model_version="7",
                               scored_at=SCORED_AT)
        ours = pl.read_parquet(dest)
        assert ours.height == 0 and result.rows == 0 and result.chunks == 0
        assert ours.schema == _asset_table(bundle, features.head(5), spec.id_column).schema
        assert result.mean_score is None and result.positive_rate is None


def test_missing_columns_are_named_and_nothing_is_written(trained, tmp_path):
    spec, bundle, features, _ = trained["binary"]
    path = tmp_path / "in.parquet"
    features.drop("income", "region").write_parquet(path)
    dest = tmp_path / "out" / "p.parquet"
    with pytest.raises(BatchInputError, match=r"missing feature columns \['income', 'region'\]"):
        score_parquet(bundle, path, dest, id_column=spec.id_column, model_version="7")
    with pytest.raises(BatchInputError, match="id column 'no_such_id' is missing"):
        score_parquet(bundle, path, dest, id_column="no_such_id", model_version="7")
    assert not dest.parent.exists()


def test_wrong_column_types_are_named(trained, tmp_path):
    spec, bundle, features, _ = trained["binary"]
    path = tmp_path / "in.parquet"
    features.with_columns(pl.col("age").cast(pl.String)).write_parquet(path)
    with pytest.raises(BatchInputError, match="column 'age' is a numeric feature but has type large_string"):
        score_parquet(bundle, path, tmp_path / "p.parquet", id_column=spec.id_column, model_version="7")
    features.with_columns(pl.lit(None).cast(pl.List(pl.String)).alias("region")).write_parquet(path)
    with pytest.raises(BatchInputError, match="column 'region' is a categorical feature"):
        score_parquet(bundle, path, tmp_path / "p.parquet", id_column=spec.id_column, model_version="7")


def test_failure_while_streaming_keeps_the_previous_output(trained, tmp_path):
    """The model rejects the first chunk after the output was opened: the old file stays."""
    spec, bundle, _, path = trained["binary"]
    enc = bundle.encoder
    wider = FeatureEncoder((*enc.feature_names, "gender"), {**enc.kinds, "gender": "categorical"},
                           {**enc.categories, "gender": ("female", "male")})  # 14 columns
    broken = ModelBundle(onnx_bytes=bundle.onnx_bytes, encoder=wider, meta=bundle.meta)
    dest = tmp_path / "p.parquet"
    dest.write_bytes(b"previous predictions")
    with pytest.raises(ValueError, match="model expects 13 feature columns, got 14"):
        score_parquet(broken, path, dest, id_column=spec.id_column, model_version="7", chunk_rows=500, threads=2)
    assert dest.read_bytes() == b"previous predictions"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.parquet"]  # no temp file left


def test_bad_arguments(trained, tmp_path):
    spec, bundle, _, path = trained["binary"]
    kwargs = {"id_column": spec.id_column, "model_version": "7"}
    with pytest.raises(ValueError, match="chunk_rows must be >= 1"):
        score_parquet(bundle, path, tmp_path / "p.parquet", chunk_rows=0, **kwargs)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        score_parquet(bundle, path, tmp_path / "p.parquet", threads=0, **kwargs)
    with pytest.raises(FileNotFoundError, match="no Parquet file to score"):
        score_parquet(bundle, tmp_path / "nope.parquet", tmp_path / "p.parquet", **kwargs)
