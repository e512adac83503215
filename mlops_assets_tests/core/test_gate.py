import math

from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_assets.core.gate import evaluate_gate
from mlops_assets.spec import GateSpec


def test_bootstrap_passes_with_only_infra_rules():
    d = evaluate_gate(GateSpec(), main_metric="roc_auc", challenger={"roc_auc": 0.6}, champion=None,
                      parity_max_abs_diff=1e-12)
    assert d.passed and d.bootstrap and d.approval == "approved"


def test_failed_rules_are_named_with_value_and_limit():
    cfg = GateSpec(min_main_metric=0.8, max_regression=0.01, max_fairness_gap=0.05, max_p99_latency_ms=1)
    d = evaluate_gate(cfg, main_metric="roc_auc", challenger={"roc_auc": 0.75}, champion={"roc_auc": 0.8},
                      parity_max_abs_diff=1e-3, fairness_gap=0.2, p99_latency_ms=3.0)
    assert not d.passed and d.approval == "rejected"
    failed = {r.name for r in d.failed_rules}
    assert failed == {"onnx_parity", "roc_auc_min", "max_regression_vs_champion", "max_fairness_gap",
                      "max_p99_latency_ms"}
    msg = d.message()
    assert "roc_auc = 0.7500, min 0.8" in msg and "max |onnx - native| = 0.001" in msg
    assert "| max_fairness_gap | 0.2000 | 0.0500 | FAIL |" in d.to_markdown()


def test_error_metrics_gate_in_the_right_direction():
    cfg = GateSpec(min_main_metric=1.0, max_regression=0.1)
    d = evaluate_gate(cfg, main_metric="rmse", challenger={"rmse": 1.5}, champion={"rmse": 1.0},
                      parity_max_abs_diff=0.0)
    assert {r.name for r in d.failed_rules} == {"rmse_max", "max_regression_vs_champion"}


def test_force_promote_is_audited_but_never_skips_parity():
    cfg = GateSpec(min_main_metric=0.9, force_promote=True, force_reason="hotfix for incident 7")
    forced = evaluate_gate(cfg, main_metric="roc_auc", challenger={"roc_auc": 0.7}, champion=None,
                           parity_max_abs_diff=0.0)
    assert forced.passed and forced.forced and forced.approval == "forced"
    assert "hotfix for incident 7" in forced.message()
    unfaithful = evaluate_gate(cfg, main_metric="roc_auc", challenger={"roc_auc": 0.7}, champion=None,
                               parity_max_abs_diff=0.5)
    assert not unfaithful.passed and not unfaithful.forced


def test_nan_metric_fails():
    d = evaluate_gate(GateSpec(min_main_metric=0.5), main_metric="roc_auc", challenger={"roc_auc": math.nan},
                      champion=None, parity_max_abs_diff=0.0)
    assert not d.passed


