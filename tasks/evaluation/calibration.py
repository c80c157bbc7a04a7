"""Calibration of a classifier on the validation days, decided on its measured reliability.

Label-free performance estimation (CBPE, tasks/monitor/estimation.py) reads a model's probabilities as the
chance of being right; it is only as good as they are calibrated. So training measures it and corrects it
when needed, before the model is scored on its test days and registered:

1. **Out-of-sample probabilities.** The search's best pipeline, fitted on the *training* days alone,
   predicts the *validation* days (the served pipeline was refitted on both, so its own validation
   probabilities are in-sample and look better calibrated than they are).
2. **Reliability before.** The expected calibration error (ECE, Naeini et al. 2015; Guo et al. 2017) of
   those probabilities: rows put in ``bins`` equal-width bins of predicted probability; the ECE is the
   row-weighted mean of ``|observed frequency - mean predicted probability|`` over the bins. Binary: of the
   positive class's probability (what CBPE reads); multiclass: of the most probable class's probability
   against being right (top-label ECE).
3. **Reliability after, measured honestly.** The map is fitted on one half of the validation rows and
   applied to the other, both ways (seeded, stratified): the ECE of those cross-fitted probabilities is
   the ECE *after*. A map evaluated on its own rows would always look better.
4. **Decision.** Calibrated when three things hold: the ECE before exceeds ``max_ece``; it is beyond what
   chance gives calibrated probabilities on as many rows; and the cross-fitted map lowers both the ECE and
   the log loss (a proper scoring rule, less noisy than the ECE) out of sample. Else the pipeline is
   registered as it is, and the report says which condition failed. *Beyond chance*: even calibrated
   probabilities show an ECE of about 0.03 on 1,500 rows in 10 bins, from the sampling noise of each bin's
   frequency. Consistency resampling (Broecker & Smith 2007) draws the outcomes ``draws`` times from the
   model's own probabilities; the p-value is the share of those ECEs at or above the observed one, and it
   must be below ``alpha``. Why both guards (benchmarks/calibration.py, real tables, 5 seeds per table and
   family): with ``max_ece`` 0.02 and no chance test, binary models whose validation ECE of 0.02-0.04 was
   mostly noise were "calibrated" 5 times in 10 and came out worse on their test days (gradient boosting:
   test ECE 0.025 -> 0.031, CBPE's ROC AUC error 0.007 -> 0.024); with the chance test still 2 in 5 (ECE
   0.033 and 0.042, significant, yet the map did not carry over); with ``max_ece`` 0.05 none, while the
   multiclass gradient boosting, truly overconfident (validation ECE 0.12-0.21), was calibrated 4 times in
   5 and went from a test ECE of 0.149 to 0.067 and a CBPE error of 0.100 to 0.038.
5. **The served model.** The map refitted on all validation rows, applied to the train + validation
   pipeline (:class:`~mlcycle.tasks.calibrated.CalibratedModel`): the same arrangement as scikit-learn's
   ``CalibratedClassifierCV(ensemble=False)`` (the calibrator from out-of-fold predictions, the estimator
   refitted on all rows), with the time split as the fold. Measured against serving the training-days fit
   itself with its map: calibration alike (test ECE 0.067 vs 0.059), but that model never saw the validation
   days and lost test ROC AUC in 2 of 4 runs (0.750 -> 0.735); the refit kept it (within 0.002).

Methods (``training.calibration.method``): ``sigmoid`` (Platt scaling on the log-odds), ``isotonic``
(needs a thousand validation rows or more, else it overfits: the cross-fitted ECE shows it),
``temperature`` (one parameter; keeps the most probable class), ``auto``: sigmoid for binary,
temperature for multiclass.

Where it does not help: a map learned on the validation days corrects the model's confidence *there*;
when the relation between features and outcome changes later (concept drift), live probabilities are
mis-calibrated again and no map fitted before can know it (the monitor's realized performance can).
"""

from __future__ import annotations

import numpy as np

from mlcycle.tasks.calibrated import EPS, CalibratedModel, ProbabilityMap, logit
from mlcycle.tasks.records.evaluation import CalibrationReport, ReliabilityBin
from mlcycle.tasks.settings.monitoring import CalibrationSettings


def positions(y, classes) -> np.ndarray:
    """Each label's column in ``classes`` (the pipeline's ``classes_`` order)."""
    index = {str(c): i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in np.asarray(y, dtype=object)], dtype=np.int64)


