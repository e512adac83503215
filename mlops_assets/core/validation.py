"""Batch validation: every rule the spec declares, checked on a polars frame.

Pure (no Dagster). Each check returns the violations it found, and each violation names
the column and the rule, so the asset check message reads like
``column 'income': range (3 values below min 0.0, e.g. -120.0)``.

An empty or header-only batch says so first: with no rows, a file's column types mean
nothing (polars reads every column of a header-only CSV as text), so no per-column rule runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from mlops_assets.core.features import canonical_series, parse_timestamps, unparseable_timestamps
from mlops_assets.spec import PipelineSpec
from mlops_assets.spec_rules import DUPLICATED_HEADER_RE

# Order matters only for display; each is its own blocking asset check.
CHECK_NAMES = ("schema", "keys", "nulls", "ranges", "categories", "row_count", "target", "label_distribution")
CHECK_DESCRIPTIONS = {
    "schema": "Every declared column is present with a compatible type.",
    "keys": "The id column has no nulls and no duplicates.",
    "nulls": "Each feature's share of missing values is within max_null_fraction.",
    "ranges": "Numeric features lie within their declared min/max.",
    "categories": "Categorical features only hold their declared categories.",
    "row_count": "The batch has at least min_rows rows.",
    "target": "Labels, when present, are valid for the task (no nulls, known classes).",
    "label_distribution": "Labels, when present, are plausible next to the champion's training labels "
                          "(not one class; class shares or mean not wildly off).",
}


@dataclass(frozen=True)
class RuleViolation:
    check: str
    column: str | None
    rule: str
    detail: str

    def __str__(self) -> str:
        where = f"column '{self.column}'" if self.column else "batch"
        return f"{where}: {self.rule} ({self.detail})"


@dataclass
class ValidationReport:
    n_rows: int
    labelled: bool
    violations: list[RuleViolation] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations

    def for_check(self, check: str) -> list[RuleViolation]:
        return [v for v in self.violations if v.check == check]

    def message(self, check: str | None = None) -> str:
        found = self.for_check(check) if check else self.violations
        if not found:
            return "passed"
        return "; ".join(str(v) for v in found)


def _is_numeric(dtype: pl.DataType) -> bool:
    # Null: a column with no value at all (all-null Parquet); the nulls rule speaks for it.
    return (dtype.is_numeric() and dtype != pl.Boolean) or dtype == pl.Null


def _is_categorical_compatible(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Categorical, pl.Boolean, pl.Null) or isinstance(
        dtype, (pl.Enum, pl.Categorical)
    ) or dtype.is_integer()


def _fractional_codes(col: pl.Series) -> list:
    """Float values of a categorical column that are not whole numbers (3.0 is the code 3; 2.5 is no code)."""
    if not col.dtype.is_float():
        return []
    x = col.drop_nulls().drop_nans()
    return x.filter(x.is_finite().not_() | (x != x.floor())).unique().sort().head(3).to_list()


EXAMPLE_CHARS = 60   # a 1 MB value is shown by its start and length: messages stay a few KB
SHOWN_COLUMNS = 30


def _examples(values: pl.Series, n: int = 3) -> list:
    """Up to `n` distinct values to quote in a message, long text shortened."""
    shown = values.unique(maintain_order=True).head(n).to_list()
    return [v[:EXAMPLE_CHARS] + f"…({len(v)} chars)" if isinstance(v, str) and len(v) > EXAMPLE_CHARS else v
            for v in shown]


def _not_numbers(col: pl.Series) -> str:
    """For a text column that should hold numbers: which values are not numbers."""
    if col.dtype != pl.String:
        return ""
    odd = col.filter(col.str.strip_chars().cast(pl.Float64, strict=False).is_null() & col.is_not_null())
    if not odd.len():
        return "; every value is a number written as text: write them as numbers"
    return f"; {odd.len()} values are not numbers, e.g. {_examples(odd)}"


def _is_id_type(dtype: pl.DataType) -> bool:
    return dtype.is_integer() or dtype in (pl.String, pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum)


def _missing(col: str, columns: list[str]) -> str:
    """Why a required column is missing: the near miss a file most often has, or what it has."""
    near = [c for c in columns if c.strip().casefold() == col.casefold()]
    if near:
        return f"expected by the spec; the file has {near[0]!r}: names must match exactly, case and spaces included"
    shown = columns[:SHOWN_COLUMNS] + ([f"... {len(columns) - SHOWN_COLUMNS} more"] if len(columns) > SHOWN_COLUMNS else [])
    return f"expected by the spec; got {shown}"


def _duplicated_headers(columns: list[str]) -> dict[str, list[str]]:
    """polars reads a repeated CSV header 'x' as 'x', 'x_duplicated_0', ...: base -> the renamed copies."""
    present = set(columns)
    found: dict[str, list[str]] = {}
    for col in columns:
        m = DUPLICATED_HEADER_RE.match(col)
        if m and m["base"] in present:
            found.setdefault(m["base"], []).append(col)
    return found


def validate_batch(df: pl.DataFrame, spec: PipelineSpec, label_reference: dict | None = None) -> ValidationReport:
    """Check one raw batch against the spec. Never raises on bad data: it reports."""
    report = ValidationReport(n_rows=df.height, labelled=spec.target in df.columns)
    bad = report.violations.append
    schema = df.schema
    usable: set[str] = set()

    if df.height == 0:
        shape = f"header only: {df.width} columns" if df.width else "no columns either"
        bad(RuleViolation("row_count", None, "the batch has no rows", f"{shape}; min_rows is {spec.min_rows}"))
    required = [spec.id_column] + spec.feature_names
    required += [c for c in (spec.timestamp_column, spec.group_column) if c]
    for col in dict.fromkeys(required):
        if col not in schema:
            bad(RuleViolation("schema", col, "missing column", _missing(col, df.columns)))
        else:
            usable.add(col)
    for base, copies in _duplicated_headers(df.columns).items():
        bad(RuleViolation("schema", base, "duplicated column",
                          f"the file's header names '{base}' {len(copies) + 1} times (read as {[base, *copies]}); "
                          "which one holds the data is ambiguous"))
        usable.discard(base)
    if df.height == 0:
        return report   # no values: types, keys, ranges and labels have nothing to say
    for feat in spec.features:
        if feat.name not in usable:
            continue
        dtype = schema[feat.name]
        ok = _is_numeric(dtype) if feat.type == "numeric" else _is_categorical_compatible(dtype) or dtype.is_float()
        fractional = _fractional_codes(df[feat.name]) if ok and feat.type == "categorical" else []
        if not ok:
            hint = _not_numbers(df[feat.name]) if feat.type == "numeric" else ""
            bad(RuleViolation("schema", feat.name, "type", f"declared {feat.type}, got {dtype}{hint}"))
        elif fractional:
            bad(RuleViolation("schema", feat.name, "type", f"declared categorical, got {dtype} values that are "
                              f"not whole-number codes, e.g. {fractional}"))
        if not ok or fractional:
            usable.discard(feat.name)
    ts = spec.timestamp_column
    if ts in usable and not (isinstance(schema[ts], pl.Datetime) or schema[ts] in (pl.Date, pl.String, pl.Null)):
        epoch = "; epoch numbers are not read (their unit is ambiguous): write datetimes" \
            if schema[ts].is_numeric() else ""
        bad(RuleViolation("schema", ts, "type", f"timestamp column must be a datetime, a date or ISO 8601 text, "
                          f"got {schema[ts]}{epoch}"))
    elif ts in usable:
        unreadable = unparseable_timestamps(df[ts])
        if unreadable.len():
            # Values that parse on their own but not beside the rest: another ISO form than the first value's.
            alone = parse_timestamps(unreadable.unique(maintain_order=True).head(20)).drop_nulls().len()
            first = df[ts].filter(parse_timestamps(df[ts]).is_not_null()).head(1)
            mixed = (f"; they parse on their own, but a column is read in one format, its first readable value's "
                     f"({_examples(first, 1)[0]!r}): write every value alike") if alone and first.len() else ""
            bad(RuleViolation("schema", ts, "unparseable timestamps",
                              f"{unreadable.len()} rows, e.g. {_examples(unreadable)}; "
                              f"expected ISO 8601 such as 2026-01-31T08:00:00Z{mixed}"))
    group = spec.group_column
    if group in usable and group not in spec.feature_names:
        dtype = schema[group]
        if not (_is_categorical_compatible(dtype) or dtype.is_float()) or _fractional_codes(df[group]):
            bad(RuleViolation("schema", group, "type", f"the group column must hold categories (text, integer "
                              f"codes or booleans), got {dtype}"))

    if spec.id_column in usable and not _is_id_type(schema[spec.id_column]):
        exact = "; a float id is exact only up to 2**53: write ids as integers" if schema[spec.id_column].is_float() else ""
        bad(RuleViolation("schema", spec.id_column, "type", f"ids must be integers or text, got "
                          f"{schema[spec.id_column]}{exact}"))
        usable.discard(spec.id_column)
    if spec.id_column in usable:
        ids = df[spec.id_column]
        if ids.null_count():
            bad(RuleViolation("keys", spec.id_column, "null ids", f"{ids.null_count()} rows"))
        ids = ids.drop_nulls()
        dup = ids.len() - ids.n_unique()
        if dup:
            bad(RuleViolation("keys", spec.id_column, "duplicate ids", f"{dup} duplicated rows"))

    checked = [feat for feat in spec.features if feat.name in usable]
    counts = _feature_counts(df, checked)
    for feat in checked:
        missing, infinite, below, above = counts[feat.name]
        frac = missing / max(df.height, 1)
        if frac > feat.max_null_fraction:
            bad(RuleViolation("nulls", feat.name, "too many nulls",
                              f"{frac:.2%} missing > max_null_fraction {feat.max_null_fraction:.2%}"))
        if feat.type == "numeric":
            if infinite or below or above:   # the rare path: find the examples
                _check_range(df, feat.name, feat.min, feat.max, bad)
        elif feat.categories is not None:
            values = canonical_series(df[feat.name]).drop_nulls()   # 3, 3.0 and "3" are one category
            unknown = values.filter(~values.is_in(feat.categories))
            if unknown.len():
                examples = _examples(unknown.unique().sort(), 5)
                bad(RuleViolation("categories", feat.name, "unknown categories",
                                  f"{unknown.len()} rows, e.g. {examples}; allowed {feat.categories}"))

    if df.height < spec.min_rows:
        bad(RuleViolation("row_count", None, "too few rows", f"{df.height} < min_rows {spec.min_rows}"))

    if report.labelled:
        _check_target(df[spec.target], spec, bad)
        if spec.labels.check and not report.for_check("target"):
            from mlops_assets.core.labels import check_labels

            rules = spec.labels
            for problem in check_labels(
                df[spec.target], spec.task, label_reference, min_rows=rules.min_rows,
                reject_single_class=rules.reject_single_class, max_rate_ratio=rules.max_rate_ratio,
                max_mean_shift_sd=rules.max_mean_shift_sd, alpha=rules.alpha,
            ):
                bad(RuleViolation("label_distribution", spec.target, "implausible labels", problem))
    return report


def _feature_counts(df: pl.DataFrame, features) -> dict[str, tuple[int, int, int, int]]:
    """Per feature (missing, infinite, below min, above max) in one pass over the frame: one
    polars select runs the columns in parallel, where a check per column and rule would read
    each column up to four times. Range counts are those of `_check_range` (numeric only)."""
    exprs = []
    for feat in features:
        col, dtype = pl.col(feat.name), df.schema[feat.name]
        missing = col.null_count() + (col.is_nan().sum() if dtype.is_float() else 0)
        exprs.append(missing.cast(pl.Int64).alias(f"{feat.name}\0missing"))
        if feat.type != "numeric":
            continue
        x = col.cast(pl.Float64).fill_nan(None)    # NaN is missing, never out of range
        exprs.append(x.is_infinite().sum().cast(pl.Int64).alias(f"{feat.name}\0inf"))
        for bound, op, label in ((feat.min, "lt", "below"), (feat.max, "gt", "above")):
            if bound is not None:
                exprs.append(getattr(x, op)(bound).sum().cast(pl.Int64).alias(f"{feat.name}\0{label}"))
    row = df.select(exprs).row(0, named=True) if exprs else {}
    return {feat.name: tuple(int(row.get(f"{feat.name}\0{k}", 0)) for k in ("missing", "inf", "below", "above"))
            for feat in features}


def _check_range(df: pl.DataFrame, name: str, lo: float | None, hi: float | None, bad) -> None:
    col = df[name].cast(pl.Float64).fill_nan(None)
    if col.dtype.is_float() and col.is_infinite().any():
        bad(RuleViolation("ranges", name, "infinite values", f"{int(col.is_infinite().sum())} rows"))
    for bound, op, label in ((lo, "lt", "below min"), (hi, "gt", "above max")):
        if bound is None:
            continue
        out = col.filter(getattr(col, op)(bound))
        if out.len():
            bad(RuleViolation("ranges", name, "out of range",
                              f"{out.len()} values {label} {bound}, e.g. {out.head(3).to_list()}"))


def _check_target(target: pl.Series, spec: PipelineSpec, bad) -> None:
    name = spec.target
    nulls = target.null_count() + (int(target.is_nan().sum()) if target.dtype.is_float() else 0)
    if nulls:
        bad(RuleViolation("target", name, "null labels", f"{nulls} rows have no label"))
    values = target.drop_nulls()
    if spec.task == "binary":
        if not (_is_numeric(target.dtype) or target.dtype == pl.Boolean):
            bad(RuleViolation("target", name, "type", f"binary labels must be 0/1 or true/false, got {target.dtype}"
                              + (f" values, e.g. {_examples(values.sort())}" if target.dtype == pl.String else "")))
            return
        odd = values.cast(pl.Float64).filter(~values.cast(pl.Float64).is_in([0.0, 1.0]))
        if odd.len():
            bad(RuleViolation("target", name, "labels not 0/1", f"e.g. {odd.unique().head(3).to_list()}"))
    elif spec.task == "multiclass" and (not (_is_categorical_compatible(target.dtype) or target.dtype.is_float()
                                             or target.dtype.is_decimal()) or _fractional_codes(values)):
        bad(RuleViolation("target", name, "type", f"class labels must be text or whole-number codes, got "
                          f"{target.dtype}" + (f" values such as {_fractional_codes(values)}"
                                               if target.dtype.is_float() else "")))
    elif spec.task == "multiclass" and spec.classes is not None:
        allowed = [str(c) for c in spec.classes]
        labels = canonical_series(values)              # 3, 3.0 and "3" are one class
        odd = labels.filter(~labels.is_in(allowed))
        if odd.len():
            bad(RuleViolation("target", name, "unknown classes",
                              f"{odd.len()} rows, e.g. {_examples(odd)}; classes {allowed}"))
    elif spec.task == "regression":
        if not _is_numeric(target.dtype):
            bad(RuleViolation("target", name, "type", f"regression labels must be numeric, got {target.dtype}"
                              f"{_not_numbers(target)}"))
        elif target.dtype.is_float() and values.is_infinite().any():
            bad(RuleViolation("target", name, "infinite labels", f"{int(values.is_infinite().sum())} rows"))