metric = st.floats(0, 1, allow_nan=False)
optional_limit = st.none() | st.floats(0, 1, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(
    value=metric, champ=st.none() | metric, parity=st.floats(0, 1e-3), gap=st.floats(0, 0.5),
    latency=st.floats(0.01, 20), min_metric=optional_limit, max_reg=optional_limit,
    max_gap=optional_limit, max_lat=st.none() | st.floats(0.01, 20),
)
def test_gate_never_promotes_a_rule_breaker(value, champ, parity, gap, latency, min_metric, max_reg, max_gap, max_lat):
    cfg = GateSpec(min_main_metric=min_metric, max_regression=max_reg, max_fairness_gap=max_gap,
                   max_p99_latency_ms=max_lat)
    d = evaluate_gate(cfg, main_metric="roc_auc", challenger={"roc_auc": value},
                      champion=None if champ is None else {"roc_auc": champ},
                      parity_max_abs_diff=parity, fairness_gap=gap, p99_latency_ms=latency)
    breaks = (
        parity > 1e-5
        or (min_metric is not None and value < min_metric)
        or (champ is not None and max_reg is not None and champ - value > max_reg)
        or (max_gap is not None and gap > max_gap)
        or (max_lat is not None and latency > max_lat)
    )
    if breaks:
        assert not d.passed
    else:
        assert d.passed


# -- sample-size-aware rules ------------------------------------------------------------------
def _spec_gate(**kw):
    from mlops_assets.spec import GateSpec

    return GateSpec(**{"min_main_metric": 0.7, "max_regression": 0.01, **kw})


def _ev(**kw):
    from mlops_assets.core.gate import HoldoutEvidence

    return HoldoutEvidence(**{"n_rows": 1_000, "rarest_label_rows": 70, **kw})


def _gate(config, auc, champion=None, **kw):
    return evaluate_gate(config, main_metric="roc_auc", challenger={"roc_auc": auc}, champion=champion,
                         parity_max_abs_diff=0.0, **kw)


def test_a_first_model_below_the_floor_only_within_noise_is_promoted():
    d = _gate(_spec_gate(), 0.68, evidence=_ev(metric_interval=(0.64, 0.72)))
    assert d.passed and d.bootstrap
    floor = next(r for r in d.rules if r.name == "roc_auc_min")
    assert floor.detail == "roc_auc = 0.6800 (90% interval 0.6400-0.7200), min 0.7: below the floor, but within sampling noise of it"


def test_a_first_model_clearly_below_the_floor_is_held_with_a_next_step():
    d = _gate(_spec_gate(), 0.6, evidence=_ev(metric_interval=(0.57, 0.63)))
    assert not d.passed
    assert d.message().endswith("set gate.bootstrap_policy: infra_only to accept the first faithful model as a "
                                "baseline that later retrains must beat")


def test_the_floor_is_a_point_rule_once_a_champion_exists_and_under_all_rules():
    assert not _gate(_spec_gate(), 0.68, champion={"roc_auc": 0.68}, evidence=_ev(metric_interval=(0.64, 0.72))).passed
    assert not _gate(_spec_gate(bootstrap_policy="all_rules"), 0.68, evidence=_ev(metric_interval=(0.64, 0.72))).passed


def test_infra_only_bootstrap_turns_quality_rules_into_warnings():
    d = _gate(_spec_gate(bootstrap_policy="infra_only"), 0.55, evidence=_ev(metric_interval=(0.5, 0.6)))
    assert d.passed and [r.name for r in d.warnings] == ["roc_auc_min"]
    assert "WARNING roc_auc_min" in d.message()
    broken = evaluate_gate(_spec_gate(bootstrap_policy="infra_only"), main_metric="roc_auc",
                           challenger={"roc_auc": 0.9}, champion=None, parity_max_abs_diff=0.5)
    assert not broken.passed and "never overridden" in broken.message()


def test_a_fairness_gap_within_sampling_noise_passes_and_a_clear_one_fails():
    cfg = _spec_gate(min_main_metric=None, max_fairness_gap=0.1)
    noisy = _gate(cfg, 0.8, fairness_gap=0.11, evidence=_ev(gap_interval=(0.02, 0.2), ungated_groups=("nonbinary",)))
    assert noisy.passed
    rule = next(r for r in noisy.rules if r.name == "max_fairness_gap")
    assert rule.detail.endswith("within sampling noise of the limit; not gated (too few rows or positives): "
                                "['nonbinary']")
    assert not _gate(cfg, 0.8, fairness_gap=0.2, evidence=_ev(gap_interval=(0.15, 0.25))).passed


def test_a_holdout_too_small_to_judge_warns_and_never_silently_passes():
    d = _gate(_spec_gate(min_main_metric=None), 0.8, evidence=_ev(n_rows=28, rarest_label_rows=5))
    assert d.passed
    (warning,) = d.warnings
    assert warning.detail == ("28 holdout rows, 5 of the rarest label: too small to judge the model (want 200 rows "
                              "and 20 of each label)")
    assert "| holdout_size | 28.0000 | 200.0000 | warn |" in d.to_markdown()


def test_groups_with_few_positives_are_reported_but_not_gated():
    import numpy as np

    from mlops_assets.core.metrics import slice_metrics

    rng = np.random.default_rng(0)
    y = np.r_[rng.integers(0, 2, 400), np.r_[np.ones(3), np.zeros(57)]]
    score = np.clip(y * 0.3 + rng.random(len(y)) * 0.7, 0, 1)
    groups = np.array(["a"] * 200 + ["b"] * 200 + ["c"] * 60)
    report = slice_metrics("binary", y, score, groups, "roc_auc", min_group_rows=30, min_group_positives=10)
    assert report.gated == ["a", "b"]
    assert {g["group"]: g["gated"] for g in report.groups} == {"a": True, "b": True, "c": False}
