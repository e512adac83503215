"""Delayed-label performance: join late labels to stored predictions, metrics per day.

Labels often arrive days after scoring. Joining them by id to the predictions the
champion actually served gives the model's real-world metrics as a daily time series,
and a drop against the champion's holdout baseline is a retrain signal (concept drift
that feature drift alone can miss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from mlops_assets.core.features import canonical_series
from mlops_assets.core.metrics import HIGHER_IS_BETTER, compute_metrics
from mlops_assets.core.predictions import MODEL_VERSION, SCORED_AT, scores_for_metrics

LABEL = "__label"
DAY = "day"


class LabelDataError(ValueError):
    pass


def join_labels(predictions: pl.DataFrame, labels: pl.DataFrame, *, id_column: str, label_column: str,
                time_column: str) -> pl.DataFrame:
    """Inner join on id; the latest prediction per id wins (a re-score by a newer champion)."""
    for col in (id_column, label_column, time_column):
        if col not in labels.columns:
            raise LabelDataError(f"ground truth: missing column '{col}' (have {labels.columns})")
    if id_column not in predictions.columns:
        raise LabelDataError(f"predictions: missing id column '{id_column}'")
    nulls = labels[label_column].null_count()
    if nulls:
        raise LabelDataError(f"ground truth column '{label_column}': {nulls} rows have no label")
    time = pl.col(time_column)
    if labels.schema[time_column] == pl.String:
        time = time.str.to_datetime(time_zone="UTC")
    lab = labels.select(
        pl.col(id_column), pl.col(label_column).alias(LABEL), time.dt.date().alias(DAY)
    ).unique(subset=[id_column], keep="last")
    preds = predictions.sort(SCORED_AT).unique(subset=[id_column], keep="last")
    return preds.join(lab, on=id_column, how="inner")


def _labels(joined: pl.DataFrame, task: str, classes: list) -> np.ndarray:
    if task == "multiclass":
        index = {str(c): i for i, c in enumerate(classes)}
        # 3.0 in a label file is class "3": labels are matched by value, as in validation.
        labels = canonical_series(joined[LABEL])
        return labels.replace_strict(index, default=None, return_dtype=pl.Float64).to_numpy()
    return joined[LABEL].cast(pl.Float64).to_numpy()


def daily_performance(joined: pl.DataFrame, task: str, *, threshold: float = 0.5, classes: list | None = None,
                      min_rows: int = 50) -> pl.DataFrame:
    """One row per (day, model_version) with the task's metrics; days below min_rows are kept
    with their count but no metrics, so thin days never trigger anything."""
    classes = [str(c) for c in (classes or [])]
    rows = []
    for (day, version), part in joined.group_by([DAY, MODEL_VERSION], maintain_order=True):
        row = {DAY: day, MODEL_VERSION: str(version), "n": part.height}
        if part.height >= min_rows:
            try:
                row.update(compute_metrics(task, _labels(part, task, classes), scores_for_metrics(part, task, classes), threshold))
            except ValueError:
                pass
        rows.append(row)
    if not rows:
        return pl.DataFrame(schema={DAY: pl.Date, MODEL_VERSION: pl.String, "n": pl.Int64})
    return pl.DataFrame(rows).sort([DAY, MODEL_VERSION])


@dataclass(frozen=True)
class PerformanceSignal:
    metric: str
    baseline: float          # the champion's holdout value
    current: float | None    # mean over the recent window
    drop: float | None       # positive = worse than baseline
    threshold: float
    days: int
    triggered: bool
    message: str


def performance_signal(series: pl.DataFrame, *, metric: str, baseline: float, champion_version: str,
                       max_drop: float, window_days: int = 3) -> PerformanceSignal:
    """Compare the champion's recent daily metric with its holdout baseline."""
    mine = series.filter(pl.col(MODEL_VERSION) == champion_version)
    if metric in mine.columns:
        mine = mine.filter(pl.col(metric).is_not_null() & pl.col(metric).is_not_nan())
    if metric not in mine.columns or mine.height == 0:
        return PerformanceSignal(metric, baseline, None, None, max_drop, 0, False,
                                 f"no labelled days yet for champion v{champion_version}")
    recent = mine.sort(DAY).tail(window_days)
    current = float(recent[metric].mean())
    drop = (baseline - current) if HIGHER_IS_BETTER.get(metric, True) else (current - baseline)
    triggered = drop > max_drop
    verdict = "exceeds" if triggered else "within"
    return PerformanceSignal(
        metric, baseline, current, drop, max_drop, recent.height, triggered,
        f"{metric} over the last {recent.height} labelled day(s) = {current:.4f} vs holdout {baseline:.4f}: "
        f"drop {drop:.4f} {verdict} the allowed {max_drop}",
    )


