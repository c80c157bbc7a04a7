"""The reference profile: what a model's training data and predictions looked like, in a few KB.

The training flow stores one profile with every model version
(``models/<name>/<version>/reference_profile.json``, sha256 recorded in its metadata). The drift
monitor compares live batches against it instead of re-reading the training data, which may have
been superseded, deleted, or simply be large.

What is profiled:

* **Numeric features**, on the rows the model was fitted on (train + validation windows):
  ``bin_edges`` are quantile edges (``n_bins`` + 1 of them, duplicates removed, so a feature with few
  distinct values gets fewer bins), ``counts`` the training rows per bin. Bins are closed on the left,
  ``[edges[i], edges[i+1])``, the last one closed on both sides; :meth:`NumericProfile.bin_counts`
  bins *new* data the same way, sending values below the first edge to the first bin and above the
  last edge to the last bin, so the two histograms are always comparable (PSI, chi-square). Nulls are
  not binned; they are the ``null_rate``. ``mean``/``std``/``min``/``max`` are over non-null values.
* **Categorical features**: ``frequencies`` share of non-null rows per value, as canonical texts
  (``category_key``: a ``1.0`` in the data is the declared category ``"1"``), every declared category
  listed (0.0 if unseen) plus any undeclared value seen; ``null_rate`` apart.
  :meth:`CategoricalProfile.frequencies_of` computes the same for new data.
* **Predictions** on the held-out **test** window, which is what live traffic should look like
  (predictions on rows the model was fitted on are over-confident), per task (``predictions.kind``):
  binary, the positive class's probability (``probability``: ``bin_edges`` fixed at ``n_bins``
  equal-width bins over [0, 1]); multiclass, the predicted classes' shares (``class_frequencies``, every
  declared class listed) and the histogram of the predicted class's probability (``max_probability``,
  bins over [0, 1]); regression, the predicted value (``value``: quantile bins like a numeric feature's).
  Each with the mean and quantiles.
* **Target** of the fitted rows, for label-drift checks once outcomes arrive: binary ``label_rate`` (the
  positive rate), multiclass ``class_frequencies``, regression ``mean``/``std``/``min``/``max``/quantiles.
  ``ReferenceProfile.label_rate`` keeps the binary positive rate where it always was.
* ``sample`` (numeric features and predictions): a seeded uniform sample of at most
  ``drift.reference_sample_size`` non-null values, the reference side of the Kolmogorov-Smirnov test
  and the Wasserstein distance (both need the empirical distribution, not just bin counts). 5,000
  values per feature keep the profile small while the KS test against them stays exact for that
  sample and sensitive to a 0.1-sd shift.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from mlcycle.tasks.settings.problem import category_keys_of

PROFILE_FILE = "reference_profile.json"


class NumericProfile(BaseModel):
    name: str
    rows: int
    null_rate: float
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    bin_edges: list[float]  # quantile edges, ascending, len(counts) + 1
    counts: list[int]
    sample: list[float] = Field(default_factory=list)  # seeded sample of non-null values (KS, Wasserstein)

    def bin_counts(self, values) -> list[int]:
        """Counts of new values in this profile's bins (nulls ignored; out-of-range to the end bins)."""
        return _bin(np.asarray(values, dtype=float), self.bin_edges)


class CategoricalProfile(BaseModel):
    name: str
    rows: int
    null_rate: float
    frequencies: dict[str, float]  # share of non-null rows; declared categories always present

    def frequencies_of(self, values) -> dict[str, float]:
        """Shares of non-null new values, over this profile's categories plus any new ones."""
        return _frequencies(values, list(self.frequencies))


class PredictionProfile(BaseModel):
    """The held-out predictions: a numeric histogram (of ``kind``) and, for multiclass, the class shares."""

    kind: Literal["probability", "max_probability", "value"] = "probability"
    rows: int
    mean: float
    quantiles: dict[str, float]  # "p01", "p10", "p50", "p90", "p99"
    bin_edges: list[float]  # probabilities: equal-width over [0, 1]; values: quantile edges
    counts: list[int]
    sample: list[float] = Field(default_factory=list)  # seeded sample of held-out scores (KS)
    class_frequencies: dict[str, float] | None = None  # multiclass: share of rows predicted as each class

    def bin_counts(self, scores) -> list[int]:
        return _bin(np.asarray(scores, dtype=float), self.bin_edges)


class TargetProfile(BaseModel):
    """The target on the fitted rows: binary ``label_rate``, multiclass ``class_frequencies``, regression
    the value's summary."""

    rows: int
    label_rate: float | None = None
    class_frequencies: dict[str, float] | None = None
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    quantiles: dict[str, float] | None = None


class ReferenceProfile(BaseModel):
    """The reference distribution of one model version's inputs and outputs (see the module docstring)."""

    dataset: str
    dataset_schema_hash: str
    created_at: dt.datetime
    task: str = "binary"
    rows: int  # rows the features were profiled on (the fitted rows)
    label_rate: float | None = None  # binary: the positive rate of the fitted rows
    target: TargetProfile | None = None
    numeric: dict[str, NumericProfile] = Field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = Field(default_factory=dict)
    predictions: PredictionProfile

    def to_json_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True).encode()


def reference_sample(values: np.ndarray, size: int, seed: int) -> list[float]:
    """A seeded uniform sample without replacement (all values when there are fewer), sorted."""
    values = values[~np.isnan(values)]
    if len(values) > size:
        values = np.random.default_rng(seed).choice(values, size=size, replace=False)
    return [float(v) for v in np.sort(values)]


