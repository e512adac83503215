"""Our verdicts agree column by column with Evidently's DataDriftPreset on the full data."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.drift import (
    build_profile,
    compare_profiles,
    evidently_verdicts,
    render_evidently_report,
)

from .drift_data import KINDS, make_frame

pytest.importorskip("evidently")
pytestmark = [
    pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


def _ours(ref: pl.DataFrame, cur: pl.DataFrame) -> dict[str, bool]:
    rp = build_profile(ref, KINDS)
    return {
        f.name: f.drifted
        for f in compare_profiles(rp, build_profile(cur, reference=rp, chunk_rows=9_000)).features
    }


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "seeds"),
    [
        (60_000, 50_000, (1, 2)),  # Wasserstein / Jensen-Shannon
        (800, 5_000, (3, 4)),  # small reference: KS / chi-square / z
        (400, 400, (5, 6)),  # small both: exact KS p-values
    ],
)
def test_verdicts_agree_with_evidently(n_ref, n_cur, seeds):
    ref, cur = make_frame(n_ref, seeds[0], False), make_frame(n_cur, seeds[1], True)
    ours = _ours(ref, cur)
    theirs = evidently_verdicts(ref, cur, KINDS)
    assert set(theirs) == set(KINDS)
    assert ours == theirs
    assert any(ours.values()) and not all(ours.values())


def test_no_drift_agrees_with_evidently():
    ref, cur = make_frame(20_000, 11, False), make_frame(20_000, 12, False)
    ours = _ours(ref, cur)
    assert ours == evidently_verdicts(ref, cur, KINDS)
    assert not any(ours.values())


def test_render_evidently_report(tmp_path):
    ref, cur = make_frame(3_000, 1, False), make_frame(2_500, 2, True)
    path = tmp_path / "reports" / "drift.html"
    out = render_evidently_report(
        ref.to_pandas(), cur.to_pandas(), KINDS, str(path), sample_rows=2_000
    )
    assert path.exists() and path.stat().st_size > 10_000
    assert not list(path.parent.glob("*.tmp"))
    assert set(out["columns"]) == set(KINDS) and out["n_reference"] == 2_000
    assert out["share"] == pytest.approx(sum(out["columns"].values()) / len(KINDS))
    assert out["columns"]["n_shift"] and not out["columns"]["n_same"]
    empty = render_evidently_report(
        ref.to_pandas(), cur.head(0).to_pandas(), KINDS, str(tmp_path / "empty.html")
    )
    assert empty["empty"] and empty["columns"] == {} and (tmp_path / "empty.html").exists()


def _edge_frame(n: int, seed: int, drift: bool) -> pl.DataFrame:
    r = np.random.default_rng(seed)
    many = pl.Series([f"id{i:04d}" for i in range(1_500)])
    weights = np.linspace(1.0, 1.3 if drift else 1.0, 1_500)
    const = np.full(n, 3.0)
    if drift:
        const[:40] = 3.5
    return pl.DataFrame(
        {
            "n_new5": r.choice([1.0, 2.0, 3.0, 4.0, 5.0] if drift else [1.0, 2.0, 3.0, 4.0], n),
            "n_new6": r.choice(np.arange(1.0, 7.0 if drift else 5.0), n),
            "n_const": const,
            "n_ints": r.poisson(3.0 + 0.03 * drift, n),
            "c_many": many.gather(r.choice(1_500, n, p=weights / weights.sum())),
            "c_flag": r.random(n) < (0.47 if drift else 0.5),
        }
    )


EDGE_KINDS = {
    "n_new5": "numeric",
    "n_new6": "numeric",
    "n_const": "numeric",
    "n_ints": "numeric",
    "c_many": "categorical",
    "c_flag": "categorical",
}


@pytest.mark.parametrize("n_ref", [6_000, 900])
def test_edge_columns_agree_with_evidently(n_ref):
    """Low-cardinality numerics gaining values (Evidently switches test at 5 distinct values),
    a constant column, counts, a categorical above the 1000-category cap and a boolean."""
    ref, cur = _edge_frame(n_ref, 21, False), _edge_frame(6_000, 22, True)
    rp = build_profile(ref, EDGE_KINDS)
    res = compare_profiles(rp, build_profile(cur, reference=rp, chunk_rows=2_500))
    methods = {f.name: f.method for f in res.features}
    if n_ref > 1000:
        assert methods["n_new5"] == "jensenshannon" and methods["n_new6"] == "wasserstein"
        assert rp.columns["c_many"].other_count > 0  # capped: 1000 kept, the rest in __other__
    else:
        assert methods["n_new5"] == "chisquare" and methods["n_new6"] == "ks"
    ours = {f.name: f.drifted for f in res.features}
    assert ours == evidently_verdicts(ref, cur, EDGE_KINDS)
