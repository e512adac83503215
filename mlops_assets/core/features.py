"""Feature transforms: canonical columns, a deterministic split, and the model encoder.

Categoricals are encoded as ordinal codes over a fixed vocabulary rather than as
LightGBM categorical splits: trees split on them just as well at these cardinalities,
and numeric-only trees export to ONNX exactly (no bitset splits to translate).

Categorical values and class labels are compared as text in one canonical form
(`canonical_strings`): a numeric code is the same category whether a file holds it as
3, 3.0 or "3". Validation, `prepare_features` and `FeatureEncoder` all use it, so the
trained model and the scorer (which encodes raw frames) see the same codes.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from mlops_assets.spec import PipelineSpec

SPLIT_COLUMN = "_split"
SPLITS = ("train", "valid", "holdout")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _MASK64


def stable_unit_hash(ids: pl.Series, seed: int) -> np.ndarray:
    """Map ids to [0, 1) identically on every machine and library version.

    polars' own hash is documented as unstable across versions, so it cannot decide
    which rows are holdout forever. Integer ids are hashed by their low 64 bits: a UInt64 id
    beyond the Int64 range, or an Int128 one (a CSV of 20-digit ids), wraps instead of failing.
    """
    if ids.dtype.is_integer():
        raw = ids.cast(pl.Int64, wrap_numerical=True).to_numpy().astype(np.uint64)
        h = _splitmix64(raw ^ _splitmix64(np.full(raw.shape, seed, dtype=np.uint64)))
    else:
        salt = str(seed).encode()
        h = np.fromiter(
            (int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8, key=salt).digest(), "little")
             for v in ids.to_list()),
            dtype=np.uint64, count=ids.len(),
        )
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def assign_split(ids: pl.Series, spec: PipelineSpec) -> pl.Series:
    u = stable_unit_hash(ids, spec.split.seed)
    hold, valid = spec.split.holdout_fraction, spec.split.validation_fraction
    # Codes into the labels (holdout, valid, train): a gather, not a numpy array of strings to convert.
    code = np.where(u < hold, 0, np.where(u < hold + valid, 1, 2))
    return pl.Series(SPLIT_COLUMN, ["holdout", "valid", "train"], dtype=pl.String).gather(code)


def canonical_strings(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Values as the text categories and classes are matched by: 3, 3.0 and "3" are all "3".

    Text, integers and booleans are cast exactly as before (so encodings of string
    categories never change); a float that is a whole number loses its ".0", NaN is missing.
    """
    if not (dtype.is_float() or dtype.is_decimal()):
        return expr.cast(pl.String)
    x = expr.cast(pl.Float64)
    whole = x.is_finite() & (x == x.floor()) & (x.abs() < 2.0**63)
    # The first branch names the result: the column's own name, not "literal".
    return (
        pl.when(whole).then(x.cast(pl.Int64).cast(pl.String))
        .when(x.is_nan()).then(None)
        .otherwise(x.cast(pl.String))
    )


