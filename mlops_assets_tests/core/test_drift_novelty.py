"""Novel mass: the measure on hand-computed cases, and its place in the retrain signal's rule.

The loop case: after a retrain takes in a shifted day, the champion's reference is the pooled
mixture (1 - w) P0 + w P1; an ordinary P0 day differs from it (significant, Wasserstein/std above
0.1) but lies where the reference is dense, so it must not fire; a genuine shift must.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.drift import (
    DriftConfig,
    DriftInputError,
    DriftSignalPolicy,
    build_profile,
    compare_profiles,
    drift_signal,
    policy_from_spec,
)
from mlops_assets.core.drift.novelty import categorical_novelty, novel_mass, numeric_novelty
from mlops_assets.spec import DriftSpec

from .test_drift_signal import KINDS, by_name, compare, frame


def profiles(ref: pl.DataFrame, cur: pl.DataFrame, kinds: dict[str, str]):
    rp = build_profile(ref, kinds, threads=1)
    return rp, build_profile(cur, reference=rp, threads=1)


# --- the number ----------------------------------------------------------------------------------


def test_novel_mass_is_the_batch_share_beyond_ratio_times_the_reference():
    b, r = np.array([0.5, 0.3, 0.2, 0.0]), np.array([0.2, 0.2, 0.2, 0.4])
    assert novel_mass(b, r, 1.5) == pytest.approx(0.2)  # 0.5 - 0.3; 0.3 - 0.3 is not an excess
    assert novel_mass(b, r, 1.0) == pytest.approx(0.4)  # 0.3 + 0.1: total variation distance
    assert novel_mass(r, r, 1.0) == 0.0


def test_numeric_novelty_on_reference_decile_bins_by_hand():
    """Reference 0..99: bin j holds the values 10j .. 10j+9 and the gaps just below them."""
    rp, cp = profiles(
        pl.DataFrame({"x": np.arange(100.0)}),
        pl.DataFrame({"x": np.arange(50.0) + 0.5}),
        {"x": "numeric"},
    )
    # 0.5..8.5 (9 of 50) in bin 0, 10 each in bins 1-4, 49.5 in bin 5; reference 0.1 each:
    # 1.5 x: (0.18 - 0.15) + 4 x (0.2 - 0.15) = 0.23; 1 x: 0.08 + 4 x 0.1 = 0.48.
    found = numeric_novelty(rp.columns["x"], cp.columns["x"], ratio=1.5)
    assert found.mass == pytest.approx(0.23)
    assert (found.share_reference, found.share_current) == pytest.approx((0.1, 0.2))
    assert found.region == "9 to 19"
    assert numeric_novelty(rp.columns["x"], cp.columns["x"], ratio=1.0).mass == pytest.approx(0.48)
    same = build_profile(pl.DataFrame({"x": np.arange(100.0)}), reference=rp, threads=1)
    assert numeric_novelty(rp.columns["x"], same.columns["x"]).mass == 0.0


def test_values_beyond_the_reference_range_count_fully():
    inside = np.arange(0.0, 100.0, 2.0)  # 50 values, 5 per reference bin: 0.05 < 1.5 x 0.1
    rp, cp = profiles(
        pl.DataFrame({"x": np.arange(100.0)}),
        pl.DataFrame({"x": np.concatenate([inside, np.full(50, 500.0)])}),
        {"x": "numeric"},
    )
    found = numeric_novelty(rp.columns["x"], cp.columns["x"])
    assert found.mass == pytest.approx(0.5)
    assert found.region == "above the reference's maximum 99"


def test_categorical_novelty_counts_a_new_category_fully():
    ref = pl.DataFrame({"k": ["a"] * 50 + ["b"] * 50})
    rp, cp = profiles(ref, pl.DataFrame({"k": ["a"] * 40 + ["new"] * 60}), {"k": "categorical"})
    found = categorical_novelty(rp.columns["k"], cp.columns["k"])
    assert found.mass == pytest.approx(0.6) and found.region == "'(unseen values)'"
    _, only_a = profiles(ref, pl.DataFrame({"k": ["a"] * 100}), {"k": "categorical"})
    assert categorical_novelty(rp.columns["k"], only_a.columns["k"]).mass == pytest.approx(0.25)


def mixture(n: int, w: float, seed: int) -> pl.DataFrame:
    """The pooled reference after a shifted day was trained in: a share w moved by 1 sd."""
    shifted = round(w * n)
    return pl.concat([frame(n - shifted, seed), frame(shifted, seed + 1, shift=("top", "a"))])


def test_a_mixture_reference_holds_an_iid_batch_up_to_its_ratio_bound():
    """Density of (1 - w) P0 + w P1 is >= (1 - w) x P0's: no novel mass while w <= 1 - 1/ratio."""
    ref, batch = mixture(40_000, 0.3, 1), frame(20_000, 3)
    result = compare_profiles(*profiles(ref, batch, KINDS))
    top = by_name(result)["top"]
    assert top.wasserstein_norm > 0.25  # the distance alone calls it a shift
    assert top.novel_mass < 0.005  # 1.5 >= 1 / 0.7
    tight = compare_profiles(*profiles(ref, batch, KINDS), DriftConfig(novelty_ratio=1.25))
    # 1.25 < 1 / 0.7: the two lowest deciles hold 1.35 and 1.29 x the reference's share, so
    # 0.0137 in the population (numerical integration); 0.016 measured on these samples.
    assert by_name(tight)["top"].novel_mass == pytest.approx(0.0137, abs=0.005)


