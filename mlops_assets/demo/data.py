"""A realistic, deterministic loan-default data set for the demo and the tests.

Each day is one file of loan applications. `drift` (0..1) shifts the applicant
population on later days (lower incomes, higher rates, more small-business loans) and
slightly changes how default depends on the features, so both data drift and concept
drift are visible.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

HOME_OWNERSHIP = ["RENT", "OWN", "MORTGAGE"]
PURPOSES = ["debt_consolidation", "credit_card", "home_improvement", "car", "medical", "small_business"]
REGIONS = ["north", "south", "east", "west"]
GENDERS = ["female", "male", "nonbinary"]


def generate_loans(
    n_rows: int = 20_000,
    *,
    day: dt.date = dt.date(2026, 1, 1),
    seed: int = 0,
    drift: float = 0.0,
    id_offset: int = 0,
    concept_drift: float = 0.0,
) -> pd.DataFrame:
    """One day of applications; the same arguments always give the same frame.

    `concept_drift` (0..1) leaves the applicants as they are and changes only how default
    depends on them (the rate and score effects fade and turn): invisible to feature drift,
    visible once the labels arrive."""
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be within [0, 1], got {drift}")
    if not 0.0 <= concept_drift <= 1.0:
        raise ValueError(f"concept_drift must be within [0, 1], got {concept_drift}")
    rng = np.random.default_rng([seed, day.toordinal()])
    n = n_rows

    age = np.clip(rng.normal(41, 12, n), 18, 85).round()
    income = np.exp(rng.normal(10.9 - 0.35 * drift, 0.45, n)).round(-2)
    employment_years = np.clip(rng.gamma(2.0, 3.0, n) - 2 * drift, 0, 45).round(1)
    credit_score = np.clip(rng.normal(690 - 45 * drift, 55, n), 300, 850).round()
    loan_amount = np.clip(np.exp(rng.normal(9.4 + 0.2 * drift, 0.6, n)), 500, 80_000).round(-1)
    term_months = rng.choice([36, 60], size=n, p=[0.7 - 0.2 * drift, 0.3 + 0.2 * drift]).astype(float)
    interest_rate = np.clip(
        4.0 + (850 - credit_score) / 28 + rng.normal(2.5 * drift, 1.2, n), 3.0, 36.0
    ).round(2)
    debt_to_income = np.clip(rng.beta(2.2, 6.0 - 2.0 * drift, n) * 60, 0, 60).round(2)
    num_open_accounts = rng.poisson(6 + 2 * drift, n).astype(float)
    delinquencies_2y = rng.poisson(0.3 + 0.4 * drift, n).astype(float)

    purpose_p = np.array([0.42, 0.22, 0.1, 0.1, 0.08, 0.08])
    purpose_p = purpose_p + drift * np.array([-0.12, -0.04, 0.0, 0.0, 0.04, 0.12])
    purpose = rng.choice(PURPOSES, size=n, p=purpose_p / purpose_p.sum())
    home = rng.choice(HOME_OWNERSHIP, size=n, p=[0.4, 0.15, 0.45])
    region = rng.choice(REGIONS, size=n, p=[0.3, 0.25, 0.25, 0.2])
    gender = rng.choice(GENDERS, size=n, p=[0.49, 0.49, 0.02])

    # Default risk: a logistic model with interactions; drift also bends the relationship.
    logit = (
        -2.6
        + 0.045 * (interest_rate - 12)
        - 0.012 * (credit_score - 690)
        + 0.035 * (debt_to_income - 15)
        + 0.35 * np.log(loan_amount / income * 10 + 1e-9)
        + 0.25 * delinquencies_2y
        - 0.04 * np.minimum(employment_years, 15)
        + 0.3 * (term_months == 60)
        + np.select(
            [purpose == "small_business", purpose == "medical", purpose == "car"], [0.6, 0.3, -0.2], 0.0
        )
        + np.where(home == "OWN", -0.25, 0.0)
        + drift * 0.5 * (debt_to_income > 30)
        - concept_drift * 1.6 * (0.045 * (interest_rate - 12) - 0.012 * (credit_score - 690))
    )
    defaulted = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)

    # The lender's risk grade (a multiclass target for examples): mostly score-driven.
    risk = (850 - credit_score) / 55 + debt_to_income / 20 + delinquencies_2y * 0.6 + rng.normal(0, 0.7, n)
    grade = np.array(list("ABCD"))[np.digitize(risk, [2.0, 3.2, 4.4])]

    # Realistic gaps: some applicants omit income-related fields.
    employment_years[rng.random(n) < 0.02] = np.nan
    debt_to_income[rng.random(n) < 0.01] = np.nan

    start = dt.datetime.combine(day, dt.time(0, 0), tzinfo=dt.UTC)
    seconds = np.sort(rng.integers(0, 86_400, n))
    return pd.DataFrame(
        {
            "loan_id": np.arange(id_offset, id_offset + n, dtype=np.int64),
            "applied_at": pd.to_datetime(start) + pd.to_timedelta(seconds, unit="s"),
            "age": age,
            "income": income,
            "employment_years": employment_years,
            "credit_score": credit_score,
            "loan_amount": loan_amount,
            "term_months": term_months,
            "interest_rate": interest_rate,
            "debt_to_income": debt_to_income,
            "num_open_accounts": num_open_accounts,
            "delinquencies_2y": delinquencies_2y,
            "purpose": purpose,
            "home_ownership": home,
            "region": region,
            "gender": gender,
            "grade": grade,
            "defaulted": defaulted,
        }
    )


def write_day(
    directory: str | Path,
    day: dt.date,
    *,
    n_rows: int = 20_000,
    seed: int = 0,
    drift: float = 0.0,
    day_index: int = 0,
    fmt: str = "parquet",
) -> Path:
    """Write one day's file atomically (temp name, then rename), as a producer should."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    frame = generate_loans(n_rows, day=day, seed=seed, drift=drift, id_offset=day_index * 10_000_000)
    final = directory / f"loans_{day.isoformat()}.{fmt}"
    tmp = directory / f".{final.name}.tmp"
    if fmt == "parquet":
        frame.to_parquet(tmp, index=False)
    elif fmt == "csv":
        frame.to_csv(tmp, index=False)
    else:
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    tmp.replace(final)
    return final
