"""Releasing a gated candidate beside the champion, as pure rules: shadow and canary.

With `release.mode: none` a candidate the gate approved becomes the champion at once. With
`shadow` or `canary` it becomes the version *under release* instead, and the champion stays:

* **shadow**: every row (batch partition or served request) is scored by both; the champion's
  scores are the ones served, the candidate's are kept beside them (a shadow table, the request
  log) with agreement metrics;
* **canary**: a stable hash of the id puts `canary_fraction` of the ids in the candidate's arm;
  those rows are served by the candidate, the rest by the champion, each row saying which
  version scored it (`model_version`, `arm`).

Once delayed labels arrive, the two arms are compared on the same days (`core/performance.py:
compare_arms`) and `decide_release` says promote, end or wait, with a reason. A release is a
small state machine recorded on the candidate's registry tags and on the `registered_model`
materializations (the champion of record does not move until it is promoted):

    active --promote (candidate no worse on labels)--> promoted   (champion moves, via the gate's
    active --end (worse, too long undecided, champion moved,           promotion state machine)
                 gate approval gone, superseded, mode switched off)--> ended  (champion untouched)

Arms: `stable_unit_hash` of the id with a salt of its own (`canary_seed`), so an id lands in
the same arm in every batch, every served request and every release, and the canary set is
independent of the train/holdout split.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mlops_assets.core.features import stable_unit_hash
from mlops_assets.core.performance import ArmComparison
from mlops_assets.core.predictions import PREDICTION, PROBA_PREFIX, SCORE

NONE, SHADOW, CANARY = "none", "shadow", "canary"
MODES = (NONE, SHADOW, CANARY)
ARM = "arm"                                    # the column canary predictions tables add
CHAMPION_ARM, CANDIDATE_ARM = "champion", "candidate"
ACTIVE, PROMOTED, ENDED = "active", "promoted", "ended"
PROMOTE, END, WAIT = "promote", "end", "wait"

# XORed into the split seed: the canary set must not be the holdout set (or any split's).
_CANARY_SALT = 0x6A09E667F3BCC909
_U64 = (1 << 64) - 1

# Registry tags of a version under release (the outside world's view: the server reads them).
TAG_STATE = "release_state"
TAG_MODE = "release_mode"
TAG_CHAMPION = "release_champion"
TAG_FRACTION = "canary_fraction"
TAG_STARTED_AT = "release_started_at"
TAG_REASON = "release_reason"


class ReleaseError(RuntimeError):
    pass


# -- arms ------------------------------------------------------------------------------------
def canary_seed(split_seed: int) -> int:
    """The canary hash's salt, derived from the split's so a spec fixes both."""
    return (int(split_seed) ^ _CANARY_SALT) & _U64


def canary_mask(ids: pl.Series, fraction: float, seed: int) -> np.ndarray:
    """True for the ids in the candidate's arm: `stable_unit_hash(id) < fraction`."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"canary fraction must be within [0, 1], got {fraction}")
    if ids.null_count():
        raise ReleaseError(f"id column '{ids.name}': {ids.null_count()} rows have no id, so no canary arm")
    return stable_unit_hash(ids, seed) < fraction


def canary_arms(ids: Sequence[Any], fraction: float, seed: int) -> list[bool]:
    """`canary_mask` for one request's ids (plain Python values). A missing id goes to the
    champion; integers hash as the batch path hashes an integer id column, anything else as
    its text, as a string id column does."""
    out = [False] * len(ids)
    ints, texts = [], []
    for i, v in enumerate(ids):
        if type(v) is int and -(1 << 63) <= v < (1 << 63):
            ints.append((i, v))
        elif v is not None:
            texts.append((i, str(v)))
    for group, dtype in ((ints, pl.Int64), (texts, pl.String)):
        if group:
            hashed = stable_unit_hash(pl.Series("id", [v for _, v in group], dtype=dtype), seed) < fraction
            for (i, _), hit in zip(group, hashed.tolist()):
                out[i] = bool(hit)
    return out


