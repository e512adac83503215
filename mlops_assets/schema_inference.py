"""A starting pipeline spec inferred from a sample of the data, like TFX's SchemaGen.

Pure: a polars frame in, an `InferredSpec` out (a spec mapping plus, for every guess, the
reason and what to review), rendered as commented YAML by `to_yaml`. Reading the file and
writing the YAML are the caller's business (`mlops-assets init`).

What is guessed, and how:
- the id column: unique and never missing in the sample, integer or text; a name such as
  `id`, `*_id` or `*key` is preferred;
- the timestamp column: a datetime column, or text that parses as ISO 8601 datetimes;
- each other column: numeric (floats, integers with many values) with min/max widened by a
  margin of the observed range, or categorical (text, booleans, integers with few values) with
  its categories up to a cap; max_null_fraction is the sample's share plus a margin;
- the task, from the target: 2 values -> binary (labels must be 0/1), a few -> multiclass with
  its classes, many numbers -> regression;
- min_rows: a tenth of the sample's rows, at most 1,000.

Every rule it writes rejects a whole batch when broken, so each one is marked for review: a
sample shows what the data was, not what it may be.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import polars as pl

ID_NAME = re.compile(r"(^|_)(id|key|uuid)$|id$", re.IGNORECASE)
TIME_NAME = re.compile(r"(time|date|_at$|^ts$|_ts$|timestamp)", re.IGNORECASE)
GROUP_NAME = re.compile(r"(gender|sex|segment|group|region|country|cohort|age_band|race|ethnic)", re.IGNORECASE)
RESERVED = {"_split", "__prediction", "__label", "model_version", "scored_at", "score", "prediction",
            "received_at", "event_id"}


class InferenceError(ValueError):
    """The sample cannot give a usable starting spec; the message says what is missing."""


@dataclass(frozen=True)
class InferenceOptions:
    margin: float = 0.25            # numeric bounds widened by this share of the observed range
    null_margin: float = 0.01       # max_null_fraction = observed share * 1.5 + this, rounded up
    max_categories: int = 50        # more distinct values: the categories are not listed
    max_codes: int = 10             # integers with at most this many values are categorical codes
    max_classes: int = 20           # a target with more values is a regression target
    timestamp_parse_share: float = 0.95


@dataclass(frozen=True)
class ColumnGuess:
    name: str
    role: str                       # feature | id | timestamp | target | skipped
    dtype: str
    summary: str                    # what the sample showed
    feature: dict[str, Any] | None = None
    review: tuple[str, ...] = ()    # what a person should check


@dataclass(frozen=True)
class InferredSpec:
    name: str
    target: str
    task: str
    classes: list | None
    id_column: str
    timestamp_column: str | None
    min_rows: int
    source_path: str
    source_format: str
    rows: int
    columns: list[ColumnGuess]
    task_review: tuple[str, ...] = ()
    group_candidates: tuple[str, ...] = ()
    sample_name: str = "the sample"
    margin: float = 0.25
    notes: list[str] = field(default_factory=list)

    @property
    def features(self) -> list[ColumnGuess]:
        return [c for c in self.columns if c.role == "feature"]

    def to_dict(self) -> dict[str, Any]:
        """The spec as a mapping (what `PipelineSpec.from_dict` takes)."""
        data: dict[str, Any] = {
            "name": self.name,
            "source": {"path": self.source_path, "format": self.source_format},
            "target": self.target,
            "task": self.task,
        }
        if self.classes is not None:
            data["classes"] = list(self.classes)
        data["id_column"] = self.id_column
        if self.timestamp_column:
            data["timestamp_column"] = self.timestamp_column
        data["min_rows"] = self.min_rows
        data["features"] = [dict(c.feature) for c in self.features]
        data["state_dir"] = ".mlops"
        return data

    def review_count(self) -> int:
        return len(self.task_review) + sum(len(c.review) for c in self.columns)

    def to_yaml(self) -> str:
        """The spec as YAML, each guess commented with what the sample showed and what to review."""
        out: list[str] = []
        add = out.append
        add(f"# Starting spec for the pipeline {self.name!r}, inferred by `mlops-assets init` from")
        add(f"# {self.sample_name} ({self.rows:,} rows sampled, {len(self.columns)} columns).")
        add("# Every rule below rejects a whole batch when it is broken, so check each line marked")
        add("# REVIEW: a sample shows what the data was, not what it may be. All fields and their")
        add("# defaults: docs/configuration.md. Check the file: `mlops-assets status <this file>`.")
        add(f"name: {self.name}")
        add("source:")
        add(f"  path: {_q(self.source_path)}" + _c("REVIEW: the folder new files arrive in; relative to this file"))
        add(f"  format: {self.source_format}")
        add(f"target: {_q(self.target)}")
        add(f"task: {self.task}" + _c(self.task_review[0] if self.task_review else ""))
        for extra in self.task_review[1:]:
            add(f"# {extra}")
        if self.classes is not None:
            add(f"classes: {_flow(self.classes)}")
        id_guess = next(c for c in self.columns if c.role == "id")
        add(f"id_column: {_q(self.id_column)}" + _c(id_guess.summary + "; the train/holdout split hashes it"))
        for note in id_guess.review:
            add(f"# REVIEW: {note}")
        ts = next((c for c in self.columns if c.role == "timestamp"), None)
        if ts is not None:
            add(f"timestamp_column: {_q(ts.name)}" + _c(ts.summary))
        else:
            add("# timestamp_column: <column>   # none found: a datetime or ISO-8601 text column")
        if self.group_candidates:
            add(f"# group_column: {_q(self.group_candidates[0])}   # REVIEW: slice and fairness metrics by a "
                f"column; candidates: {', '.join(self.group_candidates)}")
        add(f"min_rows: {self.min_rows}" + _c("REVIEW: smaller batches are rejected (a tenth of the sample)"))
        add("# REVIEW the features: numeric min/max are the sample's range widened by "
            f"{self.margin:.0%} of it on each")
        add("# side (kept >= 0 when the sample is); categories are the values seen; max_null_fraction is the")
        add("# sample's share of missing values plus a margin. A value outside min/max or categories, or more")
        add("# missing values, rejects the whole batch: set what the data may really hold, or remove a rule.")
        add("features:")
        for col in self.features:
            add(f"  # {col.name}: {col.summary}")
            for note in col.review:
                add(f"  # REVIEW: {note}")
            add(f"  - {_flow(col.feature)}")
        skipped = [c for c in self.columns if c.role == "skipped"]
        if skipped:
            add("# Not used as features (add them above to use them):")
            for col in skipped:
                add(f"#   {col.name}: {col.summary}")
        add("# The gate: the champion alias moves only when every rule passes. Defaults: the main")
        add(f"# metric ({_default_metric(self.task)}) may not get worse by more than 0.01, ONNX parity.")
        add("# gate:")
        add("#   min_main_metric: 0.7        # REVIEW: a floor for the main metric (unset: none)")
        add("#   max_fairness_gap: 0.1       # with group_column")
        add("state_dir: .mlops" + _c("embedded default: Dagster home, MLflow store and artifacts"))
        for note in self.notes:
            add(f"# {note}")
        return "\n".join(out) + "\n"


def _default_metric(task: str) -> str:
    return {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}[task]


def _c(comment: str) -> str:
    return f"   # {comment}" if comment else ""


def _q(text: str) -> str:
    """A YAML scalar for a name or path: plain when that is unambiguous, else JSON-quoted."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./\-]*", text) and text.lower() not in (
            "true", "false", "yes", "no", "on", "off", "null", "y", "n"):
        return text
    return json.dumps(text)


