"""The retrain decision's rules, one by one (pure: no Dagster, no MLflow)."""

from mlops_assets.core.retrain import (
    MAX_ATTEMPTS,
    RetrainPolicy,
    RetrainRun,
    Signal,
    TrainingSet,
    VersionRecord,
    decide_retrain,
    training_set_identity,
)

NOW = 1_000_000.0
POLICY = RetrainPolicy(cooldown_seconds=3600, budget=3, budget_window_seconds=86_400, new_data_min_rows=1_000,
                       new_data_min_fraction=0.25)


def _set(rows: dict, recipe: str = "r1") -> TrainingSet:
    return TrainingSet(training_set_identity({p: f"dv-{p}" for p in rows}, recipe), rows)


DAY1 = _set({"d1": 5_000})
DAY12 = _set({"d1": 5_000, "d2": 5_000})
V1 = VersionRecord("1", DAY1, approval="approved")


def _decide(**kw):
    args = {"champion": "1", "versions": [V1], "candidate": DAY1, "signals": [], "runs": [], "policy": POLICY,
            "now": NOW}
    args.update(kw)
    return decide_retrain(**args)


def _drift(partition: str, champion: str = "1", dv: str = "x") -> Signal:
    return Signal("drift", f"drift:{partition}:{dv}", champion, partition, f"{partition} shifted")


def test_identity_depends_on_every_data_version_the_recipe_and_labels():
    base = training_set_identity({"a": "1", "b": "2"}, "r")
    assert base == training_set_identity({"b": "2", "a": "1"}, "r")
    assert base != training_set_identity({"a": "1", "b": "3"}, "r")
    assert base != training_set_identity({"a": "1"}, "r")
    assert base != training_set_identity({"a": "1", "b": "2"}, "r2")
    assert base != training_set_identity({"a": "1", "b": "2"}, "r", labels="l")


def test_bootstrap_when_there_is_no_champion():
    d = _decide(champion=None, versions=[])
    assert d.act and d.trigger == "bootstrap" and d.run_key == f"{DAY1.identity}:0"
    assert d.reason == "no champion yet: train the first model on 5000 labelled rows from 1 partitions"


def test_nothing_to_train_on():
    d = _decide(champion=None, versions=[], candidate=_set({}))
    assert not d.act and d.reason == "no labelled data to train on yet"


def test_a_signal_on_data_the_champion_was_trained_on_is_ignored():
    d = _decide(candidate=DAY12, signals=[_drift("d1")], policy=RetrainPolicy(on_new_data=False))
    assert not d.act
    assert d.ignored == (("drift:d1:x", "partition d1 is in champion v1's training set"),)


def test_a_signal_against_another_champion_is_ignored():
    v2 = VersionRecord("2", DAY12, approval="approved")
    d = _decide(champion="2", versions=[V1, v2], candidate=_set({"d1": 5_000, "d2": 5_000, "d3": 100}),
                signals=[_drift("d3", champion="1")])
    assert not d.act and d.ignored[0] == ("drift:d3:x", "computed against v1, not the current champion v2")


def test_drift_against_the_current_champion_on_new_labelled_data_retrains():
    d = _decide(candidate=DAY12, signals=[_drift("d2")])
    assert d.act and d.trigger == "drift" and d.counted == ("drift:d2:x",)
    assert d.reason == "drift against champion v1: d2 shifted"
    assert d.run_key == f"{DAY12.identity}:0"


def test_unlabelled_drift_raises_alerts_but_never_retrains():
    # d2 drifted but carries no labels: the candidate training set is still the champion's.
    d = _decide(candidate=DAY1, signals=[_drift("d2")])
    assert not d.act
    assert d.reason == ("nothing new to learn: champion v1 was trained on exactly these 5000 labelled rows; "
                        "1 signal(s) on unlabelled data raise alerts only: label them to retrain")


def test_a_rolled_back_training_set_is_not_rebuilt():
    v2 = VersionRecord("2", DAY12, approval="approved", rolled_back=True)
    d = _decide(champion="1", versions=[V1, v2], candidate=DAY12, signals=[_drift("d2")])
    assert not d.act and "built v2, which was rolled back" in d.reason
    # New data changes the set: retraining is allowed again.
    more = _set({"d1": 5_000, "d2": 5_000, "d3": 2_000})
    assert _decide(champion="1", versions=[V1, v2], candidate=more, signals=[_drift("d3")]).act


