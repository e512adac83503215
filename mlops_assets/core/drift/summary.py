"""Our own drift summary of one partition: a small self-contained HTML page and a PNG chart.

Written on every drift run, because it is cheap (milliseconds of HTML, ~0.1 s of matplotlib for
50 features) where Evidently's HTML costs seconds: that one is rendered only when drift is found
or asked for. The page shows the per-feature table of :class:`DriftResult`, most severe first,
with the data-set verdict on top and the severity chart embedded, so the one file is enough.
"""

from __future__ import annotations

import base64
import html
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from .compare import DriftResult, FeatureDrift
from .report import METHOD_LABELS

__all__ = ["HTML_FILE", "PNG_FILE", "DriftSummaryFiles", "render_drift_summary"]

HTML_FILE = "drift_summary.html"
PNG_FILE = "drift_severity.png"
_DRIFT_COLOUR = "#c0392b"
_OK_COLOUR = "#5d7fa3"
_NOT_COMPUTED_COLOUR = "#9e9e9e"


@dataclass(frozen=True)
class DriftSummaryFiles:
    html: Path
    png: Path


def render_drift_summary(result: DriftResult, out_dir: str | os.PathLike[str], *, title: str) -> DriftSummaryFiles:
    """Write ``drift_summary.html`` and ``drift_severity.png`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = _by_severity(result)
    png_path = out / PNG_FILE
    png = _severity_png(rows, title, result.message)
    _write_atomically(png_path, png)
    html_path = out / HTML_FILE
    _write_atomically(html_path, _page(result, rows, title, png).encode("utf-8"))
    return DriftSummaryFiles(html=html_path, png=png_path)


def _by_severity(result: DriftResult) -> list[tuple[str, FeatureDrift]]:
    """(role, feature) rows, most severe first; the model output is ranked with the features."""
    rows = [("feature", f) for f in result.features]
    if result.prediction is not None:
        rows.append(("prediction", result.prediction))
    return sorted(rows, key=lambda r: (-r[1].severity, not r[1].drifted, r[1].name))


def _display_name(role: str, f: FeatureDrift) -> str:
    # The monitored prediction is profiled under an internal column name ("__prediction").
    return "model output" if role == "prediction" else f.name


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4f}"


def _severity_text(severity: float) -> str:
    return "inf" if math.isinf(severity) else f"{severity:.2f}"


def _verdict(f: FeatureDrift) -> str:
    if not f.computed:
        return ("DRIFT" if f.drifted else "not computed") + f" ({f.note})"
    return "DRIFT" if f.drifted else "ok"


def _missing(f: FeatureDrift) -> str:
    change = f.missing_rate_delta * 100
    text = f"{f.ref_missing_rate:.1%} &rarr; {f.cur_missing_rate:.1%}"
    return text + (f" ({change:+.1f} pp)" if change else "")


_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 8px}
.verdict{padding:10px 14px;border-radius:6px;margin:8px 0 16px;font-size:15px}
.verdict.drift{background:#fdecea;border:1px solid #e6b0aa}
.verdict.ok{background:#eaf4ea;border:1px solid #a9d5a9}
.verdict.empty{background:#f2f2f2;border:1px solid #ccc}
table{border-collapse:collapse;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #e3e3e3;text-align:left}
th{background:#f6f6f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.drift td{background:#fdecea}
tr.drift td.v{color:#c0392b;font-weight:600}
.muted{color:#777;font-size:12px}
img{max-width:100%;margin-top:16px}
"""


