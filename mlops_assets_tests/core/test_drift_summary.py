"""Our own drift summary: the HTML table and the severity chart, from real drift results."""

import base64
import math
import os
import re

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.drift import DriftConfig, build_profile, compare_profiles
from mlops_assets.core.drift.summary import HTML_FILE, PNG_FILE, render_drift_summary

from .drift_data import KINDS, make_frame


@pytest.fixture(scope="module")
def drifted():
    """Reference vs drifted current data, with the model output monitored too."""
    ref, cur = make_frame(20_000, seed=1, drift=False), make_frame(20_000, seed=2, drift=True)
    rng = np.random.default_rng(0)
    ref = ref.with_columns(pl.Series("__prediction", rng.beta(2.0, 8.0, ref.height)))
    cur = cur.with_columns(pl.Series("__prediction", rng.beta(2.0, 8.0, cur.height)))
    reference = build_profile(ref, KINDS, prediction_column="__prediction")
    current = build_profile(cur, KINDS, reference=reference, prediction_column="__prediction")
    # 5 of the 12 features drift: a share threshold of 0.4 makes it dataset drift.
    return compare_profiles(reference, current, DriftConfig(share_threshold=0.4))


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _table_rows(page: str) -> list[tuple[str, str, str]]:
    """(row class, first cell, severity cell) of each table row, in page order."""
    rows = re.findall(r"<tr class='(\w+)'><td>(.*?)</td>(.*?)</tr>", page)
    return [(cls, name, re.findall(r"<td class='num'>(.*?)</td>", rest)[2]) for cls, name, rest in rows]


def test_table_is_sorted_by_severity_and_highlights_drift(drifted, tmp_path):
    assert drifted.dataset_drift and 0 < drifted.n_drifted < len(drifted.features)
    files = render_drift_summary(drifted, tmp_path, title="churn: 2026-03-01 vs champion v4")
    assert files.html == tmp_path / HTML_FILE and files.png == tmp_path / PNG_FILE
    page = files.html.read_text(encoding="utf-8")
    assert "Dataset drift DETECTED" in page and drifted.message in page
    assert "<h1>churn: 2026-03-01 vs champion v4</h1>" in page

    rows = _table_rows(page)
    expected = [*drifted.features, drifted.prediction]
    assert len(rows) == len(expected)
    names = [name for _, name, _ in rows]
    assert set(names) == {f.name for f in drifted.features} | {"model output"}
    by_name = {f.name: f for f in drifted.features} | {"model output": drifted.prediction}
    severities = [by_name[n].severity for n in names]
    assert severities == sorted(severities, reverse=True)
    for cls, name, shown in rows:
        assert cls == ("drift" if by_name[name].drifted else "ok"), name
        assert shown == f"{by_name[name].severity:.2f}"
    assert sum(cls == "drift" for cls, _, _ in rows) == drifted.n_drifted + drifted.prediction.drifted


def test_missing_rate_change_and_methods_are_shown(drifted, tmp_path):
    page = render_drift_summary(drifted, tmp_path, title="t").html.read_text(encoding="utf-8")
    missing = next(f for f in drifted.features if f.name == "n_missing")
    change = f"{missing.ref_missing_rate:.1%} &rarr; {missing.cur_missing_rate:.1%} ({missing.missing_rate_delta * 100:+.1f} pp)"
    assert change in page
    assert "Wasserstein/std" in page and "Jensen-Shannon" in page


def test_png_is_embedded_and_grows_with_the_features(drifted, tmp_path):
    files = render_drift_summary(drifted, tmp_path / "a", title="t")
    png = files.png.read_bytes()
    page = files.html.read_text(encoding="utf-8")
    embedded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1)
    assert base64.b64decode(embedded) == png  # one file is enough to read the report
    width, height = _png_size(png)
    assert width == 750 and height == int(100 * (1.4 + 0.3 * (len(drifted.features) + 1)))

    few = compare_profiles(*_profiles(["n_same", "c_same"]))
    files = render_drift_summary(few, tmp_path / "b", title="t")
    assert _png_size(files.png.read_bytes())[1] < height
    assert "<b>No dataset drift.</b>" in files.html.read_text(encoding="utf-8")


