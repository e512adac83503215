"""Drift engine: statistics against scipy/numpy on the full data, profiles, streaming, API."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mlops_assets.core.drift import (
    DatasetProfile,
    DriftConfig,
    DriftInputError,
    FeatureDriftConfig,
    build_profile,
    check_current_schema,
    compare_profiles,
    profile_parquet,
)
from mlops_assets.core.drift import sketch as sketch_mod
from mlops_assets.core.drift.stats import PSI_EPSILON

from .drift_data import KINDS, finite, make_frame

NUMERIC = [c for c, k in KINDS.items() if k == "numeric"]
CATEGORICAL = [c for c, k in KINDS.items() if k == "categorical"]


@pytest.fixture(scope="module")
def ref_df() -> pl.DataFrame:
    return make_frame(60_000, seed=1, drift=False)


@pytest.fixture(scope="module")
def cur_df() -> pl.DataFrame:
    return make_frame(50_000, seed=2, drift=True)


@pytest.fixture(scope="module")
def ref_profile(ref_df) -> DatasetProfile:
    return build_profile(ref_df, KINDS)


@pytest.fixture(scope="module")
def cur_profile(cur_df, ref_profile) -> DatasetProfile:
    return build_profile(cur_df, reference=ref_profile, chunk_rows=12_000)


@pytest.fixture(scope="module")
def result(ref_profile, cur_profile):
    return compare_profiles(ref_profile, cur_profile)


def _by_name(result):
    return {f.name: f for f in result.features}


# --- statistics against scipy / numpy on the full data -------------------------------------------


@pytest.mark.parametrize("name", NUMERIC)
def test_wasserstein_matches_scipy(name, ref_df, cur_df, result):
    x, y = finite(ref_df, name), finite(cur_df, name)
    exact = stats.wasserstein_distance(x, y) / max(np.std(x), 0.001)
    ours = _by_name(result)[name].wasserstein_norm
    # Exact except inside gaps where the two CDFs cross (only when the distributions are close).
    assert ours == pytest.approx(exact, rel=5e-3, abs=2e-4)


@pytest.mark.parametrize("name", NUMERIC)
def test_ks_statistic_matches_scipy(name, ref_df, cur_df, result):
    x, y = finite(ref_df, name), finite(cur_df, name)
    exact = stats.ks_2samp(x, y)
    f = _by_name(result)[name]
    # Exact at every sketch edge; in between from the sketch (bounded by the gap mass).
    assert f.ks_statistic == pytest.approx(exact.statistic, abs=3e-4)
    if exact.pvalue > 1e-6:  # reported p-value: limiting distribution at this size
        assert f.ks_pvalue == pytest.approx(exact.pvalue, abs=0.04)


def test_ks_exact_on_small_reference():
    """A reference of <= 1000 values is stored exactly: KS statistic and p-value equal scipy's."""
    ref, cur = make_frame(700, 3, False), make_frame(4_000, 4, True)
    rp = build_profile(ref, KINDS)
    res = _by_name(compare_profiles(rp, build_profile(cur, reference=rp, chunk_rows=900)))
    for name in NUMERIC:
        exact = stats.ks_2samp(finite(ref, name), finite(cur, name))
        assert res[name].ks_statistic == pytest.approx(exact.statistic, abs=1e-12), name
        assert res[name].ks_pvalue == pytest.approx(exact.pvalue, rel=1e-9, abs=1e-300), name
    assert all(rp.columns[n].exact for n in NUMERIC)


