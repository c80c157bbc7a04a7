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

    Why 0.02: CBPE estimates accuracy as the mean confidence of the predicted class, so a model whose
    probabilities are off by an ECE of e misplaces that estimate by up to about e; 0.02 is the tolerance the
    estimate is held to (monitor.performance_tolerance's order). Why 10 bins: with the few thousand validation
    rows of a training window each bin keeps a few hundred rows, enough for a frequency within a few points.
    """

    enabled: bool = True
    method: Literal["auto", "sigmoid", "isotonic", "temperature"] = "auto"  # auto: sigmoid binary, temperature else
    max_ece: float = Field(default=0.02, ge=0, lt=1)  # calibrate when the validation ECE exceeds this
    bins: int = Field(default=10, ge=2, le=100)  # equal-width probability bins of the ECE
    draws: int = Field(default=200, ge=20)  # outcome draws of the report's test of the ECE against chance


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
