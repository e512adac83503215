"""Holdout metrics per task, slice metrics and fairness gaps. Plain arrays in, dicts out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# True when a larger value is better; the gate uses this to read "regression".
HIGHER_IS_BETTER = {
    "roc_auc": True, "pr_auc": True, "accuracy": True, "f1": True, "macro_f1": True, "r2": True,
    "log_loss": False, "brier": False, "rmse": False, "mae": False,
}


def predicted_labels(task: str, score: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    if task == "binary":
        return (score >= threshold).astype(np.int64)
    if task == "multiclass":
        return np.argmax(score, axis=1)
    return score


def compute_metrics(task: str, y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """binary: score is P(class 1); multiclass: [n, k] probabilities; regression: predictions."""
    from sklearn import metrics as skm  # 1.5 s to import: only when metrics are computed
    if len(y_true) == 0:
        raise ValueError("cannot compute metrics on zero rows")
    if task == "binary":
        y = y_true.astype(np.int64)
        p = np.clip(score, 1e-15, 1 - 1e-15)
        labels = predicted_labels(task, score, threshold)
        out = {
            "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
            "brier": float(skm.brier_score_loss(y, score)),
            "accuracy": float(skm.accuracy_score(y, labels)),
            "f1": float(skm.f1_score(y, labels, zero_division=0)),
            "positive_rate": float(labels.mean()),
        }
        both = len(np.unique(y)) == 2
        out["roc_auc"] = float(skm.roc_auc_score(y, score)) if both else float("nan")
        out["pr_auc"] = float(skm.average_precision_score(y, score)) if both else float("nan")
        return out
    if task == "multiclass":
        y = y_true.astype(np.int64)
        labels = predicted_labels(task, score)
        return {
            "macro_f1": float(skm.f1_score(y, labels, average="macro", zero_division=0)),
            "log_loss": float(skm.log_loss(y, score, labels=list(range(score.shape[1])))),
            "accuracy": float(skm.accuracy_score(y, labels)),
        }
    if task == "regression":
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, score))),
            "mae": float(skm.mean_absolute_error(y_true, score)),
            "r2": float(skm.r2_score(y_true, score)),
        }
    raise ValueError(f"unknown task {task!r}")


@dataclass(frozen=True)
class FairnessReport:
    """Per-group metrics and the gaps the gate can limit."""

    groups: list[dict]                    # one row per group: group, n, gated, metrics...
    main_metric: str
    main_metric_gap: float                # best minus worst group value of the main metric
    worst_to_best_ratio: float            # worst / best group value of the main metric
    demographic_parity_difference: float | None   # binary: max-min positive prediction rate
    equal_opportunity_difference: float | None    # binary: max-min true-positive rate
    gated: list[str] = ()                 # groups large enough to gate on (rows, and positives)


def slice_metrics(
    task: str, y_true: np.ndarray, score: np.ndarray, groups: np.ndarray, main_metric: str,
    threshold: float = 0.5, min_group_rows: int = 30, min_group_positives: int = 10,
) -> FairnessReport:
    """Metrics per value of the group column. Groups with fewer than `min_group_rows` rows, or
    (classification) fewer than `min_group_positives` rows of the rarest label, are reported
    but left out of the gaps: their metrics are too noisy to gate on. AUC on 30 rows with 3
    positives can move by 0.2 from one resample to the next."""
    rows: list[dict] = []
    rates, tprs, mains = [], [], []
    labels = predicted_labels(task, score, threshold)
    groups = np.asarray(groups).astype(str)
    for g in np.unique(groups):
        mask = groups == g
        n = int(mask.sum())
        row: dict = {"group": str(g), "n": n}
        try:
            row.update(compute_metrics(task, y_true[mask], score[mask], threshold))
        except ValueError:
            continue
        rare = _rarest_label_rows(task, y_true, mask, score)
        row["gated"] = bool(n >= min_group_rows and rare >= min_group_positives)
        rows.append(row)
        if not row["gated"]:
            continue
        value = row.get(main_metric, float("nan"))
        if not np.isnan(value):
            mains.append(value)
        if task == "binary":
            rates.append(float(labels[mask].mean()))
            positives = mask & (y_true == 1)
            if positives.any():
                tprs.append(float(labels[positives].mean()))
    gap = float(max(mains) - min(mains)) if mains else 0.0
    # min/max is worst/best for scores and best/worst for errors: either way <= 1.
    ratio = float(min(mains) / max(mains)) if mains and max(mains) else 1.0
    return FairnessReport(
        groups=rows,
        main_metric=main_metric,
        main_metric_gap=gap,
        worst_to_best_ratio=ratio,
        demographic_parity_difference=(max(rates) - min(rates)) if task == "binary" and rates else None,
        equal_opportunity_difference=(max(tprs) - min(tprs)) if task == "binary" and tprs else None,
        gated=[r["group"] for r in rows if r["gated"]],
    )


def _rarest_label_rows(task: str, y_true: np.ndarray, mask: np.ndarray, score: np.ndarray) -> int:
    """Rows of the group's rarest label (every label counts): a ranking metric on 3 positives
    is noise. Regression has no labels to be rare: all rows count."""
    if task == "regression":
        return int(mask.sum())
    k = score.shape[1] if task == "multiclass" else 2
    return int(np.bincount(y_true[mask].astype(np.int64), minlength=k).min())
