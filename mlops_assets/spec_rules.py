"""The rules of a pipeline spec that pydantic's field constraints cannot state.

`PipelineSpec` (spec.py) declares the fields; this module holds what is checked across
them: column roles, reserved column names, metrics and their ranges per task, drift
methods per feature type, cron strings and time zones, search spaces, and the YAML loader
that refuses duplicate keys. Each rule reports a `(path, message)` problem, the path
relative to the model that runs it, so `format_validation_error` can name the exact field
(``gate.min_main_metric: 1.5 is outside roc_auc's range ...``) even when the rule needs
several sections to decide.

Only pydantic, yaml and the standard library here: the spec is the bottom layer. Dagster
is imported lazily, only to check a cron string with the code that builds the schedule.
"""

from __future__ import annotations

import functools
import math
import re
import types
import typing
import zoneinfo
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

if TYPE_CHECKING:
    from mlops_assets.spec import PipelineSpec

Path = tuple[Any, ...]
Problem = tuple[Path, str]

# Columns the package adds next to the user's columns (the split, the predictions table, the
# request log, the stream output, drift profiles and the delayed-label join). A declared
# column of the same name would be overwritten or make the frame ambiguous.
RESERVED_COLUMNS = {
    "_split": "the train/valid/holdout column validated_features adds",
    "__prediction": "the monitored prediction's name in drift profiles",
    "__label": "the label column of the delayed-label join",
    **dict.fromkeys(("model_version", "scored_at", "score", "prediction"), "a predictions-table column"),
    "received_at": "a request-log column", "event_id": "a stream-output column",
    "arm": "the canary predictions' arm column",
}
RESERVED_PREFIX = "proba_"          # multiclass probability columns: proba_<class>
# polars renames a repeated CSV header 'x' to 'x_duplicated_0', 'x_duplicated_1', ...;
# validation reports such columns, so a declared column may not look like one.
DUPLICATED_HEADER_RE = re.compile(r"^(?P<base>.+)_duplicated_(?P<n>\d+)$")

# The metrics each task computes (core/metrics.py) that the gate can use:
# (lowest, highest, higher is better). A test keeps this in step with core.metrics.
INF = math.inf
METRICS: dict[str, dict[str, tuple[float, float, bool]]] = {
    "binary": {"roc_auc": (0, 1, True), "pr_auc": (0, 1, True), "accuracy": (0, 1, True), "f1": (0, 1, True),
               "log_loss": (0, INF, False), "brier": (0, 1, False)},
    "multiclass": {"macro_f1": (0, 1, True), "accuracy": (0, 1, True), "log_loss": (0, INF, False)},
    "regression": {"rmse": (0, INF, False), "mae": (0, INF, False), "r2": (-INF, 1, True)},
}
DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}

# Drift methods per feature type (core/drift/compare.py: METHODS_BY_KIND, checked by a test).
DRIFT_METHODS = {
    "numeric": ("auto", "wasserstein", "ks", "psi", "jensenshannon", "chisquare"),
    "categorical": ("auto", "psi", "jensenshannon", "chisquare"),
}
P_VALUE_METHODS = ("ks", "chisquare")

# LightGBM parameters the pipeline sets, with LightGBM's aliases: an alias in extra_params
# would override them just as silently as the name itself.
LIGHTGBM_OWNED = {
    "objective": "objective_type app application loss", "num_class": "num_classes",
    "seed": "random_seed random_state", "deterministic": "",
    "categorical_feature": "cat_feature categorical_column cat_column categorical_features",
}
LIGHTGBM_SETTINGS = {
    "learning_rate": "shrinkage_rate eta", "num_leaves": "num_leaf max_leaves max_leaf max_leaf_nodes",
    "min_data_in_leaf": "min_data_per_leaf min_data min_child_samples min_samples_leaf",
    "feature_fraction": "sub_feature colsample_bytree", "lambda_l2": "reg_lambda lambda",
    "num_threads": "num_thread nthread nthreads n_jobs",
    "num_boost_round": "num_iterations num_iteration n_iter num_tree num_trees num_round num_rounds nrounds "
                       "n_estimators max_iter",
    "early_stopping_rounds": "early_stopping_round early_stopping n_iter_no_change",
}

YAML_BOOLEAN = "a YAML boolean (unquoted true/false, yes/no, on/off)"


