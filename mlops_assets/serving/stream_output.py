"""What a scored micro-batch leaves behind: one Parquet file and one output record per event.

The file name is the batch key (first and last message id), so a redelivered batch
overwrites its own file; the day folder comes from the first message's broker timestamp,
never from the clock.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_assets.serving.broker import Message, OutputRecord

if TYPE_CHECKING:
    import polars as pl

EVENT_ID_COLUMN = "event_id"


_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def batch_key(messages: list[Message]) -> str:
    """`<first id>_<last id>`: the same batch always gets the same key (and file name)."""
    return f"{_UNSAFE.sub('-', messages[0].id)}_{_UNSAFE.sub('-', messages[-1].id)}"


def write_batch(frame: pl.DataFrame, output_dir: Path, published_ms: int, key: str, writer: str) -> str:
    """Write `date=<day>/<key>.parquet` atomically; returns the path relative to output_dir.

    The day comes from the batch's first message (its broker timestamp), never from the
    clock, so a batch redelivered after midnight still overwrites its own file.
    """
    day = dt.datetime.fromtimestamp(published_ms / 1000, dt.UTC).date().isoformat()
    relative = f"date={day}/{key}.parquet"
    target = output_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    # A dot-name: arrival scans skip it; one per writer: two writers never share a temp file.
    temp = target.parent / f".{key}.{_UNSAFE.sub('-', writer)}.tmp"
    frame.write_parquet(temp)
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, target)
    return relative


def output_records(scored: pl.DataFrame, id_column: str, relative: str) -> list[OutputRecord]:
    """One record per scored event: `event_id` and `data`, the result as a JSON object.

    JSON in one field, like the input events: the commit sends each record to the broker
    as a few arguments instead of one per column (that packing was the hot spot).
    """
    import polars as pl

    score_columns = [c for c in scored.columns if c in ("score", "prediction") or c.startswith("proba_")]
    rows = scored.select(
        pl.col(EVENT_ID_COLUMN), pl.col(id_column), pl.col("model_version"),
        pl.col("scored_at").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ"), *score_columns,
    ).with_columns(pl.lit(relative).alias("file"))
    event_ids = rows[EVENT_ID_COLUMN].to_list()
    # JSON escapes every "\n" inside strings; str.splitlines would also split on U+2028.
    payloads = rows.write_ndjson().rstrip("\n").split("\n")
    return [OutputRecord(mid, {EVENT_ID_COLUMN: mid, "data": line})
            for mid, line in zip(event_ids, payloads, strict=True)]
