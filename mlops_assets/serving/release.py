"""Shadow and canary in the real-time server: the candidate under release, per request.

The pipeline records a release on the registry (core/release.py): the `challenger` alias
points at the candidate and its `release_*` tags say the state, the mode, the canary
fraction and the champion it is judged against. With `release.mode` other than none in the
spec, `ChampionWatcher` follows that too and holds a `ServedRelease` beside the champion:

* **canary**: each row's id decides its arm with the same salted hash as batch scoring
  (`core.release.canary_arms`), so an id is served by the same model in batch and online;
  rows without an id go to the champion. Every prediction row says which `model_version`
  served it.
* **shadow**: the champion answers; the same rows are handed to `ShadowScorer`, a worker
  thread that scores them with the candidate after the response is on its way. Its queue is
  bounded (rows beyond it are dropped and counted, never waited for), so the answer is not
  held up by the candidate. Both scores go to the request log (`shadow_*` columns) and the
  agreement to the Prometheus metrics.

A release only applies to the champion it was recorded against: once `champion` moves (the
candidate promoted, a rollback) the server serves the champion alone until the registry
says otherwise.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from mlops_assets.core.predictions import PREDICTION, PROBA_PREFIX, SCORE
from mlops_assets.core.release import CANARY, SHADOW, canary_arms
from mlops_assets.serving.request_schema import ParsedRequest
from mlops_assets.serving.served_model import ServedModel

logger = logging.getLogger("mlops_assets.serving")

SHADOW_PREFIX = "shadow_"
SHADOW_VERSION = "shadow_model_version"
DEFAULT_SHADOW_QUEUE_ROWS = 20_000


@dataclass(frozen=True)
class ServedRelease:
    """The candidate under release, loaded and ready, with how it is released."""

    candidate: ServedModel
    champion: str              # the champion version the release was recorded against
    mode: str                  # shadow | canary
    fraction: float
    seed: int

    @property
    def version(self) -> str:
        return self.candidate.version

    def to_candidate(self, ids: list) -> list[bool]:
        """Canary: True for the rows the candidate serves."""
        if self.mode != CANARY:
            return [False] * len(ids)
        return canary_arms(ids, self.fraction, self.seed)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "candidate": self.version, "champion": self.champion}
        if self.mode == CANARY:
            out["canary_fraction"] = self.fraction
        return out


def merge_columns(n: int, parts: list[tuple[list[int], dict[str, list]]]) -> dict[str, list]:
    """Score columns of row subsets back into request order (a name one model lacks is None)."""
    names = list(dict.fromkeys(name for _, columns in parts for name in columns))
    out: dict[str, list] = {name: [None] * n for name in names}
    for index, columns in parts:
        for name, values in columns.items():
            target = out[name]
            for i, v in zip(index, values):
                target[i] = v
    return out


def score_by_arm(champion: ServedModel, release: ServedRelease | None,
                 parsed: ParsedRequest) -> tuple[dict[str, list], list[str] | str]:
    """Score a request by arm; returns the columns and the version per row (or one version)."""
    if release is None or release.mode != CANARY:
        return champion.score(parsed.values), champion.version
    hits = release.to_candidate(parsed.ids)
    chosen = sum(hits)
    if chosen == 0:
        return champion.score(parsed.values), champion.version
    if chosen == len(hits):
        return release.candidate.score(parsed.values), release.version
    mine = [i for i, hit in enumerate(hits) if not hit]
    theirs = [i for i, hit in enumerate(hits) if hit]
    columns = merge_columns(len(hits), [
        (mine, champion.score([parsed.values[i] for i in mine])),
        (theirs, release.candidate.score([parsed.values[i] for i in theirs])),
    ])
    return columns, [release.version if hit else champion.version for hit in hits]


def monitored(task: str, columns: dict[str, list]) -> list[float]:
    """The monitored value per row (binary: P(1); multiclass: the top-class probability)."""
    if task == "binary":
        return columns[SCORE]
    if task == "multiclass":
        probabilities = [values for name, values in columns.items() if name.startswith(PROBA_PREFIX)]
        return [max(row) for row in zip(*probabilities)] if probabilities else []
    return columns[PREDICTION]


def shadow_columns(version: str, columns: dict[str, list], n: int) -> dict[str, list]:
    return {SHADOW_VERSION: [version] * n, **{f"{SHADOW_PREFIX}{name}": values for name, values in columns.items()}}


@dataclass
class ShadowJob:
    parsed: ParsedRequest
    champion_version: str
    columns: dict[str, list]          # the champion's (served) score columns
    received_at: Any
    release: ServedRelease


class ShadowScorer:
    """Scores shadow jobs with the candidate in one worker thread, off the response path.

    `submit` never blocks: beyond `max_pending_rows` queued rows a job is refused (and counted
    as dropped), so a slow candidate can delay only its own shadow scores. Finished jobs wait
    in `finished` (a deque: appended here, popped on the event loop) for the request log."""

    def __init__(self, task: str, metrics=None, *, keep_results: bool = True,
                 max_pending_rows: int = DEFAULT_SHADOW_QUEUE_ROWS):
        self.task, self.metrics, self.keep_results = task, metrics, keep_results
        self.max_pending_rows = max_pending_rows
        self.finished: deque = deque()
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
            self._thread.start()

    def submit(self, job: ShadowJob) -> bool:
        rows = len(job.parsed)
        with self._lock:
            if self._thread is None or self._pending + rows > self.max_pending_rows:
                if self.metrics is not None:
                    self.metrics.shadow_dropped.inc(rows)
                return False
            self._pending += rows
        self._queue.put(job)
        return True

    @property
    def pending_rows(self) -> int:
        return self._pending

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            result = None
            try:
                result = job.release.candidate.score(job.parsed.values)
                self._observe(job, result)
            except Exception as exc:  # noqa: BLE001  the shadow must never take the server down
                if self.metrics is not None:
                    self.metrics.model_error("shadow")
                logger.error("shadow scoring with version %s failed: %s", job.release.version, exc)
            finally:
                with self._lock:
                    self._pending -= len(job.parsed)
            if self.keep_results:
                self.finished.append((job, result))

    def _observe(self, job: ShadowJob, result: dict[str, list]) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        n = len(job.parsed)
        metrics.shadow_rows.inc(n)
        for a, b in zip(monitored(self.task, job.columns), monitored(self.task, result)):
            if a is not None and b is not None:
                metrics.shadow_abs_diff.observe(abs(a - b))
        if self.task != "regression":
            same = sum(1 for a, b in zip(job.columns[PREDICTION], result[PREDICTION]) if a == b)
            metrics.shadow_same_label.inc(same)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued (up to `timeout` seconds), then stop the worker."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None


__all__ = ["SHADOW", "ServedRelease", "ShadowJob", "ShadowScorer", "merge_columns", "score_by_arm",
           "shadow_columns"]