# -- a release's two arms -----------------------------------------------------------------------
@dataclass(frozen=True)
class ArmResult:
    arm: str                 # champion | candidate
    version: str
    rows: int                # labelled rows on the days both arms have labels
    value: float | None      # the main metric on those rows (None: not computable yet)


@dataclass(frozen=True)
class ArmComparison:
    """The champion's and the candidate's main metric on the same labelled days.

    Each arm's rows are pooled over the days on which both arms have labelled rows, so a day
    (and its base rate) only ever counts for both or for neither."""

    metric: str
    higher_is_better: bool
    days: tuple[str, ...]
    champion: ArmResult
    candidate: ArmResult

    @property
    def drop(self) -> float | None:
        """How much worse the candidate is (positive: worse), or None when either is unknown."""
        a, b = self.champion.value, self.candidate.value
        if a is None or b is None:
            return None
        return (a - b) if self.higher_is_better else (b - a)

    def describe(self) -> str:
        def one(r: ArmResult) -> str:
            shown = "-" if r.value is None else f"{r.value:.4f}"
            return f"{r.arm} v{r.version} {shown} on {r.rows} rows"
        return f"{self.metric} {one(self.candidate)} vs {one(self.champion)} over {len(self.days)} day(s)"

    def rows(self) -> list[dict]:
        return [{"arm": r.arm, MODEL_VERSION: r.version, "labelled_rows": r.rows,
                 self.metric: r.value if r.value is not None else float("nan")}
                for r in (self.champion, self.candidate)]

    def to_dict(self) -> dict:
        return {"metric": self.metric, "higher_is_better": self.higher_is_better, "days": list(self.days),
                "champion": vars(self.champion).copy(), "candidate": vars(self.candidate).copy()}

    @classmethod
    def from_dict(cls, data: dict | None) -> ArmComparison | None:
        if not data:
            return None
        return cls(metric=data["metric"], higher_is_better=bool(data["higher_is_better"]),
                   days=tuple(data["days"]), champion=ArmResult(**data["champion"]),
                   candidate=ArmResult(**data["candidate"]))


def compare_arms(joined: pl.DataFrame, *, task: str, metric: str, champion_version: str, candidate_version: str,
                 threshold: float = 0.5, classes: list | None = None) -> ArmComparison:
    """`joined` (predictions joined to labels, `join_labels`) holding both versions' rows:
    in shadow both scored every row, in canary each scored its arm."""
    classes = [str(c) for c in (classes or [])]
    versions = joined[MODEL_VERSION].cast(pl.String) if joined.height else pl.Series(MODEL_VERSION, [], pl.String)
    parts = {arm: joined.filter(versions == v) for arm, v in (("champion", champion_version),
                                                                ("candidate", candidate_version))}
    days = set(parts["champion"][DAY].unique().to_list()) & set(parts["candidate"][DAY].unique().to_list()) \
        if joined.height else set()

    def result(arm: str, version: str) -> ArmResult:
        part = parts[arm].filter(pl.col(DAY).is_in(sorted(days))) if days else parts[arm].head(0)
        value = None
        if part.height:
            try:
                value = compute_metrics(task, _labels(part, task, classes), scores_for_metrics(part, task, classes),
                                        threshold).get(metric)
            except ValueError:
                value = None
            if value is not None and not np.isfinite(value):
                value = None
        return ArmResult(arm, str(version), part.height, None if value is None else float(value))

    return ArmComparison(metric, HIGHER_IS_BETTER.get(metric, True), tuple(str(d) for d in sorted(days)),
                         result("champion", champion_version), result("candidate", candidate_version))
