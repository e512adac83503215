"""What the evaluation report shows per edge variant: size, speed-up, metric delta, verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence

from mlops_assets.core.edge.rules import EdgeDecision
from mlops_assets.core.edge.variants import EdgeVariant

__all__ = ["edge_summary", "edge_summary_markdown"]


def edge_summary(variants: Sequence[EdgeVariant], decisions: Sequence[EdgeDecision]) -> dict:
    """One row per variant, JSON-ready, plus which variants ship."""
    by_name = {d.variant: d for d in decisions}
    rows = []
    for v in variants:
        decision = by_name.get(v.name)
        lat, full = v.latency, v.full_latency
        rows.append(
            {
                "variant": v.name,
                "method": v.method,
                "shipped": bool(decision and decision.passed),
                "verdict": decision.message() if decision else "not evaluated",
                "failed_rules": [r.name for r in decision.failed_rules] if decision else [],
                "size_bytes": v.size_bytes,
                "full_size_bytes": v.full_size_bytes,
                "size_ratio": v.size_ratio,
                "single_row_p50_ms": lat.single_row_p50_ms if lat else None,
                "single_row_p99_ms": lat.single_row_p99_ms if lat else None,
                "full_single_row_p50_ms": full.single_row_p50_ms if full else None,
                "full_single_row_p99_ms": full.single_row_p99_ms if full else None,
                "single_row_speedup": v.single_row_speedup,
                "batch_rows_per_s": lat.batch_rows_per_s if lat else None,
                "full_batch_rows_per_s": full.batch_rows_per_s if full else None,
                "batch_speedup": v.batch_speedup,
                "main_metric": v.main_metric,
                "metric": v.metric,
                "full_metric": v.full_metric,
                "metric_delta": v.metric_delta,
                "relative_metric_delta": v.relative_metric_delta,
                "max_abs_score_diff": v.max_abs_score_diff,
                "error": v.error,
            }
        )
    return {"variants": rows, "shipped": [r["variant"] for r in rows if r["shipped"]]}


def edge_summary_markdown(
    variants: Sequence[EdgeVariant], decisions: Sequence[EdgeDecision]
) -> str:
    if not variants:
        return "No edge variants for this model."
    header = (
        "| variant | size | vs full | single-row p50 ms (full) | speed-up | batch rows/s (full) "
        "| main metric (full) | worse by | max score diff | verdict |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for row in edge_summary(variants, decisions)["variants"]:
        verdict = "shipped" if row["shipped"] else "not shipped: " + ", ".join(row["failed_rules"])
        lines.append(
            f"| {row['variant']} | {_kib(row['size_bytes'])} | {_num(row['size_ratio'], '.2f')}x "
            f"| {_num(row['single_row_p50_ms'], '.3f')} ({_num(row['full_single_row_p50_ms'], '.3f')}) "
            f"| {_num(row['single_row_speedup'], '.2f')}x "
            f"| {_num(row['batch_rows_per_s'], ',.0f')} ({_num(row['full_batch_rows_per_s'], ',.0f')}) "
            f"| {row['main_metric']} {_num(row['metric'], '.4f')} ({_num(row['full_metric'], '.4f')}) "
            f"| {_num(row['metric_delta'], '.4g')} | {_num(row['max_abs_score_diff'], '.3g')} | {verdict} |"
        )
    return "\n".join(lines)


def _num(x: float | None, fmt: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, fmt)


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n else "-"