def test_a_set_the_gate_rejected_is_not_trained_again():
    v2 = VersionRecord("2", DAY12, approval="rejected")
    d = _decide(versions=[V1, v2], candidate=DAY12, signals=[_drift("d2")])
    assert not d.act and d.reason == ("nothing new to learn: v2 was trained on exactly this data and the gate "
                                      "rejected it")


def test_new_labelled_rows_retrain_once_enough_arrived():
    few = _set({"d1": 5_000, "d2": 900})
    d = _decide(candidate=few)
    assert not d.act and d.reason.endswith("900 new labelled rows since champion v1 (a retrain needs 1250)")
    enough = _set({"d1": 5_000, "d2": 1_300})
    d = _decide(candidate=enough)
    assert d.act and d.trigger == "new_data"
    assert d.reason == "1300 new labelled rows since champion v1's training set (needs 1250)"
    off = RetrainPolicy(on_new_data=False)
    assert not _decide(candidate=enough, policy=off).act


def test_a_run_in_flight_blocks_a_second_one():
    runs = [RetrainRun("abcdef123", DAY12.identity, "in_flight", NOW - 10)]
    d = _decide(candidate=DAY12, signals=[_drift("d2")], runs=runs)
    assert not d.act and d.reason == "a retrain is already queued or running (run abcdef12)"


def test_cooldown_and_budget_hold_the_signal_and_say_so():
    runs = [RetrainRun("r1", "old", "succeeded", NOW - 600)]
    d = _decide(candidate=DAY12, signals=[_drift("d2")], runs=runs)
    assert not d.act and "held: cooldown: the last retrain started 10 min ago; the next may start in 51 min" in d.reason
    spent = [RetrainRun(f"r{i}", "old", "succeeded", NOW - 7200 * (i + 1)) for i in range(3)]
    d = _decide(candidate=DAY12, signals=[_drift("d2")], runs=spent)
    assert not d.act and "budget spent: 3 retrains in the last 24 h (budget 3)" in d.reason
    old = [RetrainRun("r", "old", "succeeded", NOW - 90_000)]
    assert _decide(candidate=DAY12, signals=[_drift("d2")], runs=old).act


def test_a_crashed_run_of_the_same_set_does_not_start_the_cooldown_of_its_retry():
    crashed = [RetrainRun("r0", DAY12.identity, "failed", NOW - 60)]
    d = _decide(candidate=DAY12, signals=[_drift("d2")], runs=crashed)
    assert d.act and d.run_key == f"{DAY12.identity}:1", d.reason
    # Another set's failed run, or a run that succeeded, still holds the retrain for the cooldown.
    for other in (RetrainRun("r1", "old", "failed", NOW - 60), RetrainRun("r1", DAY12.identity, "succeeded", NOW - 60)):
        d = _decide(candidate=DAY12, signals=[_drift("d2")], runs=[*crashed, other])
        assert not d.act and "held: cooldown: the last retrain started 1 min ago" in d.reason, d.reason
    # It still counts for the budget.
    spent = [RetrainRun(f"r{i}", DAY12.identity, "failed", NOW - 60 * (i + 1)) for i in range(2)]
    d = _decide(candidate=DAY12, signals=[_drift("d2")], runs=[*spent, RetrainRun("r9", "old", "succeeded", NOW - 7200)],
                policy=RetrainPolicy(budget=3, cooldown_seconds=3600))
    assert not d.act and "budget spent: 3 retrains" in d.reason, d.reason


def test_a_crashed_run_is_retried_with_a_new_key_a_bounded_number_of_times():
    crashed = [RetrainRun("r0", DAY12.identity, "failed", NOW - 90_000)]
    d = _decide(candidate=DAY12, signals=[_drift("d2")], runs=crashed)
    assert d.act and d.run_key == f"{DAY12.identity}:1"
    many = [RetrainRun(f"r{i}", DAY12.identity, "failed", NOW - 90_000 - i) for i in range(MAX_ATTEMPTS)]
    d = _decide(candidate=DAY12, signals=[_drift("d2")], runs=many,
                policy=RetrainPolicy(budget=10, cooldown_seconds=0))
    assert not d.act and d.reason == "training this set failed 3 times; fix the cause and retrain by hand"


def test_signals_kinds_switched_off_in_the_spec_are_ignored():
    perf = Signal("performance", "performance:x", "1", None, "auc dropped")
    d = _decide(candidate=DAY12, signals=[perf], policy=RetrainPolicy(on_performance=False, on_new_data=False))
    assert not d.act and d.ignored == (("performance:x", "retraining on performance is off in the spec"),)


