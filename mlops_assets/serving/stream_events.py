"""One streamed event: parse its JSON, check it against the spec, build the scoring frame.

Batch validation (`core.validation.validate_batch`) judges a whole file, with batch rules
such as null fractions and a row floor. A stream judges each event alone, so the rules
here are the per-value ones: required fields, types, ranges and categories. A null is
accepted only for a feature whose `max_null_fraction` is above 0. Hand-written rather than
a pydantic model built from the spec because the reason must name the spec's rule ("above
max 850.0"), and this runs per event on the hot path.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import polars as pl

from mlops_assets.core.features import canonical_value
from mlops_assets.spec import PipelineSpec


@dataclass(frozen=True)
class EventError:
    field: str
    rule: str
    detail: str = ""

    def __str__(self) -> str:
        return f"field '{self.field}': {self.rule}" + (f" ({self.detail})" if self.detail else "")


def reason(errors: list[EventError]) -> str:
    return "; ".join(str(e) for e in errors)


class EventParser:
    """Checks raw payloads against one spec; returns canonical rows or the rules broken."""

    def __init__(self, spec: PipelineSpec):
        self.spec = spec
        self.id_column = spec.id_column
        self._features = [(f, set(f.categories) if f.categories is not None else None) for f in spec.features]

    def parse(self, payload: bytes | None) -> tuple[dict | None, list[EventError]]:
        if payload is None:
            return None, [EventError("payload", "entry deleted from the stream before it was scored")]
        if not payload:
            return None, [EventError("payload", "empty", "expected a JSON object in the entry's 'data' field")]
        try:
            event = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return None, [EventError("payload", "not valid JSON", str(exc)[:200])]
        except RecursionError:    # deeper than the parser goes: dead-lettered, never a consumer crash loop
            return None, [EventError("payload", "not valid JSON", "nested too deeply")]
        if not isinstance(event, dict):
            return None, [EventError("payload", "must be a JSON object", f"got {type(event).__name__}")]
        errors: list[EventError] = []
        row: dict = {}
        event_id = event.get(self.id_column)
        if self.id_column not in event:
            errors.append(EventError(self.id_column, "required", "the spec's id_column"))
        elif isinstance(event_id, bool) or not isinstance(event_id, (int, str)) or event_id == "":
            errors.append(EventError(self.id_column, "must be an integer or a non-empty string",
                                     f"got {event_id!r}"[:120]))
        else:
            row[self.id_column] = event_id
        for feat, allowed in self._features:
            if feat.name not in event:
                errors.append(EventError(feat.name, "required", "send null for a missing value"))
                continue
            value = event[feat.name]
            if isinstance(value, float) and math.isnan(value):
                value = None   # Python's json accepts NaN; downstream NaN and null both mean missing
            if value is None:
                if feat.max_null_fraction == 0:
                    errors.append(EventError(feat.name, "null not allowed", "max_null_fraction is 0"))
                row[feat.name] = None
                continue
            if feat.type == "numeric":
                error = _check_number(feat, value)
                if error:
                    errors.append(error)
                else:
                    row[feat.name] = float(value)
            else:
                code = canonical_value(value)   # 3 and 3.0 are the category "3"
                if code is None:
                    errors.append(EventError(feat.name, "type", f"declared categorical, got {type(value).__name__}"))
                    continue
                value = code
                if allowed is not None and value not in allowed:
                    errors.append(EventError(feat.name, "unknown category",
                                             f"{value!r} not in {feat.categories}"[:200]))
                else:
                    row[feat.name] = value
        return (None, errors) if errors else (row, [])

    def frame(self, rows: list[dict]) -> pl.DataFrame:
        """Rows -> the scoring frame, in the canonical types of `core.features.prepare_features`.

        The id keeps its JSON type: Int64 when every id in the batch is an integer, else
        String (ids of mixed types are all written as strings).
        """
        ids = [r[self.id_column] for r in rows]
        id_dtype = pl.Int64 if all(isinstance(i, int) for i in ids) else pl.String
        columns = {self.id_column: pl.Series(self.id_column, ids if id_dtype == pl.Int64 else [str(i) for i in ids],
                                             dtype=id_dtype)}
        for feat, _ in self._features:
            dtype = pl.Float64 if feat.type == "numeric" else pl.String
            columns[feat.name] = pl.Series(feat.name, [r[feat.name] for r in rows], dtype=dtype)
        return pl.DataFrame(columns)


def _check_number(feat, value) -> EventError | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return EventError(feat.name, "type", f"declared numeric, got {type(value).__name__} {value!r}"[:120])
    if math.isinf(value):
        return EventError(feat.name, "infinite value")
    if feat.min is not None and value < feat.min:
        return EventError(feat.name, "range", f"{value} below min {feat.min}")
    if feat.max is not None and value > feat.max:
        return EventError(feat.name, "range", f"{value} above max {feat.max}")
    return None