def _flow(value: Any) -> str:
    """One-line YAML (a JSON-compatible flow collection), with plain keys and names."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number(value)
    return _q(str(value))


def _number(x: float) -> str:
    if float(x).is_integer():
        return str(int(x))
    return repr(float(f"{x:.6g}"))


# -- inference --------------------------------------------------------------------------------
def infer_spec(frame: pl.DataFrame, *, target: str, name: str, source_path: str, source_format: str = "auto",
               id_column: str | None = None, timestamp_column: str | None = None,
               options: InferenceOptions | None = None, sample_name: str = "the sample") -> InferredSpec:
    """Guess a starting spec from `frame`; raises InferenceError when a required role has no candidate."""
    opts = options or InferenceOptions()
    if frame.height == 0:
        raise InferenceError("the sample has no rows: nothing to infer from")
    if target not in frame.columns:
        raise InferenceError(f"target column {target!r} is not in the sample; its columns are {frame.columns}")
    for given, what in ((id_column, "--id-column"), (timestamp_column, "--timestamp-column")):
        if given is not None and given not in frame.columns:
            raise InferenceError(f"{what} {given!r} is not in the sample; its columns are {frame.columns}")
    rows = frame.height
    task, classes, task_review = guess_task(frame[target], opts)
    id_col = id_column or guess_id(frame, exclude={target})
    if id_col is None:
        raise InferenceError(
            "no column is unique and never missing in the sample, so there is no id column for the "
            "train/holdout split: add one to the data (e.g. a row number) or pass --id-column")
    ts_col = timestamp_column or guess_timestamp(frame, exclude={target, id_col}, share=opts.timestamp_parse_share)

    columns: list[ColumnGuess] = []
    for col in frame.columns:
        series = frame[col]
        dtype = str(series.dtype)
        if col == target:
            columns.append(ColumnGuess(col, "target", dtype, f"the target ({task})"))
        elif col == id_col:
            review = () if id_column else (f"{col} was guessed as the id column; pass --id-column to choose another",)
            kind = "integer" if series.dtype.is_integer() else "text"
            columns.append(ColumnGuess(col, "id", dtype, f"unique in the sample, {kind}", review=review))
        elif col == ts_col:
            parsed = "datetimes" if series.dtype.is_temporal() else "ISO-8601 text"
            columns.append(ColumnGuess(col, "timestamp", dtype, f"{parsed}; not a model input"))
        else:
            columns.append(guess_column(series, rows, opts))
    groups = tuple(c.name for c in columns if c.role == "feature" and c.feature["type"] == "categorical"
                   and GROUP_NAME.search(c.name) and 2 <= len(c.feature.get("categories") or ()) <= 10)
    if not any(c.role == "feature" for c in columns):
        raise InferenceError("no column is left to be a feature once the target, id and timestamp are set aside")
    return InferredSpec(
        name=name, target=target, task=task, classes=classes, id_column=id_col, timestamp_column=ts_col,
        min_rows=max(1, min(1_000, rows // 10)), source_path=source_path, source_format=source_format,
        rows=rows, columns=columns, task_review=task_review, group_candidates=groups, sample_name=sample_name,
        margin=opts.margin,
    )


def guess_task(target: pl.Series, opts: InferenceOptions) -> tuple[str, list | None, tuple[str, ...]]:
    values = _present(target)
    nulls = target.len() - values.len()
    unlabelled = ((f"{nulls / max(target.len(), 1):.1%} of the sample's rows have no label: a labelled batch "
                  "with a missing label is rejected"),) if nulls else ()
    distinct = values.unique().sort()
    n = distinct.len()
    if n < 2:
        raise InferenceError(f"target {target.name!r} has {n} distinct value(s) in the sample: nothing to learn")
    shown = ", ".join(str(v) for v in distinct.head(6).to_list()) + (", ..." if n > 6 else "")
    numeric = target.dtype.is_numeric() and target.dtype != pl.Boolean
    if n == 2:
        as_floats = distinct.cast(pl.Float64, strict=False).to_list() if numeric or target.dtype == pl.Boolean \
            else []
        if as_floats == [0.0, 1.0]:
            return "binary", None, (f"REVIEW: 2 distinct values in the sample ({shown})", *unlabelled)
        return "binary", None, (
            (f"REVIEW: 2 distinct values ({shown}); binary labels must be 0/1: map {distinct[1]!r} to 1 and "
            f"{distinct[0]!r} to 0 before files land (or use task: multiclass with classes)"), *unlabelled)
    integral = not target.dtype.is_float() or bool((values == values.floor()).all())
    if n <= opts.max_classes and (not numeric or integral):
        classes = [int(v) for v in distinct.to_list()] if numeric else [str(v) for v in distinct.to_list()]
        return "multiclass", classes, (
            f"REVIEW: {n} distinct values in the sample ({shown}); a label outside classes is rejected", *unlabelled)
    if numeric:
        return "regression", None, (
            f"REVIEW: {n:,} distinct numbers in the sample, {_number(values.min())} .. {_number(values.max())}",
            *unlabelled)
    raise InferenceError(f"target {target.name!r} is text with {n} distinct values: too many classes "
                         f"(at most {opts.max_classes}) and not numbers for a regression")


def guess_id(frame: pl.DataFrame, exclude: set[str]) -> str | None:
    candidates = []
    for col in frame.columns:
        s = frame[col]
        if col in exclude or col in RESERVED or not (s.dtype.is_integer() or s.dtype == pl.String):
            continue
        if s.null_count() == 0 and s.n_unique() == s.len():
            candidates.append(col)
    named = [c for c in candidates if ID_NAME.search(c)]
    return (named or candidates or [None])[0]


def guess_timestamp(frame: pl.DataFrame, exclude: set[str], share: float) -> str | None:
    found = []
    for col in frame.columns:
        s = frame[col]
        if col in exclude or col in RESERVED:
            continue
        if isinstance(s.dtype, pl.Datetime) or s.dtype == pl.Date or s.dtype == pl.String and _parses_as_datetime(s, share):
            found.append(col)
    named = [c for c in found if TIME_NAME.search(c)]
    return (named or found or [None])[0]


def _parses_as_datetime(s: pl.Series, share: float) -> bool:
    values = s.drop_nulls().head(2_000)
    if values.len() == 0 or not bool(values.str.contains(r"^\d{4}-\d{2}-\d{2}").all()):
        return False
    try:
        parsed = values.str.to_datetime(strict=False, time_zone="UTC")
    except Exception:  # noqa: BLE001  (mixed offsets and odd formats raise many kinds of errors)
        return False
    return parsed.null_count() <= (1 - share) * values.len()


def _present(s: pl.Series) -> pl.Series:
    s = s.drop_nulls()
    return s.drop_nans() if s.dtype.is_float() else s


def guess_column(series: pl.Series, rows: int, opts: InferenceOptions) -> ColumnGuess:
    name, dtype = series.name, series.dtype
    values = _present(series)
    missing = rows - values.len()
    null_share = missing / max(rows, 1)
    null_text = f"{null_share:.1%} missing"
    if name in RESERVED or name.startswith("proba_"):
        return ColumnGuess(name, "skipped", str(dtype), f"'{name}' is a name the package reserves; rename it to use it")
    if values.len() == 0:
        return ColumnGuess(name, "skipped", str(dtype), "no value at all in the sample")
    if dtype.is_temporal():
        return ColumnGuess(name, "skipped", str(dtype), "a datetime: not a model input as it is (derive features "
                                                         "such as the hour or the age in days first)")
    allowed_nulls = min(1.0, math.ceil((null_share * 1.5 + opts.null_margin) * 100) / 100)
    distinct = values.n_unique()
    is_text = dtype in (pl.String, pl.Categorical, pl.Boolean) or isinstance(dtype, (pl.Enum, pl.Categorical))
    if is_text or (dtype.is_integer() and distinct <= opts.max_codes):
        return _categorical(series, values, distinct, allowed_nulls, null_text, opts)
    if not dtype.is_numeric():
        return ColumnGuess(name, "skipped", str(dtype), f"type {dtype} is neither numeric nor categorical")
    return _numeric(series, values, allowed_nulls, null_text, opts)


def _categorical(series, values, distinct, allowed_nulls, null_text, opts) -> ColumnGuess:
    name, dtype = series.name, series.dtype
    review = []
    feature: dict[str, Any] = {"name": name, "type": "categorical"}
    if dtype != pl.Boolean and not dtype.is_integer() and distinct == values.len() and values.len() > 20:
        return ColumnGuess(name, "skipped", str(dtype), f"text unique on every row ({distinct:,} values): an "
                                                         "identifier or free text, not a category")
    if distinct <= opts.max_categories:
        cats = values.unique().sort().to_list()
        feature["categories"] = [int(c) if isinstance(c, int) and not isinstance(c, bool) else str(c).lower()
                                 if isinstance(c, bool) else str(c) for c in cats]
        if dtype.is_integer():
            review.append(f"integer codes with {distinct} values: if it is a count or an amount, make it "
                          "numeric (a code not listed is rejected)")
        summary = f"{distinct} categories in the sample, {null_text}"
    else:
        summary = f"{distinct:,} distinct values in the sample (more than {opts.max_categories}), {null_text}"
        review.append("categories not listed (any value is allowed): high cardinality; consider dropping it")
    feature["max_null_fraction"] = allowed_nulls
    return ColumnGuess(name, "feature", str(dtype), summary, feature, tuple(review))


def _numeric(series, values, allowed_nulls, null_text, opts) -> ColumnGuess:
    name, dtype = series.name, series.dtype
    review = []
    finite = values.filter(values.is_finite()) if dtype.is_float() else values
    if finite.len() < values.len():
        review.append(f"{values.len() - finite.len()} infinite values in the sample: validation rejects them")
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo
    if span == 0:
        review.append(f"constant in the sample ({_number(lo)}): it tells the model nothing; drop it, or set "
                      "the bounds it may really take")
        width = max(abs(lo) * opts.margin, 1.0)
        bound_lo, bound_hi = lo - width, hi + width
    else:
        bound_lo, bound_hi = lo - opts.margin * span, hi + opts.margin * span
    if lo >= 0 and bound_lo < 0:
        bound_lo = 0.0            # never negative in the sample: kept non-negative
    step = 10.0 ** (math.floor(math.log10(max(bound_hi - bound_lo, 1e-12))) - 1)
    bound_lo = math.floor(bound_lo / step) * step
    bound_hi = math.ceil(bound_hi / step) * step
    if dtype.is_integer() or step >= 1:
        bound_lo, bound_hi = float(math.floor(bound_lo)), float(math.ceil(bound_hi))
    feature = {"name": name, "type": "numeric", "min": _round(bound_lo), "max": _round(bound_hi),
               "max_null_fraction": allowed_nulls}
    summary = f"{_number(lo)} .. {_number(hi)} in the sample, {null_text}"
    return ColumnGuess(name, "feature", str(dtype), summary, feature, tuple(review))


def _round(x: float) -> float | int:
    y = float(f"{x:.10g}")
    return int(y) if y.is_integer() else y


def identifier(text: str) -> str:
    """A pipeline name from a file or folder name: lower-case letters, digits and '_'."""
    name = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")
    name = re.sub(r"_+", "_", name)
    if not name or not name[0].isalpha():
        name = f"pipeline_{name}".rstrip("_")
    return name[:63]
