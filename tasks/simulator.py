"""The loan-application simulator: the demo dataset's daily batches, and the only module that names its columns.

A loan-default stream. Applicants have income, age, debt ratio, credit score, loan amount, years
employed, employment type, region and purpose; the default label is drawn from a logistic model with
non-linear terms and interactions (the debt-to-income burden, a U-shaped age effect, self-employment
amplifying debt). The batch for a date is a pure function of (seed, date), so re-ingesting a date
reproduces it bit for bit. ``simulator.drift`` events change the process from a date on (covariate
shift, concept drift, missing values, an unseen category) for the monitor to find.
The column names are the simulator's own; the shipped ``mlcycle.yaml`` declares exactly them, and
every other module takes its columns from that declaration (``DatasetSpec``). The simulator generates
only that dataset: :func:`refusal` says why another declaration cannot be simulated, which
``tasks/sources.py: chosen_source`` turns into an error before any work.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from mlcycle.tasks.batch import Batch
from mlcycle.tasks.settings import DatasetSpec, DriftEvent, SimulatorSettings

_EMPLOYMENT = ["salaried", "self_employed", "contractor", "unemployed", "retired"]
_REGIONS = ["north", "south", "east", "west", "central"]
_PURPOSES = ["home", "car", "education", "business", "personal"]
# The features the simulator generates, with their kinds: a declaration of other columns is not its dataset.
SIMULATED_FEATURES = {"income": "numeric", "age": "numeric", "debt_ratio": "numeric", "credit_score": "numeric",
                      "loan_amount": "numeric", "employment_years": "numeric", "employment_type": "categorical",
                      "region": "categorical", "loan_purpose": "categorical"}
INTERCEPT = -1.95  # the default log-odds of an applicant whose every term is zero (about 12% default)


def refusal(spec: DatasetSpec) -> str | None:
    """Why the simulator cannot generate batches for ``spec`` (one sentence), or None when it can.

    It can for a binary declaration of exactly its features with their kinds (ids, timestamps and target are
    named by the declaration); any other declaration is a user's own dataset, which comes from landing files.
    """
    declared = {f.name: f.kind for f in spec.features}
    if spec.task == "binary" and declared == SIMULATED_FEATURES:
        return None
    return (f"dataset {spec.name!r} is not the simulator's: the simulator generates only the demo loans dataset; "
            "set ingest.source: landing and MLCYCLE_LANDING_PATH")


def _active(events: list[DriftEvent], day: dt.date) -> list[DriftEvent]:
    return [e for e in events if day >= e.start]


def simulate_batch(
    day: dt.date, settings: SimulatorSettings, spec: DatasetSpec, rows: int | None = None
) -> Batch:
    """The deterministic batch for ``day``: same (seed, date, rows) gives the same frame."""
    n = int(rows if rows is not None else settings.rows_per_day)
    rng = np.random.default_rng([settings.seed, day.toordinal(), n])
    drift = _active(settings.drift, day)

    age = np.clip(np.rint(rng.normal(42, 12, n)), 18, 90).astype("int64")
    emp_p = np.array([0.58, 0.15, 0.12, 0.07, 0.08])
    employment = rng.choice(len(_EMPLOYMENT), size=n, p=emp_p)
    employment = np.where((age >= 63) & (rng.random(n) < 0.7), 4, employment)  # mostly retired
    employment = np.where((age < 55) & (employment == 4), 0, employment)
    income = np.exp(rng.normal(np.log(46_000), 0.55, n))
    income = income * np.select([employment == 3, employment == 4, employment == 1], [0.35, 0.7, 1.15], 1.0)
    credit = np.clip(rng.normal(640, 60, n) + 28 * (np.log(income) - np.log(46_000)) + 0.9 * (age - 42),
                     300, 850)
    debt = np.clip(rng.beta(2.0, 5.0, n) * 1.4 + 0.25 * (employment == 3), 0, 10)
    purpose = rng.choice(len(_PURPOSES), size=n, p=[0.18, 0.26, 0.11, 0.12, 0.33])
    base_amount = np.select([purpose == 0, purpose == 3, purpose == 1], [9.8, 9.9, 9.4], 8.9)
    loan = np.clip(np.exp(rng.normal(base_amount, 0.7, n)), 500, 500_000)
    years = np.minimum(age - 18, rng.exponential(7.0, n))
    region = rng.choice(len(_REGIONS), size=n, p=[0.22, 0.20, 0.20, 0.20, 0.18])

    frame = pd.DataFrame({
        "income": np.round(income, 2),
        "age": age,
        "debt_ratio": np.round(debt, 4),
        "credit_score": np.round(credit, 1),
        "loan_amount": np.round(loan, 2),
        "employment_years": np.round(years, 1),
        "employment_type": pd.Categorical.from_codes(employment, _EMPLOYMENT).astype(str),
        "region": pd.Categorical.from_codes(region, _REGIONS).astype(str),
        "loan_purpose": pd.Categorical.from_codes(purpose, _PURPOSES).astype(str),
    })
    # Natural missingness: undeclared incomes and unknown tenure (always unknown for the unemployed).
    frame.loc[rng.random(n) < 0.02, "income"] = np.nan
    frame.loc[(employment == 3) | (rng.random(n) < 0.03), "employment_years"] = np.nan

    notes = []
    for event in drift:
        notes.append(_apply_covariate_drift(frame, event, rng, spec))

    # The label: logistic in per-feature contributions, so concept drift can rescale one of them.
    logit_terms = _label_terms(frame)
    scale = {name: 1.0 for name in logit_terms}
    for event in drift:
        if event.kind == "concept":
            scale[event.feature] = event.amount
            notes.append(f"concept: effect of {event.feature} x{event.amount}")
    logit = INTERCEPT + sum(scale[name] * term for name, term in logit_terms.items())
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype("int64")

    seconds = np.sort(rng.integers(0, 86_400, n))
    start = pd.Timestamp(day, tz="UTC")
    ids = pd.Series(np.arange(n)).astype(str).str.zfill(7)
    frame.insert(0, spec.timestamp_column, start + pd.to_timedelta(seconds, unit="s"))
    frame.insert(0, spec.id_column, f"{day:%Y%m%d}-" + ids)
    frame[spec.target] = label
    return Batch(frame=frame, kind="simulator", notes=[n for n in notes if n])


def default_log_odds(frame: pd.DataFrame) -> np.ndarray:
    """The simulator's own default log-odds for these rows, before any concept drift.

    What a perfect model of an undrifted batch would score: tests build models of known quality from it.
    """
    return INTERCEPT + sum(_label_terms(frame).values())


def _label_terms(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each feature's contribution to the default log-odds (nulls contribute their own risk)."""
    income = frame["income"].to_numpy(dtype=float)
    log_income = np.where(np.isnan(income), np.log(30_000), np.log(np.maximum(income, 1.0)))
    burden = frame["loan_amount"].to_numpy(dtype=float) / np.exp(log_income)
    emp = frame["employment_type"].to_numpy()
    debt = frame["debt_ratio"].to_numpy(dtype=float)
    self_employed = emp == "self_employed"
    age = frame["age"].to_numpy(dtype=float)
    years = frame["employment_years"].to_numpy(dtype=float)
    return {
        "debt_ratio": 2.6 * (debt - 0.42) + 1.2 * self_employed * debt,
        "credit_score": -0.014 * (frame["credit_score"].to_numpy(dtype=float) - 650),
        "income": -0.55 * (log_income - np.log(46_000)) + 0.3 * np.isnan(income),
        "loan_amount": 1.1 * np.tanh(2.0 * burden) - 0.4,
        "age": 0.0012 * (age - 45) ** 2 - 0.25,
        "employment_years": np.where(np.isnan(years), 0.2, -0.04 * np.minimum(years, 15)),
        "employment_type": np.select([emp == "unemployed", emp == "contractor", self_employed], [1.0, 0.3, 0.2],
                                     0.0),
        "region": np.where(frame["region"].to_numpy() == "south", 0.3, 0.0),
        "loan_purpose": np.where(frame["loan_purpose"].to_numpy() == "business", 0.35, 0.0),
    }