# -- the release state -----------------------------------------------------------------------
@dataclass(frozen=True)
class Release:
    """One candidate under release: what it is judged against, how, since when, and its state."""

    version: str                 # the candidate
    champion: str                # the champion of record when the release started
    mode: str                    # shadow | canary
    canary_fraction: float
    started_at: float            # unix seconds
    status: str = ACTIVE         # active | promoted | ended
    reason: str = ""             # why it was promoted or ended

    def __post_init__(self):
        if self.mode not in (SHADOW, CANARY):
            raise ValueError(f"release mode must be shadow or canary, got {self.mode!r}")
        if self.status not in (ACTIVE, PROMOTED, ENDED):
            raise ValueError(f"release status must be active, promoted or ended, got {self.status!r}")

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    @property
    def fraction(self) -> float:
        """The share of ids the candidate serves (shadow: none, it only scores beside)."""
        return self.canary_fraction if self.mode == CANARY else 0.0

    def finished(self, status: str, reason: str) -> Release:
        return replace(self, status=status, reason=reason)

    def days_running(self, now: float) -> float:
        return max(0.0, now - self.started_at) / 86_400.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Release | None:
        if not data:
            return None
        return cls(version=str(data["version"]), champion=str(data["champion"]), mode=str(data["mode"]),
                   canary_fraction=float(data["canary_fraction"]), started_at=float(data["started_at"]),
                   status=str(data.get("status", ACTIVE)), reason=str(data.get("reason", "")))

    def to_tags(self) -> dict[str, str]:
        return {TAG_STATE: self.status, TAG_MODE: self.mode, TAG_CHAMPION: self.champion,
                TAG_FRACTION: repr(float(self.canary_fraction)), TAG_STARTED_AT: f"{self.started_at:.3f}",
                TAG_REASON: self.reason[:4000]}

    @classmethod
    def from_tags(cls, version: str, tags: Mapping[str, str]) -> Release | None:
        """The release a version's registry tags record, or None (never released, or unreadable)."""
        try:
            return cls(version=str(version), champion=tags[TAG_CHAMPION], mode=tags[TAG_MODE],
                       canary_fraction=float(tags.get(TAG_FRACTION, "0")),
                       started_at=float(tags.get(TAG_STARTED_AT, "0")), status=tags[TAG_STATE],
                       reason=tags.get(TAG_REASON, ""))
        except (KeyError, ValueError):
            return None

    def describe(self) -> str:
        how = f"canary {self.canary_fraction:.0%}" if self.mode == CANARY else "shadow"
        text = f"v{self.version} under {how} release against champion v{self.champion}: {self.status}"
        return f"{text} ({self.reason})" if self.reason else text


# -- the decision ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleasePolicy:
    mode: str = NONE
    canary_fraction: float = 0.1
    min_labelled_rows: int = 500
    max_metric_drop: float = 0.01
    max_days: float | None = 14.0

    @classmethod
    def from_spec(cls, release) -> ReleasePolicy:
        return cls(mode=release.mode, canary_fraction=release.canary_fraction,
                   min_labelled_rows=release.min_labelled_rows, max_metric_drop=release.max_metric_drop,
                   max_days=release.max_days)


@dataclass(frozen=True)
class ReleaseDecision:
    action: str                   # promote | end | wait
    reason: str
    version: str | None = None    # the candidate the action is about

    @property
    def acts(self) -> bool:
        return self.action in (PROMOTE, END)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.version is None:
            return f"release: {self.reason}"
        return f"release of v{self.version}: {self.action}: {self.reason}"


def decide_release(*, release: Release | None, arms: ArmComparison | None, policy: ReleasePolicy,
                   champion: str | None, approval: str | None, now: float) -> ReleaseDecision:
    """Promote, end or wait, from recorded facts only.

    `champion` is the champion of record now, `approval` the gate's verdict on the candidate
    (its evaluation), `arms` the latest per-arm comparison computed for this candidate (None
    before any), `now` unix seconds. The candidate is promoted only when both arms have
    `min_labelled_rows` labelled rows on the same days and the candidate's main metric is at
    most `max_metric_drop` worse than the champion's; it is ended when it is worse, or when the
    release can no longer be judged fairly (the champion moved, the approval is gone, the spec
    switched releases off) or has run `max_days` undecided."""
    if release is None or not release.active:
        return ReleaseDecision(WAIT, "no release in progress" if release is None else
                               f"the release of v{release.version} is {release.status}")
    v = release.version

    def decision(action: str, reason: str) -> ReleaseDecision:
        return ReleaseDecision(action, reason, v)

    if champion == v:
        return decision(PROMOTE, f"v{v} already is the champion: record the promotion")
    if champion != release.champion:
        return decision(END, f"the champion moved from v{release.champion} to v{champion or '-'} since the "
                             "release started; the arms were compared against the old one")
    if approval not in ("approved", "forced"):
        return decision(END, f"the gate's approval of v{v} is {approval or 'missing'}: only an approved "
                             "candidate can be promoted")
    if policy.mode == NONE:
        return decision(END, "release.mode is none in the spec: the release is switched off")

    overdue = policy.max_days is not None and release.days_running(now) > policy.max_days
    judged = _judge(arms, policy, v, release.champion)
    if judged is not None and judged.action != WAIT:
        return judged
    waiting = judged.reason if judged is not None else "no labelled predictions for the arms yet"
    if overdue:
        return decision(END, f"undecided after {release.days_running(now):.1f} days (max_days "
                             f"{policy.max_days:g}): {waiting}")
    return decision(WAIT, waiting)


