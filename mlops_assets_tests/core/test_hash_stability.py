"""`data_hash` values are identities: recorded as data versions in metadata and in training-set
identities, so the same data must hash to the same value forever.

Two guards. The pinned values below were recorded with the original implementation (a Python
list of strings per text column); any change of the hashed bytes breaks them. And
`reference_data_hash` is that original implementation, kept here as the definition: the
current one must agree with it on every frame, across dtypes, nulls, NaN, empty frames and
columns long enough to take the fast paths (several hash slices, temporal columns formatted
once per distinct value).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib

import numpy as np
import polars as pl
import pytest

from mlops_assets.core import features
from mlops_assets.core.features import data_hash


def reference_data_hash(df: pl.DataFrame) -> str:
    """The definition of `data_hash` (the original code, unchanged)."""
    digest = hashlib.sha256()
    for name in df.columns:
        col = df[name]
        digest.update(f"{name}:{col.dtype}:{col.len()}".encode())
        digest.update(col.is_null().to_numpy().tobytes())
        if col.dtype.is_numeric() or col.dtype == pl.Boolean:
            digest.update(col.fill_null(0).to_numpy().tobytes())
        else:
            digest.update("\x1f".join(col.cast(pl.String).fill_null("").to_list()).encode())
    return digest.hexdigest()[:16]


LONG_ROWS = 300_000   # > 1 hash slice and > the distinct-formatting threshold


def hash_frames() -> dict[str, pl.DataFrame]:
    """Every dtype family `data_hash` sees, with nulls, NaN, empty frames and long columns."""
    rng = np.random.default_rng(20261202)
    n = LONG_ROWS
    start = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    ts = pl.Series(np.sort(rng.integers(0, 3_600, n)) * 1_000_000).cast(pl.Duration("us")) + start
    words = pl.Series(["alpha", "beta", "gamma", "δέλτα", "a\x1fb", "", "日本"], dtype=pl.String)
    return {
        "scalars": pl.DataFrame({
            "i": [1, None, 3], "f": [1.5, float("nan"), None], "b": [True, None, False],
            "s": ["x", None, "a\x1fb"], "u8": pl.Series([1, 2, None], dtype=pl.UInt8),
            "f32": pl.Series([0.1, None, -0.0], dtype=pl.Float32),
        }),
        "temporal": pl.DataFrame({
            "d": [dt.date(2026, 1, 1), None, dt.date(1969, 12, 31)],
            "t": [dt.time(1, 2, 3), None, dt.time(23, 59, 59, 999999)],
            "ns": pl.Series([dt.datetime(2026, 1, 1, 12), None, dt.datetime(1900, 1, 1)], dtype=pl.Datetime("ns")),
            "ms_tz": pl.Series([dt.datetime(2026, 3, 29, 1, 30), None, dt.datetime(2026, 10, 25, 2, 30)],
                               dtype=pl.Datetime("ms")).dt.replace_time_zone("UTC")
                     .dt.convert_time_zone("Europe/Berlin"),
        }),
        "categorical": pl.DataFrame({
            "c": pl.Series(["b", None, "a", "b"], dtype=pl.Categorical),
            "e": pl.Series(["lo", "hi", None, "lo"], dtype=pl.Enum(["lo", "hi"])),
            "null": pl.Series([None, None, None, None], dtype=pl.Null),
            "bin": pl.Series([b"x", None, b"", b"yz"]),
            "st": pl.Series([{"a": 1}, {"a": 2}, None, {"a": 4}]),
        }),
        "empty": pl.DataFrame({"i": pl.Series([], dtype=pl.Int64), "s": pl.Series([], dtype=pl.String),
                               "ts": pl.Series([], dtype=pl.Datetime("us", "UTC"))}),
        "no_columns": pl.DataFrame(),
        "all_null_text": pl.DataFrame({"s": pl.Series([None] * 5, dtype=pl.String),
                                       "ts": pl.Series([None] * 5, dtype=pl.Datetime("us"))}),
        "long": pl.DataFrame({
            "id": np.arange(n, dtype=np.int64),
            "ts_repeating": ts,
            "ts_distinct": pl.Series(rng.integers(0, 10**12, n)).cast(pl.Datetime("us")),
            "ts_with_nulls": ts.clone().scatter(np.arange(0, n, 97), None),
            "word": words.gather(rng.integers(0, len(words), n)),
            "word_nulls": words.gather(rng.integers(0, len(words), n)).scatter(np.arange(5, n, 13), None),
            "cat": words.gather(rng.integers(0, 3, n)).cast(pl.Categorical),
            "x": rng.normal(size=n),
            "date": pl.Series(rng.integers(0, 40, n)).cast(pl.Date),
        }),
    }


# Recorded with the original implementation; they must never change.
PINNED = {
    "scalars": "3c3ce924eb528969",
    "temporal": "2a1c88d378f9036b",
    "categorical": "39e962cce006d6c4",
    "empty": "0e16e0a721cd6d8a",
    "no_columns": "e3b0c44298fc1c14",
    "all_null_text": "077bd1e38d552c8f",
    "long": "1194cd62dfe793e3",
}


@pytest.fixture(scope="module")
def frames() -> dict[str, pl.DataFrame]:
    return hash_frames()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_values_never_change(frames, name):
    assert data_hash(frames[name]) == PINNED[name]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_agrees_with_the_definition(frames, name):
    assert data_hash(frames[name]) == reference_data_hash(frames[name])


def test_demo_loans_and_their_features_keep_their_versions():
    """The demo's raw arrival and validated features: the data versions users have recorded."""
    from mlops_assets.core.features import prepare_features
    from mlops_assets.demo import demo_spec
    from mlops_assets.demo.data import generate_loans

    raw = pl.from_pandas(generate_loans(6_000, day=dt.date(2026, 1, 1), seed=3))
    assert data_hash(raw) == "835c458a48f3d4c9"
    assert data_hash(prepare_features(raw, demo_spec("/nonexistent"))) == "609c3265ff5a5683"


