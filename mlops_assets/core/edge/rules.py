"""The edge gate: each variant against its own rules, recorded as data like the release gate.

A variant that fails is simply not shipped. Its decision is separate from the release gate's,
so it never blocks (or promotes) the full model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from mlops_assets.core.gate import GateRule

__all__ = ["DEFAULT_EDGE_RULES", "EdgeDecision", "EdgeRules", "evaluate_edge_variant"]


@dataclass(frozen=True)
class EdgeRules:
    """Limits one edge variant must meet to ship. None switches a rule off.

    max_relative_metric_delta: worsening of the main metric vs the full model, as a fraction
        of the full model's value (0.01: an AUC of 0.80 may drop to 0.792, an RMSE of 5.0 rise
        to 5.05). Relative, so one default fits bounded scores and error metrics alike.
    max_score_diff: max |variant score - full score| on the holdout. Probability units for
        binary and multiclass; for regression, in units of the full model's prediction
        standard deviation on the holdout (so the limit does not depend on the target's scale).
    max_size_ratio / max_size_bytes: the variant's ONNX size vs the full model's, or absolute.
    max_p99_latency_ms: single-row p99 latency of the variant (machine-dependent; off by default).
    """

    max_relative_metric_delta: float | None = 0.01
    max_score_diff: float | None = 0.1
    max_size_ratio: float | None = 0.5
    max_size_bytes: int | None = None
    max_p99_latency_ms: float | None = None

    @classmethod
    def from_spec(cls, spec) -> EdgeRules:
        """Build from any object with the same attribute names (e.g. a spec section)."""
        return cls(**{f.name: getattr(spec, f.name) for f in fields(cls) if hasattr(spec, f.name)})

    def to_dict(self) -> dict:
        return asdict(self)


# Defaults a faithful variant passes on ordinary data (measured values in docs/serving.md, Edge).
# float32 LightGBM only differs by float32 leaf sums unless a row sits within a float32 step of
# a threshold, hence a parity-level score limit; int8 MLP moves probabilities by ~0.02.
DEFAULT_EDGE_RULES: dict[str, EdgeRules] = {
    "int8": EdgeRules(max_relative_metric_delta=0.01, max_score_diff=0.1, max_size_ratio=0.5),
    "float32": EdgeRules(max_relative_metric_delta=0.001, max_score_diff=1e-4, max_size_ratio=0.9),
}


@dataclass(frozen=True)
class EdgeDecision:
    variant: str
    passed: bool
    rules: list[GateRule] = field(default_factory=list)
    limits: dict = field(default_factory=dict)  # the EdgeRules applied, as data

    @property
    def shipped(self) -> bool:
        return self.passed

    @property
    def failed_rules(self) -> list[GateRule]:
        return [r for r in self.rules if not r.passed]

    def message(self) -> str:
        failed = self.failed_rules
        if not failed:
            return f"{self.variant}: all {len(self.rules)} rules passed, shipped"
        return f"{self.variant}: not shipped, failed: " + "; ".join(r.describe() for r in failed)

    def to_markdown(self) -> str:
        lines = [
            f"**edge variant {self.variant}**: {'shipped' if self.passed else 'not shipped'}",
            "",
            "| rule | value | limit | verdict |",
            "|---|---|---|---|",
        ]
        for r in self.rules:
            lines.append(
                f"| {r.name} | {_fmt(r.value)} | {_fmt(r.limit)} | {'pass' if r.passed else 'FAIL'} |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "variant": self.variant,
            "passed": self.passed,
            "shipped": self.shipped,
            "message": self.message(),
            "limits": dict(self.limits),
            "rules": [asdict(r) for r in self.rules],
        }

    @classmethod
    def from_dict(cls, data: dict) -> EdgeDecision:
        return cls(
            variant=data["variant"],
            passed=bool(data["passed"]),
            rules=[GateRule(**r) for r in data.get("rules", [])],
            limits=dict(data.get("limits", {})),
        )


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if abs(x) < 1e-3 and x != 0 else f"{x:.4f}"


def evaluate_edge_variant(variant, rules: EdgeRules) -> EdgeDecision:
    """Apply every configured rule to an `EdgeVariant`. A NaN value always fails its rule."""
    out: list[GateRule] = []

    def add(name: str, value: float | None, limit: float | None, ok: bool, detail: str) -> None:
        bad = value is not None and isinstance(value, float) and math.isnan(value)
        out.append(GateRule(name, value, limit, bool(ok) and not bad, detail))

    add(
        "built",
        None,
        None,
        variant.error is None,
        variant.error or "built; input 'features' double, output 'score' double, same shape",
    )
    if variant.error is not None:  # nothing else was measured
        return EdgeDecision(variant.name, False, out, rules.to_dict())

    limit = rules.max_relative_metric_delta
    if limit is not None:
        value = variant.relative_metric_delta
        add(
            "max_relative_metric_delta",
            value,
            limit,
            value <= limit,
            f"{variant.main_metric} {variant.metric:.4f} vs full {variant.full_metric:.4f} "
            f"(worse by {variant.metric_delta:.4g}, {value:.3%} of full; max {limit:.3%})",
        )
    if rules.max_score_diff is not None:
        value = variant.normalised_score_diff
        unit = (
            "probability"
            if variant.score_scale == 1.0
            else f"prediction std {variant.score_scale:.4g}"
        )
        add(
            "max_score_diff",
            value,
            rules.max_score_diff,
            value <= rules.max_score_diff,
            f"max |score - full score| = {variant.max_abs_score_diff:.3g} on {variant.n_rows} rows "
            f"({value:.3g} in units of {unit}; max {rules.max_score_diff})",
        )
    if rules.max_size_ratio is not None:
        value = variant.size_ratio
        add(
            "max_size_ratio",
            value,
            rules.max_size_ratio,
            value <= rules.max_size_ratio,
            f"{variant.size_bytes} bytes vs full {variant.full_size_bytes} ({value:.2f}x; max "
            f"{rules.max_size_ratio}x)",
        )
    if rules.max_size_bytes is not None:
        add(
            "max_size_bytes",
            float(variant.size_bytes),
            float(rules.max_size_bytes),
            variant.size_bytes <= rules.max_size_bytes,
            f"{variant.size_bytes} bytes, max {rules.max_size_bytes}",
        )
    if rules.max_p99_latency_ms is not None:
        value = variant.latency.single_row_p99_ms if variant.latency else float("nan")
        add(
            "max_p99_latency_ms",
            value,
            rules.max_p99_latency_ms,
            value <= rules.max_p99_latency_ms,
            f"single-row p99 {value:.3f} ms, max {rules.max_p99_latency_ms} ms",
        )
    return EdgeDecision(variant.name, all(r.passed for r in out), out, rules.to_dict())
