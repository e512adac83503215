"""Hyperparameter search: random or grid, with a budget in trials and/or seconds.

Every trial trains on the train split and is scored on the validation split; the holdout
(the gate's data) is never seen here, so the gate's numbers stay unbiased.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops_assets.spec import SearchParam, SearchSpec


@dataclass
class Trial:
    index: int
    params: dict[str, Any]
    score: float
    seconds: float
    model: Any = field(default=None, repr=False)


@dataclass
class SearchResult:
    best: Trial
    trials: list[Trial]
    metric: str
    stopped_by: str       # "max_trials", "max_seconds" or "exhausted"


def _draw(param: SearchParam, rng: np.random.Generator) -> Any:
    if param.values is not None:
        return param.values[int(rng.integers(len(param.values)))]
    lo, hi = float(param.low), float(param.high)
    x = math.exp(rng.uniform(math.log(lo), math.log(hi))) if param.log else rng.uniform(lo, hi)
    return round(x) if param.integer else float(x)


def candidate_params(search: SearchSpec, seed: int) -> Iterator[dict[str, Any]]:
    names = sorted(search.space)
    if search.strategy == "grid":
        for combo in itertools.product(*(search.space[n].values for n in names)):
            yield dict(zip(names, combo))
        return
    rng = np.random.default_rng(seed)
    while True:
        yield {n: _draw(search.space[n], rng) for n in names}


def run_search(
    search: SearchSpec,
    *,
    seed: int,
    train: Callable[[dict[str, Any]], Any],
    score: Callable[[Any], float],
    metric: str,
    higher_is_better: bool,
    clock: Callable[[], float] = time.perf_counter,
) -> SearchResult:
    """Train one model per candidate until the budget is spent; at least one trial runs."""
    start = clock()
    trials: list[Trial] = []
    stopped_by = "exhausted"
    for index, params in enumerate(candidate_params(search, seed)):
        if search.max_trials is not None and index >= search.max_trials:
            stopped_by = "max_trials"
            break
        if trials and search.max_seconds is not None and clock() - start >= search.max_seconds:
            stopped_by = "max_seconds"
            break
        t0 = clock()
        model = train(params)
        value = float(score(model))
        trials.append(Trial(index, params, value, clock() - t0, model))
    sign = 1 if higher_is_better else -1
    finite = [t for t in trials if math.isfinite(t.score)] or trials
    best = max(finite, key=lambda t: (sign * t.score, -t.index))
    for t in trials:          # free memory: only the best model is kept
        if t is not best:
            t.model = None
    return SearchResult(best, trials, metric, stopped_by)
