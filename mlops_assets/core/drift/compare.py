"""Verdicts: compare a current profile with its reference, feature by feature.

The default method and threshold of each feature follow Evidently 0.7's ``_get_default_stattest``
(``evidently/legacy/calculations/stattests/registry.py``), looked at on the non-missing values:

================  ====================================  ========================================
reference rows    numeric                               categorical
================  ====================================  ========================================
<= 1000           KS p <= 0.05; if <= 5 distinct        chi-square p < 0.05; z-test p < 0.05 if
                  values: chi-square (3-5) / z (<= 2)   <= 2 distinct values
> 1000            Wasserstein/std >= 0.1; if <= 5       Jensen-Shannon >= 0.1
                  distinct values: Jensen-Shannon
================  ====================================  ========================================

"Distinct values" counts reference and current together, as Evidently does. The data set drifts
when the share of drifted features is >= ``share_threshold`` (0.5).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import polars as pl

from . import calibrated, novelty, stats
from .errors import DriftInputError
from .profile import CategoricalProfile, ColumnProfile, DatasetProfile, NumericProfile
from .report import result_to_frame, result_to_markdown

Method = Literal["auto", "wasserstein", "ks", "psi", "jensenshannon", "chisquare", "z"]
P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})
DEFAULT_THRESHOLDS = {
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "psi": 0.1,
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
}
METHODS_BY_KIND = {
    "numeric": {"wasserstein", "ks", "psi", "jensenshannon", "chisquare", "z"},
    "categorical": {"psi", "jensenshannon", "chisquare", "z"},
}


@dataclass(frozen=True)
class FeatureDriftConfig:
    method: Method = "auto"
    threshold: float | None = None  # None: the method's default (DEFAULT_THRESHOLDS)


@dataclass
class DriftConfig:
    share_threshold: float = 0.5
    psi_bins: int = 10
    per_feature: dict[str, FeatureDriftConfig] = field(default_factory=dict)
    small_reference_rows: int = 1000
    # The calibrated two-sample tests (see calibrated.py) behind the retrain signal.
    test_min_rows: int = calibrated.DEFAULT_MIN_ROWS
    test_min_expected: float = calibrated.DEFAULT_MIN_EXPECTED  # bins of the tie-safe chi-square
    # Novel mass (novelty.py): the batch's share beyond novelty_ratio x the reference's density.
    novelty_ratio: float = novelty.DEFAULT_RATIO
    novelty_bins: int = novelty.DEFAULT_BINS


@dataclass
class FeatureDrift:
    name: str
    kind: str
    method: str
    score: float  # the value the verdict is taken on: a p-value or a distance
    threshold: float
    drifted: bool
    psi: float | None = None
    js_distance: float | None = None
    wasserstein_norm: float | None = None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    chi2_pvalue: float | None = None
    unseen_share: float | None = None
    ref_missing_rate: float = 0.0
    cur_missing_rate: float = 0.0
    missing_rate_delta: float = 0.0
    n_reference: int = 0  # non-missing values compared
    n_current: int = 0
    computed: bool = True
    note: str = ""
    # Calibrated two-sample test (calibrated.py), read by the retrain signal (signal.py); the
    # Evidently-compatible verdict above does not depend on it.
    test: str = ""
    test_statistic: float | None = None
    test_pvalue: float | None = None
    test_note: str = ""
    # Categoricals: the category whose share moved most (the signal's materiality measure).
    share_change_category: str | None = None
    share_reference: float | None = None
    share_current: float | None = None
    # Novel mass (novelty.py), the signal's second materiality measure, and where most of it is.
    novel_mass: float | None = None
    novel_region: str | None = None

    @property
    def share_change(self) -> float | None:
        if self.share_reference is None or self.share_current is None:
            return None
        return abs(self.share_current - self.share_reference)

    @property
    def severity(self) -> float:
        """How far past its threshold the score is: > 1 means drifted (for every method)."""
        if not self.computed or self.score is None or math.isnan(self.score):
            return math.inf if self.drifted else 0.0
        if self.method in P_VALUE_METHODS:
            return math.log(max(self.score, 1e-300)) / math.log(self.threshold)
        return self.score / self.threshold if self.threshold > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


@dataclass
class DriftResult:
    features: list[FeatureDrift]
    drift_share: float
    dataset_drift: bool
    n_reference: int
    n_current: int
    prediction: FeatureDrift | None = None
    empty: bool = False
    message: str = ""
    share_threshold: float = 0.5

    @property
    def n_drifted(self) -> int:
        return sum(f.drifted for f in self.features)

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def to_frame(self) -> pl.DataFrame:
        return result_to_frame(self)

    def to_markdown(self, sort_by_score: bool = True) -> str:
        return result_to_markdown(self, sort_by_score=sort_by_score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_drift": self.dataset_drift,
            "drift_share": self.drift_share,
            "share_threshold": self.share_threshold,
            "n_drifted": self.n_drifted,
            "n_features": len(self.features),
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "empty": self.empty,
            "message": self.message,
            "features": [f.to_dict() for f in self.features],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
        }


def auto_method(kind: str, n_reference: int, n_values: int, small_reference_rows: int) -> str:
    """Evidently's default test for a column (see the module docstring)."""
    if n_reference <= small_reference_rows:
        if kind == "numeric" and n_values > 5:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if kind == "numeric" and n_values > 5:
        return "wasserstein"
    return "jensenshannon"


