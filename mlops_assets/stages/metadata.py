"""Pure helpers that turn results into metadata people can read in the Dagster UI.

What Dagster 1.13's UI does with each kind (checked on a running webserver, see
docs/concepts.md "What the UI shows"):
- numbers (`int`/`float`/`bool`) show as values and feed the asset's Plots tab;
- `MetadataValue.table` shows a real table with typed columns;
- `MetadataValue.md` renders inline when shorter than 1,000 characters, otherwise behind a
  "[Show Markdown]" link that opens it in a dialog (on check pages: always behind the link).
  Images in markdown render from `https://` and `data:` URLs; raw HTML (`<img>`) and `file://`
  do not. So plots are embedded as small `data:image/png` URIs (`image_md`), which work
  wherever the UI runs, with no file server and no expiring links.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

DAGSTER_UI_ENV = "DAGSTER_UI_URL"
# `dagster/column_schema` is stored with every event: each column costs about 200 bytes of
# serialized structure plus its text, so a 10k-column frame lists its first columns only.
SCHEMA_MAX_COLUMNS = 200
SCHEMA_MAX_BYTES = 12_000
_COLUMN_OVERHEAD_BYTES = 200
DESCRIPTION_CHARS = 160
MAX_LISTED_CATEGORIES = 12
TABLE_MAX_ROWS = 200


# -- column schema ---------------------------------------------------------------------------
def table_schema(df: pl.DataFrame, descriptions: Mapping[str, str] | None = None,
                 max_columns: int = SCHEMA_MAX_COLUMNS, max_bytes: int = SCHEMA_MAX_BYTES) -> dg.TableSchema:
    """The frame's columns with their types and descriptions: the first `max_columns`, or fewer
    if they would pass about `max_bytes` serialized. A wider frame ends with one row that says
    how many columns are not listed."""
    descriptions = descriptions or {}
    items = list(df.schema.items())
    columns, used = [], 0
    for name, dtype in items[:max_columns]:
        column = dg.TableColumn(name=name, type=str(dtype), description=_clip(descriptions.get(name)))
        used += _COLUMN_OVERHEAD_BYTES + len(name) + len(column.type) + len(column.description or "")
        if columns and used > max_bytes:
            break
        columns.append(column)
    if len(columns) < len(items):
        omitted = len(items) - len(columns)
        columns.append(dg.TableColumn(
            name=f"... {omitted:,} more", type="omitted",
            description=f"{omitted:,} of {len(items):,} columns are not listed; the schema shows the first "
                        f"{len(columns):,}."))
    return dg.TableSchema(columns=columns)


def column_descriptions(spec) -> dict[str, str]:
    """Each column's rules from the spec, as people read them: type, range, categories, nulls."""
    from mlops_assets.core.features import SPLIT_COLUMN

    out: dict[str, str] = {}
    for f in spec.features:
        parts = [f"{f.type} feature"]
        if f.min is not None and f.max is not None:
            parts.append(f"{f.min:g} to {f.max:g}")
        elif f.min is not None:
            parts.append(f">= {f.min:g}")
        elif f.max is not None:
            parts.append(f"<= {f.max:g}")
        if f.categories:
            shown = ", ".join(str(c) for c in f.categories[:MAX_LISTED_CATEGORIES])
            more = len(f.categories) - MAX_LISTED_CATEGORIES
            parts.append(f"one of {shown}" + (f" (+{more} more)" if more > 0 else ""))
        parts.append(f"nulls <= {f.max_null_fraction:.0%}" if f.max_null_fraction else "no nulls")
        out[f.name] = "; ".join(parts)
    target = {"binary": "label 0/1", "multiclass": "class label", "regression": "numeric label"}[spec.task]
    if spec.task == "multiclass" and spec.classes:
        target += " (" + ", ".join(str(c) for c in spec.classes[:MAX_LISTED_CATEGORIES]) + ")"
    out.setdefault(spec.target, f"target: {target}; null while unlabelled")
    out.setdefault(spec.id_column, "row id: unique, never null; decides the row's split")
    if spec.timestamp_column:
        out.setdefault(spec.timestamp_column, "event time: datetime or ISO-8601 text")
    if spec.group_column:
        out.setdefault(spec.group_column, "slice column for the fairness and slice metrics")
    out.setdefault(SPLIT_COLUMN, "train / valid / holdout, from a hash of the row id and the split seed")
    return out


def _clip(text: str | None, limit: int = DESCRIPTION_CHARS) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


