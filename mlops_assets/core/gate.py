"""The release gate: explicit rules, each with its value, limit and verdict.

Like TFX's Evaluator "blessing", the decision is data, recorded with the model version.
A force-promote (audited, with a reason) overrides quality rules but never the ONNX
infra-validation: a model that does not score faithfully is never promoted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from mlops_assets.core.metrics import HIGHER_IS_BETTER
from mlops_assets.spec import GateSpec

INFRA_RULES = ("onnx_parity", "onnx_smoke_test")


class Approval(StrEnum):
    """A model version's release state, recorded as its `approval` tag."""

    PENDING = "pending"        # logged by training, not judged yet
    APPROVED = "approved"      # the gate passed
    REJECTED = "rejected"      # the gate failed
    FORCED = "forced"          # the gate failed, promoted anyway by an audited override
    ABANDONED = "abandoned"    # its run died before the gate judged it

    @property
    def promotable(self) -> bool:
        return self in (Approval.APPROVED, Approval.FORCED)


@dataclass(frozen=True)
class GateRule:
    name: str
    value: float | None
    limit: float | None
    passed: bool
    detail: str

    def describe(self) -> str:
        return f"{self.name}: {self.detail}"


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    rules: list[GateRule] = field(default_factory=list)
    bootstrap: bool = False
    forced: bool = False
    force_reason: str | None = None

    @property
    def failed_rules(self) -> list[GateRule]:
        return [r for r in self.rules if not r.passed]

    @property
    def approval(self) -> Approval:
        if self.forced:
            return Approval.FORCED
        return Approval.APPROVED if self.passed else Approval.REJECTED

    def message(self) -> str:
        failed = self.failed_rules
        if self.forced:
            return f"FORCED ({self.force_reason}); overridden: " + "; ".join(r.describe() for r in failed)
        if not failed:
            tail = " (bootstrap: no champion yet)" if self.bootstrap else ""
            return f"all {len(self.rules)} rules passed{tail}"
        return "failed: " + "; ".join(r.describe() for r in failed)

    def to_markdown(self) -> str:
        lines = ["| rule | value | limit | verdict |", "|---|---|---|---|"]
        for r in self.rules:
            lines.append(f"| {r.name} | {_fmt(r.value)} | {_fmt(r.limit)} | {'pass' if r.passed else 'FAIL'} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed, "approval": str(self.approval), "bootstrap": self.bootstrap,
            "forced": self.forced, "force_reason": self.force_reason, "message": self.message(),
            "rules": [r.__dict__ for r in self.rules],
        }


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if abs(x) < 1e-3 and x != 0 else f"{x:.4f}"


def evaluate_gate(
    config: GateSpec,
    *,
    main_metric: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    parity_max_abs_diff: float,
    smoke_test_error: str | None = None,
    fairness_gap: float | None = None,
    p99_latency_ms: float | None = None,
    parity_tolerance: float | None = None,
    reference_slice: tuple[dict[str, float], dict[str, float]] | None = None,
    rolled_back_version: str | None = None,
) -> GateDecision:
    """Apply every configured rule. A NaN value always fails its rule.

    `reference_slice`: (challenger, champion) metrics on the champion's own frozen holdout rows.
    `rolled_back_version`: set when the candidate's training set is the one that built a version
    an operator rolled back; promoting it again needs an audited force."""
    higher = HIGHER_IS_BETTER.get(main_metric, True)
    rules: list[GateRule] = []

    def add(name: str, value: float | None, limit: float | None, ok: bool, detail: str) -> None:
        bad_value = value is not None and (isinstance(value, float) and math.isnan(value))
        rules.append(GateRule(name, value, limit, bool(ok) and not bad_value, detail))

    tol = parity_tolerance or config.onnx_parity_tolerance or 1e-5
    add("onnx_parity", parity_max_abs_diff, tol, parity_max_abs_diff <= tol,
        f"max |onnx - native| = {parity_max_abs_diff:.3g} (limit {tol:.0e})")
    add("onnx_smoke_test", None, None, smoke_test_error is None,
        smoke_test_error or "fresh onnxruntime session loads and answers")

    value = challenger.get(main_metric, float("nan"))
    if config.min_main_metric is not None:
        limit = config.min_main_metric
        ok = value >= limit if higher else value <= limit
        word = "min" if higher else "max"
        add(f"{main_metric}_{word}", value, limit, ok, f"{main_metric} = {value:.4f}, {word} {limit}")

    if champion is not None and config.max_regression is not None:
        base = champion.get(main_metric, float("nan"))
        worse_by = (base - value) if higher else (value - base)
        add("max_regression_vs_champion", worse_by, config.max_regression, worse_by <= config.max_regression,
            f"{main_metric} {value:.4f} vs champion {base:.4f} (worse by {worse_by:.4f}, "
            f"allowed {config.max_regression})")

    if reference_slice is not None and config.max_regression_on_champion_holdout is not None:
        mine, theirs = reference_slice
        value_r, base_r = mine.get(main_metric, float("nan")), theirs.get(main_metric, float("nan"))
        worse_by = (base_r - value_r) if higher else (value_r - base_r)
        limit = config.max_regression_on_champion_holdout
        add("max_regression_on_champion_holdout", worse_by, limit, worse_by <= limit,
            f"on the champion's own holdout rows: {main_metric} {value_r:.4f} vs champion {base_r:.4f} "
            f"(worse by {worse_by:.4f}, allowed {limit})")

    if rolled_back_version is not None:
        add("not_a_rolled_back_training_set", None, None, False,
            f"trained on exactly the data and recipe of v{rolled_back_version}, which was rolled back")

    if config.max_fairness_gap is not None:
        if fairness_gap is None:
            add("max_fairness_gap", None, config.max_fairness_gap, False,
                "no group metrics: declare group_column to gate on fairness")
        else:
            add("max_fairness_gap", fairness_gap, config.max_fairness_gap,
                fairness_gap <= config.max_fairness_gap,
                f"{main_metric} gap between groups {fairness_gap:.4f}, max {config.max_fairness_gap}")

    if config.max_p99_latency_ms is not None:
        lat = p99_latency_ms if p99_latency_ms is not None else float("nan")
        add("max_p99_latency_ms", lat, config.max_p99_latency_ms, lat <= config.max_p99_latency_ms,
            f"single-row p99 {lat:.3f} ms, max {config.max_p99_latency_ms} ms")

    passed = all(r.passed for r in rules)
    infra_ok = all(r.passed for r in rules if r.name in INFRA_RULES)
    if not passed and config.force_promote and infra_ok:
        return GateDecision(True, rules, bootstrap=champion is None, forced=True,
                            force_reason=config.force_reason)
    return GateDecision(passed, rules, bootstrap=champion is None)
