"""The records of evaluation: a model's metrics on a test window (overall and per slice), the paired
bootstrap of an improvement, permutation importances, the leakage check's single-feature scores, and the
gate's decision with every rule's result.

Computed by ``tasks/evaluation/`` (metrics.py, bootstrap.py, gate.py) and ``tasks/training/leakage.py``,
stored by the registry with each version.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


class Metrics(BaseModel):
    """A model's metrics on a set of rows; which are filled depends on the task (tasks/settings/problem.py:
    METRICS), the others stay None. ``positives`` and ``threshold`` are binary only."""

    task: str = "binary"
    rows: int
    positives: int | None = None
    threshold: float | None = None
    # binary
    roc_auc: float | None = None
    pr_auc: float | None = None
    log_loss: float | None = None  # binary and multiclass
    brier: float | None = None
    f1: float | None = None
    recall: float | None = None
    precision: float | None = None
    # multiclass
    f1_macro: float | None = None
    balanced_accuracy: float | None = None
    roc_auc_ovr: float | None = None
    accuracy: float | None = None
    # regression
    rmse: float | None = None
    mae: float | None = None
    r2: float | None = None

    def get(self, metric: str) -> float | None:
        return getattr(self, metric)

    def values(self) -> dict[str, float | None]:
        """The task's metrics, by name, in the order tasks/settings/problem.py lists them."""
        from mlcycle.tasks.settings.problem import METRICS

        return {m: getattr(self, m) for m in METRICS[self.task]}


class SliceMetrics(BaseModel):
    feature: str
    value: str
    metrics: Metrics

    @property
    def name(self) -> str:
        return f"{self.feature}={self.value}"


class ModelScores(BaseModel):
    """One model's metrics on a test window: overall and per slice."""

    overall: Metrics
    slices: list[SliceMetrics] = Field(default_factory=list)

    def slice(self, feature: str, value: str) -> SliceMetrics | None:
        return next((s for s in self.slices if s.feature == feature and s.value == value), None)


class BootstrapResult(BaseModel):
    """Paired bootstrap of the improvement of ``metric`` (positive: the challenger is better)."""

    metric: str
    samples: int
    seed: int
    confidence: float
    observed: float  # the improvement on the test window itself
    mean: float
    low: float
    high: float
    valid_samples: int  # resamples where the metric was defined (both classes drawn)


class FeatureLeakage(BaseModel):
    feature: str
    score: float | None  # the single-feature model's validation score; None where undefined


class LeakageCheck(BaseModel):
    """How well each feature *alone* predicts the target: a model on that one column, fitted on the training
    window and scored on the validation window (tasks/training/leakage.py). The gate judges it."""

    metric: str  # roc_auc (binary) | balanced_accuracy (multiclass) | r2 (regression)
    train_rows: int
    validation_rows: int
    features: list[FeatureLeakage]  # highest score first

    def score(self, feature: str) -> float | None:
        return next((f.score for f in self.features if f.feature == feature), None)


class ReliabilityBin(BaseModel):
    """One bin of a reliability diagram: rows whose predicted probability lies in [low, high)."""

    low: float
    high: float
    rows: int
    predicted: float  # their mean predicted probability
    observed: float  # how often the predicted outcome happened among them


class CalibrationReport(BaseModel):
    """How well a classifier's probabilities were calibrated, and whether training calibrated them
    (tasks/evaluation/calibration.py): stored with the version."""

    method: str  # sigmoid | isotonic | temperature
    bins: int
    max_ece: float
    validation_rows: int
    applied: bool
    reason: str
    ece_before: float  # validation days, the pipeline fitted on the training days alone
    ece_after: float  # validation days, the map cross-fitted on the other half of them
    p_value: float  # how often outcomes drawn from the model's own probabilities show an ECE >= ece_before
    chance_ece: float  # the 95th percentile of those ECEs: what calibrated probabilities show on these rows
    alpha: float  # calibration needs p_value below this
    log_loss_before: float
    log_loss_after: float
    reliability_before: list[ReliabilityBin]
    reliability_after: list[ReliabilityBin]
    test_ece_before: float | None = None  # test days: the registered pipeline without the map
    test_ece_after: float | None = None  # test days: as registered and served


class RuleResult(BaseModel):
    # floor:roc_auc | ceiling:brier | champion | min_delta | bootstrap_ci | slice:region=south |
    # leakage[:feature] | too_perfect[:metric]
    rule: str
    passed: bool
    observed: float | None = None
    required: str = ""  # e.g. ">= 0.7"
    detail: str = ""


class GateDecision(BaseModel):
    """The outcome of the gate, with every rule's result: stored with the version, shown in the UI."""

    promote: bool
    primary_metric: str
    champion_version: int | None
    rules: list[RuleResult]
    summary: str
    decided_at: dt.datetime
    bootstrap: BootstrapResult | None = None

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]


class FeatureImportance(BaseModel):
    feature: str
    importance: float  # mean drop of the gate's primary metric when the feature is permuted
    std: float
