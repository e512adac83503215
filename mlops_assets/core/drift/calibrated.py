"""Two-sample tests that are valid at the sample sizes actually compared, computed from profiles.

These p-values feed the calibrated retrain signal (:mod:`.signal`); the Evidently-compatible
verdicts of :mod:`.compare` are not affected by them.

Numeric columns
---------------
Both profiles are turned into one ordered sequence of *cells* with a reference count and a current
count each: for every reference edge, the gap below it and the edge value itself, then the gap
above the last edge. When the reference is stored exactly (its edges are all its distinct values)
this sequence is the pooled sorted sample up to the order of current values inside a gap, which no
rank statistic depends on, so the statistics below are exact. For a sketched (large) reference a
gap holds about ``1/sketch_size`` of the reference and an unknown interleaving of reference and
current values; both CDFs are taken to rise linearly through such a gap, which can misplace them
by at most that share (measured effect on the statistic: ``cramervonmises_statistic``).

* **Cramér–von Mises** (Anderson 1962), ``T = nm/N² Σ (F_ref - F_cur)²`` over the pooled values,
  with tied values counted at their common value (as scipy's midrank version does between the two
  samples). Rank-based, so its null distribution does not depend on the data's distribution, and
  it has good power for location *and* scale changes at small n (close to the t-test's for a
  location shift of normal data, measured in ``docs/drift.md``). Its p-value is Anderson's
  normalisation of ``T`` and the limiting distribution (as ``scipy.stats.cramervonmises_2samp``).
* That limit assumes continuous data. With heavy ties it is anti-conservative: measured at
  100 vs 160 rows, false positives at the 0.1% level were 0.23% for a Poisson(6) column (one
  value holds 16%), 0.30% with 20% zeros and 0.5% for a 0/1 column, while 10% zeros, Poisson(12)
  and rounded normals stayed within 0.1%. So when one value holds more than ``MAX_TIE_SHARE`` of the pooled data, the column is
  tested with a **chi-square test of homogeneity** on at most ``MAX_BINS`` bins of adjacent pooled
  values instead (bins cut on pooled counts, never on which side a value came from), which is
  valid for any tie pattern.

Categorical columns
-------------------
The **largest standardised share change**: for every column of the 2 x K table (reference
categories, the ``__other__`` bucket, and one key for values the reference never had), the
two-proportion z statistic of that column against the rest, and ``T = max |z|``. Its p-value is
the exact conditional one, estimated by Monte Carlo: given the pooled count of every column, the
current side's counts are multivariate hypergeometric under no change, up to ``PERMUTATION_DRAWS``
such tables are drawn with a fixed seed, and ``p = (1 + #{T_draw >= T}) / (1 + draws)`` (or
``h / L`` when drawing stopped early at the h-th table as extreme, Besag and Clifford), which is a
valid p-value at any sample size and any number of rare categories (no pooling is needed, so a new
category with a few rows is not diluted into a pooled column).

Why not the chi-square of homogeneity: a category whose share doubles is the shift that matters,
and the chi-square spreads its power over K - 1 degrees of freedom. Measured at 120 vs 160 rows
(6 categories, one share 22% -> 44%) at the level a key feature gets: chi-square 77%, this test
90% (``benchmarks/drift_calibration.py``, docs/drift.md). The chi-square keeps more power when
every share moves a little at once; such a shift is rarely material under the share floor.
Unlike Evidently's goodness-of-fit chi-square, both sides are samples: the reference counts are
not exact expectations.

Below ``min_rows`` non-missing values on either side, or when fewer than two bins/columns remain,
the test is not computed and ``note`` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from .profile import OTHER_CATEGORY, CategoricalProfile, NumericProfile

MAX_TIE_SHARE = 0.10  # largest share of one value for the Cramér-von Mises limit to hold
MAX_BINS = 10  # bins of the tie-safe chi-square: few degrees of freedom keep its power
DEFAULT_MIN_ROWS = 20
DEFAULT_MIN_EXPECTED = 5.0
UNSEEN_KEY = "(unseen values)"
# Monte Carlo draws of the categorical test: fewer for very many categories (each draw costs one
# count per category), never fewer than MIN_PERMUTATION_DRAWS, whose smallest p-value (2.5e-4)
# is still below every level the signal uses at its defaults. Drawing stops early (Besag and
# Clifford 1991, still an exact p-value) once STOP_AFTER_EXCEEDANCES draws were at least as
# extreme: an unchanged column costs a batch or two, only a significant one the full count.
PERMUTATION_DRAWS = 20_000
MIN_PERMUTATION_DRAWS = 4_000
PERMUTATION_CELLS = 1_000_000  # draws x categories: about 0.1 s
PERMUTATION_BATCH = 1_000
STOP_AFTER_EXCEEDANCES = 100  # the early p-value's relative error: about 1 / sqrt(100)
PERMUTATION_SEED = 20_240_917


@dataclass(frozen=True)
class CalibratedTest:
    """One two-sample test; ``pvalue`` is None when it was not computed (see ``note``)."""

    test: str  # "cramervonmises", "chi2_binned", "max_share_z" or "" (not computed)
    statistic: float | None = None
    pvalue: float | None = None
    note: str = ""

    def fields(self) -> dict[str, Any]:
        """As the ``test*`` fields of :class:`~.compare.FeatureDrift`."""
        return {
            "test": self.test,
            "test_statistic": self.statistic,
            "test_pvalue": self.pvalue,
            "test_note": self.note,
        }


@dataclass(frozen=True)
class ShareChange:
    """The category whose share changed most (the materiality measure of categoricals)."""

    category: str
    reference_share: float
    current_share: float

    @property
    def change(self) -> float:
        return abs(self.current_share - self.reference_share)


def not_computed(note: str) -> CalibratedTest:
    return CalibratedTest(test="", note=note)


def _too_small(n_ref: int, n_cur: int, min_rows: int) -> CalibratedTest | None:
    if min(n_ref, n_cur) >= min_rows:
        return None
    side = "reference" if n_ref < min_rows else "current data"
    return not_computed(
        f"not tested: {side} has {min(n_ref, n_cur)} non-missing values, below the minimum "
        f"{min_rows}"
    )


# --- numeric -------------------------------------------------------------------------------------


def numeric_cells(ref: NumericProfile, cur: NumericProfile) -> tuple[np.ndarray, ...]:
    """(reference counts, current counts, is-a-point) of the ordered cells: gap 0, edge 0,
    gap 1, ..., edge E-1, gap E. Empty cells are dropped."""
    n_edges = ref.edges.size
    r = np.empty(2 * n_edges + 1)
    c = np.empty(2 * n_edges + 1)
    r[0::2], r[1::2] = ref.gap_counts, ref.point_counts
    c[0::2], c[1::2] = cur.gap_counts, cur.point_counts
    is_point = np.zeros(2 * n_edges + 1, dtype=bool)
    is_point[1::2] = True
    keep = (r + c) > 0
    return r[keep], c[keep], is_point[keep]


def cramervonmises_statistic(r: np.ndarray, c: np.ndarray, is_point: np.ndarray) -> float:
    """Anderson's two-sample T from cell counts.

    Written out (instead of calling ``scipy.stats.cramervonmises_2samp``) because profiles hold
    counts, not values: this costs O(cells), not O(rows). T sums ``(F_ref - F_cur)^2`` over the
    pooled values, where within a cell

    * an edge value (``is_point``) is one tied value: both CDFs are taken after it;
    * a gap holding one side only holds distinct values of that side: its CDF steps up one value
      at a time while the other stays put (exact);
    * a gap holding both sides (sketched references only) has an unknown interleaving: both CDFs
      are taken to rise linearly through it. Measured over 40 draws of 20k vs 150 normal values,
      T differs from scipy's on the raw values by 4e-4 on average (sd 6e-4); treating the gap as
      one tied value made it 8e-3 too low."""
    n, m = float(r.sum()), float(c.sum())
    f_after, g_after = np.cumsum(r) / n, np.cumsum(c) / m
    d_after = f_after - g_after
    d0 = d_after - (r / n - c / m)  # F - G just before the cell
    rise = d_after - d0
    tied = (r + c) * d_after**2
    mixed = (r + c) * (d0**2 + d0 * rise + rise**2 / 3)
    # One side only: sum over i = 1..k of (d0 + i * step)^2.
    k = np.where(r > 0, r, c)
    step = np.where(r > 0, 1.0 / n, -1.0 / m)
    one_side = k * d0**2 + d0 * step * k * (k + 1) + step**2 * k * (k + 1) * (2 * k + 1) / 6
    both = (r > 0) & (c > 0)
    total = np.where(is_point, tied, np.where(both, mixed, one_side))
    return n * m / (n + m) ** 2 * float(total.sum())


def cramervonmises_pvalue(t: float, n: int, m: int) -> float:
    """P-value of Anderson's T: his normalisation to the one-sample limit (eqs. 11, 14, 15),
    exactly as ``scipy.stats.cramervonmises_2samp(method='asymptotic')`` computes it. scipy's
    limiting CDF is private, hence this import; the test suite checks the result against the
    public function on raw data."""
    from scipy.stats._hypotests import _cdf_cvm_inf

    k, big_n = float(n) * m, float(n + m)
    expected = (1 + 1 / big_n) / 6
    variance = (big_n + 1) * (4 * k * big_n - 3 * (n**2 + m**2) - 2 * k)
    variance /= 45 * big_n**2 * 4 * k
    normalised = 1 / 6 + (t - expected) / math.sqrt(45 * variance)
    if normalised < 0.003:  # the limiting CDF is below 1e-18 there
        return 1.0
    return float(min(max(1.0 - float(_cdf_cvm_inf(normalised)), 0.0), 1.0))


def adjacent_bins(total: np.ndarray, target: float) -> np.ndarray:
    """Bin index of each ordered cell: adjacent cells merged until each bin holds >= target
    pooled values (a short last bin joins the one before it)."""
    bins = np.empty(total.size, dtype=np.int64)
    current, filled = 0, 0.0
    for i, count in enumerate(total):
        bins[i] = current
        filled += count
        if filled >= target:
            current, filled = current + 1, 0.0
    if 0 < filled < target and current > 0:
        bins[bins == current] = current - 1
    return bins


def _expected_floor(n_ref: float, n_cur: float, min_expected: float) -> float:
    """Pooled count a column needs so that both of its expected counts reach ``min_expected``."""
    return min_expected * (n_ref + n_cur) / min(n_ref, n_cur)


def _chi2(table: np.ndarray, test: str, note: str) -> CalibratedTest:
    statistic, pvalue, _, _ = sps.chi2_contingency(table, correction=False)
    return CalibratedTest(test=test, statistic=float(statistic), pvalue=float(pvalue), note=note)


def numeric_test(
    ref: NumericProfile,
    cur: NumericProfile,
    *,
    min_rows: int = DEFAULT_MIN_ROWS,
    min_expected: float = DEFAULT_MIN_EXPECTED,
) -> CalibratedTest:
    """Cramér-von Mises, or the tie-safe binned chi-square (see the module docstring)."""
    small = _too_small(ref.n_valid, cur.n_valid, min_rows)
    if small is not None:
        return small
    r, c, is_point = numeric_cells(ref, cur)
    total = r + c
    if total.size < 2:
        return not_computed("not tested: every value is the same on both sides")
    largest_tie = float(total[is_point].max(initial=0.0) / total.sum())
    if largest_tie <= MAX_TIE_SHARE:
        t = cramervonmises_statistic(r, c, is_point)
        return CalibratedTest(
            test="cramervonmises",
            statistic=t,
            pvalue=cramervonmises_pvalue(t, ref.n_valid, cur.n_valid),
        )
    target = max(
        _expected_floor(ref.n_valid, cur.n_valid, min_expected), total.sum() / MAX_BINS
    )
    bins = adjacent_bins(total, target)
    n_bins = int(bins.max()) + 1
    if n_bins < 2:
        return not_computed("not tested: too few values to form two bins")
    table = np.vstack((np.bincount(bins, weights=r), np.bincount(bins, weights=c)))
    note = f"one value holds {largest_tie:.0%} of the data: chi-square on {n_bins} bins"
    return _chi2(table, "chi2_binned", note)


# --- categorical ---------------------------------------------------------------------------------


def categorical_table(
    ref: CategoricalProfile, cur: CategoricalProfile
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labels, reference counts and current counts over the reference categories, the
    ``__other__`` bucket (if either side has one) and one key for unseen values."""
    labels = list(ref.categories)
    r = ref.counts.astype(np.float64)
    c = cur.counts.astype(np.float64)
    if ref.other_count or cur.other_count:
        labels.append(OTHER_CATEGORY)
        r, c = np.append(r, float(ref.other_count)), np.append(c, float(cur.other_count))
    if cur.unseen_count:
        labels.append(UNSEEN_KEY)
        r, c = np.append(r, 0.0), np.append(c, float(cur.unseen_count))
    return labels, r, c


