"""Request validation for the real-time server, built from the pipeline spec.

A request body is one row (a JSON object of the spec's features) or a batch
(`{"rows": [ {...}, ... ]}`). Each row must hold every feature of the spec; numerics are JSON
numbers within the feature's min/max, categoricals are strings among its `categories` (any
string when the spec declares none); null (or NaN) only where the feature's
`max_null_fraction` is above 0. The id column, and the timestamp and group columns when the
spec has them, are optional; any other field is refused.

Validation is a hand-written loop over plain dicts rather than a pydantic model per request:
it runs on every request, and a loop over pre-computed rules is several times cheaper than
building a model class, while the errors can still name the field, the row and the rule.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from mlops_assets.core.features import canonical_value
from mlops_assets.spec import PipelineSpec

BATCH_KEY = "rows"
ROW_FIELD = "row"
MAX_REPORTED_ERRORS = 50


@dataclass(frozen=True)
class FieldError:
    """One broken rule: which field (and row, in a batch), which rule, and a readable message."""

    field: str
    rule: str
    message: str
    row: int | None = None

    def to_dict(self) -> dict:
        if self.row is None:
            loc: list = [self.field]
        else:   # a whole row that is not an object is located by its index alone
            loc = [BATCH_KEY, self.row] if self.field == ROW_FIELD else [BATCH_KEY, self.row, self.field]
        return {"loc": loc, "field": self.field, "row": self.row, "rule": self.rule, "msg": self.message}


class RequestRejected(Exception):
    """A request that cannot be scored; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, errors: list[FieldError], total_errors: int | None = None):
        self.status = status
        self.errors = errors
        self.total_errors = len(errors) if total_errors is None else total_errors
        super().__init__("; ".join(_describe(e) for e in errors[:5]))

    def to_dict(self) -> dict:
        body: dict[str, Any] = {"detail": [e.to_dict() for e in self.errors]}
        if self.total_errors > len(self.errors):
            body["more_errors"] = self.total_errors - len(self.errors)
        return body


def decode_json(body: bytes) -> Any:
    """A request body as JSON; a 400 naming why when it is not (never a server error)."""
    try:
        return json.loads(body)
    except ValueError as exc:   # bad JSON, or bytes that are not UTF-8
        raise RequestRejected(400, [FieldError("body", "json", f"not valid JSON: {exc}")]) from None
    except RecursionError:      # "[[[[...": deeper than the parser goes
        raise RequestRejected(400, [FieldError("body", "json", "not valid JSON: nested too deeply")]) from None


def _describe(error: FieldError) -> str:
    if error.row is None:
        return f"{error.field}: {error.message}"
    where = f"rows[{error.row}]" + ("" if error.field == ROW_FIELD else f".{error.field}")
    return f"{where}: {error.message}"


@dataclass
class ParsedRequest:
    """Validated rows. `values[i]` holds row i's features in spec order: float or None for
    numerics, str or None for categoricals (None means missing)."""

    values: list[tuple]
    ids: list[Any | None]
    timestamps: list[dt.datetime | None] = field(default_factory=list)
    groups: list[Any | None] = field(default_factory=list)
    batch: bool = False

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class _Rule:
    name: str
    numeric: bool
    nullable: bool
    low: float | None
    high: float | None
    categories: frozenset[str] | None


