"""The calibrated retrain signal: fires on drift that is both statistically real and material.

It reads the calibrated tests that :func:`~.compare.compare_profiles` stores in each
:class:`~.compare.FeatureDrift` (``test_pvalue``, see :mod:`.calibrated`) and their effect sizes;
the Evidently-compatible ``drifted`` verdicts are not used. A signal fires when

(a) a key feature shifted: its adjusted p-value is below ``alpha`` and it is *material*;
(b) the prediction column did the same (when ``prediction_counts``);
(c) the share of features that shifted (same two conditions) reaches ``share_threshold``.

The false-alarm budget ``alpha`` is split between the two ways a signal can fire, and the union
bound keeps the whole signal's false-alarm rate at or below ``alpha`` under any dependence:

* **single shifts** (a) and (b): the key features and the prediction form one family, corrected
  with **Holm** at ``(1 - share_rule_fraction) * alpha``. Holm rather than Benjamini-Hochberg:
  the alarm is one yes/no decision, so the error that costs (a needless retrain) is a family-wise
  error, and Holm bounds it under any dependence, whereas BH needs positive dependence, which
  two-sided tests of correlated features, and of a prediction computed from them, do not
  guarantee.
* **broad shifts** (c): it fires only when at least ``k = ceil(share_threshold * m)`` of the ``m``
  features shift, and when no key feature did, that many of the other ``m'`` features did. Each
  is tested at ``share_rule_fraction * alpha * k / m'``; by Markov's inequality the chance that
  ``k`` of them pass by accident is at most ``share_rule_fraction * alpha``. At the default share
  (0.5) that level is about a twentieth of ``alpha``, far above what Holm over every feature
  would leave each of them (``alpha / (m + ...)``), and it costs the key features a tenth of
  ``alpha`` instead of the half or more that an even family of every column took.

A column is **material** when both effects reach their floors:

* its distance: the normalised Wasserstein distance for numerics (``min_wasserstein``), the
  largest change of one category's share for categoricals (``min_share_change``);
* its **novel mass** (:mod:`.novelty`, ``min_novel_mass``): the share of the batch beyond
  ``novelty_ratio`` (1.5) times the reference's density, on 10 reference-quantile bins (or the
  categories; a value outside the reference's range, or a new category, counts fully).

The distance says the batch differs from the reference; the novel mass says part of it lies where
the model saw little. Without it, a batch drawn from one part of what the champion trained on
fires: after a retrain takes in a shifted day, the reference is the pooled mixture
``(1 - w) P0 + w P1`` and an ordinary ``P0`` day is at a normalised Wasserstein distance of
0.1-0.2 from it, significant at thousands of rows, while its novel mass is 0 for ``w <= 1/3``.
The floor (0.03) sits above the measure's sampling noise at no change (0.01-0.02 at 100-160
rows) and below what a 0.5 sd location shift gives (0.07 in the population); the measured rates
are in docs/drift.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .compare import DriftResult, FeatureDrift
from .errors import DriftInputError
from .signal_report import signal_reasons, signal_to_markdown

if TYPE_CHECKING:
    from mlops_assets.spec import DriftSpec

Role = Literal["key", "feature", "prediction"]


@dataclass(frozen=True)
class DriftSignalPolicy:
    key_features: tuple[str, ...] = ()
    prediction_counts: bool = True  # prediction drift alone fires the signal
    alpha: float = 0.05  # family-wise error rate of the whole signal
    min_wasserstein: float = 0.1  # numeric floor: W1 / std of the reference
    min_share_change: float = 0.05  # categorical floor: largest change of one category's share
    share_threshold: float = 0.5
    share_rule_fraction: float = 0.1  # part of alpha spent on rule (c); the rest on (a) and (b)
    min_novel_mass: float = 0.02  # floor of both kinds: batch share beyond 1.5 x reference density

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_features", tuple(self.key_features))
        rules = {
            "alpha": 0 < self.alpha < 1,
            "min_wasserstein": self.min_wasserstein >= 0,
            "min_share_change": 0 <= self.min_share_change <= 1,
            "share_threshold": 0 < self.share_threshold <= 1,
            "share_rule_fraction": 0 < self.share_rule_fraction < 1,
            "min_novel_mass": 0 <= self.min_novel_mass <= 1,
        }
        limits = {
            "alpha": "within (0, 1)",
            "min_wasserstein": ">= 0",
            "min_share_change": "within [0, 1]",
            "share_threshold": "within (0, 1]",
            "share_rule_fraction": "within (0, 1)",
            "min_novel_mass": "within [0, 1]",
        }
        for name, ok in rules.items():
            if not ok:
                raise DriftInputError(
                    f"DriftSignalPolicy.{name} must be {limits[name]}, got {getattr(self, name)}"
                )
        dupes = sorted({k for k in self.key_features if self.key_features.count(k) > 1})
        if dupes:
            raise DriftInputError(f"DriftSignalPolicy.key_features: duplicate names {dupes}")


@dataclass(frozen=True)
class SignalTest:
    """One member of the tested family, or a column that could not be tested (pvalue None)."""

    name: str
    role: Role
    kind: str
    test: str
    pvalue: float | None
    adjusted_pvalue: float | None  # compared with the policy's alpha
    family: str  # "single shift": Holm over key features and prediction; "share": rule (c)
    effect_name: str  # "normalised Wasserstein" or "largest category share change"
    effect: float | None
    floor: float
    significant: bool
    material: bool
    n_reference: int
    n_current: int
    category: str | None = None  # categoricals: the category whose share moved most
    share_reference: float | None = None
    share_current: float | None = None
    note: str = ""
    novel_mass: float | None = None  # share of the batch where the reference is thin
    novelty_floor: float = 0.0
    novel_region: str | None = None  # the value range or category holding most of it

    @property
    def distance_material(self) -> bool:
        """The distance (Wasserstein or category share) reaches its floor."""
        return self.effect is not None and math.isfinite(self.effect) and self.effect >= self.floor

    @property
    def novel(self) -> bool:
        """The novel mass reaches its floor (a floor of 0 needs no measure)."""
        if self.novelty_floor <= 0:
            return True
        return self.novel_mass is not None and self.novel_mass >= self.novelty_floor

    @property
    def drifted(self) -> bool:
        return self.significant and self.material

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted": self.drifted}


@dataclass
class DriftSignal:
    triggered: bool
    reasons: list[str]
    notes: list[str]
    key_features: tuple[str, ...]
    key_features_drifted: list[str]
    prediction_drifted: bool | None  # None: the prediction was not tested
    drifted_features: list[str]  # significant and material, any role
    drift_share: float  # drifted features / all features
    share_threshold: float
    family_size: int
    alpha: float
    tests: list[SignalTest] = field(default_factory=list)
    n_reference: int = 0
    n_current: int = 0
    novelty_floor: float = 0.0  # the policy's min_novel_mass

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "tests"}
        out["key_features"] = list(self.key_features)
        out["tests"] = [t.to_dict() for t in self.tests]
        return _finite(out)

    def to_markdown(self) -> str:
        return signal_to_markdown(self)


def _finite(value: Any) -> Any:
    """NaN/inf become None so the dict is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def weighted_holm(pvalues: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Holm's (1979) weighted step-down adjusted p-values.

    Hand-written because scipy only offers Benjamini-Hochberg and statsmodels' Holm has no
    weights. Hypotheses are taken in order of ``p / w``; the j-th is adjusted to
    ``max over l <= j of min(1, p_l * W_l / w_l)`` with ``W_l`` the weight not yet rejected. With
    equal weights this is plain Holm."""
    p = np.asarray(pvalues, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if p.size == 0:
        return p
    order = np.argsort(p / w, kind="stable")
    remaining = np.cumsum(w[order][::-1])[::-1]
    stepped = np.minimum(1.0, np.maximum.accumulate(p[order] * remaining / w[order]))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return adjusted


def default_key_features(
    importance: Mapping[str, float], max_features: int = 3, min_share: float = 0.1
) -> tuple[str, ...]:
    """The champion's most important features: at most ``max_features`` of them, each holding at
    least ``min_share`` of the total importance, most important first (ties by name).

    ``importance`` is LightGBM's gain per feature or the MLP's permutation importance. Negative
    values (a feature whose permutation helped) count as 0; when nothing is positive, no feature
    is key and the prediction and share rules remain."""
    if max_features < 0:
        raise DriftInputError(f"max_features must be >= 0, got {max_features}")
    if not 0 <= min_share <= 1:
        raise DriftInputError(f"min_share must be within [0, 1], got {min_share}")
    gains: dict[str, float] = {}
    for name, value in importance.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DriftInputError(
                f"importance of feature {name!r} must be a number, got {value!r}"
            ) from None
        if math.isnan(number) or number == math.inf:
            raise DriftInputError(f"importance of feature {name!r} must be finite, got {number}")
        gains[name] = max(number, 0.0)
    total = sum(gains.values())
    if total <= 0:
        return ()
    ranked = sorted(gains.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(name for name, gain in ranked[:max_features] if gain / total >= min_share)


def policy_from_spec(
    drift: DriftSpec, importance: Mapping[str, float] | None = None
) -> DriftSignalPolicy:
    """The policy a pipeline's ``drift`` section declares. Key features are the spec's, or when
    it lists none, the champion's top features by ``importance``."""
    keys = tuple(drift.key_features)
    if not keys and importance:
        keys = default_key_features(
            importance, drift.top_key_features, drift.key_feature_min_importance
        )
    return DriftSignalPolicy(
        key_features=keys,
        prediction_counts=drift.prediction_drift_signal,
        alpha=drift.signal_alpha,
        min_wasserstein=drift.min_wasserstein,
        min_share_change=drift.min_category_share_change,
        share_threshold=drift.share_threshold,
        share_rule_fraction=drift.share_rule_fraction,
        min_novel_mass=drift.min_novel_mass,
    )


def _candidate(f: FeatureDrift, role: Role, policy: DriftSignalPolicy) -> dict[str, Any]:
    numeric = f.kind == "numeric"
    return {
        "name": f.name,
        "role": role,
        "kind": f.kind,
        "test": f.test,
        "pvalue": f.test_pvalue,
        "family": "share" if role == "feature" else "single shift",
        "effect_name": "normalised Wasserstein" if numeric else "largest category share change",
        "effect": f.wasserstein_norm if numeric else f.share_change,
        "floor": policy.min_wasserstein if numeric else policy.min_share_change,
        "n_reference": f.n_reference,
        "n_current": f.n_current,
        "category": None if numeric else f.share_change_category,
        "share_reference": None if numeric else f.share_reference,
        "share_current": None if numeric else f.share_current,
        "note": f.test_note if f.test_pvalue is None else "",
        "novel_mass": f.novel_mass,
        "novelty_floor": policy.min_novel_mass,
        "novel_region": f.novel_region,
    }


def adjusted_pvalues(
    rows: list[dict[str, Any]], n_features: int, policy: DriftSignalPolicy
) -> list[float | None]:
    """Each tested row's p-value adjusted so that ``< alpha`` is its rule's level (see the module
    docstring): Holm scaled by the single-shift part of ``alpha`` for key features and the
    prediction, the Markov level of rule (c) for the other features."""
    tested = [i for i, row in enumerate(rows) if row["pvalue"] is not None]
    single = [i for i in tested if rows[i]["family"] == "single shift"]
    broad = [i for i in tested if rows[i]["family"] == "share"]
    # A rule with nothing to test hands its part of alpha to the other.
    share_part = 0.0 if not broad else 1.0 if not single else policy.share_rule_fraction
    adjusted: list[float | None] = [None] * len(rows)
    if single:
        holm = weighted_holm(
            np.array([rows[i]["pvalue"] for i in single]), np.ones(len(single))
        )
        for i, value in zip(single, holm, strict=True):
            adjusted[i] = min(1.0, float(value) / (1.0 - share_part))
    if broad:
        needed = max(1, math.ceil(policy.share_threshold * n_features - 1e-9))
        scale = len(broad) / (share_part * needed)
        for i in broad:
            adjusted[i] = min(1.0, float(rows[i]["pvalue"]) * scale)
    return adjusted


def _tests(result: DriftResult, policy: DriftSignalPolicy) -> list[SignalTest]:
    keys = set(policy.key_features)
    rows = [_candidate(f, "key" if f.name in keys else "feature", policy) for f in result.features]
    if policy.prediction_counts and result.prediction is not None:
        rows.append(_candidate(result.prediction, "prediction", policy))
    out = []
    for row, adj in zip(rows, adjusted_pvalues(rows, len(result.features), policy), strict=True):
        test = SignalTest(
            **row,
            adjusted_pvalue=adj,
            significant=adj is not None and adj < policy.alpha,
            material=False,
        )
        out.append(replace(test, material=test.distance_material and test.novel))
    return out


def drift_signal(result: DriftResult, policy: DriftSignalPolicy) -> DriftSignal:
    """Whether ``result`` (from :func:`~.compare.compare_profiles`) calls for a retrain, and why."""
    names = [f.name for f in result.features]
    unknown = sorted(set(policy.key_features) - set(names))
    if unknown and not result.empty:
        raise DriftInputError(f"key_features {unknown} are not features of the drift result")
    base = {
        "key_features": policy.key_features,
        "share_threshold": policy.share_threshold,
        "alpha": policy.alpha,
        "novelty_floor": policy.min_novel_mass,
        "n_reference": result.n_reference,
        "n_current": result.n_current,
    }
    if result.empty:
        return DriftSignal(
            triggered=False,
            reasons=[],
            notes=[result.message],
            key_features_drifted=[],
            prediction_drifted=None,
            drifted_features=[],
            drift_share=0.0,
            family_size=0,
            **base,
        )
    tests = _tests(result, policy)
    features = [t for t in tests if t.role != "prediction"]
    drifted = [t.name for t in features if t.drifted]
    share = len(drifted) / len(features) if features else 0.0
    prediction = next((t for t in tests if t.role == "prediction"), None)
    prediction_tested = prediction is not None and prediction.pvalue is not None
    reasons, notes = signal_reasons(tests, drifted, share, policy)
    if policy.prediction_counts and result.prediction is None:
        notes.append("no prediction column was profiled: prediction drift was not checked")
    return DriftSignal(
        triggered=bool(reasons),
        reasons=reasons,
        notes=notes,
        key_features_drifted=[t.name for t in features if t.role == "key" and t.drifted],
        prediction_drifted=prediction.drifted if prediction_tested else None,
        drifted_features=drifted,
        drift_share=share,
        family_size=sum(t.pvalue is not None for t in tests),
        tests=tests,
        **base,
    )
