"""Building profiles: in-memory frames, lazy frames and Parquet files (streaming).

Reference profiles are built column by column (one column in memory at a time: its edges come
from its own sorted values). Current profiles are built in one pass over row chunks of
``chunk_rows`` rows. For lazy inputs (``profile_parquet``) each chunk is a
``LazyFrame.slice(offset, chunk_rows).collect()``: polars pushes the slice down to the Parquet
reader, so only the row groups of that chunk are decoded, and the next chunk is read in a
background thread while the current one is summarised. Memory therefore stays at about two
chunks whatever the row count. (``LazyFrame.collect_batches`` was measured to run ahead of a
slow consumer and buffer the whole file, 1.35 GB for a 1.2 GB file, so it is not used.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl

from .errors import COLUMN_KINDS, ColumnKind, DriftInputError
from .profile import CategoricalProfile, DatasetProfile, NumericProfile
from .sketch import (
    CategoricalAccumulator,
    NumericAccumulator,
    categorical_reference,
    dtype_family,
    numeric_reference,
)

DEFAULT_CHUNK_ROWS = 250_000
NUMERIC_FAMILIES = {"integer", "float", "null"}


def _pandas_family(dtype: Any) -> str:
    import pandas as pd

    if isinstance(dtype, pd.CategoricalDtype):
        return _pandas_family(dtype.categories.dtype)
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        return "temporal"
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return "string"
    return "other"


def _is_pandas(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and hasattr(obj, "dtypes")


def schema_families(schema: Any) -> dict[str, str]:
    """Column name -> type family, from a polars schema/dict of dtypes or a polars/pandas frame."""
    if isinstance(schema, pl.LazyFrame):
        schema = schema.collect_schema()
    elif isinstance(schema, pl.DataFrame):
        schema = schema.schema
    elif _is_pandas(schema):
        return {str(c): _pandas_family(dt) for c, dt in schema.dtypes.items()}
    out: dict[str, str] = {}
    for name, dtype in dict(schema).items():
        if isinstance(dtype, type) and issubclass(dtype, pl.DataType):
            dtype = dtype()
        out[str(name)] = dtype_family(dtype) if isinstance(dtype, pl.DataType) else str(dtype)
    return out


def _check_kinds(families: Mapping[str, str], columns: Mapping[str, str]) -> None:
    for name, kind in columns.items():
        if kind not in COLUMN_KINDS:
            raise DriftInputError(f"column {name!r}: unknown kind {kind!r}, use {COLUMN_KINDS}")
        if name not in families:
            raise DriftInputError(f"column {name!r} ({kind}) is missing from the data")
        if kind == "numeric" and families[name] not in NUMERIC_FAMILIES:
            raise DriftInputError(
                f"column {name!r} is declared numeric but has type {families[name]}"
            )


def check_current_schema(reference: DatasetProfile, schema: Any) -> None:
    """Raise :class:`DriftInputError` naming the column if ``schema`` cannot be compared with
    ``reference``: a feature is missing, a numeric feature is no longer numeric, or a categorical
    feature changed type family (e.g. string codes became floats). A column that is entirely null
    (polars ``Null`` type) is accepted: it then shows up as a 100% missing rate, and drifted.

    ``schema`` is a polars schema / ``{name: dtype}`` mapping, or a polars/pandas frame."""
    families = schema_families(schema)
    checked: dict[str, Any] = dict(reference.columns)
    if reference.prediction is not None and reference.prediction_column in families:
        checked[reference.prediction_column] = reference.prediction
    for name, prof in checked.items():
        if name not in families:
            raise DriftInputError(
                f"column {name!r} ({prof.kind}, {prof.dtype} in the reference) is missing "
                "from the current data"
            )
        fam = families[name]
        if fam == "null":
            continue
        if isinstance(prof, NumericProfile):
            if fam not in NUMERIC_FAMILIES:
                raise DriftInputError(
                    f"column {name!r} was numeric ({prof.dtype}) in the reference but is {fam} "
                    "in the current data"
                )
        elif prof.dtype != "null" and fam != prof.dtype:
            raise DriftInputError(
                f"column {name!r} was categorical of type {prof.dtype} in the reference but "
                f"is {fam} in the current data"
            )


def _as_polars(data: Any, needed: list[str]) -> pl.DataFrame | pl.LazyFrame:
    if isinstance(data, (pl.DataFrame, pl.LazyFrame)):
        return data.select(needed)
    if _is_pandas(data):
        return pl.from_pandas(data[needed])
    raise TypeError(f"unsupported data type {type(data).__name__}; pass a polars or pandas frame")


def _n_rows(frame: pl.DataFrame | pl.LazyFrame) -> int:
    if isinstance(frame, pl.DataFrame):
        return frame.height
    return int(frame.select(pl.len()).collect().item())


def _iter_chunks(
    frame: pl.DataFrame | pl.LazyFrame, n_rows: int, chunk_rows: int
) -> Iterator[pl.DataFrame]:
    offsets = range(0, n_rows, chunk_rows)
    if isinstance(frame, pl.DataFrame):
        for offset in offsets:
            yield frame.slice(offset, chunk_rows)
        return
    # Lazy: read chunk i+1 in the background while chunk i is being summarised.
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = None
        for offset in offsets:
            nxt = reader.submit(lambda o=offset: frame.slice(o, chunk_rows).collect())
            if pending is not None:
                yield pending.result()
            pending = nxt
        if pending is not None:
            yield pending.result()


def _threads(threads: int | None) -> int:
    return max(1, threads if threads is not None else min(os.cpu_count() or 1, 8))


def build_profile(
    data: Any,
    columns: Mapping[str, ColumnKind] | None = None,
    *,
    prediction_column: str | None = None,
    reference: DatasetProfile | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    sketch_size: int = 1000,
    psi_bins: int = 10,
    max_categories: int = 1000,
    threads: int | None = None,
) -> DatasetProfile:
    """Profile ``data`` (polars DataFrame/LazyFrame or pandas DataFrame).

    Without ``reference`` this builds a reference profile (``columns`` required). With
    ``reference`` it builds a current profile binned on the reference's edges and categories, in
    chunks of ``chunk_rows`` rows; ``columns`` then defaults to the reference's and
    ``prediction_column`` to the reference's prediction column when the data has it.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    if reference is None:
        if not columns:
            raise DriftInputError("columns are required to build a reference profile")
        if sketch_size < 1000:
            # Small references (<= 1000 rows, where Evidently uses KS) must be stored exactly.
            raise ValueError("sketch_size must be >= 1000")
        return _build_reference(
            data,
            dict(columns),
            prediction_column,
            sketch_size,
            psi_bins,
            max_categories,
            _threads(threads),
        )
    return _build_current(
        data, reference, columns, prediction_column, chunk_rows, _threads(threads)
    )


