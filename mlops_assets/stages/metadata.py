"""Pure helpers that turn results into metadata people can read in the Dagster UI."""

from __future__ import annotations

import os

import dagster as dg
import polars as pl

DAGSTER_UI_ENV = "DAGSTER_UI_URL"


def table_schema(df: pl.DataFrame, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(columns=[
        dg.TableColumn(name=n, type=str(t), description=descriptions.get(n)) for n, t in df.schema.items()
    ])


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


def dagster_run_url(run_id: str) -> str:
    """A link back to the Dagster run (DAGSTER_UI_URL, default the local `dagster dev`)."""
    base = os.environ.get(DAGSTER_UI_ENV, "http://127.0.0.1:3000").rstrip("/")
    return f"{base}/runs/{run_id}"