class RequestSchema:
    """The spec's input contract for one request; `parse(payload)` validates a decoded body."""

    def __init__(self, spec: PipelineSpec, *, max_batch_rows: int = 1000):
        if not isinstance(max_batch_rows, int) or max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be an integer >= 1, got {max_batch_rows!r}")
        self.spec = spec
        self.max_batch_rows = max_batch_rows
        self.feature_names = spec.feature_names
        self.id_column = spec.id_column
        features = set(spec.feature_names)
        self.timestamp_column = spec.timestamp_column if spec.timestamp_column not in features else None
        self.group_column = spec.group_column if spec.group_column not in features else None
        self._rules = tuple(
            _Rule(f.name, f.type == "numeric", f.max_null_fraction > 0, f.min, f.max,
                  frozenset(f.categories) if f.categories is not None else None)
            for f in spec.features)
        optional = [c for c in (self.id_column, self.timestamp_column, self.group_column) if c]
        self.allowed_fields = frozenset(spec.feature_names) | frozenset(optional)
        self._allowed_text = ", ".join(sorted(self.allowed_fields))

    def parse(self, payload: Any) -> ParsedRequest:
        """Validate a decoded JSON body; raises `RequestRejected` naming every broken rule."""
        if isinstance(payload, dict) and len(payload) == 1 and isinstance(payload.get(BATCH_KEY), list):
            rows, batch = payload[BATCH_KEY], True
            if not rows:
                raise RequestRejected(422, [FieldError(BATCH_KEY, "min_rows", "a batch needs at least one row")])
            if len(rows) > self.max_batch_rows:
                raise RequestRejected(413, [FieldError(
                    BATCH_KEY, "max_batch_rows",
                    f"{len(rows)} rows is more than this server's limit of {self.max_batch_rows}; "
                    "split the batch")])
        elif isinstance(payload, dict):
            rows, batch = [payload], False
        else:
            raise RequestRejected(422, [FieldError(
                "body", "type", f"expected a JSON object (one row) or {{\"{BATCH_KEY}\": [...]}}, "
                f"got {_json_type(payload)}")])
        parsed = ParsedRequest([], [], [], [], batch)
        errors: list[FieldError] = []
        for index, row in enumerate(rows):
            self._parse_row(row, index if batch else None, parsed, errors)
        if errors:
            raise RequestRejected(422, errors[:MAX_REPORTED_ERRORS], len(errors))
        return parsed

    def _parse_row(self, row: Any, index: int | None, parsed: ParsedRequest, errors: list[FieldError]) -> None:
        if not isinstance(row, dict):
            errors.append(FieldError(ROW_FIELD, "type", f"a row must be a JSON object, got {_json_type(row)}",
                                     index))
            return
        if len(row) > len(self.allowed_fields) or not self.allowed_fields.issuperset(row):
            for name in row:
                if name not in self.allowed_fields:
                    errors.append(FieldError(str(name), "unknown_field",
                                             f"not an input of this model; allowed fields: {self._allowed_text}",
                                             index))
        values = []
        for rule in self._rules:
            if rule.name not in row:
                errors.append(FieldError(rule.name, "required", "this feature is required", index))
                values.append(None)
                continue
            values.append(self._check_value(rule, row[rule.name], index, errors))
        parsed.values.append(tuple(values))
        parsed.ids.append(self._check_id(row.get(self.id_column), index, errors))
        if self.timestamp_column:
            parsed.timestamps.append(self._check_timestamp(row.get(self.timestamp_column), index, errors))
        if self.group_column:
            parsed.groups.append(self._check_group(row.get(self.group_column), index, errors))

    @staticmethod
    def _check_value(rule: _Rule, value: Any, index: int | None, errors: list[FieldError]):
        if value is None or (type(value) is float and math.isnan(value)):
            if not rule.nullable:
                errors.append(FieldError(rule.name, "not_null",
                                         "must not be null (the spec's max_null_fraction is 0)", index))
            return None
        if rule.numeric:
            if type(value) not in (int, float):   # bool is an int subclass: refused on purpose
                errors.append(FieldError(rule.name, "type", f"numeric feature: expected a number, got "
                                         f"{_json_type(value)}", index))
                return None
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if math.isinf(number):
                errors.append(FieldError(rule.name, "finite", "must be a finite number", index))
                return None
            if rule.low is not None and number < rule.low:
                errors.append(FieldError(rule.name, "min", f"{_shown(value)} is below the minimum {rule.low:g}", index))
            elif rule.high is not None and number > rule.high:
                errors.append(FieldError(rule.name, "max", f"{_shown(value)} is above the maximum {rule.high:g}", index))
            return number
        original, value = value, canonical_value(value) if type(value) is not str else value
        if value is None:
            errors.append(FieldError(rule.name, "type", "categorical feature: expected a string or an integer "
                                     f"code, got {_json_type(original)}", index))
            return None
        if rule.categories is not None and value not in rule.categories:
            errors.append(FieldError(rule.name, "categories",
                                     f"{_shown(value)} is not one of {sorted(rule.categories)}", index))
        return value

    def _check_id(self, value: Any, index: int | None, errors: list[FieldError]):
        if value is None or type(value) in (int, str):
            return value
        errors.append(FieldError(self.id_column, "type",
                                 f"the id must be an integer or a string, got {_json_type(value)}", index))
        return None

    def _check_timestamp(self, value: Any, index: int | None, errors: list[FieldError]) -> dt.datetime | None:
        if value is None:
            return None
        try:
            if type(value) is not str:
                raise TypeError
            stamp = dt.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            errors.append(FieldError(self.timestamp_column, "iso_datetime",
                                     f"expected an ISO-8601 date-time string, got {_shown(value)}", index))
            return None
        # A time without a zone is taken as UTC, as the pipeline reads string timestamps.
        return stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)

    def _check_group(self, value: Any, index: int | None, errors: list[FieldError]):
        if value is None or type(value) in (int, str):
            return value
        errors.append(FieldError(self.group_column, "type",
                                 f"expected a string or an integer, got {_json_type(value)}", index))
        return None


def _shown(value: Any, limit: int = 80) -> str:
    """A value quoted in a message: a 1 MB string is shown by its start and length, so an error
    answer stays small whatever the request held."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