def _build_reference(
    data: Any,
    columns: dict[str, str],
    prediction_column: str | None,
    sketch_size: int,
    psi_bins: int,
    max_categories: int,
    threads: int,
) -> DatasetProfile:
    needed = list(columns) + ([prediction_column] if prediction_column else [])
    families = schema_families(data)
    _check_kinds(
        families, {**columns, **({prediction_column: "numeric"} if prediction_column else {})}
    )
    frame = _as_polars(data, needed)
    n_rows = _n_rows(frame)

    def column(name: str) -> pl.Series:
        if isinstance(frame, pl.DataFrame):
            return frame.get_column(name)
        return frame.select(name).collect(engine="streaming").get_column(name)

    def profile(name: str, kind: str):
        fam = families[name]
        if kind == "numeric":
            return numeric_reference(
                column(name), sketch_size=sketch_size, psi_bins=psi_bins, dtype=fam
            )
        return categorical_reference(column(name), max_categories=max_categories, dtype=fam)

    jobs = list(columns.items()) + ([(prediction_column, "numeric")] if prediction_column else [])
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(lambda job: profile(*job), jobs))
    profiles = dict(zip([name for name, _ in jobs], results))
    prediction = profiles.pop(prediction_column) if prediction_column else None
    return DatasetProfile(
        columns=profiles,
        n_rows=n_rows,
        prediction_column=prediction_column,
        prediction=prediction,
        sketch_size=sketch_size,
        psi_bins=psi_bins,
        max_categories=max_categories,
        n_chunks=1,
    )


