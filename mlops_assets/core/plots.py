"""Evaluation plots as PNG files: ROC, PR, calibration, feature importance, residuals.

`compact_png` shrinks a plot for embedding where every byte is stored again with each
event (the Dagster event log): a 64-colour palette keeps line and bar charts sharp at about
a third of their size (6-17 KB for ours), and the image is scaled down only if it is still
over the budget.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

EMBED_MAX_BYTES = 60_000   # per image, before base64 (+33%)
EMBED_COLOURS = 64
EMBED_MAX_WIDTH = 900      # px; our plots are 500-750 px wide


def _figure():
    import matplotlib

    matplotlib.use("Agg")   # headless: no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    return plt, fig, ax


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def evaluation_plots(
    task: str, y: np.ndarray, score: np.ndarray, importance: dict[str, float], out_dir: str | Path,
    champion_score: np.ndarray | None = None,
) -> dict[str, Path]:
    """Write the task's plots into `out_dir`; returns {name: path}."""
    from sklearn import metrics as skm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if task == "binary" and len(np.unique(y)) == 2:
        plt, fig, ax = _figure()
        for label, s in (("challenger", score), ("champion", champion_score)):
            if s is not None:
                fpr, tpr, _ = skm.roc_curve(y, s)
                ax.plot(fpr, tpr, label=f"{label} AUC={skm.roc_auc_score(y, s):.3f}")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
        ax.legend(loc="lower right")
        paths["roc"] = _save(plt, fig, out / "roc.png")

        plt, fig, ax = _figure()
        for label, s in (("challenger", score), ("champion", champion_score)):
            if s is not None:
                p, r, _ = skm.precision_recall_curve(y, s)
                ax.plot(r, p, label=f"{label} AP={skm.average_precision_score(y, s):.3f}")
        ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
        ax.legend(loc="upper right")
        paths["pr"] = _save(plt, fig, out / "pr.png")

        plt, fig, ax = _figure()
        from sklearn.calibration import calibration_curve

        frac, mean = calibration_curve(y, score, n_bins=10, strategy="quantile")
        ax.plot(mean, frac, "o-", label="challenger")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
        ax.set(xlabel="mean predicted probability", ylabel="observed frequency", title="Calibration")
        ax.legend(loc="upper left")
        paths["calibration"] = _save(plt, fig, out / "calibration.png")
    elif task == "multiclass":
        plt, fig, ax = _figure()
        cm = skm.confusion_matrix(y.astype(int), np.argmax(score, axis=1), normalize="true")
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
        ax.set(xlabel="predicted class", ylabel="true class", title="Confusion (row-normalised)")
        paths["confusion"] = _save(plt, fig, out / "confusion.png")
    elif task == "regression":
        plt, fig, ax = _figure()
        resid = y - score
        ax.scatter(score, resid, s=3, alpha=0.4)
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xlabel="prediction", ylabel="residual (actual - predicted)", title="Residuals")
        paths["residuals"] = _save(plt, fig, out / "residuals.png")

    if importance:
        plt, fig, ax = _figure()
        items = sorted(importance.items(), key=lambda kv: kv[1])[-15:]
        ax.barh([k for k, _ in items], [v for _, v in items])
        ax.set(xlabel="drop in main metric when shuffled", title="Feature importance (permutation)")
        paths["feature_importance"] = _save(plt, fig, out / "feature_importance.png")
    return paths


def drift_trend_plot(history, out_path: str | Path, top: int = 5) -> Path | None:
    """Severity (score / threshold; >= 1 means drifted) of the top drifting features over
    recent drift runs. `history` is the concatenated per-run drift score table."""
    import polars as pl

    rows = history.filter((pl.col("role") == "feature") & pl.col("score").is_not_null())
    if rows.height == 0:
        return None
    rows = rows.with_columns((pl.col("score") / pl.col("threshold")).alias("severity")).sort("computed_at")
    latest = rows.group_by("name").agg(pl.col("severity").last()).sort("severity", descending=True)
    chosen = latest.head(top)["name"].to_list()
    # Drawn on every drift run: the object-oriented API (no pyplot figure registry) and fixed
    # margins instead of tight_layout, which draws the whole figure once more only to measure it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    runs = rows.select("run_id", "partition").unique(subset="run_id", maintain_order=True)
    position = {r: i for i, r in enumerate(runs["run_id"].to_list())}
    for name in chosen:
        part = rows.filter(pl.col("name") == name)
        ax.plot([position[r] for r in part["run_id"].to_list()], part["severity"].to_list(), "o-", label=name)
    ax.axhline(1.0, color="r", lw=0.8, ls="--", label="drift threshold")
    labels = [str(p)[:24] for p in runs["partition"].to_list()]
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=7)
    ax.set(xlabel="drift runs, oldest first (partition)", ylabel="score / threshold", title="Top drifting features")
    ax.legend(loc="upper left", fontsize=7)
    # Room below for tick labels of up to 24 characters at 7 pt, rotated 20 degrees (~0.45 in).
    longest = max((len(label) for label in labels), default=0)
    bottom = 0.55 + 0.021 * longest
    fig.subplots_adjust(left=1.25 / 7, right=0.97, top=1 - 0.35 / 4, bottom=bottom / 4)
    path = Path(out_path)
    fig.savefig(path)
    return path


def learning_curve_plot(history: dict[str, list[float]], out_path: str | Path, best_iteration: int | None = None,
                        max_metrics: int = 3) -> Path | None:
    """One small panel per recorded metric (validation loss, AUC, learning rate, ...) over
    boosting rounds or epochs; the best iteration is marked."""
    series = {k: [float(x) for x in v] for k, v in history.items() if v and np.isfinite(np.asarray(v, float)).any()}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(series)[:max_metrics]
    fig, axes = plt.subplots(len(names), 1, figsize=(5, 1.6 + 1.3 * len(names)), dpi=100, sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        values = series[name]
        ax.plot(range(1, len(values) + 1), values, lw=1.2)
        if best_iteration:
            ax.axvline(best_iteration, color="k", lw=0.8, ls="--")
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_title("Learning curve" + (f" (best iteration {best_iteration}, dashed)" if best_iteration else ""),
                         fontsize=9)
    axes[-1, 0].set_xlabel("iteration", fontsize=8)
    return _save(plt, fig, Path(out_path))


def compact_png(path: str | Path, max_bytes: int = EMBED_MAX_BYTES) -> bytes:
    """The PNG at `path` as a palette PNG of at most `max_bytes`: wider than EMBED_MAX_WIDTH is
    scaled down first, then further (by the size ratio) until it fits; never below 160 px."""
    from PIL import Image

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    if image.width > EMBED_MAX_WIDTH:
        image = _scaled(image, EMBED_MAX_WIDTH / image.width)
    while True:
        out = io.BytesIO()
        image.quantize(colors=EMBED_COLOURS, method=Image.Quantize.FASTOCTREE).save(out, format="PNG", optimize=True)
        data = out.getvalue()
        if len(data) <= max_bytes or image.width <= 160:
            return data
        image = _scaled(image, max(0.5, 0.95 * (max_bytes / len(data)) ** 0.5))


def _scaled(image, factor: float):
    from PIL import Image

    size = (max(160, int(image.width * factor)), max(1, int(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


def png_data_uri(path: str | Path, max_bytes: int = EMBED_MAX_BYTES) -> str:
    return "data:image/png;base64," + base64.b64encode(compact_png(path, max_bytes)).decode("ascii")