class SpecRuleError(ValueError):
    """Broken rules, each at a path relative to the model whose validator found it."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(f"{dotted(p)}: {m}" if p else m for p, m in self.problems))


def dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def raise_problems(problems: list[Problem]) -> None:
    if problems:
        raise SpecRuleError(problems)


def format_validation_error(exc: ValidationError, name: object = None) -> tuple[str, list[tuple[str, str]]]:
    """The readable message, and the (field path, message) pairs behind it."""
    found: list[tuple[str, str]] = []
    for err in exc.errors():
        rule = (err.get("ctx") or {}).get("error")
        if isinstance(rule, SpecRuleError):
            found += [(dotted((*err["loc"], *path)) or "<spec>", msg) for path, msg in rule.problems]
        else:
            found.append((dotted(err["loc"]) or "<spec>", err["msg"].removeprefix("Value error, ")))
    head = f"invalid pipeline spec '{name}'" if isinstance(name, str) and name else "invalid pipeline spec"
    return head + ":\n  " + "\n  ".join(f"{p}: {m}" for p, m in found), found


# -- single values ----------------------------------------------------------------------------


def _whole_number(value: Any, what: str) -> Any:
    """YAML gives true for yes/on, and 3.0 for a code written 3.0: refuse the first, read the second as 3."""
    if isinstance(value, bool):  # ValueError: the only kind pydantic reports as the field's error
        raise ValueError(f"{value!r} is {YAML_BOOLEAN}: quote it to mean the text")  # noqa: TRY004
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number: {what}")
        return int(value)
    return value


def canonical_category(value: Any) -> Any:
    """A declared category in the text form data values are compared in: 3 and 3.0 are "3",
    as `core.features.canonical_strings` makes 3, 3.0 and "3" of the data. Text stays as written."""
    value = _whole_number(value, "numeric codes are integers; quote it to mean the text")
    return str(value) if isinstance(value, int) else value


def class_label(value: Any) -> Any:
    """A declared class label: text, or an integer (3.0 is 3)."""
    return _whole_number(value, "class labels are text or integers")


def class_problems(classes: list[str | int]) -> list[Problem]:
    if len({type(c) for c in classes}) > 1:
        return [((), f"{classes} mix numbers and text: labels are compared by value, so use one kind")]
    first: dict[str, int] = {}
    for i, c in enumerate(classes):
        if str(c) in first:
            return [((i,), f"{c!r} repeats classes.{first[str(c)]}: each class once")]
        first[str(c)] = i
    return []


def cron_problem(value: str) -> str | None:
    """Dagster's own cron check (what ScheduleDefinition runs), imported only when needed."""
    try:
        from dagster._utils.schedules import has_out_of_range_cron_interval, is_valid_cron_string
    except ImportError:  # a dagster without that helper: croniter if installed, else the schedule checks it
        try:
            from croniter import croniter
        except ImportError:
            return None
        is_valid_cron_string, has_out_of_range_cron_interval = croniter.is_valid, lambda _: False
    if not is_valid_cron_string(value):
        return (f"'{value}' is not a valid cron string (five fields: minute hour day-of-month month "
                "day-of-week, e.g. '0 6 * * *', or @hourly/@daily/@weekly/@monthly)")
    if has_out_of_range_cron_interval(value):
        return f"'{value}': a step larger than its field's range runs less often than it reads (*/90 minutes is hourly)"
    return None