def bin_stats(y_index: np.ndarray, proba: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin (module docstring, step 2; binary on the positive column, else top-label): the rows,
    the sum of predicted probabilities and the sum of outcomes, as arrays of ``bins`` entries."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape[1] == 2:
        confidence, hit = proba[:, 1], (y_index == 1).astype(np.float64)
    else:
        confidence = proba.max(axis=1)
        hit = (proba.argmax(axis=1) == y_index).astype(np.float64)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    return (np.bincount(which, minlength=bins), np.bincount(which, confidence, minlength=bins),
            np.bincount(which, hit, minlength=bins))


def reliability(y_index: np.ndarray, proba: np.ndarray, bins: int) -> list[ReliabilityBin]:
    """The reliability diagram's non-empty bins."""
    rows, predicted, observed = bin_stats(y_index, proba, bins)
    return [ReliabilityBin(low=b / bins, high=(b + 1) / bins, rows=int(rows[b]),
                           predicted=float(predicted[b] / rows[b]), observed=float(observed[b] / rows[b]))
            for b in range(bins) if rows[b]]


def expected_calibration_error(y_index: np.ndarray, proba: np.ndarray, bins: int) -> float:
    """ECE: the row-weighted mean gap between observed frequency and predicted probability over the bins."""
    rows, predicted, observed = bin_stats(y_index, proba, bins)
    return float(np.abs(observed - predicted).sum() / rows.sum()) if rows.sum() else float("nan")


def consistency_p_value(y_index: np.ndarray, proba: np.ndarray, bins: int, *, draws: int,
                        seed: int) -> tuple[float, float]:
    """(p-value, 95th percentile) of the observed ECE among ECEs of outcomes drawn from ``proba`` itself
    (module docstring, step 4): how often a calibrated model shows an ECE this large on these rows."""
    proba = np.asarray(proba, dtype=np.float64)
    observed = expected_calibration_error(y_index, proba, bins)
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(proba, axis=1)
    cumulative[:, -1] = 1.0
    null = np.empty(draws)
    for d in range(draws):
        drawn = (rng.random((len(proba), 1)) > cumulative).sum(axis=1)
        null[d] = expected_calibration_error(drawn, proba, bins)
    return float((1 + (null >= observed).sum()) / (draws + 1)), float(np.quantile(null, 0.95))


def log_loss(y_index: np.ndarray, proba: np.ndarray) -> float:
    picked = np.asarray(proba, dtype=np.float64)[np.arange(len(y_index)), y_index]
    return float(-np.log(np.clip(picked, EPS, 1.0)).mean())


def resolve_method(method: str, n_classes: int) -> str:
    if method == "auto":
        return "sigmoid" if n_classes == 2 else "temperature"
    return method


def fit_map(method: str, y_index: np.ndarray, proba: np.ndarray) -> ProbabilityMap:
    """The calibration map of ``method`` fitted on ``proba`` (n, k) and the labels' columns ``y_index``."""
    from scipy.optimize import minimize_scalar

    proba = np.asarray(proba, dtype=np.float64)
    k = proba.shape[1]
    binary = k == 2
    if method == "temperature":
        logp = np.log(np.clip(proba, EPS, 1.0))

        def nll(log_t: float) -> float:
            z = logp / np.exp(log_t)
            z -= z.max(axis=1, keepdims=True)
            return float(-(z[np.arange(len(z)), y_index] - np.log(np.exp(z).sum(axis=1))).mean())

        best = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
        return ProbabilityMap(method, binary, temperature=float(np.exp(best.x)))
    columns = [1] if binary else list(range(k))
    if method == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        slopes, intercepts = [], []
        for j in columns:
            target = (y_index == j).astype(int)
            if target.min() == target.max():  # one outcome only in these rows: leave the column as it is
                slopes.append(1.0), intercepts.append(0.0)
                continue
            fit = LogisticRegression(C=1e4, max_iter=1000).fit(logit(proba[:, [j]]), target)
            slopes.append(float(fit.coef_[0, 0])), intercepts.append(float(fit.intercept_[0]))
        return ProbabilityMap(method, binary, slopes=tuple(slopes), intercepts=tuple(intercepts))
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        xs, ys = [], []
        for j in columns:
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                proba[:, j], (y_index == j).astype(float))
            xs.append(tuple(float(v) for v in iso.X_thresholds_)), ys.append(tuple(float(v) for v in iso.y_thresholds_))
        return ProbabilityMap(method, binary, knots_x=tuple(xs), knots_y=tuple(ys))
    raise ValueError(f"unknown calibration method {method!r} (sigmoid | isotonic | temperature | auto)")