def test_every_column_alone_and_every_slice_boundary(frames):
    """Each long column on its own, cut at and around the hash-slice and distinct thresholds."""
    long = frames["long"]
    for name in long.columns:
        col = long.select(name)
        assert data_hash(col) == reference_data_hash(col), name
    cuts = (features._HASH_SLICE_ROWS - 1, features._HASH_SLICE_ROWS, features._HASH_SLICE_ROWS + 1,
            features._DISTINCT_MIN_ROWS - 1, features._DISTINCT_MIN_ROWS, 1, 0)
    for rows in cuts:
        part = long.head(rows)
        assert data_hash(part) == reference_data_hash(part), rows


def test_repeating_temporal_columns_with_nulls_take_the_distinct_path(frames):
    """The fast path for repeated timestamps is taken (so the agreement above covers it), and
    matches a plain cast exactly, nulls included."""
    col = frames["long"]["ts_with_nulls"]
    formatted = features._distinct_formatted(col)
    assert formatted is not None
    assert formatted.equals(col.cast(pl.String))
    assert features._distinct_formatted(frames["long"]["ts_distinct"]) is None   # all distinct: plain cast
    all_null = pl.Series("t", [None] * features._DISTINCT_MIN_ROWS, dtype=pl.Datetime("us"))
    assert features._distinct_formatted(all_null) is None


def test_sliced_and_rechunked_frames_hash_alike(frames):
    long = frames["long"]
    parts = pl.concat([long.slice(0, 1000), long.slice(1000)], rechunk=False)
    assert parts.n_chunks() > 1
    assert data_hash(parts) == data_hash(long) == reference_data_hash(parts)
    window = long.slice(12_345, 200_000)
    assert data_hash(window) == reference_data_hash(window)


def test_content_changes_change_the_hash(frames):
    long = frames["long"]
    base = data_hash(long)
    one_word = long.with_columns(long["word"].clone().scatter(LONG_ROWS - 1, "zeta"))
    one_time = long.with_columns(long["ts_repeating"].clone().scatter(7, dt.datetime(2030, 1, 1, tzinfo=dt.UTC)))
    a_null = long.with_columns(long["word"].clone().scatter(3, None))
    for changed in (one_word, one_time, a_null):
        assert data_hash(changed) != base
        assert data_hash(changed) == reference_data_hash(changed)


def test_inline_and_threaded_text_paths_agree(frames, monkeypatch):
    """Small frames format their text inline, large ones in threads: the same bytes either way."""
    long = frames["long"].head(100_000)
    threaded = data_hash(long)
    monkeypatch.setattr(features, "_HASH_PARALLEL_MIN_ROWS", 10**12)
    assert data_hash(long) == threaded == reference_data_hash(long)
    monkeypatch.setattr(features, "_HASH_PARALLEL_MIN_ROWS", 0)
    for name in ("scalars", "temporal", "categorical", "empty", "all_null_text"):
        assert data_hash(frames[name]) == PINNED[name]


def test_a_column_polars_cannot_write_as_text_hashes_as_its_values_repr():
    """Raw files may hold durations, lists or binary that is not UTF-8, which polars cannot cast
    to text (the reference raises): they hash as each value's repr, the same in either path and
    for equal columns; decimals and 128-bit integers hash as their text, not as object pointers."""
    frame = pl.DataFrame({"x": [1, 2], "d": pl.Series([dt.timedelta(seconds=1), None])})
    with pytest.raises(pl.exceptions.PolarsError):
        reference_data_hash(frame)
    assert data_hash(frame) == data_hash(frame.clone()) != data_hash(frame.with_columns(pl.col("d") * 2))
    big = pl.DataFrame({"d": pl.Series([dt.timedelta(seconds=i % 7) for i in range(LONG_ROWS)])})
    assert data_hash(big) == data_hash(big.clone())
    odd = pl.DataFrame({"l": [[1.0], None], "b": pl.Series([b"\xff", b"a"]),
                        "dec": pl.Series([decimal.Decimal("1.50"), None]),
                        "i128": pl.Series([2**100, None], dtype=pl.Int128)})
    assert data_hash(odd) == data_hash(pl.DataFrame({c: odd[c].to_list() for c in ("l", "b")}).with_columns(
        dec=pl.Series([decimal.Decimal("1.50"), None]), i128=pl.Series([2**100, None], dtype=pl.Int128)))