def timezone_problem(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone '{value}': use an IANA name such as 'UTC' or 'Europe/Paris'"
    return None


def _number_types(model: type, name: str) -> set:
    ann = model.model_fields[name].annotation
    args = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
    return {a for a in args if a is not type(None)}


@functools.cache
def numeric_fields(model: type) -> frozenset[str]:
    """Fields typed int or float (optionally None)."""
    return frozenset(n for n in model.model_fields if (t := _number_types(model, n)) and t <= {int, float})


def boolean_for_number_problems(model: type, data: Any) -> list[Problem]:
    """pydantic reads true as 1 for an int field; 'min_rows: yes' is almost surely a slip."""
    if not isinstance(data, dict):
        return []
    fields = numeric_fields(model)
    return [((name,), f"expected a number, got {YAML_BOOLEAN}")
            for name, value in data.items() if name in fields and isinstance(value, bool)]


# -- one section ------------------------------------------------------------------------------


def feature_problems(feat: Any) -> list[Problem]:
    name, problems = feat.name, []
    if feat.type == "categorical":
        problems += [((b,), f"feature '{name}': min/max apply to numeric features only")
                     for b in ("min", "max") if getattr(feat, b) is not None]
    if feat.type == "numeric" and feat.categories is not None:
        problems.append((("categories",), f"feature '{name}': categories apply to categorical features only"))
    if feat.min is not None and feat.max is not None and feat.min > feat.max:
        problems.append((("max",), f"feature '{name}': min ({feat.min:g}) is greater than max ({feat.max:g})"))
    if feat.categories == []:
        problems.append((("categories",), (f"feature '{name}': an empty list allows no value at all; "
                                           "omit categories to allow any value")))
    first: dict[str, int] = {}
    for i, c in enumerate(feat.categories or []):
        if c in first:
            problems.append((("categories", i), (f"feature '{name}': '{c}' repeats categories.{first[c]} "
                                                 "(numeric codes compare by value: 3 = 3.0 = \"3\")")))
        first.setdefault(c, i)
    return problems


def split_problems(split: Any) -> list[Problem]:
    total = split.holdout_fraction + split.validation_fraction
    if total >= 1:
        return [((), (f"holdout_fraction + validation_fraction = {total:g} leaves no training rows; "
                      "the two must sum to less than 1"))]
    return []


def search_param_problems(param: Any) -> list[Problem]:
    if param.values is None:
        return []
    return [((flag,), f"'{flag}' applies to low/high ranges, not to a list of values")
            for flag in ("log", "integer") if getattr(param, flag)]


def drift_threshold_problems(override: Any) -> list[Problem]:
    t, method = override.threshold, override.method
    if t is not None and method in P_VALUE_METHODS and t >= 1:
        return [(("threshold",), (f"{t:g}: {method} compares a p-value, so a threshold of 1 or more flags every "
                                  "column; use a value below 1 (default 0.05)"))]
    if t is not None and method == "jensenshannon" and t > 1:
        return [(("threshold",), f"{t:g}: the Jensen-Shannon distance is at most 1, so no column could drift")]
    return []


def extra_params_problems(params: dict[str, Any]) -> list[Problem]:
    problems = []
    for key in params:
        for owned, aliases in LIGHTGBM_OWNED.items():
            if key == owned or key in aliases.split():
                what = "" if key == owned else f" (LightGBM's alias of '{owned}')"
                problems.append(((key,), f"'{key}'{what} is set by the pipeline and cannot be overridden"))
        for setting, aliases in LIGHTGBM_SETTINGS.items():
            if key == setting or key in aliases.split():
                problems.append(((key,), f"'{key}' would silently override a setting: set lightgbm.{setting} instead"))
    return problems


def search_space_problems(space: dict[str, Any], settings: Any, trainer: str) -> list[Problem]:
    """Every value a search can try must be a valid setting (trials only validate when they run)."""
    model = type(settings)
    allowed = set(model.model_fields) - {"extra_params", "num_threads", "device"}
    problems: list[Problem] = []
    for name, param in space.items():
        where = ("search", "space", name)
        if name not in allowed:
            problems.append((where, f"not a {trainer} setting; choose from {sorted(allowed)}"))
            continue
        if param.values is not None:
            tries = [(("values", i), v) for i, v in enumerate(param.values)]
        else:   # the sampler draws within [low, high], rounded when integer
            tries = [((end,), round(v) if param.integer else v) for end, v in (("low", param.low), ("high", param.high))]
            if not param.integer and _number_types(model, name) == {int}:
                problems.append((where, f"{trainer}.{name} is a whole number: set integer: true for this range"))
        for sub, value in tries:
            try:
                model.model_validate({**settings.model_dump(), name: value})
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
                problems.append(((*where, *sub), f"{value!r} is not a valid {trainer}.{name}: {msg}"))
    return problems


# -- across sections --------------------------------------------------------------------------


def pipeline_problems(spec: PipelineSpec) -> list[Problem]:
    """Rules across sections, checked once every section is valid on its own."""
    return [*_role_problems(spec), *_task_problems(spec), *_gate_problems(spec), *_drift_problems(spec),
            *_ground_truth_problems(spec), *_release_problems(spec)]


def _release_problems(spec: PipelineSpec) -> list[Problem]:
    """A shadow or canary release is judged on delayed labels: without them it could only time out."""
    if spec.release.mode != "none" and spec.ground_truth is None:
        why = f"'{spec.release.mode}' needs ground_truth: the release rule compares the two models on delayed labels"
        return [(("release", "mode"), why)]
    return []


def _reserved(name: str) -> str | None:
    if name in RESERVED_COLUMNS:
        return f"'{name}' is reserved: it is {RESERVED_COLUMNS[name]}"
    if name.startswith(RESERVED_PREFIX):
        return f"'{name}' is reserved: '{RESERVED_PREFIX}<class>' names the multiclass probability columns"
    if DUPLICATED_HEADER_RE.match(name):
        return f"'{name}' looks like polars' rename of a repeated CSV header (<name>_duplicated_<n>)"
    return None


ROLES = {"target": "the target", "id_column": "the id column", "timestamp_column": "the timestamp column",
         "group_column": "the group column"}


def _role_problems(spec: PipelineSpec) -> list[Problem]:
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for i, feat in enumerate(spec.features):
        if feat.name in first:
            problems.append((("features", i, "name"), (f"'{feat.name}' is also features.{first[feat.name]}: "
                                                        "feature names must be unique")))
        first.setdefault(feat.name, i)
        if why := _reserved(feat.name):
            problems.append((("features", i, "name"), why))
    claimed: dict[str, str] = {}          # column -> the first role that claimed it
    for role in ROLES:
        col = getattr(spec, role)
        if col is None:
            continue
        if why := _reserved(col):
            problems.append(((role,), why))
        if col in claimed:
            problems.append(((role,), f"'{col}' is also {ROLES[claimed[col]]}: a column has one role"))
        elif col in first and role != "group_column":   # slicing by a model input is fine
            problems.append(((role,), (f"'{col}' is also features.{first[col]}: a column has one role "
                                       "(it must not also be a feature)")))
        claimed.setdefault(col, role)
    return problems


def _task_problems(spec: PipelineSpec) -> list[Problem]:
    if spec.classes is not None and spec.task != "multiclass":
        return [(("classes",), "classes applies to task: multiclass only (binary labels are 0/1)")]
    if spec.classes is not None and len(spec.classes) < 3:
        return [(("classes",), "multiclass needs at least 3 classes (use task: binary for 2)")]
    return []


def _gate_problems(spec: PipelineSpec) -> list[Problem]:
    gate, task = spec.gate, spec.task
    metric = gate.main_metric or DEFAULT_METRIC[task]
    if metric not in METRICS[task]:
        return [(("gate", "main_metric"), f"'{metric}' is not a {task} metric; choose from {sorted(METRICS[task])}")]
    low, high, higher = METRICS[task][metric]
    problems: list[Problem] = []
    limit = gate.min_main_metric
    if limit is not None and not low <= limit <= high:
        best, worst = (high, low) if higher else (low, high)
        unreachable = limit > high if higher else limit < low
        why = f"no model can reach it (best is {best:g})" if unreachable else f"every model passes it (worst is {worst:g})"
        problems.append((("gate", "min_main_metric"), (f"{limit:g} is outside {metric}'s range [{low:g}, {high:g}] "
                                                       f"as a {'floor' if higher else 'ceiling'}: {why}")))
    span = high - low
    for path, value in ((("gate", "max_regression"), gate.max_regression),
                        (("gate", "max_regression_on_champion_holdout"),
                         getattr(gate, "max_regression_on_champion_holdout", None)),
                        (("gate", "max_fairness_gap"), gate.max_fairness_gap),
                        (("performance", "max_drop"), spec.performance.max_drop)):
        if value is not None and value > span:
            problems.append((path, (f"{value:g} exceeds the whole range of {metric} ({span:g}): the rule could "
                                    "never fail (a difference in metric units, not a percent)")))
    if gate.max_fairness_gap is not None and spec.group_column is None:
        problems.append((("gate", "max_fairness_gap"), ("needs group_column (the groups to compare); without it "
                                                        "the gate fails every model")))
    return problems


def _drift_problems(spec: PipelineSpec) -> list[Problem]:
    kinds, drift = spec.feature_types, spec.drift
    problems: list[Problem] = []
    for i, name in enumerate(drift.key_features):
        if name not in kinds:
            problems.append((("drift", "key_features", i), f"'{name}' is not a feature"))
        elif name in drift.key_features[:i]:
            problems.append((("drift", "key_features", i), f"'{name}' is listed twice"))
    for name, override in drift.per_feature.items():
        where = ("drift", "per_feature", name)
        if name not in kinds:
            problems.append((where, f"'{name}' is not a feature"))
        elif override.method not in DRIFT_METHODS[kinds[name]]:
            problems.append(((*where, "method"), (f"'{override.method}' does not apply to {kinds[name]} feature "
                                                  f"'{name}'; choose from {list(DRIFT_METHODS[kinds[name]])}")))
    return problems


def _ground_truth_problems(spec: PipelineSpec) -> list[Problem]:
    gt = spec.ground_truth
    if gt is None:
        return []
    label = gt.label_column or spec.target
    problems: list[Problem] = []
    if gt.time_column == label:
        named = "ground_truth.label_column" if gt.label_column else "target"
        problems.append((("ground_truth", "time_column"), (f"'{label}' is also the label column ({named}): "
                                                           "a column has one role")))
    if gt.time_column == spec.id_column:
        problems.append((("ground_truth", "time_column"), f"'{spec.id_column}' is also the id column"))
    if gt.label_column == spec.id_column:
        problems.append((("ground_truth", "label_column"), f"'{spec.id_column}' is also the id column"))
    return problems


# -- YAML -------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key repeated in one mapping is an error (YAML keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":   # '<<: *base' is meant to be overridden
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                if isinstance(key, typing.Hashable) and key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' at line {line} (first at line {first[key]}): "
                        "YAML would keep only the last value; remove one", key_node.start_mark)
                if isinstance(key, typing.Hashable):
                    first[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