def _psi_by_hand(x, y, inner_edges):
    # right-closed bins (-inf, q1], (q1, q2], ..., (q_last, inf)
    p = np.bincount(np.searchsorted(inner_edges, x, side="left"), minlength=len(inner_edges) + 1)
    q = np.bincount(np.searchsorted(inner_edges, y, side="left"), minlength=len(inner_edges) + 1)
    p = np.maximum(p / len(x), PSI_EPSILON)
    q = np.maximum(q / len(y), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


@pytest.mark.parametrize("name", NUMERIC)
def test_psi_matches_hand_computation(name, ref_df, cur_df, ref_profile, result):
    x, y = finite(ref_df, name), finite(cur_df, name)
    edges = ref_profile.columns[name].psi_edges
    if name not in ("n_low", "n_bin"):
        assert len(edges) == 9
        # the edges are the reference deciles ('lower' interpolation)
        np.testing.assert_array_equal(edges, np.quantile(x, np.arange(1, 10) / 10, method="lower"))
    assert _by_name(result)[name].psi == pytest.approx(_psi_by_hand(x, y, edges), rel=1e-9)


def test_psi_with_other_bin_count(ref_df, cur_df, ref_profile, cur_profile):
    res = _by_name(compare_profiles(ref_profile, cur_profile, DriftConfig(psi_bins=4)))
    x, y = finite(ref_df, "n_shift"), finite(cur_df, "n_shift")
    quartiles = np.quantile(x, [0.25, 0.5, 0.75], method="inverted_cdf")
    assert res["n_shift"].psi == pytest.approx(_psi_by_hand(x, y, quartiles), rel=0.02)


def _value_freqs(ref: pl.Series, cur: pl.Series):
    """Evidently's way: counts over the union of non-missing values, divided by each length."""
    r, c = ref.drop_nulls().value_counts(), cur.drop_nulls().value_counts()
    keys = sorted(set(r[:, 0].to_list()) | set(c[:, 0].to_list()))
    rd, cd = dict(r.iter_rows()), dict(c.iter_rows())
    return (
        np.array([rd.get(k, 0) for k in keys], float),
        np.array([cd.get(k, 0) for k in keys], float),
    )


@pytest.mark.parametrize("name", CATEGORICAL + ["n_low", "n_bin"])
def test_js_and_chisquare_match_scipy(name, ref_df, cur_df, result):
    p, q = _value_freqs(ref_df[name], cur_df[name])
    f = _by_name(result)[name]
    assert f.js_distance == pytest.approx(jensenshannon(p / p.sum(), q / q.sum()), rel=1e-9)
    f_exp = p * q.sum() / p.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = stats.chisquare(q, f_exp).pvalue
    assert f.chi2_pvalue == pytest.approx(expected, rel=1e-6, abs=1e-300)


def test_unseen_categories_and_missing_rate(ref_df, cur_df, result):
    res = _by_name(result)
    cur_unseen = cur_df["c_unseen"].is_in(ref_df["c_unseen"].unique().implode()).not_()
    assert res["c_unseen"].unseen_share == pytest.approx(cur_unseen.mean(), abs=1e-12)
    assert res["c_same"].unseen_share == 0.0
    ref_rate = (ref_df["n_missing"].is_null() | ref_df["n_missing"].is_nan()).mean()
    cur_rate = (cur_df["n_missing"].is_null() | cur_df["n_missing"].is_nan()).mean()
    f = res["n_missing"]
    assert (f.ref_missing_rate, f.cur_missing_rate) == pytest.approx((ref_rate, cur_rate))
    assert f.missing_rate_delta == pytest.approx(cur_rate - ref_rate)
    assert 0.13 < f.missing_rate_delta < 0.17
    assert not f.drifted  # the values keep their distribution
    cur_profile_cat = build_profile(cur_df, reference=build_profile(ref_df, KINDS))
    unseen = cur_profile_cat.columns["c_unseen"]
    assert set(unseen.unseen) == {"c10", "c11"} and unseen.unseen_distinct == 2


def test_default_verdicts(result):
    res = _by_name(result)
    drifted = {n for n, f in res.items() if f.drifted}
    assert drifted == {"n_shift", "n_scale", "n_low", "c_shift", "c_unseen"}
    assert res["n_low"].method == res["n_bin"].method == "jensenshannon"  # <= 5 values
    assert res["n_shift"].method == "wasserstein" and res["c_shift"].method == "jensenshannon"
    assert result.drift_share == pytest.approx(5 / 12)
    assert not result.dataset_drift
    assert compare_profiles(*_profiles_for_share(), DriftConfig(share_threshold=0.4)).dataset_drift


def _profiles_for_share():
    ref, cur = make_frame(5_000, 1, False), make_frame(5_000, 2, True)
    rp = build_profile(ref, KINDS)
    return rp, build_profile(cur, reference=rp)


# --- configuration --------------------------------------------------------------------------------


def test_per_feature_method_and_threshold_override(ref_profile, cur_profile):
    config = DriftConfig(
        per_feature={
            "n_same": FeatureDriftConfig(method="psi", threshold=1e-6),
            "n_shift": FeatureDriftConfig(threshold=0.9),
            "n_int": FeatureDriftConfig(method="ks", threshold=0.999),
            "c_same": FeatureDriftConfig(method="chisquare"),
            "n_heavy": FeatureDriftConfig(method="jensenshannon"),
        }
    )
    res = _by_name(compare_profiles(ref_profile, cur_profile, config))
    assert (res["n_same"].method, res["n_same"].threshold, res["n_same"].drifted) == (
        "psi",
        1e-6,
        True,
    )
    assert res["n_same"].score == res["n_same"].psi
    assert (res["n_shift"].method, res["n_shift"].drifted) == ("wasserstein", False)
    assert res["n_int"].method == "ks" and res["n_int"].score == res["n_int"].ks_pvalue
    n1, n2 = res["n_int"].n_reference, res["n_int"].n_current  # KS decides: scipy's exact path
    assert res["n_int"].ks_pvalue == stats.kstwo.sf(
        res["n_int"].ks_statistic, round(n1 * n2 / (n1 + n2))
    )
    assert res["n_int"].drifted == (res["n_int"].ks_pvalue <= 0.999)
    assert res["c_same"].method == "chisquare" and res["c_same"].threshold == 0.05
    assert res["n_heavy"].method == "jensenshannon" and not res["n_heavy"].drifted
    with pytest.raises(DriftInputError, match="c_same"):
        compare_profiles(
            ref_profile,
            cur_profile,
            DriftConfig(per_feature={"c_same": FeatureDriftConfig("wasserstein")}),
        )
    with pytest.raises(DriftInputError, match="nope"):
        compare_profiles(
            ref_profile, cur_profile, DriftConfig(per_feature={"nope": FeatureDriftConfig("psi")})
        )


def test_small_reference_uses_ks_chisquare_and_z():
    ref, cur = make_frame(800, 5, False), make_frame(3_000, 6, True)
    rp = build_profile(ref, KINDS)
    res = _by_name(compare_profiles(rp, build_profile(cur, reference=rp)))
    assert res["n_shift"].method == "ks" and res["n_shift"].drifted
    assert res["n_low"].method == "chisquare" and res["c_shift"].method == "chisquare"
    assert res["n_bin"].method == "z" and res["c_bin"].method == "z"
    assert res["c_unseen"].score == 0.0 and res["c_unseen"].drifted  # unseen: chi-square p = 0


# --- profiles ---------------------------------------------------------------------------------------


def test_json_round_trip_and_size(tmp_path, ref_profile, cur_profile, result):
    path = ref_profile.save(tmp_path / "profiles" / "reference.json")
    loaded = DatasetProfile.load(path)
    assert loaded.to_dict() == ref_profile.to_dict()
    assert loaded.fingerprint() == ref_profile.fingerprint()
    cur_loaded = DatasetProfile.from_json(cur_profile.to_json())
    again = compare_profiles(loaded, cur_loaded)
    assert again.to_dict() == result.to_dict()
    json.loads(path.read_text())  # strict JSON (no NaN/Infinity)
    sizes = [len(json.dumps(p.to_dict())) for p in ref_profile.columns.values()]
    assert max(sizes) < 60_000, sizes
    assert not list(path.parent.glob("*.tmp"))


def test_streaming_parquet_equals_in_memory(
    tmp_path, cur_df, ref_profile, cur_profile, monkeypatch
):
    parts = [cur_df.slice(0, 20_000), cur_df.slice(20_000, 17_000), cur_df.slice(37_000, 13_000)]
    for i, part in enumerate(parts):
        part.write_parquet(tmp_path / f"part-{i}.parquet", row_group_size=4_000)
    seen: list[int] = []
    original = sketch_mod.NumericAccumulator.add

    def spy(self, series):
        seen.append(len(series))
        return original(self, series)

    monkeypatch.setattr(sketch_mod.NumericAccumulator, "add", spy)
    streamed = profile_parquet(str(tmp_path / "*.parquet"), reference=ref_profile, chunk_rows=7_000)
    assert streamed.n_chunks == math.ceil(50_000 / 7_000)
    assert max(seen) <= 7_000 and sum(seen) == 50_000 * len(NUMERIC)
    assert streamed.n_rows == cur_profile.n_rows == 50_000
    listed = profile_parquet(
        [str(tmp_path / f"part-{i}.parquet") for i in range(3)],
        reference=ref_profile,
        chunk_rows=50_000,
    )
    for other in (streamed, listed):
        for name, a in cur_profile.columns.items():
            da, db = a.to_dict(), other.columns[name].to_dict()
            for key, value in da.items():
                if isinstance(value, float) or key == "gap_sums":
                    np.testing.assert_allclose(
                        db[key], value, rtol=1e-9, atol=1e-9, err_msg=f"{name}.{key}"
                    )
                else:
                    assert db[key] == value, f"{name}.{key}"
        assert (
            compare_profiles(ref_profile, other).drifted_features
            == compare_profiles(ref_profile, cur_profile).drifted_features
        )


def test_streaming_memory_is_bounded(tmp_path, ref_profile):
    big = make_frame(200_000, seed=7, drift=False).select(NUMERIC)
    big.write_parquet(tmp_path / "big.parquet", row_group_size=10_000)
    full_bytes = big.estimated_size()
    del big
    numeric_ref = DatasetProfile(
        columns={n: ref_profile.columns[n] for n in NUMERIC}, n_rows=ref_profile.n_rows
    )
    tracemalloc.start()
    try:
        prof = profile_parquet(tmp_path / "big.parquet", reference=numeric_ref, chunk_rows=20_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert prof.n_chunks == 10 and prof.n_rows == 200_000
    # numpy buffers are traced: a few chunk-sized columns at a time, not the whole frame
    assert peak < full_bytes / 5, (peak, full_bytes)


def test_pandas_and_lazy_inputs_give_the_same_profile(ref_df, ref_profile, cur_df, cur_profile):
    from_pandas = build_profile(ref_df.to_pandas(), KINDS)
    assert from_pandas.to_dict() == ref_profile.to_dict()
    lazy = build_profile(ref_df.lazy(), KINDS)
    assert lazy.to_dict() == ref_profile.to_dict()
    cur_pd = build_profile(cur_df.to_pandas(), reference=ref_profile, chunk_rows=12_000)
    assert cur_pd.columns["c_unseen"].to_dict() == cur_profile.columns["c_unseen"].to_dict()


# --- errors and edge cases --------------------------------------------------------------------------


def test_missing_column_raises_naming_it(ref_profile, cur_df, tmp_path):
    with pytest.raises(DriftInputError, match="'n_shift'.*missing"):
        check_current_schema(ref_profile, cur_df.drop("n_shift"))
    with pytest.raises(DriftInputError, match="'c_bin'"):
        build_profile(cur_df.drop("c_bin"), reference=ref_profile)
    cur_df.drop("n_int").write_parquet(tmp_path / "x.parquet")
    with pytest.raises(DriftInputError, match="'n_int'"):
        profile_parquet(tmp_path / "x.parquet", reference=ref_profile)


def test_changed_type_raises_naming_it(ref_profile, cur_df):
    as_string = cur_df.with_columns(pl.col("n_scale").cast(pl.String))
    with pytest.raises(DriftInputError, match="'n_scale' was numeric"):
        build_profile(as_string, reference=ref_profile)
    with pytest.raises(DriftInputError, match="'n_scale'"):
        check_current_schema(ref_profile, as_string.to_pandas())
    codes_as_float = cur_df.with_columns(pl.col("c_shift").str.slice(1).cast(pl.Float64))
    with pytest.raises(DriftInputError, match="'c_shift' was categorical"):
        check_current_schema(ref_profile, codes_as_float.schema)
    with pytest.raises(DriftInputError, match="'n_same'"):
        check_current_schema(ref_profile, {**cur_df.schema, "n_same": pl.Boolean})
    check_current_schema(ref_profile, cur_df.with_columns(pl.col("n_int").cast(pl.Float32)))


def test_empty_current_data(ref_profile, cur_df, tmp_path):
    empty = build_profile(cur_df.head(0), reference=ref_profile)
    res = compare_profiles(ref_profile, empty)
    assert res.empty and not res.dataset_drift and res.features == []
    assert "no rows" in res.message and "not computed" in res.to_markdown()
    assert res.to_frame().height == 0 and res.to_dict()["empty"]
    cur_df.head(0).write_parquet(tmp_path / "empty.parquet")
    streamed = profile_parquet(tmp_path / "empty.parquet", reference=ref_profile)
    assert compare_profiles(ref_profile, streamed).empty


def test_column_entirely_missing_is_flagged(ref_profile, cur_df):
    gone = cur_df.with_columns(
        pl.lit(None, dtype=pl.Float64).alias("n_same"), pl.lit(None).alias("c_same")
    )
    res = _by_name(compare_profiles(ref_profile, build_profile(gone, reference=ref_profile)))
    for name in ("n_same", "c_same"):
        assert not res[name].computed and res[name].drifted
        assert res[name].cur_missing_rate == 1.0


def test_profile_of_another_reference_is_rejected(ref_profile, cur_profile):
    other = build_profile(make_frame(3_000, 9, False), KINDS)
    with pytest.raises(DriftInputError, match="not binned on this reference"):
        compare_profiles(other, cur_profile)


def test_prediction_column_is_profiled_and_reported_apart(ref_df, cur_df):
    ref = ref_df.with_columns(prediction=pl.col("n_same") * 0.1 + 0.5)
    cur = cur_df.with_columns(prediction=pl.col("n_shift") * 0.1 + 0.5)
    rp = build_profile(ref, KINDS, prediction_column="prediction")
    cp = build_profile(cur, reference=rp)  # inherits the prediction column
    res = compare_profiles(rp, cp)
    assert res.prediction is not None and res.prediction.name == "prediction"
    assert res.prediction.drifted and len(res.features) == len(KINDS)
    assert "Prediction drift" in res.to_markdown()
    assert res.to_frame().filter(pl.col("role") == "prediction").height == 1


def test_outputs(result):
    frame = result.to_frame()
    assert frame.height == len(KINDS) and {
        "name",
        "method",
        "score",
        "drifted",
        "psi",
        "js_distance",
        "wasserstein_norm",
    } <= set(frame.columns)
    md = result.to_markdown()
    lines = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(lines) == len(KINDS)
    assert all("DRIFT" in line for line in lines[:5]) and "DRIFT" not in lines[5]
    json.dumps(result.to_dict(), allow_nan=False)


def test_pandas_categorical_and_integer_category_columns():
    ref = pd.DataFrame({"k": pd.Categorical(["a", "b"] * 600), "code": [1, 2, 3] * 400})
    cur = pd.DataFrame({"k": pd.Categorical(["a", "b", "b"] * 400), "code": [1, 2, 4] * 400})
    kinds = {"k": "categorical", "code": "categorical"}
    rp = build_profile(ref, kinds)
    res = _by_name(compare_profiles(rp, build_profile(cur, reference=rp)))
    assert res["code"].unseen_share == pytest.approx(1 / 3)
    assert res["k"].method == "jensenshannon" and res["k"].drifted
