"""Served requests and their scores, sampled and written to Parquet partitions.

Files land at `<directory>/date=YYYY-MM-DD/<HHMMSS>-<uuid>.parquet` (the UTC day the request
arrived), written to a hidden temporary name and renamed, so a reader never sees half a file.
Columns: the id, the timestamp and group columns when the spec has them (a missing request
timestamp is filled with the arrival time), every feature as the pipeline's raw data holds it
(numerics Float64, categoricals String, missing as null), `model_version` (per row: in a canary
release, the version of the row's arm), the task's score columns and `received_at`; during a
shadow release also `shadow_model_version` and the candidate's score columns as `shadow_<name>`. Such a file can be dropped into the pipeline's landing folder as
an arrival, so served traffic feeds the drift and delayed-label assets like any partition;
for that the requests must carry ids (validation refuses null ids).

Sampling is deterministic for rows with an id: a keyed hash of the id decides, so the same
id is always in or always out (and the choice is independent of the train/holdout split,
which uses another hash). Rows without an id are sampled at random.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from mlops_assets.serving.request_schema import ParsedRequest
from mlops_assets.spec import PipelineSpec

logger = logging.getLogger("mlops_assets.serving")

MODEL_VERSION = "model_version"
RECEIVED_AT = "received_at"
_SAMPLING_KEY = b"mlops-assets/request-log"


@dataclass(frozen=True)
class RequestLogConfig:
    """Where and how much of the served traffic to keep."""

    directory: Path
    sample_rate: float = 1.0          # share of rows kept, in [0, 1]
    flush_rows: int = 10_000          # write a file once this many rows are buffered...
    flush_seconds: float = 60.0       # ...or once the oldest buffered row is this old
    max_buffer_rows: int = 200_000    # beyond this (writes failing), new rows are dropped and counted

    def __post_init__(self):
        object.__setattr__(self, "directory", Path(self.directory))
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"request_log.sample_rate must be within [0, 1], got {self.sample_rate!r}")
        if not (isinstance(self.flush_rows, int) and self.flush_rows >= 1):
            raise ValueError(f"request_log.flush_rows must be an integer >= 1, got {self.flush_rows!r}")
        if not self.flush_seconds > 0:
            raise ValueError(f"request_log.flush_seconds must be > 0, got {self.flush_seconds!r}")
        if not (isinstance(self.max_buffer_rows, int) and self.max_buffer_rows >= self.flush_rows):
            raise ValueError(f"request_log.max_buffer_rows must be an integer >= flush_rows "
                             f"({self.flush_rows}), got {self.max_buffer_rows!r}")


def sampled(row_id, rate: float) -> bool:
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    if row_id is None:
        return random.random() < rate
    digest = hashlib.blake2b(str(row_id).encode(), digest_size=8, key=_SAMPLING_KEY).digest()
    return int.from_bytes(digest, "little") / 2.0**64 < rate


class RequestLog:
    """An in-memory buffer of sampled rows; `take()` on the event loop, `write()` in a thread."""

    def __init__(self, config: RequestLogConfig, spec: PipelineSpec, metrics=None):
        self.config, self.spec, self.metrics = config, spec, metrics
        self._records: list[tuple] = []
        self._oldest: float | None = None
        features = set(spec.feature_names)
        self._timestamp = spec.timestamp_column if spec.timestamp_column not in features else None
        self._group = spec.group_column if spec.group_column not in features else None

    def __len__(self) -> int:
        return len(self._records)

    def add(self, parsed: ParsedRequest, version: str | list[str], columns: dict[str, list],
            received_at: dt.datetime | None = None) -> int:
        """Buffer the sampled rows of one scored request; returns how many were kept. `version`
        is the one that scored every row, or one per row (a canary request split by arm)."""
        rate = self.config.sample_rate
        received_at = received_at or dt.datetime.now(dt.UTC)
        names = tuple(columns)
        kept = 0
        for i, row_id in enumerate(parsed.ids):
            if not sampled(row_id, rate):
                continue
            if len(self._records) >= self.config.max_buffer_rows:
                if self.metrics is not None:
                    self.metrics.log_dropped.inc()
                continue
            stamp = parsed.timestamps[i] if self._timestamp else None
            group = parsed.groups[i] if self._group else None
            scores = tuple(columns[n][i] for n in names)
            row_version = version if isinstance(version, str) else version[i]
            self._records.append((row_id, stamp or received_at, group, parsed.values[i], row_version, names, scores,
                                  received_at))
            kept += 1
        if kept and self._oldest is None:
            self._oldest = time.monotonic()
        return kept

    def due(self) -> bool:
        if not self._records:
            return False
        return (len(self._records) >= self.config.flush_rows
                or time.monotonic() - (self._oldest or 0.0) >= self.config.flush_seconds)

    def take(self) -> list[tuple]:
        records, self._records, self._oldest = self._records, [], None
        return records

    def give_back(self, records: list[tuple]) -> None:
        """Return records whose write failed, to be retried (oldest dropped beyond the cap)."""
        merged = records + self._records
        overflow = len(merged) - self.config.max_buffer_rows
        if overflow > 0:
            merged = merged[overflow:]
            if self.metrics is not None:
                self.metrics.log_dropped.inc(overflow)
        self._records = merged
        self._oldest = self._oldest or time.monotonic()

    def write(self, records: list[tuple]) -> list[Path]:
        """Write records as one file per UTC day; blocking."""
        if not records:
            return []
        by_day: dict[dt.date, list[tuple]] = {}
        for record in records:
            by_day.setdefault(record[-1].date(), []).append(record)
        paths = [self._write_file(day, rows) for day, rows in sorted(by_day.items())]
        if self.metrics is not None:
            self.metrics.logged_rows.inc(len(records))
        return paths

    def _write_file(self, day: dt.date, records: list[tuple]) -> Path:
        import polars as pl

        spec = self.spec
        columns: dict[str, pl.Series] = {spec.id_column: _id_series(spec.id_column, [r[0] for r in records])}
        if self._timestamp:
            columns[self._timestamp] = pl.Series(self._timestamp, [r[1] for r in records],
                                                 dtype=pl.Datetime("us", "UTC"))
        if self._group:
            columns[self._group] = _id_series(self._group, [r[2] for r in records])
        for index, feature in enumerate(spec.features):
            dtype = pl.Float64 if feature.type == "numeric" else pl.String
            columns[feature.name] = pl.Series(feature.name, [r[3][index] for r in records], dtype=dtype)
        columns[MODEL_VERSION] = pl.Series(MODEL_VERSION, [r[4] for r in records], dtype=pl.String)
        # Score columns can differ between versions (multiclass labels): the union, null elsewhere.
        score_names = list(dict.fromkeys(name for r in records for name in r[5]))
        for name in score_names:
            values = [dict(zip(r[5], r[6])).get(name) for r in records]
            columns[name] = pl.Series(name, values, strict=False)
        columns[RECEIVED_AT] = pl.Series(RECEIVED_AT, [r[7] for r in records], dtype=pl.Datetime("us", "UTC"))
        frame = pl.DataFrame(list(columns.values()))

        folder = self.config.directory / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = records[0][7].strftime("%H%M%S")
        final = folder / f"{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        temporary = folder / f".{final.name}.tmp"      # hidden: landing-zone listings skip it
        try:
            frame.write_parquet(temporary)
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        return final


def _id_series(name: str, values: list):
    """Integers stay Int64; anything else (strings, or a mix) is written as strings."""
    import polars as pl

    present = [v for v in values if v is not None]
    if all(type(v) is int and -(2**63) <= v < 2**63 for v in present):
        return pl.Series(name, values, dtype=pl.Int64)
    return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)
