"""Shadow and canary releases, the pure parts: arms, the release rule, arm metrics, agreement."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from mlops_assets.core.features import stable_unit_hash
from mlops_assets.core.performance import DAY, LABEL, ArmComparison, ArmResult, compare_arms
from mlops_assets.core.predictions import MODEL_VERSION, SCORED_AT
from mlops_assets.core.release import (
    ARM,
    END,
    PROMOTE,
    WAIT,
    AgreementAccumulator,
    Release,
    ReleaseError,
    ReleasePolicy,
    agreement_of_files,
    canary_arms,
    canary_mask,
    canary_seed,
    decide_release,
    merge_canary,
)

SEED = canary_seed(17)
NOW = 1_800_000_000.0


# -- arms ------------------------------------------------------------------------------------
def test_canary_arm_is_stable_and_close_to_the_fraction():
    ids = pl.Series("loan_id", np.arange(200_000, dtype=np.int64))
    first = canary_mask(ids, 0.1, SEED)
    assert abs(first.mean() - 0.1) < 0.003
    # The same id, alone or among others, in any order: always the same arm.
    shuffled = ids.sample(fraction=1.0, shuffle=True, seed=1)
    again = canary_mask(shuffled, 0.1, SEED)
    assert (again == first[shuffled.to_numpy()]).all()
    # A larger fraction only adds ids to the canary: nobody leaves it.
    wider = canary_mask(ids, 0.3, SEED)
    assert abs(wider.mean() - 0.3) < 0.004 and not (first & ~wider).any()
    text = pl.Series("loan_id", [f"L-{i}" for i in range(50_000)])
    assert abs(canary_mask(text, 0.25, SEED).mean() - 0.25) < 0.01


def test_canary_arm_is_independent_of_the_holdout_split():
    ids = pl.Series("loan_id", np.arange(200_000, dtype=np.int64))
    canary = canary_mask(ids, 0.2, canary_seed(17))
    holdout = stable_unit_hash(ids, 17) < 0.2
    # Independent hashes: the overlap is the product of the shares, not the holdout itself.
    assert abs((canary & holdout).mean() - 0.04) < 0.003
    assert canary_seed(17) != 17 and canary_seed(17) != canary_seed(18)


def test_a_served_id_lands_in_the_arm_the_batch_gave_it():
    ints = list(range(0, 5_000, 7))
    batch = canary_mask(pl.Series("id", ints, dtype=pl.Int64), 0.4, SEED).tolist()
    assert canary_arms(ints, 0.4, SEED) == batch
    texts = [f"c{i}" for i in range(300)]
    assert canary_arms(texts, 0.4, SEED) == canary_mask(pl.Series("id", texts), 0.4, SEED).tolist()
    # Mixed in one request, and a row without an id: that one goes to the champion.
    mixed = [ints[0], texts[0], None, ints[1]]
    assert canary_arms(mixed, 0.4, SEED) == [batch[0], canary_arms(texts[:1], 0.4, SEED)[0], False, batch[1]]
    assert canary_arms([None] * 3, 1.0, SEED) == [False] * 3


def test_canary_mask_refuses_rows_without_an_id():
    with pytest.raises(ReleaseError, match="2 rows have no id"):
        canary_mask(pl.Series("loan_id", [1, None, None]), 0.1, SEED)


# -- the release state -------------------------------------------------------------------------
def test_release_round_trips_through_tags_and_dicts():
    release = Release("4", "3", "canary", 0.1, NOW)
    assert Release.from_tags("4", release.to_tags()) == release
    assert Release.from_dict(release.to_dict()) == release
    ended = release.finished("ended", "worse")
    assert Release.from_tags("4", ended.to_tags()) == ended and not ended.active
    assert Release.from_tags("4", {"approval": "approved"}) is None
    assert Release.from_dict(None) is None
    with pytest.raises(ValueError, match="shadow or canary"):
        Release("4", "3", "none", 0.1, NOW)


# -- the release rule ------------------------------------------------------------------------
POLICY = ReleasePolicy(mode="canary", canary_fraction=0.1, min_labelled_rows=500, max_metric_drop=0.01, max_days=14)
RELEASE = Release("4", "3", "canary", 0.1, NOW - 86_400)


def arms(champion: float | None, candidate: float | None, rows=(1_000, 1_000), metric="roc_auc",
         higher=True, versions=("3", "4")) -> ArmComparison:
    return ArmComparison(metric, higher, ("2026-02-01",), ArmResult("champion", versions[0], rows[0], champion),
                         ArmResult("candidate", versions[1], rows[1], candidate))


def decide(**overrides):
    facts = {"release": RELEASE, "arms": None, "policy": POLICY, "champion": "3", "approval": "approved", "now": NOW}
    return decide_release(**{**facts, **overrides})


def test_waits_for_labels_then_promotes_a_candidate_no_worse():
    first = decide()
    assert first.action == WAIT and "no labelled predictions" in first.reason
    short = decide(arms=arms(0.80, 0.81, rows=(2_000, 120)))
    assert short.action == WAIT and "candidate v4 120/500" in short.reason
    promote = decide(arms=arms(0.80, 0.795))
    assert promote.action == PROMOTE and promote.version == "4" and "no worse" in promote.reason
    assert "drop 0.0050 within the allowed 0.01" in promote.reason


def test_ends_a_worse_candidate():
    end = decide(arms=arms(0.80, 0.75))
    assert end.action == END and "drop 0.0500 exceeds the allowed 0.01" in end.reason


def test_errors_are_lower_is_better():
    assert decide(arms=arms(1.0, 1.005, metric="rmse", higher=False)).action == PROMOTE
    assert decide(arms=arms(1.0, 1.2, metric="rmse", higher=False)).action == END


def test_ends_when_it_can_no_longer_be_judged_fairly():
    moved = decide(champion="2", arms=arms(0.8, 0.9))
    assert moved.action == END and "champion moved from v3 to v2" in moved.reason
    rejected = decide(approval="rejected", arms=arms(0.8, 0.9))
    assert rejected.action == END and "approval of v4 is rejected" in rejected.reason
    off = decide(policy=ReleasePolicy(mode="none"))
    assert off.action == END and "switched off" in off.reason


def test_ends_an_undecided_release_after_max_days():
    old = Release("4", "3", "canary", 0.1, NOW - 15 * 86_400)
    overdue = decide(release=old, arms=arms(0.8, 0.8, rows=(900, 10)))
    assert overdue.action == END and "undecided after 15.0 days" in overdue.reason and "10/500" in overdue.reason
    assert decide(release=old, policy=ReleasePolicy(mode="canary", max_days=None)).action == WAIT
    # Judged before the limit ran out: the judgement stands.
    assert decide(release=old, arms=arms(0.8, 0.8)).action == PROMOTE


def test_other_facts_are_not_evidence():
    assert decide(arms=arms(0.8, 0.9, versions=("3", "5"))).action == WAIT      # another candidate's arms
    assert decide(arms=arms(None, 0.9)).action == WAIT                           # a metric not computable yet
    assert decide(release=None).action == WAIT
    assert decide(release=RELEASE.finished("ended", "x")).reason == "the release of v4 is ended"
    done = decide(champion="4")       # promoted, but the record of it was lost: record it
    assert done.action == PROMOTE and "already is the champion" in done.reason


# -- the arms' metrics -------------------------------------------------------------------------
def joined_rows(version: str, day: dt.date, labels, scores) -> pl.DataFrame:
    n = len(labels)
    return pl.DataFrame({"id": np.arange(n), "score": np.asarray(scores, dtype=float),
                         "prediction": (np.asarray(scores) >= 0.5).astype(np.int64), MODEL_VERSION: version,
                         SCORED_AT: dt.datetime(2026, 2, 1, tzinfo=dt.UTC), LABEL: labels, DAY: day})


def test_arms_are_compared_on_the_same_days_only():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = np.clip(y * 0.6 + rng.random(400) * 0.4, 0, 1)
    noisy = rng.random(400)
    d1, d2, d3 = dt.date(2026, 2, 1), dt.date(2026, 2, 2), dt.date(2026, 2, 3)
    joined = pl.concat([
        joined_rows("3", d1, y[:200], good[:200]), joined_rows("4", d1, y[200:], good[200:]),
        joined_rows("3", d2, y[:200], noisy[:200]),          # only the champion has day 2: not compared
        joined_rows("4", d3, y[200:], noisy[200:]),          # only the candidate has day 3: not compared
    ])
    result = compare_arms(joined, task="binary", metric="roc_auc", champion_version="3", candidate_version="4")
    assert result.days == ("2026-02-01",)
    assert result.champion.rows == 200 and result.candidate.rows == 200
    assert result.champion.value > 0.9 and result.candidate.value > 0.9
    assert ArmComparison.from_dict(result.to_dict()) == result
    one_class = joined_rows("3", d1, np.zeros(50, dtype=np.int64), good[:50])
    missing = compare_arms(pl.concat([one_class, joined_rows("4", d1, np.zeros(50, dtype=np.int64), good[:50])]),
                           task="binary", metric="roc_auc", champion_version="3", candidate_version="4")
    assert missing.champion.value is None and missing.drop is None


# -- two scored files --------------------------------------------------------------------------
def predictions(ids, scores, version: str) -> pl.DataFrame:
    scores = np.asarray(scores, dtype=float)
    return pl.DataFrame({"loan_id": ids, "score": scores, "prediction": (scores >= 0.5).astype(np.int64),
                         MODEL_VERSION: version, SCORED_AT: dt.datetime(2026, 2, 1, tzinfo=dt.UTC)})


@pytest.fixture
def scored_pair(tmp_path):
    rng = np.random.default_rng(3)
    ids = np.arange(10_000, 30_000, dtype=np.int64)
    a = rng.random(ids.size)
    b = np.clip(a + rng.normal(0, 0.05, ids.size), 0, 1)
    champion, candidate = tmp_path / "champion.parquet", tmp_path / "candidate.parquet"
    predictions(ids, a, "3").write_parquet(champion, row_group_size=3_000)
    predictions(ids, b, "4").write_parquet(candidate, row_group_size=7_000)
    return ids, a, b, champion, candidate


def test_agreement_of_two_files_streams_to_the_exact_figures(scored_pair):
    ids, a, b, champion, candidate = scored_pair
    found = agreement_of_files(champion, candidate, task="binary", id_column="loan_id", batch_rows=4_096)
    diff = np.abs(a - b)
    assert found.rows == ids.size
    assert found.mean_abs_diff == pytest.approx(diff.mean(), rel=1e-12)
    assert found.max_abs_diff == pytest.approx(diff.max(), rel=1e-12)
    assert found.correlation == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-9)
    assert found.label_agreement == pytest.approx(((a >= 0.5) == (b >= 0.5)).mean())
    assert "label agreement" in found.to_markdown()


def test_multiclass_agreement_is_on_the_top_class():
    acc = AgreementAccumulator("multiclass")
    x = pl.DataFrame({"prediction": ["A", "B", "C"], "proba_A": [0.7, 0.2, 0.1], "proba_B": [0.2, 0.7, 0.2],
                      "proba_C": [0.1, 0.1, 0.7]})
    y = pl.DataFrame({"prediction": ["A", "C", "C"], "proba_A": [0.6, 0.2, 0.1], "proba_B": [0.3, 0.3, 0.1],
                      "proba_C": [0.1, 0.5, 0.8]})
    acc.add(x, y)
    found = acc.result()
    assert found.label_agreement == pytest.approx(2 / 3)
    assert found.mean_abs_diff == pytest.approx((0.1 + 0.2 + 0.1) / 3)
    assert "agreement_top_class_agreement" in found.metadata("agreement_")


def test_canary_merge_takes_each_row_from_its_arm(scored_pair, tmp_path):
    ids, a, b, champion, candidate = scored_pair
    out = tmp_path / "out" / "canary.parquet"
    found = merge_canary(champion, candidate, out, task="binary", id_column="loan_id", fraction=0.3, seed=SEED,
                         batch_rows=5_000)
    table = pl.read_parquet(out)
    hit = canary_mask(pl.Series(ids), 0.3, SEED)
    assert table.columns == ["loan_id", "score", "prediction", MODEL_VERSION, SCORED_AT, ARM]
    assert table["loan_id"].to_list() == ids.tolist()
    np.testing.assert_array_equal(table["score"].to_numpy(), np.where(hit, b, a))
    assert table[MODEL_VERSION].to_list() == np.where(hit, "4", "3").tolist()
    assert table[ARM].to_list() == np.where(hit, "candidate", "champion").tolist()
    assert found.candidate_rows == int(hit.sum()) and found.rows == ids.size
    assert list(out.parent.iterdir()) == [out]          # no temporary file left


def test_canary_merge_refuses_files_of_different_rows(scored_pair, tmp_path):
    ids, _a, b, champion, _candidate = scored_pair
    other = tmp_path / "other.parquet"
    predictions(ids[::-1].copy(), b, "4").write_parquet(other)
    out = tmp_path / "out.parquet"
    with pytest.raises(ReleaseError, match="not for the same rows"):
        merge_canary(champion, other, out, task="binary", id_column="loan_id", fraction=0.3, seed=SEED)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
