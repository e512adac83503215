"""Novel mass: the share of a batch that lies where its reference is thin.

A distance such as Wasserstein's says *that* a batch differs from its reference, not *how*. The
difference that matters for a retrain is new ground: rows in a region the model saw little of.
A batch drawn from one part of what the model was trained on differs from the pooled training
data too, yet holds nothing new. That is the case after a retrain that took in a shifted day:
the champion's reference is then the mixture ``(1 - w) P0 + w P1``, and an ordinary day drawn
from ``P0`` is at a normalised Wasserstein distance of 0.1-0.2 from it, while every part of it
lies well inside it.

Definition
----------
With ``b_i`` the batch's share and ``r_i`` the reference's share of bin ``i``, and a density
ratio ``c`` (``ratio``, default 1.5)::

    novel mass = sum_i max(0, b_i - c * r_i)

It is the batch mass in excess of ``c`` times the reference's density: 0 when the batch is
nowhere more than ``c`` times denser than the reference, 1 when the batch lies entirely where the
reference has nothing. A reference that is a mixture ``(1 - w) P0 + w P1`` has at least
``(1 - w)`` times the density of ``P0`` everywhere, so a ``P0`` batch has no novel mass as long
as ``w <= 1 - 1/c`` (``c = 1.5``: up to a third of the reference trained in from elsewhere).
A genuine shift is not bounded that way: a 1 sd location shift of a normal feature has novel
mass 0.26 at ``c = 1.5`` (0.2-0.25 on 10 bins), a 0.5 sd shift 0.07, a category whose share
doubles from 22 % has 0.11.

Bins
----
* Numeric: ``bins`` (10) adjacent groups of the reference's sketch cells holding about equal
  reference mass (a heavily tied value stays one cell, so one bin). The two cells outside the
  reference's range (below its minimum, above its maximum) are bins of their own with no
  reference mass, so batch values beyond anything the model was trained on count fully.
  From counts alone: O(sketch cells), whatever the number of rows.
* Categorical: the reference's categories, ``__other__``, and one key for unseen values
  (reference share 0: a new category counts fully).

The measure is a sample estimate: on 10 bins, 100-160 row samples and no change it is about
0.01-0.02 (sampling noise can only add to a sum of positive parts), which is why the floor
(``DriftSignalPolicy.min_novel_mass``) sits above it and why only features that are also
significant and past the distance floor are judged on it (see :mod:`.signal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .calibrated import categorical_table
from .profile import CategoricalProfile, NumericProfile

DEFAULT_RATIO = 1.5  # covers a trained-in fraction w <= 1/3 (w <= 1 - 1/c)
DEFAULT_BINS = 10


@dataclass(frozen=True)
class Novelty:
    """Novel mass, and the bin (numeric value range) or category that holds most of it."""

    mass: float
    region: str  # "12.5 to 14.1", "above the reference's maximum 30.2", "'car'"; "" when mass is 0
    share_reference: float  # of that region
    share_current: float


def fields(found: Novelty | None) -> dict[str, Any]:
    """As the ``novel_*`` fields of :class:`~.compare.FeatureDrift`."""
    if found is None:
        return {}
    return {"novel_mass": found.mass, "novel_region": found.region}


# An excess this small is rounding: b == c * r exactly, e.g. 18/160 vs 1.5 * 9/120.
TOLERANCE = 1e-12


def excess(batch_shares: np.ndarray, reference_shares: np.ndarray, ratio: float) -> np.ndarray:
    """``max(0, b - ratio * r)`` per bin, with rounding-sized excesses set to 0."""
    out = np.asarray(batch_shares, np.float64) - ratio * np.asarray(reference_shares, np.float64)
    out[out < TOLERANCE] = 0.0
    return out


def novel_mass(batch_shares: np.ndarray, reference_shares: np.ndarray, ratio: float) -> float:
    """``sum(max(0, b - ratio * r))``: the batch mass beyond ``ratio`` times the reference's."""
    return float(excess(batch_shares, reference_shares, ratio).sum())


