"""A drift result as a table: Markdown (run logs, asset metadata, pull requests) and polars."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from .compare import DriftResult, FeatureDrift

METHOD_LABELS = {
    "wasserstein": "Wasserstein/std",
    "jensenshannon": "Jensen-Shannon",
    "psi": "PSI",
    "ks": "KS p-value",
    "chisquare": "chi-square p-value",
    "z": "z-test p-value",
}


FLOAT_FIELDS = (
    "score",
    "threshold",
    "psi",
    "js_distance",
    "wasserstein_norm",
    "ks_statistic",
    "ks_pvalue",
    "chi2_pvalue",
    "unseen_share",
    "ref_missing_rate",
    "cur_missing_rate",
    "missing_rate_delta",
    "novel_mass",
)


def result_to_frame(result: DriftResult) -> pl.DataFrame:
    """One row per feature plus the prediction row (``role``)."""
    rows = [{**f.to_dict(), "role": "feature"} for f in result.features]
    if result.prediction is not None:
        rows.append({**result.prediction.to_dict(), "role": "prediction"})
    schema = {name: pl.Float64 for name in FLOAT_FIELDS}
    schema.update(
        {
            "name": pl.String,
            "kind": pl.String,
            "method": pl.String,
            "drifted": pl.Boolean,
            "n_reference": pl.Int64,
            "n_current": pl.Int64,
            "computed": pl.Boolean,
            "note": pl.String,
            "role": pl.String,
            "novel_region": pl.String,
        }
    )
    return pl.DataFrame(rows, schema=schema)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value != 0 and abs(value) < 10**-digits:
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.1f} pp" if value else "0"


def _row(f: FeatureDrift) -> str:
    verdict = "**DRIFT**" if f.drifted else "ok"
    if not f.computed:
        verdict += f" ({f.note})"
    unseen = "-" if f.unseen_share is None else f"{f.unseen_share * 100:.2f}%"
    cells = [
        f"`{f.name}`",
        f.kind,
        METHOD_LABELS.get(f.method, f.method),
        _num(f.score, 4),
        _num(f.threshold, 2),
        verdict,
        _num(f.psi),
        _num(f.js_distance),
        _num(f.wasserstein_norm),
        _num(f.ks_pvalue, 4),
        _pct(f.missing_rate_delta),
        unseen,
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| feature | kind | method | score | threshold | verdict | PSI | JS | W/std | KS p "
    "| missing change | unseen |\n"
    "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"
)


def result_to_markdown(result: DriftResult, sort_by_score: bool = True) -> str:
    if result.empty:
        return f"**Drift: not computed.** {result.message}\n"
    status = "DETECTED" if result.dataset_drift else "not detected"
    lines = [
        f"**Dataset drift: {status}.** {result.message}.",
        "",
        f"Reference rows: {result.n_reference:,}; current rows: {result.n_current:,}.",
        "",
        HEADER,
    ]
    features = list(result.features)
    if sort_by_score:
        features.sort(key=lambda f: (not f.drifted, -f.severity, f.name))
    lines += [_row(f) for f in features]
    if result.prediction is not None:
        lines += [
            "",
            "Prediction drift (not counted in the share):",
            "",
            HEADER,
            _row(result.prediction),
        ]
    lines += [
        "",
        (
            "Score is the value the verdict is taken on: a p-value for KS, chi-square and z "
            "(drift when below the threshold) or a distance (drift when at or above it). "
            "PSI, JS, W/std and KS p are shown for every column they apply to."
        ),
    ]
    return "\n".join(lines) + "\n"
