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
    severity: str = "error"       # warning: shown and recorded, never blocks

    def describe(self) -> str:
        return f"{self.name}: {self.detail}"


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    rules: list[GateRule] = field(default_factory=list)
    bootstrap: bool = False
    forced: bool = False
    force_reason: str | None = None

    next_step: str | None = None   # what to do when a bootstrap is held

    @property
    def failed_rules(self) -> list[GateRule]:
        return [r for r in self.rules if not r.passed and r.severity == "error"]

    @property
    def warnings(self) -> list[GateRule]:
        return [r for r in self.rules if r.severity == "warning" and not r.passed]

    @property
    def approval(self) -> Approval:
        if self.forced:
            return Approval.FORCED
        return Approval.APPROVED if self.passed else Approval.REJECTED

    def message(self) -> str:
        failed = self.failed_rules
        if self.forced:
            return f"FORCED ({self.force_reason}); overridden: " + "; ".join(r.describe() for r in failed)
        warned = "".join(f"; WARNING {r.describe()}" for r in self.warnings)
        if not failed:
            tail = " (bootstrap: no champion yet)" if self.bootstrap else ""
            errors = [r for r in self.rules if r.severity == "error"]
            return f"all {len(errors)} rules passed{tail}{warned}"
        step = f". Next: {self.next_step}" if self.next_step else ""
        return "failed: " + "; ".join(r.describe() for r in failed) + warned + step

    def to_markdown(self) -> str:
        lines = ["| rule | value | limit | verdict |", "|---|---|---|---|"]
        for r in self.rules:
            verdict = "pass" if r.passed else ("warn" if r.severity == "warning" else "FAIL")
            lines.append(f"| {r.name} | {_fmt(r.value)} | {_fmt(r.limit)} | {verdict} |")
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


@dataclass(frozen=True)
class HoldoutEvidence:
    """How much the holdout can tell: its size and the bootstrap intervals (core/uncertainty.py)."""

    n_rows: int
    rarest_label_rows: int | None = None                 # classification only
    metric_interval: tuple[float, float] | None = None   # of the main metric
    gap_interval: tuple[float, float] | None = None      # of the fairness gap
    ungated_groups: tuple[str, ...] = ()                  # too small to gate on
    confidence: float = 0.9