def _page(result: DriftResult, rows: list[tuple[str, FeatureDrift]], title: str, png: bytes) -> str:
    esc = html.escape
    if result.empty:
        verdict_class, headline = "empty", "Drift not computed"
    elif result.dataset_drift:
        verdict_class, headline = "drift", "Dataset drift DETECTED"
    else:
        verdict_class, headline = "ok", "No dataset drift"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<div class='verdict {verdict_class}'><b>{headline}.</b> {esc(result.message)}</div>",
        (f"<p class='muted'>Reference rows: {result.n_reference:,}; current rows: {result.n_current:,}. "
         f"The data set drifts when a share of {result.share_threshold:.2f} of its features drift. "
         "Severity is how far a score is past its threshold: above 1 means drifted.</p>"),
    ]
    if rows:
        parts.append(
            "<table><thead><tr><th>feature</th><th>kind</th><th>method</th><th>score</th>"
            "<th>threshold</th><th>severity</th><th>verdict</th><th>missing rate</th></tr></thead><tbody>"
        )
        for role, f in rows:
            name = esc(_display_name(role, f))
            parts.append(
                f"<tr class='{'drift' if f.drifted else 'ok'}'><td>{name}</td><td>{esc(f.kind)}</td>"
                f"<td>{esc(METHOD_LABELS.get(f.method, f.method))}</td>"
                f"<td class='num'>{_fmt(f.score)}</td><td class='num'>{_fmt(f.threshold)}</td>"
                f"<td class='num'>{_severity_text(f.severity)}</td><td class='v'>{esc(_verdict(f))}</td>"
                f"<td class='num'>{_missing(f)}</td></tr>"
            )
        parts.append("</tbody></table>")
        parts.append(f"<img alt='severity by feature' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append("</body></html>")
    return "".join(parts)


def _severity_png(rows: list[tuple[str, FeatureDrift]], title: str, subtitle: str) -> bytes:
    """Horizontal bars of severity, most severe on top, with the drift threshold at 1."""
    # The object-oriented API rather than pyplot: no global figure registry to leak or to
    # share between threads, and no backend switch (Agg is drawn directly).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = 7.5, 1.4 + 0.3 * len(rows)
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # Fixed margins in inches instead of tight_layout, which draws the whole figure once more
    # just to measure it (half the cost of the chart). Labels are 8 pt: ~0.075 in a character.
    longest = max((len(_display_name(role, f)) for role, f in rows), default=0)
    fig.subplots_adjust(left=min(0.45, (0.25 + 0.075 * longest) / width), right=0.97,
                        top=1 - 0.62 / height, bottom=0.55 / height)
    finite = [f.severity for _, f in rows if math.isfinite(f.severity)]
    # Past ~4x the threshold the exact length tells nothing more; the number is printed.
    cap = max(2.0, min(max(finite, default=1.0) * 1.1, 4.0))
    if not rows:
        fig.suptitle(title, fontsize=11, x=0.01, y=0.97, ha="left", va="top")
        ax.set_axis_off()
        ax.text(0.5, 0.5, subtitle, ha="center", va="center", fontsize=10, color="#555")
        return _png_bytes(fig)
    labels, lengths, colours = [], [], []
    for role, f in reversed(rows):  # barh draws bottom-up
        labels.append(_display_name(role, f))
        lengths.append(min(f.severity, cap))
        colours.append(_DRIFT_COLOUR if f.drifted else _OK_COLOUR if f.computed else _NOT_COMPUTED_COLOUR)
    y = range(len(rows))
    bars = ax.barh(list(y), lengths, color=colours, height=0.7)
    for i, (length, (_, f)) in enumerate(zip(lengths, reversed(rows))):
        if not f.computed:  # no score: hatch the bar and say why instead of a number
            bars[i].set_hatch("//")
            bars[i].set_edgecolor("white")
        text = _severity_text(f.severity) if f.computed else "not computed: " + f.note
        if not f.computed:  # the reason, on a white label over the hatching
            ax.text(0.03, i, text, va="center", ha="left", fontsize=8, color="#333", zorder=3,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5, "alpha": 0.9})
            continue
        inside = f.severity > cap  # a clipped bar: the number goes inside, with an arrow
        ax.text(length - 0.03 if inside else length + 0.03, i, text + (" \u25b6" if inside else ""),
                va="center", ha="right" if inside else "left", fontsize=8, color="white" if inside else "#333")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax.axvline(1.0, color="#222", lw=1, ls="--")
    legend = [Patch(color=_DRIFT_COLOUR, label="drifted"), Patch(color=_OK_COLOUR, label="not drifted")]
    if any(not f.computed for _, f in rows):
        legend.append(Patch(facecolor=_NOT_COMPUTED_COLOUR, edgecolor="white", hatch="//", label="not computed"))
    legend.append(Line2D([], [], color="#222", lw=1, ls="--", label="drift threshold (1)"))
    ax.legend(handles=legend, loc="lower right", fontsize=8, framealpha=0.95)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.set_xlim(0, cap * 1.12)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("severity (score / threshold; p-values: log p / log threshold)")
    fig.suptitle(title, fontsize=11, x=0.01, y=1 - 0.08 / height, ha="left", va="top")
    ax.set_title(subtitle, fontsize=9, loc="left", color="#555")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _png_bytes(fig)


def _png_bytes(fig) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    # A uniquely named sibling opened normally (not mkstemp, whose 0600 mode would survive
    # the rename and hide the report from other users), then renamed over the target.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
