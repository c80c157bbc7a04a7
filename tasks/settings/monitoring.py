"""Settings of the monitor's checks: drift (with the multivariate test) and performance estimated without labels,
and the calibration training applies so that estimates from probabilities can be trusted.

``drift`` with ``drift.multivariate``, ``monitor.estimation`` and ``training.calibration``
(tasks/settings/sections.py); every field is commented in mlcycle.yaml.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlcycle.tasks.settings.base import Section


class MultivariateSettings(Section):
    """The multivariate drift test (tasks/drift_multivariate.py): a classifier telling reference rows from live ones.

    Why 0.55: with 5,000 rows a side the AUC of a classifier on identically distributed rows stays within
    0.5 +- 0.02 (its standard error is about 0.006), so 0.55 is far outside chance while still small as an
    effect: a change that lets a classifier order only 55% of pairs right is the least worth acting on.
    """

    enabled: bool = True
    alpha: float = Field(default=0.01, gt=0, lt=1)  # its test of AUC = 0.5 (Mann-Whitney), on its own
    effect_threshold: float = Field(default=0.55, gt=0.5, lt=1)  # the AUC an effect must reach as well
    max_rows: int = Field(default=5000, ge=100)  # rows a side (seeded samples of the window and the reference)
    folds: int = Field(default=5, ge=2)  # cross-validation folds: every row is scored by a model that never saw it
    reference_rows: int = Field(default=5000, ge=100)  # joint rows of the fitted data stored with each version



class EstimationSettings(Section):
    """Performance estimated without labels (tasks/monitor/estimation.py): CBPE for classification, DLE for
    regression, per window and per ``chunk_hours`` inside it, against the same estimate on the test days."""

    enabled: bool = True
    metric: str | None = None  # None: monitor.performance_metric when it can be estimated, else the task's default
    tolerance: float | None = Field(default=None, ge=0)  # None: monitor.performance_tolerance
    draws: int = Field(default=200, ge=20)  # parametric bootstrap draws behind each estimate's uncertainty
    chunk_hours: int = Field(default=1, ge=1)  # the report's estimate-over-time plot: one point per this many hours


class CalibrationSettings(Section):
    """Calibration of a classifier on its validation days (tasks/evaluation/calibration.py).

    Why 0.05 (benchmarks/calibration.py, real tables, 5 seeds per table and family): a map fitted to a small
    validation ECE does not carry over; binary models at a validation ECE of 0.03-0.04, significant though
    it was, came out of calibration worse on their test days (ECE 0.021 -> 0.034, CBPE's ROC AUC error 0.004
    -> 0.038), while every model above 0.1 came out better (multiclass gradient boosting: test ECE 0.149 ->
    0.067, CBPE error 0.100 -> 0.038). A two-parameter map fitted on ~1,500 rows is itself uncertain by a
    few points of probability; below 0.05 it corrects little more than its own error. Why 10 bins: with the
    few thousand validation rows of a training window each bin keeps a few hundred rows, enough for a
    frequency within a few points.
    Why the test against chance as well: on those rows even a calibrated model shows an ECE of 0.02-0.04 from
    sampling noise alone, and a map fitted to that noise made test-day calibration and CBPE worse
    (benchmarks/calibration.py).
    """

    enabled: bool = True
    method: Literal["auto", "sigmoid", "isotonic", "temperature"] = "auto"  # auto: sigmoid binary, temperature else
    max_ece: float = Field(default=0.05, ge=0, lt=1)  # calibrate when the validation ECE exceeds this
    bins: int = Field(default=10, ge=2, le=100)  # equal-width probability bins of the ECE
    alpha: float = Field(default=0.05, gt=0, lt=1)  # the ECE must also be beyond chance at this level
    draws: int = Field(default=200, ge=20)  # outcome draws of that test (consistency resampling)


class DriftSettings(Section):
    """Drift decision thresholds; the defaults and their sources are documented in tasks/drift.py."""

    min_rows: int = Field(default=500, ge=1)  # below this many current rows: "not enough data"
    alpha: float = Field(default=0.05, gt=0, lt=1)  # false discovery rate (Benjamini-Hochberg)
    psi_threshold: float = 0.2
    wasserstein_threshold: float = 0.1  # Wasserstein-1 / reference standard deviation
    js_threshold: float = 0.05  # Jensen-Shannon distance, base 2
    unseen_threshold: float = 0.01  # share of rows with a category never seen in training
    null_rate_threshold: float = 0.05  # absolute change in the null rate
    prediction_psi_threshold: float = 0.2
    drift_share: float = Field(default=0.5, gt=0, le=1)  # rule "share": share of drifted features
    # "importance": drifted features weighed by the model's permutation importance; "share": counted alike
    rule: Literal["importance", "share"] = "importance"
    importance_share: float = Field(default=0.5, gt=0, le=1)  # rule "importance": their share of the importance
    multivariate: MultivariateSettings = Field(default_factory=MultivariateSettings)
    reference_sample_size: int = Field(default=5000, ge=100)  # per numeric feature, kept in the profile
