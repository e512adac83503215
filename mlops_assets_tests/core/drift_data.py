"""Deterministic synthetic frames for the drift engine tests."""

from __future__ import annotations

import numpy as np
import polars as pl

CATS = pl.Series([f"c{i:02d}" for i in range(14)])
UNIFORM10 = np.full(10, 0.1)
SKEWED10 = np.array([0.2, 0.15, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.1, 0.05])

KINDS: dict[str, str] = {
    "n_same": "numeric",
    "n_shift": "numeric",
    "n_scale": "numeric",
    "n_int": "numeric",
    "n_low": "numeric",
    "n_bin": "numeric",
    "n_heavy": "numeric",
    "n_missing": "numeric",
    "c_same": "categorical",
    "c_shift": "categorical",
    "c_unseen": "categorical",
    "c_bin": "categorical",
}


def make_frame(n: int, seed: int, drift: bool) -> pl.DataFrame:
    """Numeric and categorical features; with ``drift`` some of them shift.

    Unchanged: n_same, n_int, n_heavy, c_same. Shifted: n_shift (mean), n_scale (scale),
    n_low (frequencies of 4 values), n_bin (2 values), c_shift (frequencies), c_unseen (two new
    categories), c_bin (2 values). n_missing keeps its distribution but its missing rate goes
    from 5% to 20% (with nulls and NaN)."""
    r = np.random.default_rng(seed)
    missing = np.full(n, np.nan)
    values = r.normal(5.0, 2.0, n)
    miss = r.random(n) < (0.20 if drift else 0.05)
    values = np.where(miss, missing, values)
    frame = pl.DataFrame(
        {
            "n_same": r.normal(0.0, 1.0, n),
            "n_shift": r.normal(0.4 if drift else 0.0, 1.0, n),
            "n_scale": r.lognormal(0.0, 1.0, n) * (1.3 if drift else 1.0),
            "n_int": r.integers(0, 1000, n),
            "n_low": r.choice(
                [1.0, 2.0, 3.0, 4.0], n, p=[0.4, 0.3, 0.2, 0.1] if drift else [0.25] * 4
            ),
            "n_bin": r.choice([0.0, 1.0], n, p=[0.6, 0.4] if drift else [0.5, 0.5]),
            "n_heavy": r.standard_t(2, n),
            "n_missing": values,
            "c_same": CATS.gather(r.choice(10, n, p=UNIFORM10)),
            "c_shift": CATS.gather(r.choice(10, n, p=SKEWED10 if drift else UNIFORM10)),
            "c_unseen": CATS.gather(r.integers(0, 12 if drift else 10, n)),
            "c_bin": CATS.gather(r.choice(2, n, p=[0.56, 0.44] if drift else [0.5, 0.5])),
        }
    )
    # Half of the missing values as real nulls, half as NaN.
    half = pl.Series(r.random(n) < 0.5)
    return frame.with_columns(
        pl.when(pl.col("n_missing").is_nan() & half)
        .then(None)
        .otherwise(pl.col("n_missing"))
        .alias("n_missing")
    )


def finite(frame: pl.DataFrame, name: str) -> np.ndarray:
    x = frame.get_column(name).cast(pl.Float64).to_numpy()
    return x[np.isfinite(x)]