def _judge(arms: ArmComparison | None, policy: ReleasePolicy, version: str, champion: str) -> ReleaseDecision | None:
    if arms is None:
        return None
    if arms.candidate.version != version or arms.champion.version != champion:
        return None      # a comparison for another pair of versions: not evidence about this one
    need = policy.min_labelled_rows
    short = [a for a in (arms.champion, arms.candidate) if a.rows < need]
    if short:
        counts = ", ".join(f"{a.arm} v{a.version} {a.rows}/{need}" for a in (arms.champion, arms.candidate))
        return ReleaseDecision(WAIT, f"waiting for labelled rows on the same days ({counts})", version)
    drop = arms.drop
    if drop is None:
        return ReleaseDecision(WAIT, f"{arms.metric} cannot be computed on the labelled rows yet "
                                     f"({arms.describe()})", version)
    if drop > policy.max_metric_drop:
        return ReleaseDecision(END, f"the candidate is worse: {arms.describe()}; drop {drop:.4f} exceeds "
                                    f"the allowed {policy.max_metric_drop:g}", version)
    return ReleaseDecision(PROMOTE, f"the candidate is no worse: {arms.describe()}; drop {drop:.4f} within "
                                    f"the allowed {policy.max_metric_drop:g}", version)


# -- two scored files: agreement, and the canary merge ----------------------------------------
@dataclass
class _Moments:
    """Streaming means, variances and covariance of (x, y), merged chunk by chunk (Chan et al.)."""

    n: int = 0
    mean_x: float = 0.0
    mean_y: float = 0.0
    m2_x: float = 0.0
    m2_y: float = 0.0
    c_xy: float = 0.0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        m = len(x)
        if m == 0:
            return
        mx, my = float(x.mean()), float(y.mean())
        dx, dy = x - mx, y - my
        m2x, m2y, cxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
        n = self.n + m
        delta_x, delta_y = mx - self.mean_x, my - self.mean_y
        self.m2_x += m2x + delta_x * delta_x * self.n * m / n
        self.m2_y += m2y + delta_y * delta_y * self.n * m / n
        self.c_xy += cxy + delta_x * delta_y * self.n * m / n
        self.mean_x += delta_x * m / n
        self.mean_y += delta_y * m / n
        self.n = n

    def correlation(self) -> float | None:
        if self.n < 2 or self.m2_x <= 0 or self.m2_y <= 0:
            return None
        return self.c_xy / math.sqrt(self.m2_x * self.m2_y)