# --- the signal ----------------------------------------------------------------------------------


@pytest.mark.parametrize("w", [0.15, 0.3])
def test_an_iid_batch_against_a_pooled_mixture_reference_gives_no_signal(w):
    policy = DriftSignalPolicy(key_features=("top",))
    result = compare(mixture(25_000, w, 10), frame(5_000, 12))
    signal = drift_signal(result, policy)
    top = next(t for t in signal.tests if t.name == "top")
    assert top.significant and top.distance_material  # what fired before novel mass counted
    assert not top.novel and not top.drifted
    assert not signal.triggered, signal.reasons
    assert any(
        "into no new ground" in note and "novel mass 0.00 < 0.02" in note for note in signal.notes
    ), signal.notes
    off = drift_signal(result, DriftSignalPolicy(key_features=("top",), min_novel_mass=0.0))
    assert off.triggered  # the pooled-reference false alarm this rule removes


def test_a_genuine_shift_against_the_same_mixture_reference_fires():
    policy = DriftSignalPolicy(key_features=("top",))
    result = compare(mixture(25_000, 0.3, 10), frame(5_000, 12, top_shift=2.0))
    signal = drift_signal(result, policy)
    top = next(t for t in signal.tests if t.name == "top")
    assert signal.triggered and top.drifted and top.novel_mass > 0.3
    assert "novel mass" in signal.reasons[0] and "largest excess:" in signal.reasons[0]


def test_half_sd_and_one_sd_shifts_against_a_plain_reference_still_fire():
    policy = DriftSignalPolicy(key_features=("top",))
    for shift, least in ((0.5, 0.03), (1.0, 0.15)):
        signal = drift_signal(compare(frame(2_000, 20), frame(500, 21, top_shift=shift)), policy)
        top = next(t for t in signal.tests if t.name == "top")
        assert signal.triggered and top.drifted and top.novel_mass > least, (shift, top)


def test_a_new_category_fires_through_its_novel_mass():
    ref = frame(2_000, 30)
    cur = frame(500, 31)
    colour = np.where(np.arange(500) % 5 == 0, "purple", cur["colour"].to_numpy())
    signal = drift_signal(
        compare(ref, cur.with_columns(pl.Series("colour", colour))),
        DriftSignalPolicy(key_features=("colour",)),
    )
    test = next(t for t in signal.tests if t.name == "colour")
    assert signal.triggered and test.drifted
    assert test.novel_mass == pytest.approx(0.2) and test.novel_region == "'(unseen values)'"


def test_novel_mass_is_reported_in_the_tables_and_the_dict():
    result = compare(frame(300, 40), frame(300, 41, top_shift=1.0))
    signal = drift_signal(result, DriftSignalPolicy(key_features=("top",)))
    assert "| novel mass |" in signal.to_markdown()
    row = next(t for t in signal.to_dict()["tests"] if t["name"] == "top")
    assert row["novel_mass"] > 0.1 and row["novelty_floor"] == 0.02 and row["novel_region"]
    frame_ = result.to_frame()
    assert frame_["novel_mass"].null_count() == 0 and "novel_region" in frame_.columns


def test_spec_and_config_fields():
    policy = policy_from_spec(DriftSpec(min_novel_mass=0.1, key_features=["top"]))
    assert policy.min_novel_mass == 0.1
    assert DriftSpec().min_novel_mass == DriftSignalPolicy().min_novel_mass
    assert DriftSpec().novelty_density_ratio == DriftConfig().novelty_ratio
    with pytest.raises(DriftInputError, match="min_novel_mass"):
        DriftSignalPolicy(min_novel_mass=1.5)
    rp, cp = profiles(frame(100, 1), frame(100, 2), KINDS)
    with pytest.raises(DriftInputError, match="novelty_ratio must be >= 1"):
        compare_profiles(rp, cp, DriftConfig(novelty_ratio=0.9))
