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