def _interval(iv: tuple[float, float] | None, confidence: float) -> str:
    return "" if iv is None else f" ({confidence:.0%} interval {iv[0]:.4f}-{iv[1]:.4f})"


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
    evidence: HoldoutEvidence | None = None,
) -> GateDecision:
    """Apply every configured rule. A NaN value always fails its rule.

    `reference_slice`: (challenger, champion) metrics on the champion's own frozen holdout rows.
    `rolled_back_version`: set when the candidate's training set is the one that built a version
    an operator rolled back; promoting it again needs an audited force.
    `evidence`: the holdout's size and intervals. With it, the fairness gap fails only when its
    interval lies above the limit, the first model's floor (policy floor_ci) only when its
    interval lies below, and a holdout too small to judge adds a warning."""
    higher = HIGHER_IS_BETTER.get(main_metric, True)
    rules: list[GateRule] = []
    bootstrap = champion is None
    conf = evidence.confidence if evidence else 0.9

    def add(name: str, value: float | None, limit: float | None, ok: bool, detail: str,
            severity: str = "error") -> None:
        bad_value = value is not None and (isinstance(value, float) and math.isnan(value))
        rules.append(GateRule(name, value, limit, bool(ok) and not bad_value, detail, severity))

    tol = parity_tolerance or config.onnx_parity_tolerance or 1e-5
    add("onnx_parity", parity_max_abs_diff, tol, parity_max_abs_diff <= tol,
        f"max |onnx - native| = {parity_max_abs_diff:.3g} (limit {tol:.0e})")
    add("onnx_smoke_test", None, None, smoke_test_error is None,
        smoke_test_error or "fresh onnxruntime session loads and answers")
    # The first model's quality rules: as configured, or (infra_only) warnings only.
    quality = "warning" if bootstrap and config.bootstrap_policy == "infra_only" else "error"

    value = challenger.get(main_metric, float("nan"))
    if config.min_main_metric is not None:
        limit = config.min_main_metric
        ok = value >= limit if higher else value <= limit
        iv = evidence.metric_interval if evidence else None
        word = "min" if higher else "max"
        detail = f"{main_metric} = {value:.4f}{_interval(iv, conf)}, {word} {limit}"
        if not ok and bootstrap and config.bootstrap_policy == "floor_ci" and iv is not None:
            # The first model: held only when the data show it is below the floor.
            ok = iv[1] >= limit if higher else iv[0] <= limit
            if ok:
                detail += ": below the floor, but within sampling noise of it"
        add(f"{main_metric}_{word}", value, limit, ok, detail, quality)

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
        _fairness_rule(add, config.max_fairness_gap, fairness_gap, main_metric, evidence, conf, quality)

    if config.max_p99_latency_ms is not None:
        lat = p99_latency_ms if p99_latency_ms is not None else float("nan")
        add("max_p99_latency_ms", lat, config.max_p99_latency_ms, lat <= config.max_p99_latency_ms,
            f"single-row p99 {lat:.3f} ms, max {config.max_p99_latency_ms} ms")

    if evidence is not None:
        _holdout_size_rule(add, config, evidence)

    passed = all(r.passed for r in rules if r.severity == "error")
    infra_ok = all(r.passed for r in rules if r.name in INFRA_RULES)
    if not passed and config.force_promote and infra_ok:
        return GateDecision(True, rules, bootstrap=bootstrap, forced=True, force_reason=config.force_reason)
    step = _bootstrap_next_step(rules) if bootstrap and not passed else None
    return GateDecision(passed, rules, bootstrap=bootstrap, next_step=step)


def _fairness_rule(add, limit: float, gap: float | None, metric: str, evidence, conf: float, severity: str) -> None:
    if gap is None:
        add("max_fairness_gap", None, limit, False, "no group metrics: declare group_column to gate on fairness")
        return
    iv = evidence.gap_interval if evidence else None
    ok = gap <= limit
    detail = f"{metric} gap between groups {gap:.4f}{_interval(iv, conf)}, max {limit}"
    if not ok and iv is not None and iv[0] <= limit:
        ok = True   # above the limit, but the groups are too small to tell it from noise
        detail += ": within sampling noise of the limit"
    if evidence is not None and evidence.ungated_groups:
        detail += f"; not gated (too few rows or positives): {list(evidence.ungated_groups)}"
    add("max_fairness_gap", gap, limit, ok, detail, severity)


def _holdout_size_rule(add, config: GateSpec, evidence: HoldoutEvidence) -> None:
    small_rows = evidence.n_rows < config.min_holdout_rows
    rare = evidence.rarest_label_rows
    small_rare = rare is not None and rare < config.min_holdout_positives
    detail = f"{evidence.n_rows} holdout rows" + (f", {rare} of the rarest label" if rare is not None else "")
    if small_rows or small_rare:
        detail += (f": too small to judge the model (want {config.min_holdout_rows} rows"
                   + (f" and {config.min_holdout_positives} of each label" if rare is not None else "") + ")")
    add("holdout_size", float(evidence.n_rows), float(config.min_holdout_rows), not (small_rows or small_rare),
        detail, "warning")


def _bootstrap_next_step(rules: list[GateRule]) -> str:
    failed = {r.name for r in rules if not r.passed and r.severity == "error"}
    if failed & set(INFRA_RULES):
        return "the ONNX export does not score faithfully: see the onnx rules; this is never overridden"
    return ("the first model was held by its quality rules. Check the data and features, or relax the rule "
            "(gate.min_main_metric, gate.max_fairness_gap), or set gate.bootstrap_policy: infra_only to accept "
            "the first faithful model as a baseline that later retrains must beat")