def test_a_performance_drop_with_late_labels_retrains():
    late = TrainingSet(training_set_identity({"d1": "dv-d1"}, "r1", labels="l2"), {"d1": 5_000}, 2_000)
    perf = Signal("performance", "performance:x", "1", None, "roc_auc dropped 0.08")
    d = _decide(candidate=late, signals=[perf])
    assert d.act and d.trigger == "performance" and d.reason == "performance against champion v1: roc_auc dropped 0.08"


def test_describe_lists_the_ignored_signals():
    d = _decide(candidate=DAY12, signals=[_drift("d1"), _drift("d2", champion="0")])
    assert d.describe().splitlines() == [
        "retrain: 5000 new labelled rows since champion v1's training set (needs 1250)",
        "ignored drift:d1:x: partition d1 is in champion v1's training set",
        "ignored drift:d2:x: computed against v0, not the current champion v1",
    ]


def test_a_version_whose_run_died_before_the_gate_is_evaluated_not_retrained():
    v2 = VersionRecord("2", DAY12, approval=None)
    d = _decide(versions=[V1, v2], candidate=DAY12, signals=[_drift("d2")])
    assert d.act and d.trigger == "recovery" and d.stages == ("evaluation_report", "registered_model")
    assert d.run_key == "evaluate:v2:0"
    # Once more data arrived, that half-done candidate is simply superseded.
    more = _set({"d1": 5_000, "d2": 5_000, "d3": 2_000})
    assert _decide(versions=[V1, v2], candidate=more).trigger == "new_data"


def test_an_approved_version_whose_promotion_did_not_finish_is_promoted():
    v2 = VersionRecord("2", DAY12, approval="approved")
    d = _decide(versions=[V1, v2], candidate=DAY12)
    assert d.act and d.stages == ("registered_model",) and d.run_key == "promote:v2:0"
    failed = [RetrainRun(f"r{i}", "promote:v2", "failed", NOW - 10 * i) for i in range(MAX_ATTEMPTS)]
    d = _decide(versions=[V1, v2], candidate=DAY12, runs=failed)
    assert not d.act and "gave up after 3 failed attempts" in d.reason


def test_drift_on_the_data_behind_a_rolled_back_model_does_not_count():
    v2 = VersionRecord("2", DAY12, approval="approved", rolled_back=True)
    more = _set({"d1": 5_000, "d2": 5_000, "d3": 300})
    d = _decide(versions=[V1, v2], candidate=more, signals=[_drift("d2")], policy=RetrainPolicy(on_new_data=False))
    assert not d.act
    assert d.ignored == (("drift:d2:x", "partition d2 trained v2, which was rolled back"),)


def test_a_version_under_release_is_left_to_the_release_rule():
    active = VersionRecord("2", DAY12, approval="approved", release="active")
    d = _decide(versions=[V1, active], candidate=DAY12)
    assert not d.act and d.reason == ("v2 is under a shadow/canary release: the release rule promotes or ends it "
                                      "before another retrain")
    ended = VersionRecord("2", DAY12, approval="approved", release="ended")
    d = _decide(versions=[V1, ended], candidate=DAY12, signals=[_drift("d2")])
    assert not d.act and "its release was ended" in d.reason


def test_after_a_rollback_the_rolled_back_models_rows_are_not_new_data():
    # v2 learned d2 and was rolled back to v1; a small d3 must not count d2's 5,000 rows as new.
    v2 = VersionRecord("2", DAY12, approval="approved", rolled_back=True)
    small = _set({"d1": 5_000, "d2": 5_000, "d3": 600})
    d = _decide(versions=[V1, v2], candidate=small)
    assert not d.act and d.reason.endswith("600 new labelled rows since champion v1 (a retrain needs 1250)")
    # Enough rows no model learned from are a reason again.
    enough = _set({"d1": 5_000, "d2": 5_000, "d3": 1_300})
    d = _decide(versions=[V1, v2], candidate=enough)
    assert d.act and d.trigger == "new_data" and d.reason.startswith("1300 new labelled rows")


def test_a_partition_labelled_late_is_in_the_training_set_it_went_into():
    late = TrainingSet(training_set_identity({"d1": "dv-d1"}, "r1", labels="l1"), {"d1": 5_000},
                       delayed_label_rows=800, late_labelled=frozenset({"d2"}))
    assert late.partitions == {"d1", "d2"} and late.rows == 5_800
    v2 = VersionRecord("2", late, approval="approved")
    d = _decide(champion="2", versions=[V1, v2], candidate=late, signals=[_drift("d2", champion="2")],
                policy=RetrainPolicy(on_new_data=False))
    assert not d.act
    assert d.ignored == (("drift:d2:x", "partition d2 is in champion v2's training set"),)
