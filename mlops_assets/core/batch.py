"""Batch scoring of one Parquet file in bounded memory.

The file is read as a stream of record batches (``ParquetFile.iter_batches``, which also cuts a
single huge row group, as polars writes, into ``chunk_rows``-row slices), text features as
Arrow dictionaries. Each chunk is encoded as the bundle's ``FeatureEncoder`` does
(core/arrow_features.py: straight from Arrow), scored by its ONNX model with the rows in an
order that makes a tree ensemble faster (core/row_order.py: the same numbers, bit for bit) and
appended to a temporary Parquet file next to the destination, which is renamed into place only
when every row is written: a crash never leaves a partial file at the destination.

Both cores are used by scoring chunks in parallel, each ``InferenceSession.run`` on one
intra-op thread (onnxruntime releases the GIL). Measured here on the demo model (154 trees,
13 features; the ONNX runs alone, 200k rows in 16k-row chunks): two threads each running
chunks on one intra-op thread score ~420k rows/s, one thread with two intra-op threads
~290k rows/s, one thread with one ~230k rows/s: the tree ensemble parallelises poorly inside
one call of this size, while independent chunks scale almost linearly. The number of
chunks in flight is capped, so memory depends on ``chunk_rows`` and ``threads``, not on the
number of rows.

The output has exactly the columns the ``batch_predictions`` asset writes: the id column, the
``ModelBundle.score_frame`` columns, ``model_version`` (string) and ``scored_at`` (UTC).
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mlops_assets.core.arrow_features import BatchEncoder
from mlops_assets.core.bundle import ModelBundle
from mlops_assets.core.predictions import prediction_columns, predictions_table
from mlops_assets.core.row_order import TreeRowOrder

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "BatchInputError",
    "BatchScoreResult",
    "default_threads",
    "score_parquet",
]

# Per-row CPU fell from 4k- to 32k-row chunks and was flat beyond (1M rows, demo model: 6.0,
# 5.2, 5.0, 4.9, 4.9 CPU-s for 4k, 8k, 16k, 32k, 64k on one thread); smaller chunks keep both
# threads busy to the end of a small partition. In flight: 2 x threads chunks of ~10 MB each.
DEFAULT_CHUNK_ROWS = 32_768
# Output row groups of ~128k rows: Parquet readers like row groups much larger than one
# scoring chunk, and the writer only buffers one row group's worth of output columns.
_OUTPUT_ROW_GROUP_ROWS = 131_072
# Smaller chunks are scored in file order: the sort paid for itself from about 200 rows (1,024:
# 18 % less CPU, 8,192: 30 %, demo model).
_MIN_ORDERED_ROWS = 256


class BatchInputError(ValueError):
    """The Parquet file to score does not have the columns or types the model needs."""


@dataclass(frozen=True)
class BatchScoreResult:
    destination: Path
    rows: int
    chunks: int
    seconds: float
    threads: int
    chunk_rows: int
    column_schema: dict[str, str]       # output column -> polars dtype, in output order
    task: str
    mean_score: float | None = None     # binary: mean P(class 1); regression: mean prediction
    positive_rate: float | None = None  # binary: share of rows predicted 1
    class_counts: dict[str, int] = field(default_factory=dict)  # multiclass: predicted labels

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": str(self.destination),
            "rows": self.rows,
            "chunks": self.chunks,
            "seconds": self.seconds,
            "rows_per_s": self.rows_per_s,
            "threads": self.threads,
            "chunk_rows": self.chunk_rows,
            "column_schema": dict(self.column_schema),
            "task": self.task,
            "mean_score": self.mean_score,
            "positive_rate": self.positive_rate,
            "class_counts": dict(self.class_counts),
        }


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def score_parquet(
    bundle: ModelBundle,
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    id_column: str,
    model_version: str,
    scored_at: dt.datetime | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    threads: int | None = None,
) -> BatchScoreResult:
    """Score every row of the Parquet file ``source`` into the Parquet file ``destination``.

    ``threads`` chunks are scored at once (default: the usable cores). ``scored_at`` (default:
    now) must be timezone-aware; it is stored in UTC. Raises :class:`BatchInputError` naming the
    column when the id or a feature column is missing or has a type the encoder cannot use."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops_assets.core.scoring import OnnxScorer

    start = time.perf_counter()
    source, destination = Path(source), Path(destination)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    threads = default_threads() if threads is None else threads
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    scored_at = _utc(scored_at)
    if not source.is_file():
        raise FileNotFoundError(f"no Parquet file to score at {source}")

    # pre_buffer (pyarrow's default) keeps every column chunk it fetched until the file is
    # closed: RSS grew with the file (116 MB held after 10M rows). A 1 MiB read buffer streams
    # each column chunk instead, at the same CPU cost (measured).
    parquet = pq.ParquetFile(source, pre_buffer=False, buffer_size=1 << 20)
    columns = _input_columns(parquet.schema_arrow, bundle, id_column)
    # Text features are read as dictionaries (Parquet stores them so): no string per row to
    # decode (reading took 40 % less CPU) and they are encoded through their dictionaries.
    text = [c for c in columns if c != id_column and _is_text(parquet.schema_arrow.field(c).type)]
    if text:
        parquet = pq.ParquetFile(source, pre_buffer=False, buffer_size=1 << 20, read_dictionary=text)
    # One session, run from several threads (InferenceSession.run is thread-safe); one
    # intra-op thread per run, see the module docstring.
    scorer = OnnxScorer(bundle.onnx_bytes, threads=1)
    read_schema = pa.schema([parquet.schema_arrow.field(c) for c in columns])
    chunk = _ChunkScorer(bundle, scorer, BatchEncoder(bundle.encoder, read_schema),
                         TreeRowOrder.from_onnx(bundle.onnx_bytes), id_column, str(model_version), scored_at)
    schema = chunk.output(pa.RecordBatch.from_pylist([], schema=read_schema))[0].schema  # zero rows, same path
    totals = _Totals(bundle.task)

    destination.parent.mkdir(parents=True, exist_ok=True)
    # A uniquely named sibling (same file system, so the rename is atomic), created by the
    # writer with the usual permissions; mkstemp's 0600 would survive the rename.
    tmp_name = str(destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.tmp"))
    n_chunks = 0
    try:
        # Dictionary-encode only the repetitive string columns: trying it on the scores (all
        # distinct) and falling back made writing 4x slower and the file larger (measured).
        # zstd (Arrow's level 1) over snappy or lz4: per 1M rows 0.08 CPU-s and 8.5 MB against
        # 0.055 s and 12-13 MB; under 1 % of the run, and every reader of the table (drift,
        # performance, the canary merge) reads a third less.
        dictionary = [f.name for f in schema if f.name != id_column and _is_text(f.type)]
        with pq.ParquetWriter(tmp_name, schema, compression="zstd", use_dictionary=dictionary) as writer:
            buffered: list = []
            buffered_rows = 0

            def write(table, force: bool = False) -> None:
                # Collect small chunk tables into one row group of ~_OUTPUT_ROW_GROUP_ROWS rows.
                nonlocal buffered_rows
                if table is not None:
                    buffered.append(table)
                    buffered_rows += table.num_rows
                if buffered and (force or buffered_rows >= _OUTPUT_ROW_GROUP_ROWS):
                    writer.write_table(pa.concat_tables(buffered), row_group_size=buffered_rows)
                    buffered.clear()
                    buffered_rows = 0

            batches = parquet.iter_batches(batch_size=chunk_rows, columns=columns, use_threads=False)
            for table, stats in _ordered_map(chunk.output, batches, threads):
                totals.add(stats)
                write(table)
                n_chunks += 1
            if n_chunks == 0:
                writer.write_table(schema.empty_table())
            write(None, force=True)
        os.replace(tmp_name, destination)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return BatchScoreResult(
        destination=destination,
        rows=totals.rows,
        chunks=n_chunks,
        seconds=time.perf_counter() - start,
        threads=threads,
        chunk_rows=chunk_rows,
        column_schema={name: str(dtype) for name, dtype in pl.from_arrow(schema.empty_table()).schema.items()},
        task=bundle.task,
        **totals.summary(),
    )


def _utc(scored_at: dt.datetime | None) -> dt.datetime:
    if scored_at is None:
        return dt.datetime.now(dt.UTC)
    if scored_at.tzinfo is None or scored_at.utcoffset() is None:
        raise ValueError(f"scored_at must be timezone-aware, got naive {scored_at.isoformat()}")
    return scored_at.astimezone(dt.UTC)


def _input_columns(arrow_schema, bundle: ModelBundle, id_column: str) -> list[str]:
    """The columns to read, after checking each one the model needs exists with a usable type."""
    import pyarrow.types as pat

    names = set(arrow_schema.names)
    if id_column not in names:
        raise BatchInputError(f"cannot score: id column {id_column!r} is missing from the input")
    encoder = bundle.encoder
    missing = [c for c in encoder.feature_names if c not in names]
    if missing:
        raise BatchInputError(f"cannot score: missing feature columns {missing}")
    for name in encoder.feature_names:
        dtype = arrow_schema.field(name).type
        if pat.is_dictionary(dtype):
            dtype = dtype.value_type
        numeric = pat.is_integer(dtype) or pat.is_floating(dtype) or pat.is_decimal(dtype) or pat.is_null(dtype)
        if encoder.kinds[name] == "numeric" and not (numeric or pat.is_boolean(dtype)):
            raise BatchInputError(
                f"cannot score: column {name!r} is a numeric feature but has type {dtype}; "
                "it must hold numbers"
            )
        if encoder.kinds[name] == "categorical" and not (_is_text(dtype) or numeric or pat.is_boolean(dtype)):
            raise BatchInputError(
                f"cannot score: column {name!r} is a categorical feature but has type {dtype}; "
                "it must hold strings (or values that cast to strings)"
            )
    return list(dict.fromkeys([id_column, *encoder.feature_names]))


def _is_text(dtype) -> bool:
    import pyarrow.types as pat

    return pat.is_string(dtype) or pat.is_large_string(dtype) or pat.is_string_view(dtype)


class _ChunkScorer:
    """One record batch of input rows -> (output Arrow table, running-total statistics)."""

    def __init__(self, bundle: ModelBundle, scorer, encoder: BatchEncoder, order, id_column: str,
                 model_version: str, scored_at: dt.datetime):
        self.bundle = bundle
        self.scorer = scorer
        self.encoder = encoder
        self.order = order
        self.id_column = id_column
        # polars gets the id and the features the encoder maps itself (dictionary text
        # features are mapped from Arrow, see core/arrow_features.py).
        self.frame_columns = list(dict.fromkeys([id_column, *(encoder.rest.feature_names if encoder.rest else ())]))
        self.model_version = model_version
        self.scored_at = scored_at
        self.threshold = bundle.threshold

    def output(self, batch):
        # The same steps as ModelBundle.score_frame and predictions_table (the asset's), per chunk.
        frame = pl.from_arrow(batch.select(self.frame_columns))
        score = self.predict(self.encoder.transform(batch, frame))
        if self.bundle.task == "multiclass" and score.ndim == 1:  # zero rows: width unknown
            score = score.reshape(0, max(len(self.bundle.classes), 1))
        scored = prediction_columns(self.bundle.task, score, self.threshold, self.bundle.classes)
        out = predictions_table(frame[self.id_column], scored, self.model_version, self.scored_at)
        return out.to_arrow(), _chunk_stats(self.bundle.task, scored)

    def predict(self, X):
        """The scores of X's rows in file order; scored in the tree-friendly order when there
        is one (see core/row_order.py: the same numbers, bit for bit)."""
        if self.order is None or len(X) < _MIN_ORDERED_ROWS:
            return self.scorer.predict(X)
        order = self.order.permutation(X)
        ordered = self.scorer.predict(X[order])
        score = np.empty_like(ordered)
        score[order] = ordered
        return score


def _chunk_stats(task: str, scored: pl.DataFrame) -> dict[str, Any]:
    rows = scored.height
    if task == "binary":
        return {"rows": rows, "score_sum": float(scored["score"].sum()),
                "positive": int(scored["prediction"].sum())}
    if task == "regression":
        return {"rows": rows, "score_sum": float(scored["prediction"].sum())}
    counts = scored["prediction"].value_counts()
    return {"rows": rows, "counts": dict(zip(counts["prediction"].to_list(), counts["count"].to_list()))}


class _Totals:
    """Running totals over chunks, added in file order so the result is deterministic."""

    def __init__(self, task: str):
        self.task = task
        self.rows = 0
        self.score_sum = 0.0
        self.positive = 0
        self.counts: dict[str, int] = {}

    def add(self, stats: dict[str, Any]) -> None:
        self.rows += stats["rows"]
        self.score_sum += stats.get("score_sum", 0.0)
        self.positive += stats.get("positive", 0)
        for label, n in stats.get("counts", {}).items():
            self.counts[label] = self.counts.get(label, 0) + n

    def summary(self) -> dict[str, Any]:
        if self.rows == 0:
            return {}
        if self.task == "binary":
            return {"mean_score": self.score_sum / self.rows, "positive_rate": self.positive / self.rows}
        if self.task == "regression":
            return {"mean_score": self.score_sum / self.rows}
        return {"class_counts": dict(sorted(self.counts.items()))}


def _ordered_map(fn, items, threads: int):
    """Yield ``fn(item)`` in input order, with at most ``2 * threads`` items in flight.

    The cap bounds memory; two per thread keep every worker busy while the caller writes.
    With one thread everything runs inline (no pool, simplest stack traces)."""
    if threads == 1:
        for item in items:
            yield fn(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="score") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # an error or an abandoned generator: drop queued work
                future.cancel()