def canonical_value(value) -> str | None:
    """One JSON/Python value as a category: "3", 3 and 3.0 are all "3"; None if it is no category
    (a boolean, a fractional or non-finite number, a container)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2.0**63:
        return str(int(value))
    return None


def canonical_series(series: pl.Series) -> pl.Series:
    return series.to_frame().select(canonical_strings(pl.col(series.name), series.dtype)).to_series()


def parse_timestamps(series: pl.Series) -> pl.Series:
    """A timestamp column as UTC datetimes, whatever the file held: text is parsed (unparseable
    text becomes null; validation reports it), a datetime in another zone is converted, one
    without a zone is taken as UTC (as text without an offset is), a date is its midnight UTC.
    One type for every partition, so they concatenate for training."""
    dtype = series.dtype
    if dtype == pl.String:
        return _parse_text_timestamps(series)
    if dtype in (pl.Date, pl.Null):
        return series.cast(pl.Datetime("us", "UTC"))
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return series.dt.replace_time_zone("UTC")
    if isinstance(dtype, pl.Datetime) and dtype.time_zone != "UTC":
        return series.dt.convert_time_zone("UTC")
    return series


def _parse_text_timestamps(series: pl.Series) -> pl.Series:
    """polars reads a text column in one format, inferred from its first values, and raises when
    they show none: the format is then that of the first value that parses, and the values
    before it are unparseable (reported by validation, not a polars error)."""
    with contextlib.suppress(pl.exceptions.ComputeError):
        series.drop_nulls().head(1_000).str.to_datetime(time_zone="UTC", strict=False)   # fails fast
        return series.str.to_datetime(time_zone="UTC", strict=False)
    for value in series.drop_nulls().head(10_000).unique(maintain_order=True).head(50):
        with contextlib.suppress(pl.exceptions.ComputeError):
            if pl.Series([value]).str.to_datetime(time_zone="UTC", strict=False).is_null().any():
                continue
            led = pl.concat([pl.Series(series.name, [value]), series])
            return led.str.to_datetime(time_zone="UTC", strict=False).slice(1)
    return pl.Series(series.name, [None] * series.len(), dtype=pl.Datetime("us", "UTC"))


def unparseable_timestamps(series: pl.Series) -> pl.Series:
    """The text values `parse_timestamps` cannot read (empty when none or not text)."""
    if series.dtype != pl.String:
        return series.head(0)
    return series.filter(parse_timestamps(series).is_null() & series.is_not_null())


def canonical_ids(ids: pl.Series) -> pl.Series:
    """Integer ids as Int64 whatever their width (UInt64 and Int64 partitions would concatenate
    as floats, which lose ids beyond 2**53); integers beyond Int64 (a CSV of 20-digit ids reads
    as Int128, which Arrow cannot hold) as their text. Text ids are kept as they are."""
    if not ids.dtype.is_integer() or ids.dtype == pl.Int64:
        return ids
    fits = ids.cast(pl.Int64, strict=False)
    return fits if fits.null_count() == ids.null_count() else ids.cast(pl.String)


def prepare_features(df: pl.DataFrame, spec: PipelineSpec) -> pl.DataFrame:
    """Canonical column order and types, plus the split column. Input must be validated."""
    schema = df.schema
    cols: list[pl.Expr | pl.Series] = [canonical_ids(df[spec.id_column])]
    if spec.timestamp_column:
        ts = df[spec.timestamp_column]
        bad = unparseable_timestamps(ts)
        if bad.len():   # validate_batch reports this as a schema failure; never a raw polars error
            raise ValueError(f"column '{spec.timestamp_column}': unparseable timestamps "
                             f"({bad.len()} rows, e.g. {bad.head(3).to_list()})")
        cols.append(parse_timestamps(ts))
    if spec.group_column and spec.group_column not in spec.feature_names:
        cols.append(canonical_strings(pl.col(spec.group_column), schema[spec.group_column]))
    for feat in spec.features:
        expr = pl.col(feat.name)
        cols.append(expr.cast(pl.Float64) if feat.type == "numeric"
                    else canonical_strings(expr, schema[feat.name]))
    if spec.target in df.columns:
        target = pl.col(spec.target)
        if spec.task == "binary":
            cols.append(target.cast(pl.Int64))
        elif spec.task == "regression":
            cols.append(target.cast(pl.Float64))
        else:
            cols.append(canonical_strings(target, schema[spec.target]))
    out = df.select(cols)
    # NaN and null mean the same thing downstream: missing.
    out = out.with_columns(
        [pl.col(f.name).fill_nan(None) for f in spec.features if f.type == "numeric"]
    )
    return out.with_columns(assign_split(out[spec.id_column], spec))


@dataclass(frozen=True)
class FeatureEncoder:
    """Frame -> float64 matrix in a fixed column order; stored with each model version."""

    feature_names: tuple[str, ...]
    kinds: dict[str, str]
    categories: dict[str, tuple[str, ...]]

    @classmethod
    def fit(cls, df: pl.DataFrame, spec: PipelineSpec) -> FeatureEncoder:
        categories: dict[str, tuple[str, ...]] = {}
        for feat in spec.features:
            if feat.type != "categorical":
                continue
            if feat.categories is not None:
                categories[feat.name] = tuple(feat.categories)
            else:
                categories[feat.name] = tuple(sorted(canonical_series(df[feat.name]).drop_nulls().unique().to_list()))
        return cls(tuple(spec.feature_names), dict(spec.feature_types), categories)

    def transform(self, df: pl.DataFrame) -> np.ndarray:
        missing = [c for c in self.feature_names if c not in df.columns]
        if missing:
            raise ValueError(f"cannot encode: missing feature columns {missing}")
        exprs = []
        schema = df.schema
        for name in self.feature_names:
            if self.kinds[name] == "numeric":
                exprs.append(pl.col(name).cast(pl.Float64).fill_nan(None))
            else:
                mapping = {v: float(i) for i, v in enumerate(self.categories[name])}
                # Unseen categories become missing: the model routes them like nulls. Raw frames
                # (scoring) may hold codes as floats: canonical text matches them by value.
                exprs.append(canonical_strings(pl.col(name), schema[name]).replace_strict(
                    mapping, default=None, return_dtype=pl.Float64))
        return df.select(exprs).to_numpy(order="c").astype(np.float64, copy=False)

    def to_dict(self) -> dict:
        return {
            "feature_names": list(self.feature_names),
            "kinds": self.kinds,
            "categories": {k: list(v) for k, v in self.categories.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> FeatureEncoder:
        return cls(
            tuple(data["feature_names"]),
            dict(data["kinds"]),
            {k: tuple(v) for k, v in data["categories"].items()},
        )


def encode_target(target: pl.Series, spec: PipelineSpec, classes: list | None = None) -> np.ndarray:
    """Labels -> numbers: 0/1 (binary), class index (multiclass), float (regression)."""
    if spec.task == "binary":
        return target.cast(pl.Float64).to_numpy()
    if spec.task == "regression":
        return target.cast(pl.Float64).to_numpy()
    classes = [str(c) for c in (classes or spec.classes or [])]
    index = {c: float(i) for i, c in enumerate(classes)}
    return canonical_series(target).replace_strict(index, default=None, return_dtype=pl.Float64).to_numpy()


# Text columns become their hashed bytes inside polars (a cast, then one join per slice of
# rows, the slices evaluated in parallel), in background threads while the numbers and null
# masks are hashed; not as a Python list of strings per column (about 0.1 s per 1M-row text
# column, plus 0.6 s to format a 1M-row datetime column, all on one core).
_HASH_SLICE_ROWS = 1 << 18
_HASH_THREADS = 4
_HASH_PARALLEL_MIN_ROWS = 1 << 16   # smaller frames: the text inline, no threads
_HASH_SEPARATOR = "\x1f"
_HASH_SEPARATOR_BYTES = _HASH_SEPARATOR.encode()
# A long temporal column formats each distinct value once when it repeats this much at least
# (timestamps at second resolution, dates): formatting dominates, the lookup is cheap.
_DISTINCT_MIN_ROWS = 1 << 16
_DISTINCT_MAX_SHARE = 0.25


def data_hash(df: pl.DataFrame) -> str:
    """Content hash of a frame (column names, order, values and nulls).

    Built from plain values rather than polars' row hash, which may change between
    polars releases and would silently change every data_version. The bytes hashed per column
    are fixed forever (mlops_assets_tests/core/test_hash_stability.py pins them): the header
    ``name:dtype:length``, the null mask, then the values: numbers and booleans as their numpy
    bytes with nulls as 0, anything else as its polars text (nulls as "") joined by U+001F.
    """
    digest = hashlib.sha256()
    texts = {name for name, dtype in df.schema.items() if not _hashed_as_numbers(dtype)}
    parallel = bool(texts) and df.height >= _HASH_PARALLEL_MIN_ROWS
    with (ThreadPoolExecutor(max_workers=min(_HASH_THREADS, len(texts)), thread_name_prefix="data-hash")
          if parallel else contextlib.nullcontext()) as pool:
        pending = {name: pool.submit(_text_pieces, df[name]) for name in df.columns if name in texts} if pool else {}
        try:
            for name in df.columns:
                col = df[name]
                digest.update(f"{name}:{col.dtype}:{col.len()}".encode())
                digest.update(_buffer(col.is_null().to_numpy()))
                if name in texts:
                    for i, piece in enumerate(pending[name].result() if pool else _text_pieces(col)):
                        if i:
                            digest.update(_HASH_SEPARATOR_BYTES)
                        digest.update(piece)
                else:
                    digest.update(_buffer(col.fill_null(0).to_numpy()))
        finally:
            for future in pending.values():
                future.cancel()
    return digest.hexdigest()[:16]


def _hashed_as_numbers(dtype: pl.DataType) -> bool:
    # Decimals and 128-bit integers have no fixed-width numpy form (a Decimal column became an
    # array of Python objects, whose bytes are addresses): they are hashed as their text.
    if dtype.is_decimal() or dtype in _WIDE_INTEGERS:
        return False
    return dtype.is_numeric() or dtype == pl.Boolean


_WIDE_INTEGERS = tuple(t for t in (getattr(pl, "Int128", None), getattr(pl, "UInt128", None)) if t is not None)


def _castable_to_text(col: pl.Series) -> pl.Series:
    """`col` itself when polars can cast it to text (every type of a validated frame, so those
    bytes never change); else each value's Python repr: lists, arrays, durations and binary
    that is not UTF-8 arrive in raw files, and a raw file must hash, not crash."""
    dtype = col.dtype
    if not isinstance(dtype, (pl.List, pl.Array, pl.Duration, pl.Object, pl.Binary)):
        return col
    if dtype == pl.Binary:
        with contextlib.suppress(pl.exceptions.PolarsError):
            col.cast(pl.String)
            return col
    return pl.Series(col.name, [None if v is None else repr(v) for v in col.to_list()], dtype=pl.String)


def _buffer(values: np.ndarray):
    """The array's bytes for hashing, as ``values.tobytes()`` has them, without the copy."""
    return values.tobytes() if values.dtype.hasobject else np.ascontiguousarray(values)