# -- tables ----------------------------------------------------------------------------------
def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if hasattr(value, "item"):                      # numpy scalars
        return _cell(value.item())
    return json.dumps(value, default=str, sort_keys=True)


def _column_type(values: Iterable[Any]) -> str:
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {bool} and kinds:
        return "bool"
    if kinds <= {int} and kinds:
        return "int"
    if kinds <= {int, float} and kinds:
        return "float"
    return "string"


def table(rows: list[Mapping[str, Any]], columns: list[str] | None = None,
          descriptions: Mapping[str, str] | None = None, max_rows: int = TABLE_MAX_ROWS) -> dg.TableMetadataValue:
    """Rows of plain values as a native table: typed columns, NaN as empty, floats to 6 digits."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [{c: _cell(row.get(c)) for c in columns} for row in rows[:max_rows]]
    descriptions = descriptions or {}
    schema = dg.TableSchema(columns=[
        dg.TableColumn(name=c, type=_column_type(r[c] for r in cells), description=descriptions.get(c))
        for c in columns])
    return dg.MetadataValue.table([dg.TableRecord(r) for r in cells], schema=schema)


def metrics_table(metrics: Mapping[str, float], other: Mapping[str, float] | None = None,
                  labels: tuple[str, str] = ("challenger", "champion")) -> dg.TableMetadataValue:
    rows = []
    for name, value in metrics.items():
        row: dict[str, Any] = {"metric": name, labels[0]: value}
        if other is not None:
            theirs = other.get(name)
            row[labels[1]] = theirs
            row["delta"] = (value - theirs) if _finite(value) and _finite(theirs) else None
        rows.append(row)
    return table(rows, ["metric", labels[0], *((labels[1], "delta") if other is not None else ())])


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def markdown_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".4f") -> str:
    if not rows:
        return "_no rows_"
    columns = columns or list(rows[0])
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append(format(v, floatfmt) if isinstance(v, float) else ("-" if v is None else str(v)))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def metrics_markdown(metrics: dict[str, float], other: dict[str, float] | None = None,
                     labels: tuple[str, str] = ("challenger", "champion")) -> str:
    rows = []
    for name, value in metrics.items():
        row = {"metric": name, labels[0]: value}
        if other is not None:
            row[labels[1]] = other.get(name)
        rows.append(row)
    return markdown_table(rows)


# -- images ----------------------------------------------------------------------------------
def image_md(path: str | Path, title: str, uri: str | None = None) -> dg.MarkdownMetadataValue:
    """A plot embedded in markdown as a compact PNG data URI (about 6-20 KB per plot, stored
    with the event), with where the full-size file lives underneath."""
    from mlops_assets.core.plots import png_data_uri

    text = f"**{title}**\n\n![{title}]({png_data_uri(path)})"
    if uri:
        text += f"\n\nFull size: `{uri}`"
    return dg.MetadataValue.md(text)


def plot_metadata(plots: Mapping[str, str | Path], titles: Mapping[str, str] | None = None,
                  uris: Mapping[str, str] | None = None, prefix: str = "plot_") -> dict:
    """`{prefix}<name>`: each plot as an embedded image."""
    titles, uris = titles or {}, uris or {}
    return {f"{prefix}{name}": image_md(path, titles.get(name, name.replace("_", " ")), uris.get(name))
            for name, path in plots.items()}


# -- links -----------------------------------------------------------------------------------
def dagster_run_url(run_id: str) -> str:
    """A link back to the Dagster run (DAGSTER_UI_URL, default the local `dagster dev`)."""
    base = os.environ.get(DAGSTER_UI_ENV, "http://127.0.0.1:3000").rstrip("/")
    return f"{base}/runs/{run_id}"


def model_training_view(url: str) -> str:
    """An MLflow UI link that opens in the "Model training" view. MLflow 3.17's UI chooses the
    view from its `workflowType` query parameter, else from a per-browser setting that
    defaults to GenAI; the experiment's `mlflow.experimentKind` tag is not read."""
    if "workflowType=" in url:
        return url
    return url + ("&" if "?" in url.split("#")[-1] else "?") + "workflowType=machine_learning"


def mlflow_artifact_url(run_url: str, artifact_path: str) -> str:
    """The run page's artifact viewer on one file (MLflow previews HTML and images there)."""
    base, _, query = run_url.partition("?")
    return model_training_view(f"{base.rstrip('/')}/artifacts/{artifact_path.lstrip('/')}"
                               + (f"?{query}" if query else ""))