def profile_numeric(name: str, values, n_bins: int, sample_size: int = 5000, seed: int = 0) -> NumericProfile:
    x = np.asarray(values, dtype=float)
    present = x[~np.isnan(x)]
    rows = len(x)
    null_rate = float(1 - len(present) / rows) if rows else 0.0
    if len(present) == 0:
        return NumericProfile(name=name, rows=rows, null_rate=null_rate, mean=None, std=None, min=None, max=None,
                              bin_edges=[], counts=[])
    edges = np.unique(np.quantile(present, np.linspace(0, 1, n_bins + 1)))
    if len(edges) == 1:  # a constant feature: one bin around its value
        edges = np.array([edges[0], edges[0]])
    return NumericProfile(
        name=name, rows=rows, null_rate=null_rate, mean=float(present.mean()), std=float(present.std()),
        min=float(present.min()), max=float(present.max()), bin_edges=[float(e) for e in edges],
        counts=_bin(present, list(edges)), sample=reference_sample(present, sample_size, seed),
    )


def profile_categorical(name: str, values, categories: list[str]) -> CategoricalProfile:
    series = category_keys_of(values)
    rows = len(series)
    null_rate = float(series.isna().mean()) if rows else 0.0
    return CategoricalProfile(name=name, rows=rows, null_rate=null_rate,
                              frequencies=_frequencies(series, categories))


QUANTILES = {"p01": 0.01, "p10": 0.10, "p50": 0.50, "p90": 0.90, "p99": 0.99}


def _quantiles(x: np.ndarray) -> dict[str, float]:
    return {k: float(np.quantile(x, q)) for k, q in QUANTILES.items()}


def profile_predictions(scores, n_bins: int, sample_size: int = 5000, seed: int = 0, *,
                        kind: str = "probability", classes: list[str] | None = None) -> PredictionProfile:
    """The held-out predictions' profile (see the module docstring).

    ``scores``: probabilities (binary), values (regression, ``kind="value"``), or every class's probability
    in ``classes`` order (multiclass, ``kind="max_probability"``).
    """
    if kind == "max_probability":
        probabilities = np.asarray(scores, dtype=float)
        predicted = np.asarray(classes or [], dtype=object)[np.argmax(probabilities, axis=1)]
        profile = profile_predictions(probabilities.max(axis=1), n_bins, sample_size, seed)
        return profile.model_copy(update={"kind": kind, "class_frequencies": _frequencies(predicted, classes or [])})
    p = np.asarray(scores, dtype=float)
    if kind == "value":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
        edges = list(edges if len(edges) > 1 else [edges[0], edges[0]])
    else:
        edges = list(np.linspace(0.0, 1.0, n_bins + 1))
    return PredictionProfile(kind=kind, rows=len(p), mean=float(p.mean()), quantiles=_quantiles(p),
                             bin_edges=[float(e) for e in edges], counts=_bin(p, edges),
                             sample=reference_sample(p, sample_size, seed))


def profile_target(labels, task: str, classes: list[str] | None = None) -> TargetProfile:
    if task == "binary":
        return TargetProfile(rows=len(labels), label_rate=float(np.mean(labels)))
    if task == "multiclass":
        return TargetProfile(rows=len(labels), class_frequencies=_frequencies(labels, classes or []))
    y = np.asarray(labels, dtype=float)
    return TargetProfile(rows=len(y), mean=float(y.mean()), std=float(y.std()), min=float(y.min()),
                         max=float(y.max()), quantiles=_quantiles(y))


PREDICTION_KIND = {"binary": "probability", "multiclass": "max_probability", "regression": "value"}


def build_profile(fitted_frame, features, labels, test_predictions, *, dataset: str, dataset_schema_hash: str,
                  n_bins: int, created_at: dt.datetime, sample_size: int = 5000, seed: int = 0,
                  task: str = "binary", classes: list[str] | None = None) -> ReferenceProfile:
    """Profile the fitted rows' features and target and the held-out predictions (per ``task``: binary
    probabilities, multiclass probabilities in ``classes`` order, regression values)."""
    numeric = {f.name: profile_numeric(f.name, fitted_frame[f.name], n_bins, sample_size, seed)
               for f in features if f.kind == "numeric"}
    categorical = {f.name: profile_categorical(f.name, fitted_frame[f.name], f.categories or [])
                   for f in features if f.kind == "categorical"}
    target = profile_target(labels, task, classes)
    return ReferenceProfile(
        dataset=dataset, dataset_schema_hash=dataset_schema_hash, created_at=created_at, task=task,
        rows=len(fitted_frame), label_rate=target.label_rate, target=target, numeric=numeric,
        categorical=categorical,
        predictions=profile_predictions(test_predictions, n_bins=max(n_bins, 10), sample_size=sample_size,
                                        seed=seed, kind=PREDICTION_KIND[task], classes=classes),
    )


def _bin(values: np.ndarray, edges: list[float]) -> list[int]:
    values = values[~np.isnan(values)]
    if len(edges) < 2:
        return []
    n_bins = len(edges) - 1
    # interior edges only: left-closed bins, out-of-range values land in the first/last bin
    idx = np.searchsorted(np.asarray(edges[1:-1]), values, side="right")
    return [int(c) for c in np.bincount(idx, minlength=n_bins)[:n_bins]]


def _frequencies(values, categories: list[str]) -> dict[str, float]:
    """Shares of the non-null values as canonical texts, over ``categories`` plus any other value seen."""
    series = category_keys_of(values).dropna().astype(str)
    counts = series.value_counts()
    total = int(counts.sum())
    keys = list(categories) + sorted(k for k in counts.index if k not in set(categories))
    return {k: (float(counts.get(k, 0)) / total if total else 0.0) for k in keys}