@dataclass(frozen=True)
class Agreement:
    """How alike the candidate's scores are to the champion's on the same rows.

    The compared value is the monitored one (binary: P(class 1); multiclass: the top-class
    probability; regression: the prediction); labels are compared where the task has them
    (binary: the decision at each bundle's threshold; multiclass: the top class)."""

    task: str
    rows: int
    mean_abs_diff: float | None
    max_abs_diff: float | None
    correlation: float | None
    label_agreement: float | None          # binary and multiclass: share of rows with the same label
    candidate_rows: int = 0                # canary: rows the candidate served

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metadata(self, prefix: str) -> dict[str, float | int]:
        out: dict[str, float | int] = {f"{prefix}rows": self.rows}
        for key in ("mean_abs_diff", "max_abs_diff", "correlation", "label_agreement"):
            value = getattr(self, key)
            if value is not None:
                name = "top_class_agreement" if key == "label_agreement" and self.task == "multiclass" else key
                out[prefix + name] = value
        return out

    def to_markdown(self) -> str:
        label = "top-class agreement" if self.task == "multiclass" else "label agreement"
        rows = [("rows", f"{self.rows}"),
                ("mean abs score diff", _fmt(self.mean_abs_diff)), ("max abs score diff", _fmt(self.max_abs_diff)),
                ("correlation", _fmt(self.correlation))]
        if self.task != "regression":
            rows.append((label, _fmt(self.label_agreement)))
        return "\n".join(["| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


class AgreementAccumulator:
    """Agreement over chunks of two predictions tables for the same rows, in the same order."""

    def __init__(self, task: str):
        self.task = task
        self.rows = 0
        self.abs_sum = 0.0
        self.abs_max: float | None = None
        self.same_label = 0
        self.moments = _Moments()
        self.candidate_rows = 0

    def add(self, champion: pl.DataFrame, candidate: pl.DataFrame) -> None:
        if champion.height != candidate.height:
            raise ReleaseError(f"cannot compare {champion.height} champion rows with {candidate.height} candidate rows")
        if champion.height == 0:
            return
        x, y = _monitored(champion, self.task), _monitored(candidate, self.task)
        diff = np.abs(x - y)
        finite = np.isfinite(diff)
        self.rows += champion.height
        self.abs_sum += float(diff[finite].sum())
        if finite.any():
            top = float(diff[finite].max())
            self.abs_max = top if self.abs_max is None else max(self.abs_max, top)
        self.moments.add(x[finite], y[finite])
        if self.task != "regression":
            self.same_label += int((champion[PREDICTION].cast(pl.String) == candidate[PREDICTION].cast(pl.String)).sum())

    def result(self) -> Agreement:
        if self.rows == 0:
            return Agreement(self.task, 0, None, None, None, None, self.candidate_rows)
        return Agreement(
            task=self.task, rows=self.rows, mean_abs_diff=self.abs_sum / self.rows, max_abs_diff=self.abs_max,
            correlation=self.moments.correlation(),
            label_agreement=self.same_label / self.rows if self.task != "regression" else None,
            candidate_rows=self.candidate_rows,
        )


def _monitored(table: pl.DataFrame, task: str) -> np.ndarray:
    if task == "binary":
        return table[SCORE].cast(pl.Float64).to_numpy()
    if task == "multiclass":
        probabilities = [c for c in table.columns if c.startswith(PROBA_PREFIX)]
        return table.select(pl.max_horizontal(probabilities)).to_series().cast(pl.Float64).to_numpy()
    return table[PREDICTION].cast(pl.Float64).to_numpy()


def _aligned_batches(champion_file: Path, candidate_file: Path, id_column: str,
                     batch_rows: int) -> Iterable[tuple[pl.DataFrame, pl.DataFrame]]:
    """Both files chunk by chunk; they must hold the same ids in the same order (two scorings
    of one source file), which is checked on every chunk."""
    import pyarrow.parquet as pq

    a = pq.ParquetFile(champion_file, pre_buffer=False, buffer_size=1 << 20)
    b = pq.ParquetFile(candidate_file, pre_buffer=False, buffer_size=1 << 20)
    if a.metadata.num_rows != b.metadata.num_rows:
        raise ReleaseError(f"the champion scored {a.metadata.num_rows} rows, the candidate "
                           f"{b.metadata.num_rows}: not the same input")
    for left, right in zip(a.iter_batches(batch_size=batch_rows, use_threads=False),
                           b.iter_batches(batch_size=batch_rows, use_threads=False), strict=True):
        x, y = pl.from_arrow(left), pl.from_arrow(right)
        if not x[id_column].equals(y[id_column]):
            raise ReleaseError("the champion's and the candidate's predictions are not for the same rows "
                               "in the same order")
        yield x, y


def agreement_of_files(champion_file: str | os.PathLike[str], candidate_file: str | os.PathLike[str], *,
                       task: str, id_column: str, batch_rows: int = 65_536) -> Agreement:
    """Shadow: the agreement of two predictions files of the same rows, in bounded memory."""
    acc = AgreementAccumulator(task)
    for x, y in _aligned_batches(Path(champion_file), Path(candidate_file), id_column, batch_rows):
        acc.add(x, y)
    return acc.result()


def merge_canary(champion_file: str | os.PathLike[str], candidate_file: str | os.PathLike[str],
                 destination: str | os.PathLike[str], *, task: str, id_column: str, fraction: float, seed: int,
                 batch_rows: int = 65_536) -> Agreement:
    """Canary: one predictions table where each row comes from its id's arm, plus an `arm`
    column, written atomically to `destination` (temporary sibling, then rename). Both inputs
    are full scorings of the same rows, so the agreement over every row comes for free."""
    import pyarrow.parquet as pq

    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.tmp")
    acc = AgreementAccumulator(task)
    writer = None
    try:
        for x, y in _aligned_batches(Path(champion_file), Path(candidate_file), id_column, batch_rows):
            if x.columns != y.columns:
                raise ReleaseError(f"the champion's and the candidate's predictions have different columns "
                                   f"({x.columns} vs {y.columns}): the canary table needs one schema")
            acc.add(x, y)
            hit = canary_mask(x[id_column], fraction, seed)
            acc.candidate_rows += int(hit.sum())
            mask = pl.Series("hit", hit)
            merged = x.with_columns(
                [pl.when(mask).then(y[c]).otherwise(x[c]).alias(c) for c in x.columns if c != id_column]
            ).with_columns(pl.when(mask).then(pl.lit(CANDIDATE_ARM)).otherwise(pl.lit(CHAMPION_ARM)).alias(ARM))
            table = merged.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), table.schema, compression="zstd")
            writer.write_table(table)
        if writer is None:   # zero rows: still a table with the contract's columns and `arm`
            empty = pl.read_parquet(champion_file).with_columns(pl.lit(CHAMPION_ARM).alias(ARM)).to_arrow()
            writer = pq.ParquetWriter(str(tmp), empty.schema, compression="zstd")
            writer.write_table(empty)
        writer.close()
        writer = None
        os.replace(tmp, destination)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return acc.result()