def _build_current(
    data: Any,
    reference: DatasetProfile,
    columns: Mapping[str, ColumnKind] | None,
    prediction_column: str | None,
    chunk_rows: int,
    threads: int,
) -> DatasetProfile:
    if columns is not None:
        for name, kind in columns.items():
            ref = reference.columns.get(name)
            if ref is None:
                raise DriftInputError(f"column {name!r} is not a feature of the reference profile")
            if ref.kind != kind:
                raise DriftInputError(f"column {name!r} is {ref.kind} in the reference, not {kind}")
    families = schema_families(data)
    check_current_schema(reference, families)
    if prediction_column is None and reference.prediction_column in families:
        prediction_column = reference.prediction_column
    if prediction_column is not None and reference.prediction is None:
        raise DriftInputError(
            f"column {prediction_column!r}: the reference profile has no prediction profile"
        )
    if prediction_column is not None and prediction_column not in families:
        raise DriftInputError(f"prediction column {prediction_column!r} is missing from the data")

    accs: dict[str, NumericAccumulator | CategoricalAccumulator] = {}
    for name, prof in reference.columns.items():
        if isinstance(prof, NumericProfile):
            accs[name] = NumericAccumulator(prof, dtype=families[name])
        else:
            assert isinstance(prof, CategoricalProfile)
            accs[name] = CategoricalAccumulator(prof, dtype=families[name])
    if prediction_column is not None:
        assert reference.prediction is not None
        accs[prediction_column] = NumericAccumulator(
            reference.prediction, dtype=families[prediction_column]
        )

    frame = _as_polars(data, list(accs))
    n_rows = _n_rows(frame)
    n_chunks = 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for chunk in _iter_chunks(frame, n_rows, chunk_rows):
            n_chunks += 1
            # Each column's accumulator gets exactly one task per chunk: no shared state.
            futures = [pool.submit(acc.add, chunk.get_column(name)) for name, acc in accs.items()]
            for fut in futures:
                fut.result()
    profiles = {name: acc.finish() for name, acc in accs.items()}
    prediction = profiles.pop(prediction_column) if prediction_column else None
    return DatasetProfile(
        columns=profiles,
        n_rows=n_rows,
        prediction_column=prediction_column,
        prediction=prediction,  # type: ignore[arg-type]
        reference_id=reference.fingerprint(),
        sketch_size=reference.sketch_size,
        psi_bins=reference.psi_bins,
        max_categories=reference.max_categories,
        n_chunks=n_chunks,
    )


def profile_frame(
    data: Any, columns: Mapping[str, ColumnKind] | None = None, **kwargs: Any
) -> DatasetProfile:
    """Alias of :func:`build_profile` for in-memory polars/pandas frames."""
    return build_profile(data, columns, **kwargs)


def profile_parquet(
    path: str | os.PathLike[str] | list[str],
    columns: Mapping[str, ColumnKind] | None = None,
    *,
    reference: DatasetProfile | None = None,
    prediction_column: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    **kwargs: Any,
) -> DatasetProfile:
    """Profile Parquet file(s) (a path, a glob or a list of paths) with a lazy scan.

    With ``reference`` this is one streaming pass in chunks of ``chunk_rows`` rows (bounded
    memory). Without it, a reference profile is built one column at a time."""
    paths = [os.fspath(p) for p in path] if isinstance(path, (list, tuple)) else os.fspath(path)
    lf = pl.scan_parquet(paths)
    return build_profile(
        lf,
        columns,
        reference=reference,
        prediction_column=prediction_column,
        chunk_rows=chunk_rows,
        **kwargs,
    )
