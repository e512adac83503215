"""Our verdicts agree column by column with Evidently's DataDriftPreset on the full data."""

from __future__ import annotations

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


def _ours(ref: pl.DataFrame, cur: pl.DataFrame) -> dict[str, bool]:
    rp = build_profile(ref, KINDS)
    return {f.name: f.drifted for f in compare_profiles(rp, build_profile(cur, reference=rp,
                                                                            chunk_rows=9_000)).features}


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
    out = render_evidently_report(ref.to_pandas(), cur.to_pandas(), KINDS, str(path),
                                  sample_rows=2_000)
    assert path.exists() and path.stat().st_size > 10_000
    assert not list(path.parent.glob("*.tmp"))
    assert set(out["columns"]) == set(KINDS) and out["n_reference"] == 2_000
    assert out["share"] == pytest.approx(sum(out["columns"].values()) / len(KINDS))
    assert out["columns"]["n_shift"] and not out["columns"]["n_same"]
    empty = render_evidently_report(ref.to_pandas(), cur.head(0).to_pandas(), KINDS,
                                    str(tmp_path / "empty.html"))
    assert empty["empty"] and empty["columns"] == {} and (tmp_path / "empty.html").exists()
