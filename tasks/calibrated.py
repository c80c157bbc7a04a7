"""A classifier whose probabilities pass through a calibration map: what a calibrated version registers and serves.

:class:`CalibratedModel` wraps the fitted pipeline (refitted on train + validation, as the search leaves it)
and a :class:`ProbabilityMap` learned out of sample: on the validation days' probabilities of the same
pipeline fitted on the training days alone (tasks/evaluation/calibration.py). It is a scikit-learn
classifier (``classes_``, ``predict_proba``, ``predict``), so scoring, permutation importance, the champion
comparison, the monitor and the service use it exactly as the plain pipeline.

The maps, applied column by column to the pipeline's ``predict_proba`` (in its ``classes_`` order):

* ``sigmoid`` -- Platt scaling (Platt 1999) on the log-odds: ``p' = 1 / (1 + exp(-(a * logit(p) + b)))``,
  per class (one-vs-rest), then renormalised to sum to 1 when there are more than two classes (as
  scikit-learn's ``CalibratedClassifierCV`` does);
* ``isotonic`` -- a monotone step function (Zadrozny & Elkan 2002), interpolated linearly between its
  thresholds, per class, renormalised the same way;
* ``temperature`` -- temperature scaling (Guo et al. 2017): ``softmax(log p / T)``, one parameter for all
  classes, which leaves the ranking and the most probable class unchanged.

Pure numpy at prediction time; it derives from scikit-learn's ``BaseEstimator`` and ``ClassifierMixin`` only
so scikit-learn's scorers treat it as a classifier (the bento ships this module: unpickling a calibrated
version needs it; scikit-learn is there anyway for the pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

EPS = 1e-12  # probabilities are clipped into [EPS, 1 - EPS] before a log or a logit


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class ProbabilityMap:
    """One calibration map (module docstring): ``method`` and its fitted parameters, per class column.

    ``slopes``/``intercepts`` (sigmoid), ``knots_x``/``knots_y`` (isotonic, one pair of arrays per column),
    ``temperature`` (temperature). Binary maps hold one column: the positive class's probability.
    """

    method: str
    binary: bool
    slopes: tuple[float, ...] = ()
    intercepts: tuple[float, ...] = ()
    knots_x: tuple[tuple[float, ...], ...] = ()
    knots_y: tuple[tuple[float, ...], ...] = ()
    temperature: float = 1.0

    def column(self, j: int, p: np.ndarray) -> np.ndarray:
        """The map of column ``j`` applied to probabilities ``p`` (sigmoid or isotonic)."""
        if self.method == "sigmoid":
            return 1.0 / (1.0 + np.exp(-(self.slopes[j] * logit(p) + self.intercepts[j])))
        return np.interp(p, self.knots_x[j], self.knots_y[j])

    def apply(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, shaped like ``proba`` (n, k), rows summing to 1."""
        proba = np.asarray(proba, dtype=np.float64)
        if self.method == "temperature":
            logits = np.log(np.clip(proba, EPS, 1.0)) / self.temperature
            logits -= logits.max(axis=1, keepdims=True)
            out = np.exp(logits)
            return out / out.sum(axis=1, keepdims=True)
        if self.binary:
            positive = np.clip(self.column(0, proba[:, 1]), 0.0, 1.0)
            return np.column_stack([1.0 - positive, positive])
        out = np.column_stack([self.column(j, proba[:, j]) for j in range(proba.shape[1])])
        total = out.sum(axis=1, keepdims=True)
        uniform = np.full_like(out, 1.0 / out.shape[1])
        return np.where(total > 0, out / np.where(total > 0, total, 1.0), uniform)


class CalibratedModel(ClassifierMixin, BaseEstimator):
    """A fitted classifier and its calibration map (module docstring). Already fitted: it is never refitted."""

    def __init__(self, model=None, calibration: ProbabilityMap | None = None):
        self.model = model
        self.calibration = calibration

    @property
    def classes_(self) -> np.ndarray:
        return self.model.classes_

    @property
    def named_steps(self):  # the wrapped pipeline's steps, for whoever inspects the estimator
        return self.model.named_steps

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, X, y=None):  # noqa: ARG002 - a calibrated version is fitted by training, never here
        raise TypeError("a CalibratedModel is fitted by training (tasks/evaluation/calibration.py); "
                        "refit the wrapped pipeline and calibrate it again instead")

    def predict_proba(self, X) -> np.ndarray:
        return self.calibration.apply(self.model.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        return np.asarray(self.classes_)[self.predict_proba(X).argmax(axis=1)]