def share_z(total: np.ndarray, c: np.ndarray, n_ref: float, n_cur: float) -> np.ndarray:
    """Largest |z| of each table's columns: the current share of a column against the
    reference's, standardised by the pooled share. ``total`` holds the pooled counts of the
    columns, ``c`` the current counts, of one table or many (one per row)."""
    pooled = total / (n_ref + n_cur)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n_ref + 1.0 / n_cur))
    difference = c / n_cur - (total - c) / n_ref
    return np.max(np.abs(difference) / se, axis=-1)


def categorical_test(
    ref: CategoricalProfile,
    cur: CategoricalProfile,
    *,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> CalibratedTest:
    """The largest standardised share change, with its exact conditional p-value estimated by
    Monte Carlo (see the module docstring)."""
    small = _too_small(ref.n_valid, cur.n_valid, min_rows)
    if small is not None:
        return small
    _, r, c = categorical_table(ref, cur)
    n_ref, n_cur = float(r.sum()), float(c.sum())
    # A column all on one side of an all-or-nothing split carries no information: it is fixed by
    # the margins. Columns with every value, or none, have no variance and are left out.
    varying = (r + c > 0) & (r + c < n_ref + n_cur)
    r, c = r[varying], c[varying]
    if r.size < 2:
        return not_computed("not tested: fewer than two categories hold values")
    total = r + c
    observed = float(share_z(total, c, n_ref, n_cur))
    draws = int(np.clip(PERMUTATION_CELLS // r.size, MIN_PERMUTATION_DRAWS, PERMUTATION_DRAWS))
    pvalue, used = permutation_pvalue(total, n_ref, n_cur, observed, draws)
    note = f"exact conditional p-value from {used:,} draws"
    return CalibratedTest(test="max_share_z", statistic=observed, pvalue=pvalue, note=note)


def permutation_pvalue(
    total: np.ndarray, n_ref: float, n_cur: float, observed: float, draws: int
) -> tuple[float, int]:
    """(p-value, draws used) of ``observed`` under multivariate hypergeometric tables with the
    columns' pooled ``total``: ``(1 + hits) / (1 + draws)``, or ``h / L`` when the h-th hit came
    at draw ``L`` (sequential stopping, Besag and Clifford 1991). Fixed seed: deterministic."""
    rng = np.random.default_rng(PERMUTATION_SEED)
    counts = total.astype(np.int64)
    hits = done = 0
    while done < draws:
        size = min(PERMUTATION_BATCH, draws - done)
        tables = rng.multivariate_hypergeometric(counts, int(n_cur), size=size)
        # A relative tolerance: a draw equal to the observed table is "at least as extreme"
        # whatever the summation order.
        extreme = np.flatnonzero(share_z(total, tables, n_ref, n_cur) >= observed * (1 - 1e-12))
        if hits + extreme.size >= STOP_AFTER_EXCEEDANCES:
            stopped_at = done + int(extreme[STOP_AFTER_EXCEEDANCES - hits - 1]) + 1
            return STOP_AFTER_EXCEEDANCES / stopped_at, stopped_at
        hits += extreme.size
        done += size
    return (1 + hits) / (1 + draws), draws


def largest_share_change(ref: CategoricalProfile, cur: CategoricalProfile) -> ShareChange | None:
    """The category (or ``__other__``, or unseen values together) whose share moved most."""
    labels, r, c = categorical_table(ref, cur)
    if r.sum() <= 0 or c.sum() <= 0:
        return None
    p, q = r / r.sum(), c / c.sum()
    i = int(np.argmax(np.abs(q - p)))
    return ShareChange(labels[i], float(p[i]), float(q[i]))