def cross_fitted(method: str, y_index: np.ndarray, proba: np.ndarray, seed: int) -> np.ndarray:
    """Calibrated probabilities of each validation row from a map fitted on the other half (step 3)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y_index), dtype=np.int64)
    for label in np.unique(y_index):  # stratified halves: each class split evenly
        rows = np.flatnonzero(y_index == label)
        fold[rng.permutation(rows)] = np.arange(len(rows)) % 2
    out = np.empty_like(np.asarray(proba, dtype=np.float64))
    for f in (0, 1):
        fit_rows, apply_rows = fold != f, fold == f
        out[apply_rows] = fit_map(method, y_index[fit_rows], proba[fit_rows]).apply(proba[apply_rows])
    return out


def calibration_decision(y_validation, proba_validation: np.ndarray, classes, *, method: str, bins: int,
                         max_ece: float, seed: int, alpha: float = 0.05,
                         draws: int = 200) -> tuple[ProbabilityMap | None, CalibrationReport]:
    """Steps 2-4 of the module docstring: the map to apply (None: none) and the report of the decision.

    ``proba_validation`` are the out-of-sample probabilities of the validation rows, in ``classes`` order.
    """
    y_index = positions(y_validation, classes)
    proba = np.asarray(proba_validation, dtype=np.float64)
    method = resolve_method(method, proba.shape[1])
    after = cross_fitted(method, y_index, proba, seed)
    ece_before, ece_after = expected_calibration_error(y_index, proba, bins), expected_calibration_error(
        y_index, after, bins)
    p_value, chance = consistency_p_value(y_index, proba, bins, draws=draws, seed=seed)
    report = CalibrationReport(
        method=method, bins=bins, max_ece=max_ece, validation_rows=len(y_index), applied=False, reason="",
        ece_before=ece_before, ece_after=ece_after, p_value=p_value, chance_ece=chance, alpha=alpha,
        log_loss_before=log_loss(y_index, proba),
        log_loss_after=log_loss(y_index, after), reliability_before=reliability(y_index, proba, bins),
        reliability_after=reliability(y_index, after, bins))
    if ece_before <= max_ece:
        report.reason = (f"validation ECE {ece_before:.4f} is within training.calibration.max_ece {max_ece}: "
                         "registered as fitted")
        return None, report
    if p_value >= alpha:
        report.reason = (f"validation ECE {ece_before:.4f} exceeds max_ece {max_ece} but not what chance gives "
                         f"calibrated probabilities on {len(y_index)} rows (p = {p_value:.3f} >= alpha {alpha}; 95% "
                         f"of calibrated ECEs are below {chance:.4f}): registered as fitted")
        return None, report
    loss_before, loss_after = report.log_loss_before, report.log_loss_after
    if ece_after >= ece_before or loss_after >= loss_before:
        report.reason = (f"validation ECE {ece_before:.4f} exceeds max_ece {max_ece}, but {method} calibration did "
                         f"not improve it out of sample (ECE {ece_after:.4f}, log loss {loss_before:.4f} -> "
                         f"{loss_after:.4f}): registered as fitted")
        return None, report
    report.applied = True
    report.reason = (f"validation ECE {ece_before:.4f} exceeds max_ece {max_ece} and chance (p = {p_value:.3f}); "
                     f"{method} calibration lowers it to "
                     f"{ece_after:.4f} and the log loss {loss_before:.4f} -> {loss_after:.4f} out of sample: "
                     "registered calibrated")
    return fit_map(method, y_index, proba), report


def calibrate_pipeline(pipeline, frames, y, features, settings: CalibrationSettings,
                       seed: int) -> tuple[object, CalibrationReport | None]:
    """Steps 1-5 of the module docstring for a fitted classification ``pipeline`` (refitted on train +
    validation): the model to register and the report. ``frames``/``y`` by split name, as training has them.

    The report is None only when the training days lack a class the validation days have (the out-of-sample
    fit cannot give it a probability): the pipeline is then registered as fitted.
    """
    from sklearn.base import clone

    from mlcycle.tasks.features import model_input

    base = clone(pipeline).fit(model_input(frames["train"], features), y["train"])
    if [str(c) for c in base.classes_] != [str(c) for c in pipeline.classes_]:
        return pipeline, None
    proba = base.predict_proba(model_input(frames["validation"], features))
    mapping, report = calibration_decision(y["validation"], proba, base.classes_, method=settings.method,
                                           bins=settings.bins, max_ece=settings.max_ece, seed=seed,
                                           alpha=settings.alpha, draws=settings.draws)
    return calibrated(pipeline, mapping), report


def as_proba(scores: np.ndarray) -> np.ndarray:
    """(n, k) probabilities from a task's scores (tasks/predictions.py: binary scores are the positive column)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.column_stack([1.0 - scores, scores]) if scores.ndim == 1 else scores


def with_test_reliability(report: CalibrationReport, y_test, raw_test: np.ndarray, served_test: np.ndarray,
                          classes) -> CalibrationReport:
    """The report with the ECE on the test days of the pipeline without and with the map (scores as
    tasks/predictions.py gives them, in ``classes`` order: binary ``[0, 1]``): days neither has seen."""
    y_index = positions(y_test, classes)
    return report.model_copy(update={
        "test_ece_before": expected_calibration_error(y_index, as_proba(raw_test), report.bins),
        "test_ece_after": expected_calibration_error(y_index, as_proba(served_test), report.bins)})


def calibrated(pipeline, mapping: ProbabilityMap | None):
    """The model to register: ``pipeline`` itself, or it wrapped with ``mapping``."""
    return pipeline if mapping is None else CalibratedModel(pipeline, mapping)