def _profiles(columns):
    kinds = {c: KINDS[c] for c in columns}
    ref, cur = make_frame(5_000, 1, False).select(columns), make_frame(5_000, 2, True).select(columns)
    reference = build_profile(ref, kinds)
    return reference, build_profile(cur, kinds, reference=reference)


def test_features_without_values_say_why(tmp_path):
    ref = pl.DataFrame({"gone": np.arange(3000.0), "never": np.full(3000, np.nan), "same": np.arange(3000.0)})
    cur = pl.DataFrame({"gone": np.full(3000, np.nan), "never": np.arange(3000.0), "same": np.arange(3000.0)})
    kinds = dict.fromkeys(ref.columns, "numeric")
    reference = build_profile(ref, kinds)
    result = compare_profiles(reference, build_profile(cur, kinds, reference=reference))
    page = render_drift_summary(result, tmp_path, title="t").html.read_text(encoding="utf-8")
    rows = _table_rows(page)
    assert rows[0][1] == "gone"  # went entirely missing: drifted, first
    assert rows[0][0] == "drift" and rows[0][2] == "inf"
    assert "DRIFT (current data has no non-missing values)" in page
    assert "not computed (reference has no non-missing values)" in page
    assert math.isinf(result.features[0].severity)


def test_empty_current_data(tmp_path):
    reference, _ = _profiles(["n_same", "c_same"])
    empty = build_profile(make_frame(10, 1, False).select("n_same", "c_same").head(0),
                          {"n_same": "numeric", "c_same": "categorical"}, reference=reference)
    result = compare_profiles(reference, empty)
    files = render_drift_summary(result, tmp_path, title="t")
    page = files.html.read_text(encoding="utf-8")
    assert "Drift not computed" in page and "current data has no rows" in page
    assert "<table>" not in page
    _png_size(files.png.read_bytes())


def test_names_and_title_are_escaped(tmp_path):
    reference, current = _profiles(["n_same"])
    result = compare_profiles(reference, current)
    result.features[0].name = "<b>x</b>"
    page = render_drift_summary(result, tmp_path, title="a <script> & b").html.read_text(encoding="utf-8")
    assert "<script>" not in page and "a &lt;script&gt; &amp; b" in page
    assert "<td>&lt;b&gt;x&lt;/b&gt;</td>" in page


def test_written_atomically_readable_and_deterministic(drifted, tmp_path):
    out = tmp_path / "new" / "dir"
    first = render_drift_summary(drifted, out, title="t")
    html, png = first.html.read_bytes(), first.png.read_bytes()
    second = render_drift_summary(drifted, out, title="t")  # overwrite in place
    assert second.html.read_bytes() == html and second.png.read_bytes() == png
    assert sorted(p.name for p in out.iterdir()) == sorted([HTML_FILE, PNG_FILE])  # no temp files
    umask = os.umask(0)
    os.umask(umask)
    assert (first.html.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_compact_evidently_page_keeps_the_verdicts(tmp_path):
    """The cheap Evidently page: share over every column, widgets for the chosen ones only."""
    from mlops_assets.core.drift import DriftInputError, render_evidently_report

    ref, cur = make_frame(3_000, seed=1, drift=False), make_frame(3_000, seed=2, drift=True)
    full = render_evidently_report(ref, cur, KINDS, tmp_path / "full.html")
    detail = ["n_shift", "c_unseen", "n_same"]
    compact = render_evidently_report(ref, cur, KINDS, tmp_path / "compact.html", detail_columns=detail)
    assert compact["share"] == pytest.approx(full["share"])
    assert compact["dataset_drift"] == full["dataset_drift"]
    assert compact["columns"] == {c: full["columns"][c] for c in detail}
    assert compact["columns"]["n_shift"] and not compact["columns"]["n_same"]
    assert (tmp_path / "compact.html").stat().st_size > 0
    with pytest.raises(DriftInputError, match=r"detail_columns names columns that are not compared: \['nope'\]"):
        render_evidently_report(ref, cur, KINDS, tmp_path / "x.html", detail_columns=["nope"])
    assert not (tmp_path / "x.html").exists()