def _apply_covariate_drift(frame: pd.DataFrame, event: DriftEvent, rng: np.random.Generator,
                           spec: DatasetSpec) -> str:
    col = event.feature
    if event.kind == "shift":
        feature = spec.feature(col)
        if feature.kind == "numeric":
            values = frame[col].to_numpy(dtype=float)
            shifted = values + event.amount * np.nanstd(values)
            lo = -np.inf if feature.min is None else feature.min
            hi = np.inf if feature.max is None else feature.max
            shifted = np.clip(shifted, lo, hi)
            frame[col] = np.rint(shifted).astype("int64") if feature.dtype == "int" else np.round(shifted, 4)
            return f"shift: {col} +{event.amount} sd"
        target = event.category or (feature.categories or [""])[0]
        move = rng.random(len(frame)) < event.amount
        frame.loc[move, col] = target
        return f"shift: {event.amount:.0%} of {col} moved to {target!r}"
    if event.kind == "missing":
        frame.loc[rng.random(len(frame)) < event.amount, col] = None
        return f"missing: {event.amount:.0%} of {col} nulled"
    if event.kind == "new_category":
        frame.loc[rng.random(len(frame)) < event.amount, col] = event.category
        return f"new_category: {event.amount:.0%} of {col} = {event.category!r}"
    return ""