def _summary(r: np.ndarray, c: np.ndarray, ratio: float) -> tuple[float, int, float, float] | None:
    """(novel mass, the bin holding most of it, its reference share, its batch share)."""
    if r.sum() <= 0 or c.sum() <= 0:
        return None
    p, q = r / r.sum(), c / c.sum()
    per_bin = excess(q, p, ratio)
    i = int(np.argmax(per_bin))
    return float(per_bin.sum()), i, float(p[i]), float(q[i])


def numeric_bins(ref: NumericProfile, bins: int) -> np.ndarray:
    """Bin index of each sketch cell (gap 0, edge 0, gap 1, ..., edge E-1, gap E).

    Inner cells are cut at multiples of ``n_ref / bins`` of the reference's cumulative count (a
    cell goes to the bin its first reference value falls in, so a gap of current values only
    joins the next reference value). The outer gaps, which hold no reference value (the edges
    include the reference's minimum and maximum), get bins ``bins`` and ``bins + 1``."""
    n_edges = ref.edges.size
    r = np.empty(2 * n_edges + 1)
    r[0::2], r[1::2] = ref.gap_counts, ref.point_counts
    before = np.concatenate(([0.0], np.cumsum(r)[:-1]))
    index = np.minimum((bins * before / max(r.sum(), 1.0)).astype(np.int64), bins - 1)
    index[0], index[-1] = bins, bins + 1
    return index


def _bin_range(ref: NumericProfile, index: np.ndarray, b: int, bins: int) -> str:
    """The value range of bin ``b``, from the edges around its cells."""
    edges = ref.edges
    if b == bins:
        return f"below the reference's minimum {edges[0]:.4g}"
    if b == bins + 1:
        return f"above the reference's maximum {edges[-1]:.4g}"
    cells = np.flatnonzero(index == b)
    first, last = int(cells[0]), int(cells[-1])
    # Cell 2k is the gap below edge k, cell 2k+1 is edge k itself; inner bins never hold the
    # outer gaps, so both ends are edges.
    lo, hi = edges[(first - 1) // 2], edges[min(last // 2, edges.size - 1)]
    return f"{lo:.4g} to {hi:.4g}"


def numeric_novelty(
    ref: NumericProfile, cur: NumericProfile, ratio: float = DEFAULT_RATIO, bins: int = DEFAULT_BINS
) -> Novelty | None:
    """Novel mass of ``cur`` on ``bins`` reference-quantile bins plus the two outer gaps."""
    if ref.edges.size == 0:
        return None
    index = numeric_bins(ref, bins)
    r_cells = np.empty(index.size)
    c_cells = np.empty(index.size)
    r_cells[0::2], r_cells[1::2] = ref.gap_counts, ref.point_counts
    c_cells[0::2], c_cells[1::2] = cur.gap_counts, cur.point_counts
    r = np.bincount(index, weights=r_cells, minlength=bins + 2)
    c = np.bincount(index, weights=c_cells, minlength=bins + 2)
    found = _summary(r, c, ratio)
    if found is None:
        return None
    mass, i, share_ref, share_cur = found
    region = _bin_range(ref, index, i, bins) if mass > 0 else ""
    return Novelty(mass, region, share_ref, share_cur)


def categorical_novelty(
    ref: CategoricalProfile, cur: CategoricalProfile, ratio: float = DEFAULT_RATIO
) -> Novelty | None:
    """Novel mass of ``cur`` over the reference's categories, ``__other__`` and unseen values."""
    labels, r, c = categorical_table(ref, cur)
    found = _summary(r, c, ratio)
    if found is None:
        return None
    mass, i, share_ref, share_cur = found
    return Novelty(mass, repr(labels[i]) if mass > 0 else "", share_ref, share_cur)