def is_drift(method: str, score: float, threshold: float) -> bool:
    """Evidently's comparisons: KS p <= t; chi-square and z p < t; distances >= t."""
    if score is None or math.isnan(score):
        return False
    if method == "ks":
        return score <= threshold
    if method in P_VALUE_METHODS:
        return score < threshold
    return score >= threshold


def _not_computed(
    name: str,
    ref: ColumnProfile,
    cur: ColumnProfile,
    method: str,
    threshold: float,
    drifted: bool,
    note: str,
) -> FeatureDrift:
    return FeatureDrift(
        name=name,
        kind=ref.kind,
        method=method,
        score=math.nan,
        threshold=threshold,
        drifted=drifted,
        ref_missing_rate=ref.missing_rate,
        cur_missing_rate=cur.missing_rate,
        missing_rate_delta=cur.missing_rate - ref.missing_rate,
        n_reference=ref.n_valid,
        n_current=cur.n_valid,
        computed=False,
        note=note,
        test_note=f"not tested: {note}",
    )


def _test_sizes(config: DriftConfig) -> dict[str, Any]:
    return {"min_rows": config.test_min_rows, "min_expected": config.test_min_expected}


def compare_column(
    name: str, ref: ColumnProfile, cur: ColumnProfile, config: DriftConfig, psi_profile_bins: int
) -> FeatureDrift:
    if ref.kind != cur.kind:
        raise DriftInputError(f"column {name!r} is {ref.kind} in the reference, {cur.kind} now")
    fcfg = config.per_feature.get(name, FeatureDriftConfig())
    method = fcfg.method
    if method != "auto" and method not in METHODS_BY_KIND[ref.kind]:
        raise DriftInputError(f"column {name!r}: method {method!r} does not apply to {ref.kind}")
    if ref.n_valid == 0 or cur.n_valid == 0:
        m = method if method != "auto" else "n/a"
        thr = fcfg.threshold if fcfg.threshold is not None else DEFAULT_THRESHOLDS.get(m, math.nan)
        if ref.n_valid == 0:
            return _not_computed(
                name, ref, cur, m, thr, False, "reference has no non-missing values"
            )
        # A feature that went entirely missing is a change the pipeline must see.
        return _not_computed(name, ref, cur, m, thr, True, "current data has no non-missing values")
    values: dict[str, Any] = {}
    if isinstance(ref, NumericProfile):
        assert isinstance(cur, NumericProfile)
        if not (ref.edges.size == cur.edges.size and (ref.edges == cur.edges).all()):
            raise DriftInputError(f"column {name!r}: current sketch is not on the reference edges")
        values.update(calibrated.numeric_test(ref, cur, **_test_sizes(config)).fields())
        found = novelty.numeric_novelty(ref, cur, config.novelty_ratio, config.novelty_bins)
        values.update(novelty.fields(found))
        vc = stats.numeric_value_counts(ref, cur)
        n_values = stats.MANY_VALUES if vc is None else vc[2]
        d = stats.ks_statistic(ref, cur)
        values.update(
            wasserstein_norm=stats.wasserstein_norm(ref, cur),
            ks_statistic=d,
            ks_pvalue=stats.ks_pvalue(d, ref.n_valid, cur.n_valid, exact=False),
            psi=stats.psi_numeric(ref, cur, config.psi_bins, psi_profile_bins),
        )
        if vc is not None:
            r, c, _ = vc
            values.update(
                js_distance=stats.js_distance(r, c), chi2_pvalue=stats.chisquare_pvalue(r, c)
            )
        else:
            values["js_distance"] = stats.js_distance(*stats.sturges_proportions(ref, cur))
    else:
        assert isinstance(ref, CategoricalProfile) and isinstance(cur, CategoricalProfile)
        if ref.categories != cur.categories:
            raise DriftInputError(
                f"column {name!r}: current counts are not on the reference categories"
            )
        values.update(calibrated.categorical_test(ref, cur, min_rows=config.test_min_rows).fields())
        values.update(novelty.fields(novelty.categorical_novelty(ref, cur, config.novelty_ratio)))
        moved = calibrated.largest_share_change(ref, cur)
        if moved is not None:
            values.update(
                share_change_category=moved.category,
                share_reference=moved.reference_share,
                share_current=moved.current_share,
            )
        r, c, n_values = stats.categorical_vectors(ref, cur)
        vc = (r, c, n_values)
        values.update(
            psi=stats.psi(r / r.sum(), c / c.sum()),
            js_distance=stats.js_distance(r, c),
            chi2_pvalue=stats.chisquare_pvalue(r, c),
            unseen_share=stats.unseen_share(cur),
        )
    if method == "auto":
        method = auto_method(ref.kind, ref.n_valid, n_values, config.small_reference_rows)
    threshold = fcfg.threshold if fcfg.threshold is not None else DEFAULT_THRESHOLDS[method]
    if method in ("chisquare", "z") and vc is None:
        raise DriftInputError(
            f"column {name!r}: {method} needs a categorical or a numeric "
            f"column with at most {stats.TRACK_EXTRA_MAX_EDGES} distinct values"
        )
    if method == "ks":  # the verdict is taken on it: scipy's exact computation, whatever it costs
        values["ks_pvalue"] = stats.ks_pvalue(values["ks_statistic"], ref.n_valid, cur.n_valid)
    if method == "z":
        score = stats.z_pvalue(vc[0], vc[1])  # type: ignore[index]
    else:
        key = {
            "wasserstein": "wasserstein_norm",
            "ks": "ks_pvalue",
            "psi": "psi",
            "jensenshannon": "js_distance",
            "chisquare": "chi2_pvalue",
        }[method]
        score = values[key]
    return FeatureDrift(
        name=name,
        kind=ref.kind,
        method=method,
        score=float(score),
        threshold=float(threshold),
        drifted=is_drift(method, score, threshold),
        ref_missing_rate=ref.missing_rate,
        cur_missing_rate=cur.missing_rate,
        missing_rate_delta=cur.missing_rate - ref.missing_rate,
        n_reference=ref.n_valid,
        n_current=cur.n_valid,
        **values,
    )


