"""BatchEncoder gives FeatureEncoder.transform's matrix for Arrow batches, dictionaries included."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_assets.core.arrow_features import BatchEncoder
from mlops_assets.core.features import FeatureEncoder

ENCODER = FeatureEncoder(
    ("x", "n", "flag", "small", "color", "plain", "code", "big"),
    {"x": "numeric", "n": "numeric", "flag": "numeric", "small": "numeric",
     "color": "categorical", "plain": "categorical", "code": "categorical", "big": "categorical"},
    {"color": ("red", "green", "blue"), "plain": ("a", "b"), "code": ("1", "2", "3"), "big": ("u", "v")},
)


def _batch(colors: list, seed: int = 0) -> pa.RecordBatch:
    n = len(colors)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[::7] = np.nan
    return pa.RecordBatch.from_pydict({
        "x": pa.array(x, mask=np.arange(n) % 5 == 0),                     # NaN and null
        "n": pa.array([None if i % 4 == 0 else i for i in range(n)], type=pa.int64()),
        "flag": pa.array([i % 3 == 0 for i in range(n)]),
        "small": pa.array(rng.normal(size=n).astype(np.float32)),
        "color": pa.array(colors).dictionary_encode(),                    # null and unseen
        "plain": pa.array(["a", "b", None, "zz"] * (n // 4) + ["a"] * (n % 4)),
        "code": pa.array([1.0, 2.0, 3.5, None, float("nan")] * (n // 5) + [3.0] * (n % 5)),
        "big": pa.array(["u", "v", "w", None] * (n // 4) + ["v"] * (n % 4), type=pa.large_string()).dictionary_encode(),
    })


def _expected(batch: pa.RecordBatch) -> np.ndarray:
    return ENCODER.transform(pl.from_arrow(batch))


def test_every_kind_of_column_encodes_as_the_encoder_does():
    batch = _batch(["red", "blue", None, "purple", "green", "red"] * 50 + ["blue"] * 3)
    encoder = BatchEncoder(ENCODER, batch.schema)
    assert set(encoder.dictionary) == {"color", "big"} and set(encoder.doubles) == {"x"}
    ours = encoder.transform(batch)
    assert ours.dtype == np.float64 and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, _expected(batch))
    frame = pl.from_arrow(batch.select(["n", "flag", "small", "plain", "code"]))
    np.testing.assert_array_equal(encoder.transform(batch, frame), _expected(batch))


def test_batches_with_other_dictionaries_are_not_mixed_up():
    first = _batch(["red", "green"] * 10)
    second = _batch(["green", "blue", None, "red"] * 5, seed=1)   # other values, other indices
    encoder = BatchEncoder(ENCODER, first.schema)
    for batch in (first, second, first, _batch([None] * 20), _batch([])):
        np.testing.assert_array_equal(encoder.transform(batch), _expected(batch))


def test_a_file_read_with_dictionaries_encodes_as_read_without(tmp_path):
    table = pa.Table.from_batches([_batch(["red", "blue", None, "green"] * 300, seed=s) for s in range(3)])
    path = tmp_path / "f.parquet"
    pq.write_table(table.cast(table.schema.set(4, pa.field("color", pa.string()))), path, row_group_size=500)
    plain = np.vstack([ENCODER.transform(pl.from_arrow(b))
                       for b in pq.ParquetFile(path).iter_batches(batch_size=256)])
    read = pq.ParquetFile(path, read_dictionary=["color", "plain"])
    encoder = BatchEncoder(ENCODER, read.schema_arrow)
    assert {"color", "plain"} <= set(encoder.dictionary)
    ours = np.vstack([encoder.transform(b) for b in read.iter_batches(batch_size=256)])
    np.testing.assert_array_equal(ours, plain)
