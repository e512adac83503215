"""The calibrated retrain signal: tests valid at small n, Holm correction, floors, rules, output."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
from scipy import stats

from mlops_assets.core.drift import (
    DriftInputError,
    DriftSignalPolicy,
    build_profile,
    compare_profiles,
    default_key_features,
    drift_signal,
    policy_from_spec,
)
from mlops_assets.core.drift.signal import weighted_holm
from mlops_assets.spec import DriftSpec

KINDS = {"top": "numeric", "a": "numeric", "b": "numeric", "c": "numeric", "colour": "categorical"}
COLOURS = ["red", "green", "blue", "grey", "rare"]
COLOUR_P = [0.4, 0.25, 0.2, 0.12, 0.03]


def frame(n: int, seed: int, *, top_shift: float = 0.0, shift: tuple[str, ...] = ()) -> pl.DataFrame:
    """Features plus a prediction that is a fixed function of them, dominated by ``top``."""
    rng = np.random.default_rng(seed)
    data = {
        "top": rng.normal(top_shift, 1.0, n),
        "a": rng.lognormal(0.0, 0.6, n),
        "b": rng.normal(41, 12, n).round(),  # integer-valued: ties
        "c": rng.gamma(2.0, 1.0, n),
        "colour": rng.choice(COLOURS, n, p=COLOUR_P),
    }
    for name in shift:
        data[name] = data[name] + np.std(data[name])
    logit = 1.5 * data["top"] + 0.2 * np.log(data["a"]) + 0.3 * (data["colour"] == "red")
    return pl.DataFrame({**data, "score": 1 / (1 + np.exp(-logit))})


def compare(ref: pl.DataFrame, cur: pl.DataFrame, kinds=KINDS, prediction="score"):
    rp = build_profile(ref, kinds, prediction_column=prediction, threads=1)
    return compare_profiles(rp, build_profile(cur, reference=rp, threads=1))


def by_name(result):
    return {f.name: f for f in result.features}


# --- the tests behind the signal -----------------------------------------------------------------


def test_cramervonmises_from_exact_profiles_equals_scipy_on_the_raw_values():
    ref, cur = frame(120, 1), frame(160, 2, top_shift=0.3)
    res = by_name(compare(ref, cur))
    for name in ("top", "a", "c"):
        expected = stats.cramervonmises_2samp(ref[name].to_numpy(), cur[name].to_numpy())
        assert res[name].test == "cramervonmises"
        assert res[name].test_statistic == pytest.approx(expected.statistic, rel=1e-9)
        assert res[name].test_pvalue == pytest.approx(expected.pvalue, rel=1e-7, abs=1e-12)


def test_cramervonmises_on_a_sketched_reference_is_close_to_scipy():
    ref, cur = frame(20_000, 3), frame(150, 4, top_shift=0.25)
    rp = build_profile(ref, KINDS, threads=1)
    assert not rp.columns["top"].exact
    res = by_name(compare_profiles(rp, build_profile(cur, reference=rp, threads=1)))
    for name in ("top", "a", "c"):
        expected = stats.cramervonmises_2samp(ref[name].to_numpy(), cur[name].to_numpy())
        assert res[name].test_statistic == pytest.approx(expected.statistic, abs=0.003)
        assert res[name].test_pvalue == pytest.approx(expected.pvalue, rel=0.02)


def test_heavy_ties_are_tested_with_a_binned_chisquare():
    rng = np.random.default_rng(5)
    ref = pl.DataFrame({"flag": (rng.random(200) < 0.3) * 1.0})
    cur = pl.DataFrame({"flag": (rng.random(300) < 0.45) * 1.0})
    f = compare(ref, cur, {"flag": "numeric"}, None).features[0]
    table = [[ref["flag"].sum(), 200 - ref["flag"].sum()], [cur["flag"].sum(), 300 - cur["flag"].sum()]]
    expected = stats.chi2_contingency(np.array(table)[:, ::-1], correction=False)
    assert f.test == "chi2_binned" and "2 bins" in f.test_note
    assert f.test_pvalue == pytest.approx(expected.pvalue, rel=1e-9)


def _max_share_z(r, c):
    """The statistic by hand: the largest |two-proportion z| of one category against the rest."""
    r, c = np.asarray(r, float), np.asarray(c, float)
    n1, n2 = r.sum(), c.sum()
    pooled = (r + c) / (n1 + n2)
    z = (c / n2 - r / n1) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(np.abs(z).max())


def test_categorical_test_is_two_sample_and_counts_unseen_values_as_their_own_column():
    ref = pl.DataFrame({"k": ["a"] * 50 + ["b"] * 40 + ["c"] * 7 + ["d"] * 3})
    cur = pl.DataFrame({"k": ["a"] * 60 + ["b"] * 50 + ["c"] * 10 + ["new"] * 40})
    f = compare(ref, cur, {"k": "categorical"}, None).features[0]
    assert f.test == "max_share_z" and "20,000 draws" in f.test_note
    assert f.test_statistic == pytest.approx(_max_share_z([50, 40, 7, 3, 0], [60, 50, 10, 0, 40]))
    assert f.test_pvalue == pytest.approx(1 / 20_001)  # no draw of the margins comes close
    assert f.share_change_category == "(unseen values)"
    assert f.share_reference == 0.0 and f.share_current == pytest.approx(0.25)
    again = compare(ref, cur, {"k": "categorical"}, None).features[0]
    assert again.test_pvalue == f.test_pvalue  # a fixed seed: the same counts, the same p


def test_categorical_pvalue_is_the_exact_conditional_one_with_two_categories():
    # With two categories the statistic is |z| of one 2 x 2 table, and the exact conditional
    # p-value is a hypergeometric tail: the Monte Carlo estimate must agree within its error.
    ref = pl.DataFrame({"k": ["x"] * 30 + ["y"] * 90})
    cur = pl.DataFrame({"k": ["x"] * 58 + ["y"] * 102})
    f = compare(ref, cur, {"k": "categorical"}, None).features[0]
    observed = _max_share_z([30, 90], [58, 102])
    counts = np.arange(0, 89)  # current count of x; the pooled x total is 88
    z = np.array([_max_share_z([88 - k, 120 - 88 + k], [k, 160 - k]) for k in counts])
    exact = stats.hypergeom(280, 88, 160).pmf(counts)[z >= observed * (1 - 1e-12)].sum()
    assert 0.005 < exact < 0.2  # a p-value the test has to resolve, not an extreme one
    # Drawing stopped at the 100th table as extreme (Besag-Clifford): relative error about 0.1.
    draws = int(re.search(r"from ([\d,]+) draws", f.test_note).group(1).replace(",", ""))
    assert draws < 20_000 and f.test_pvalue == pytest.approx(100 / draws)
    assert f.test_pvalue == pytest.approx(exact, rel=0.4)


def test_categorical_test_holds_its_level_at_small_n_with_rare_categories():
    # 400 i.i.d. pairs at 60 vs 80 rows with two categories of 2-3 % (expected counts below 5):
    # the rate of p < 0.05 must not exceed 0.05 by more than sampling error (3 sd: 0.033).
    from mlops_assets.core.drift import calibrated
    from mlops_assets.core.drift.profile import CategoricalProfile

    rng = np.random.default_rng(11)
    shares, names = [0.5, 0.3, 0.15, 0.03, 0.02], ["a", "b", "c", "d", "e"]
    rejected = 0
    for _ in range(400):
        r = np.bincount(rng.choice(5, 60, p=shares), minlength=5)
        c = np.bincount(rng.choice(5, 80, p=shares), minlength=5)
        ref = CategoricalProfile(n_rows=60, n_missing=0, categories=names, counts=r)
        cur = CategoricalProfile(n_rows=80, n_missing=0, categories=names, counts=c)
        rejected += calibrated.categorical_test(ref, cur).pvalue < 0.05
    assert rejected / 400 <= 0.05 + 0.033


def test_categorical_test_detects_one_share_doubling_better_than_chi_square():
    # The shift the signal is for: one category's share doubles (22 % -> 44 %, the others shrink
    # in proportion) at 120 vs 160 rows, tested at the level a key feature gets (0.045 / 3).
    # Expected over 200 draws: about 166 against 144.
    from mlops_assets.core.drift import calibrated
    from mlops_assets.core.drift.profile import CategoricalProfile

    rng = np.random.default_rng(3)
    base = np.array([0.3, 0.22, 0.18, 0.15, 0.1, 0.05])
    doubled = base * (1 - 0.44) / (1 - 0.22)
    doubled[1] = 0.44
    names = list("abcdef")
    ours = chi2 = 0
    for _ in range(200):
        r = np.bincount(rng.choice(6, 120, p=base), minlength=6)
        c = np.bincount(rng.choice(6, 160, p=doubled), minlength=6)
        ref = CategoricalProfile(n_rows=120, n_missing=0, categories=names, counts=r)
        cur = CategoricalProfile(n_rows=160, n_missing=0, categories=names, counts=c)
        ours += calibrated.categorical_test(ref, cur).pvalue < 0.015
        chi2 += stats.chi2_contingency(np.vstack((r, c)), correction=False).pvalue < 0.015
    assert ours > chi2 + 10


def test_weighted_holm_is_plain_holm_with_equal_weights_and_favours_heavy_weights():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # plain Holm by hand: sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> 0.02, 0.03, 0.06, 0.06
    assert weighted_holm(p, np.ones(4)) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    weighted = weighted_holm(np.array([0.01, 0.01]), np.array([4.0, 1.0]))
    assert weighted == pytest.approx([0.0125, 0.0125])  # step 2 cannot undercut step 1
    assert weighted_holm(np.array([]), np.array([])).size == 0


# --- calibration, detection and the rules --------------------------------------------------------


def test_small_reference_false_signals_stay_within_a_binomial_bound_of_alpha():
    """300 i.i.d. splits at 100 reference vs 160 current rows; Evidently's chi-square, which
    treats the reference shares as exact, flags the categorical far more often."""
    policy = DriftSignalPolicy(key_features=("top", "colour"), alpha=0.05)
    fired = evidently_flagged = 0
    for split in range(300):
        result = compare(frame(100, 10_000 + split), frame(160, 20_000 + split))
        fired += drift_signal(result, policy).triggered
        evidently_flagged += by_name(result)["colour"].drifted
    assert fired <= stats.binom.ppf(0.999, 300, 0.05)  # 27 of 300
    assert evidently_flagged > 2 * fired


def test_a_one_sd_shift_of_a_key_feature_is_detected_at_small_n():
    policy = DriftSignalPolicy(key_features=("top",))
    detected = [
        drift_signal(compare(frame(100, s), frame(160, s + 1, top_shift=1.0)), policy)
        for s in range(0, 60, 2)
    ]
    assert sum(d.triggered for d in detected) >= 29
    assert all("top" in d.key_features_drifted for d in detected if d.triggered)


def test_the_issue_case_top_feature_shift_fires_though_evidently_share_does_not():
    importance = {"top": 920.0, "a": 40.0, "b": 20.0, "c": 20.0, "colour": 0.0}
    policy = DriftSignalPolicy(key_features=default_key_features(importance))
    result = compare(frame(2_000, 30), frame(1_000, 31, top_shift=1.0))
    signal = drift_signal(result, policy)
    assert not result.dataset_drift  # 1-2 of 5 features: below Evidently's 0.5 share
    assert policy.key_features == ("top",)
    assert signal.triggered and signal.key_features_drifted == ["top"]
    assert signal.prediction_drifted is True


def test_prediction_rule_fires_alone_and_can_be_switched_off():
    ref = frame(500, 40)
    cur = frame(500, 41).with_columns(pl.col("score") * 0.5)  # the model's output moved
    result = compare(ref, cur)
    on = drift_signal(result, DriftSignalPolicy())
    off = drift_signal(result, DriftSignalPolicy(prediction_counts=False))
    assert on.triggered and on.prediction_drifted and on.drifted_features == []
    assert on.reasons[0].startswith("prediction 'score' shifted: normalised Wasserstein")
    assert not off.triggered and off.prediction_drifted is None
    assert off.family_size == on.family_size - 1 == len(KINDS)


def test_alpha_is_split_between_single_shifts_holm_and_the_share_rule_by_hand():
    result = compare(frame(300, 52), frame(300, 53, shift=("a",)))
    signal = drift_signal(result, DriftSignalPolicy(key_features=("top", "colour")))
    tests = {t.name: t for t in signal.tests}
    single = ["top", "colour", "score"]
    holm = weighted_holm(np.array([tests[n].pvalue for n in single]), np.ones(3))
    for name, value in zip(single, holm):  # Holm at 0.9 alpha: scaled by 1 / 0.9
        assert tests[name].family == "single shift"
        assert tests[name].adjusted_pvalue == pytest.approx(min(1.0, value / 0.9))
    # the share rule: 3 of 5 features needed, 3 others tested, each at 0.1 * alpha * 3 / 3
    for name in ("a", "b", "c"):
        assert tests[name].family == "share"
        assert tests[name].adjusted_pvalue == pytest.approx(min(1.0, tests[name].pvalue / 0.1))
    assert tests["a"].significant and not signal.triggered  # one feature: no share, no key
    only_share = drift_signal(result, DriftSignalPolicy(prediction_counts=False))
    assert all(t.family == "share" for t in only_share.tests)  # no single-shift family:
    a = next(t for t in only_share.tests if t.name == "a")  # the share rule gets all of alpha
    assert a.adjusted_pvalue == pytest.approx(min(1.0, a.pvalue * 5 / 3))


def test_share_rule_needs_the_share_of_shifted_features():
    policy = DriftSignalPolicy(prediction_counts=False, share_threshold=0.5)
    three = drift_signal(compare(frame(300, 50), frame(300, 51, shift=("a", "b", "c"))), policy)
    one = drift_signal(compare(frame(300, 50), frame(300, 51, shift=("a",))), policy)
    assert three.triggered and sorted(three.drifted_features) == ["a", "b", "c"]
    assert re.search(r"3 of 5 features shifted .*share 0\.60 >= 0\.5", three.reasons[-1])
    assert not one.triggered and one.drifted_features == ["a"] and one.drift_share == 0.2


def test_materiality_floor_ignores_a_tiny_shift_of_a_huge_batch():
    rng = np.random.default_rng(60)
    ref = pl.DataFrame({"x": rng.normal(0, 1, 50_000)})
    cur = pl.DataFrame({"x": rng.normal(0.03, 1, 1_000_000)})
    result = compare(ref, cur, {"x": "numeric"}, None)
    f = result.features[0]
    signal = drift_signal(result, DriftSignalPolicy(("x",)))
    assert f.test_pvalue < 1e-6 and f.wasserstein_norm < 0.1
    assert not signal.triggered
    assert "changed significantly but not materially" in signal.notes[0]


def test_below_the_minimum_size_nothing_is_tested_or_triggered():
    result = compare(frame(100, 70), frame(15, 71, top_shift=3.0))
    signal = drift_signal(result, DriftSignalPolicy(key_features=("top",)))
    assert all(f.test_pvalue is None for f in result.features)
    assert signal.family_size == 0 and not signal.triggered
    assert "current data has 15 non-missing values, below the minimum 20" in signal.notes[0]


def test_an_all_missing_feature_is_not_tested():
    cur = frame(200, 81).with_columns(pl.lit(None, dtype=pl.Float64).alias("a"))
    f = by_name(compare(frame(200, 80), cur))["a"]
    assert f.drifted and f.test_pvalue is None and "no non-missing values" in f.test_note


def test_empty_batch_gives_no_signal():
    rp = build_profile(frame(100, 90), KINDS, prediction_column="score")
    empty = build_profile(frame(100, 91).head(0), reference=rp)
    signal = drift_signal(compare_profiles(rp, empty), DriftSignalPolicy(("top",)))
    assert not signal.triggered and "no rows" in signal.notes[0]


# --- key features, policy and spec ---------------------------------------------------------------


def test_default_key_features_edge_cases():
    assert default_key_features({"a": 5.0, "b": 3.0, "c": 1.5, "d": 0.5}) == ("a", "b", "c")
    assert default_key_features({"a": 5.0, "b": 3.0, "c": 1.5}, max_features=2) == ("a", "b")
    assert default_key_features({"a": 95.0, "b": 5.0}) == ("a",)  # b holds < 10%
    assert default_key_features({"z": 1.0, "y": 1.0}) == ("y", "z")  # ties by name
    assert default_key_features({"a": -0.2, "b": 0.1, "c": -3.0}) == ("b",)  # negative: 0
    assert default_key_features({"a": 0.0, "b": 0.0}) == ()
    assert default_key_features({"a": -1.0}) == ()
    assert default_key_features({}) == ()
    assert default_key_features({"a": 1.0}, max_features=0) == ()
    with pytest.raises(DriftInputError, match="feature 'b' must be finite"):
        default_key_features({"a": 1.0, "b": float("nan")})
    with pytest.raises(DriftInputError, match="feature 'b' must be a number"):
        default_key_features({"a": 1.0, "b": "high"})
    with pytest.raises(DriftInputError, match="max_features must be >= 0"):
        default_key_features({"a": 1.0}, max_features=-1)


def test_policy_rejects_bad_values_naming_the_field():
    with pytest.raises(DriftInputError, match=r"DriftSignalPolicy\.alpha must be within \(0, 1\)"):
        DriftSignalPolicy(alpha=0.0)
    with pytest.raises(DriftInputError, match=r"share_rule_fraction must be within \(0, 1\)"):
        DriftSignalPolicy(share_rule_fraction=1.0)
    with pytest.raises(DriftInputError, match=r"duplicate names \['x'\]"):
        DriftSignalPolicy(key_features=["x", "x"])
    assert DriftSignalPolicy(key_features=["top"]).key_features == ("top",)  # lists accepted
    result = compare(frame(100, 1), frame(160, 2))
    with pytest.raises(DriftInputError, match=r"key_features \['nope'\] are not features"):
        drift_signal(result, DriftSignalPolicy(key_features=("nope",)))


def test_policy_from_spec_uses_the_champions_top_features_when_none_are_listed():
    importance = {"top": 0.8, "a": 0.15, "b": 0.05}
    auto = policy_from_spec(DriftSpec(), importance)
    listed = policy_from_spec(DriftSpec(key_features=["b"], signal_alpha=0.01), importance)
    none = policy_from_spec(DriftSpec(top_key_features=0), importance)
    assert auto.key_features == ("top", "a") and auto.alpha == 0.05
    assert listed.key_features == ("b",) and listed.alpha == 0.01
    assert none.key_features == () and policy_from_spec(DriftSpec()).key_features == ()
    custom = policy_from_spec(DriftSpec(prediction_drift_signal=False, min_wasserstein=0.2))
    assert not custom.prediction_counts and custom.min_wasserstein == 0.2


def test_spec_fields_are_validated():
    with pytest.raises(ValueError, match="signal_alpha"):
        DriftSpec(signal_alpha=1.5)
    with pytest.raises(ValueError, match="share_rule_fraction"):
        DriftSpec(share_rule_fraction=0)


# --- output --------------------------------------------------------------------------------------


def test_reasons_markdown_and_dict_name_features_and_numbers():
    result = compare(frame(120, 100), frame(160, 101, top_shift=1.2))
    signal = drift_signal(result, DriftSignalPolicy(key_features=("top", "colour")))
    assert signal.triggered
    assert re.match(
        r"key feature 'top' shifted: normalised Wasserstein \d\.\d\d >= 0\.1, novel mass "
        r"0\.\d\d >= 0\.02 \(largest excess: [^)]+\), adjusted p "
        r"\S+ < 0\.05 \(Cramér-von Mises, 120 vs 160 values\)",
        signal.reasons[0],
    )
    md = signal.to_markdown()
    assert md.startswith("**Retrain signal: RETRAIN.**")
    assert "Key features: top, colour." in md and "| `top` | key | Cramér-von Mises |" in md
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(rows) == len(KINDS) + 1 and "**SHIFT**" in rows[0]
    out = json.loads(json.dumps(signal.to_dict(), allow_nan=False))
    assert out["triggered"] and out["key_features"] == ["top", "colour"]
    assert out["family_size"] == len(KINDS) + 1 and len(out["tests"]) == len(KINDS) + 1
    top = next(t for t in out["tests"] if t["name"] == "top")
    assert top["drifted"] and top["adjusted_pvalue"] < 0.05 and top["role"] == "key"
    quiet = drift_signal(compare(frame(120, 100), frame(160, 102)), DriftSignalPolicy(("top",)))
    assert quiet.to_markdown().startswith("**Retrain signal: no retrain.**")