def compare_profiles(
    reference: DatasetProfile, current: DatasetProfile, config: DriftConfig | None = None
) -> DriftResult:
    """Per-feature drift verdicts and the data-set verdict of ``current`` against ``reference``.

    ``current`` must have been built with ``build_profile(..., reference=reference)`` (or
    ``profile_parquet``). Empty current data gives ``empty=True`` and no per-feature verdicts."""
    config = config or DriftConfig()
    if not (config.novelty_ratio >= 1 and config.novelty_bins >= 2):
        raise DriftInputError(
            f"DriftConfig: novelty_ratio must be >= 1 and novelty_bins >= 2, got "
            f"{config.novelty_ratio} and {config.novelty_bins}"
        )
    if not reference.is_reference:
        raise DriftInputError("the first argument must be a reference profile")
    if current.n_rows == 0:
        return DriftResult(
            features=[],
            drift_share=0.0,
            dataset_drift=False,
            n_reference=reference.n_rows,
            n_current=0,
            empty=True,
            share_threshold=config.share_threshold,
            message="current data has no rows: drift was not computed",
        )
    if current.reference_id != reference.fingerprint():
        raise DriftInputError(
            "the current profile was not binned on this reference; build it with "
            "build_profile(data, reference=reference) or profile_parquet(..., reference=...)"
        )
    unknown = set(config.per_feature) - set(reference.columns) - {reference.prediction_column}
    if unknown:
        raise DriftInputError(f"per_feature names columns not in the reference: {sorted(unknown)}")
    features = []
    for name, ref in reference.columns.items():
        if name not in current.columns:
            raise DriftInputError(f"column {name!r} is missing from the current profile")
        features.append(
            compare_column(name, ref, current.columns[name], config, reference.psi_bins)
        )
    prediction = None
    if reference.prediction is not None and current.prediction is not None:
        prediction = compare_column(
            reference.prediction_column or "prediction",
            reference.prediction,
            current.prediction,
            config,
            reference.psi_bins,
        )
    n_drifted = sum(f.drifted for f in features)
    share = n_drifted / len(features) if features else 0.0
    dataset_drift = bool(features) and share >= config.share_threshold
    message = (
        f"{n_drifted} of {len(features)} features drifted (share {share:.2f}, "
        f"threshold {config.share_threshold:.2f}): "
        + ("dataset drift" if dataset_drift else "no dataset drift")
    )
    return DriftResult(
        features=features,
        drift_share=share,
        dataset_drift=dataset_drift,
        n_reference=reference.n_rows,
        n_current=current.n_rows,
        prediction=prediction,
        empty=False,
        message=message,
        share_threshold=config.share_threshold,
    )