def _text_pieces(col: pl.Series) -> list[bytes]:
    """The column's values as text, nulls as "", joined by the separator, as UTF-8 in consecutive
    pieces: ``b"\x1f".join(pieces)`` is byte for byte
    ``"\x1f".join(col.cast(pl.String).fill_null("").to_list()).encode()`` (no piece for no rows)."""
    col = _castable_to_text(col)
    fixed = _fixed_width_text(col)
    if fixed is not None:
        return [fixed]
    formatted = _distinct_formatted(col)
    frame = (col if formatted is None else formatted).to_frame("v")
    # As Binary, each piece reaches Python as its UTF-8 bytes: no decoding and re-encoding.
    exprs = [pl.col("v").slice(start, _HASH_SLICE_ROWS).cast(pl.String).fill_null("")
             .str.join(_HASH_SEPARATOR).cast(pl.Binary).alias(str(i))
             for i, start in enumerate(range(0, frame.height, _HASH_SLICE_ROWS))]
    return list(frame.select(exprs).row(0)) if exprs else []


def _fixed_width_text(col: pl.Series) -> np.ndarray | None:
    """The joined text of a long temporal column with no nulls whose distinct values all format
    to one width (datetimes of one precision and zone, dates), as one numpy gather of each
    distinct value's bytes: the same bytes as the polars join, without a string per row."""
    if not (isinstance(col.dtype, pl.Datetime) or col.dtype in (pl.Date, pl.Time)):
        return None
    if col.len() < _DISTINCT_MIN_ROWS or col.null_count() or col.n_unique() > _DISTINCT_MAX_SHARE * col.len():
        return None
    values = col.unique().sort()
    texts = values.cast(pl.String)
    widths = texts.str.len_bytes()
    if widths.min() != widths.max() or not widths.min():
        return None
    table = np.frombuffer(texts.str.join("").cast(pl.Binary).item(), dtype=np.uint8).reshape(values.len(), -1)
    table = np.hstack([table, np.full((values.len(), 1), ord(_HASH_SEPARATOR), dtype=np.uint8)])
    # Every row is one of `values`: search_sorted finds its exact position.
    return table[values.search_sorted(col).to_numpy()].reshape(-1)[:-1]


def _distinct_formatted(col: pl.Series) -> pl.Series | None:
    """``col.cast(pl.String)`` formatting each distinct value once, for a long temporal column
    that repeats its values; None when that would not pay (the caller casts every row)."""
    if not col.dtype.is_temporal() or col.len() < _DISTINCT_MIN_ROWS:
        return None
    if col.n_unique() > _DISTINCT_MAX_SHARE * col.len():
        return None
    values = col.drop_nulls().unique().sort()
    if values.len() == 0:
        return None
    # Every non-null row is one of `values`: search_sorted finds its exact position.
    position = values.search_sorted(col.fill_null(values[0]))
    rows = pl.DataFrame({"present": col.is_not_null(), "text": values.cast(pl.String).gather(position)})
    return rows.select(pl.when("present").then("text").alias(col.name)).to_series()
