"""Beside per-feature drift: the window's performance estimated without labels, and its joint distribution.

Labels arrive late or never; per-feature tests say "something moved", not "the model got worse". So each
monitor window also gets

* **a performance estimate** (``monitor.estimation``, tasks/monitor/estimation.py): CBPE from the logged
  probabilities for binary and multiclass models, DLE (a model of the absolute and squared error, fitted on
  the version's test days and stored with it as ``loss_estimator.joblib``) for regression. The judged metric
  (the monitor's performance metric when it can be estimated, else ROC AUC or MAE) is compared with the same
  estimate on the version's test days (``test_predictions.parquet``, stored with every version; for
  regression the realized test value the loss model was fitted to), so a bias of the method cancels. A drop
  beyond the tolerance warrants retraining, with the reason in words. The window is also cut into chunks of
  ``chunk_hours`` for the report's estimate-over-time plot, realized values beside them where labels arrived.
* **a multivariate drift test** (``drift.multivariate``, tasks/drift_multivariate.py) on the version's
  stored joint reference rows (``reference_sample.parquet``).

Versions registered before these artifacts existed get neither (the report says why); nothing fails.
Where estimation cannot see: pure concept drift (the inputs unchanged, the outcome's dependence on them
changed) leaves the probabilities, hence the estimate, unchanged; only realized performance from labels
(tasks/monitor/performance.py) shows it. Both are in the report.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from mlcycle.tasks.records.monitoring import EstimateChunk, MetricEstimate, MultivariateDrift, PerformanceEstimate
from mlcycle.tasks.training.references import LOSS_ESTIMATOR_FILE, REFERENCE_SAMPLE_FILE

TEST_PREDICTIONS_FILE = "test_predictions.parquet"

# the project's metric names (tasks/settings/problem.py) -> the estimator's, per task; what is not listed here
# cannot be estimated without labels (log_loss, brier, pr_auc, balanced_accuracy, r2)
ESTIMATED_AS = {
    "binary": {"roc_auc": "roc_auc", "accuracy": "accuracy", "f1": "f1", "precision": "precision",
               "recall": "recall"},
    "multiclass": {"roc_auc_ovr": "roc_auc", "accuracy": "accuracy", "f1_macro": "f1"},
    "regression": {"mae": "mae", "rmse": "rmse"},
}
DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "roc_auc_ovr", "regression": "mae"}
HIGHER_IS_BETTER = {"roc_auc", "accuracy", "f1", "precision", "recall"}


def judged_metric(task: str, configured: str | None, performance_metric: str | None) -> tuple[str, str]:
    """The metric the estimate is judged on, and why, in words.

    ``configured`` (``monitor.estimation.metric``) must be estimable for the task (ValueError naming the ones
    that are); otherwise the monitor's performance metric when estimable, else the task's default.
    """
    estimable = ESTIMATED_AS[task]
    if configured is not None:
        if configured not in estimable:
            raise ValueError(f"monitor.estimation.metric {configured!r} cannot be estimated without labels for a "
                             f"{task} task; choose one of {sorted(estimable)}")
        return configured, "monitor.estimation.metric"
    if performance_metric in estimable:
        return performance_metric, "the monitor's performance metric"
    return DEFAULT_METRIC[task], (f"{performance_metric} cannot be estimated without labels"
                                  if performance_metric else "the task's default")


def window_probabilities(rows: pd.DataFrame, task: str, classes: list[str]) -> np.ndarray:
    """The logged probabilities: binary the positive class's (n,), multiclass one row per record (n, k)."""
    if task == "binary":
        return pd.to_numeric(rows["probability"], errors="coerce").to_numpy(dtype=float)
    matrix = np.array([np.asarray(row, dtype=float) for row in rows["probabilities"]], dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] != len(classes):
        raise ValueError(f"logged probabilities are not one per declared class ({len(classes)})")
    return matrix


def test_probabilities(data: bytes, task: str, classes: list[str]) -> np.ndarray:
    """The version's staged test-day probabilities (``test_predictions.parquet``), as :func:`window_probabilities`."""
    frame = pd.read_parquet(io.BytesIO(data))
    if task == "binary":
        return frame["score"].to_numpy(dtype=float)
    return frame[[f"p:{c}" for c in classes]].to_numpy(dtype=float)


class Estimator:
    """One version's label-free estimator: CBPE on its probabilities, or its stored loss model (DLE)."""

    def __init__(self, task: str, *, threshold: float = 0.5, loss_model=None, features=None, draws: int = 200,
                 seed: int = 0) -> None:
        self.task, self.threshold, self.loss_model, self.features = task, threshold, loss_model, features
        self.draws, self.seed = draws, seed

    @property
    def method(self) -> str:
        return "dle" if self.task == "regression" else "cbpe"

    def estimate(self, rows: pd.DataFrame, classes: list[str]) -> dict[str, MetricEstimate]:
        """Every metric the method estimates for the task, on ``rows`` of the inference log."""
        if self.task == "regression":
            from mlcycle.tasks.features import model_input

            predictions = pd.to_numeric(rows["prediction"], errors="coerce").to_numpy(dtype=float)
            return self.loss_model.estimate(model_input(rows, self.features), predictions,
                                            draws=self.draws, seed=self.seed)
        return self.on_probabilities(window_probabilities(rows, self.task, classes))

    def on_probabilities(self, p: np.ndarray) -> dict[str, MetricEstimate]:
        """CBPE on probabilities as :func:`window_probabilities` gives them."""
        from mlcycle.tasks.monitor import estimation

        if self.task == "binary":
            return estimation.cbpe_binary(p, self.threshold, metrics=list(ESTIMATED_AS["binary"].values()),
                                          draws=self.draws, seed=self.seed)
        return estimation.cbpe_multiclass(p, metrics=list(ESTIMATED_AS["multiclass"].values()),
                                          draws=self.draws, seed=self.seed)


def realized(rows: pd.DataFrame, spec, name: str, threshold: float) -> tuple[float | None, int]:
    """The estimator-named metric on the window's labelled rows (None below two labelled rows or when
    undefined, e.g. a single class for an AUC), and how many rows had a label."""
    from mlcycle.tasks.monitor import estimation
    from mlcycle.tasks.monitor.performance import Undefined, truth

    if spec.target not in rows.columns:
        return None, 0
    labelled = rows[rows[spec.target].notna()]
    n = len(labelled)
    if n < 2:
        return None, n
    try:
        y = truth(labelled[spec.target], spec)
        if spec.task == "regression":
            from mlcycle.tasks.monitor.loss_estimation import realized_regression

            values = realized_regression(y, labelled["prediction"].to_numpy(dtype=float), [name])
        elif spec.task == "binary":
            values = estimation.realized_binary(y, window_probabilities(labelled, "binary", []), threshold, [name])
        else:
            codes = np.array([spec.class_labels.index(c) for c in y])
            p = window_probabilities(labelled, "multiclass", spec.class_labels)
            values = estimation.realized_multiclass(codes, p, [name])
    except (Undefined, ValueError):
        return None, n
    value = values.get(name)
    return (None if value is None or not np.isfinite(value) else float(value)), n


def estimate_window(rows: pd.DataFrame, spec, estimator: Estimator, metric: str, reference_value: float | None,
                    tolerance: float, *, min_rows: int, chunk_hours: int = 1,
                    min_labelled_rows: int = 200) -> PerformanceEstimate:
    """The window's estimate of ``metric`` against ``reference_value``, per chunk as well; see the module doc."""
    name = ESTIMATED_AS[spec.task][metric]
    higher = name in HIGHER_IS_BETTER
    result = PerformanceEstimate(method=estimator.method, metric=metric, rows=len(rows), tolerance=tolerance,
                                 reference_value=reference_value, detail="")
    if len(rows) < min_rows:
        result.detail = f"{len(rows)} rows in the window, fewer than the {min_rows} needed: no estimate"
        return result
    result.estimates = estimator.estimate(rows, spec.class_labels)
    value, n_labelled = realized(rows, spec, name, estimator.threshold)
    judged = result.estimates[name]
    if n_labelled >= min_labelled_rows:
        judged.realized, judged.labelled_rows = value, n_labelled
    result.chunks = estimate_chunks(rows, spec, estimator, name, chunk_hours, min_labelled_rows)
    band = f"{judged.value:.4f} (band {judged.lower:.4f}..{judged.upper:.4f})"
    if reference_value is None:
        result.detail = f"estimated {metric} {band} on {len(rows)} rows; no test-day value to compare with"
        return result
    result.worse_by = (reference_value - judged.value) if higher else (judged.value - reference_value)
    result.degraded = result.worse_by > tolerance
    change = ("drop" if higher else "rise") if result.worse_by > 0 else ("gain" if higher else "fall")
    result.detail = (f"estimated {metric} {band} on {len(rows)} rows without labels vs {reference_value:.4f} on the "
                     f"test days: {change} of {abs(result.worse_by):.4f}, "
                     f"{'beyond' if result.degraded else 'within'} the tolerance {tolerance}")
    return result


def estimate_chunks(rows: pd.DataFrame, spec, estimator: Estimator, name: str, chunk_hours: int,
                    min_labelled_rows: int) -> list[EstimateChunk]:
    """The estimate per ``chunk_hours`` of the window (chunks of fewer than 50 rows get no estimate)."""
    if "ts" not in rows.columns or not len(rows):
        return []
    ts = pd.to_datetime(rows["ts"], utc=True)
    bucket = ts.dt.floor(f"{chunk_hours}h")
    chunks = []
    for start, index in rows.groupby(bucket.to_numpy(), sort=True).indices.items():
        part = rows.iloc[index]
        chunk = EstimateChunk(start=pd.Timestamp(start).to_pydatetime(),
                              end=(pd.Timestamp(start) + pd.Timedelta(hours=chunk_hours)).to_pydatetime(),
                              rows=len(part))
        if len(part) >= 50:
            estimate = estimator.estimate(part, spec.class_labels)[name]
            chunk.value, chunk.lower, chunk.upper = estimate.value, estimate.lower, estimate.upper
            value, n = realized(part, spec, name, estimator.threshold)
            if n >= min(min_labelled_rows, 50):
                chunk.realized, chunk.labelled_rows = value, n
        chunks.append(chunk)
    return chunks


def window_multivariate(rows: pd.DataFrame, reference: pd.DataFrame, features, config,
                        seed: int = 0) -> MultivariateDrift:
    """The multivariate drift test of the window's feature columns against the version's reference rows."""
    from mlcycle.tasks.drift_multivariate import multivariate_drift
    from mlcycle.tasks.features import model_input

    names = [f.name for f in features]
    categorical = [f.name for f in features if f.kind == "categorical"]
    return multivariate_drift(model_input(reference, features), model_input(rows, features), names, categorical,
                              alpha=config.alpha, effect_threshold=config.effect_threshold,
                              max_rows=config.max_rows, folds=config.folds, seed=seed)


def assess_estimate(store, metadata, rows: pd.DataFrame, spec, settings) -> PerformanceEstimate | None:
    """The judged version's estimate on the window (None when estimation is off).

    ``metadata`` is the judged version's ``ModelVersion``; its stored artifacts are sha256-verified before use
    (the loss model is unpickled only then). A version without them gets an estimate-less record saying so.
    """
    from mlcycle.tasks.storage import get_verified

    config, monitor = settings.monitor.estimation, settings.monitor
    if not config.enabled:
        return None
    metric, _why = judged_metric(spec.task, config.metric, monitor.performance_metric)
    tolerance = config.tolerance if config.tolerance is not None else monitor.performance_tolerance
    needed = LOSS_ESTIMATOR_FILE if spec.task == "regression" else TEST_PREDICTIONS_FILE
    record = metadata.artifacts.get(needed)
    if record is None:
        return PerformanceEstimate(method="dle" if spec.task == "regression" else "cbpe", metric=metric,
                                   rows=len(rows), tolerance=tolerance,
                                   detail=f"v{metadata.version} was registered without {needed}: no estimate "
                                          "(a version trained by this release has it)")
    data = get_verified(store, record.key, record.sha256)
    threshold = metadata.threshold if metadata.threshold is not None else 0.5
    if spec.task == "regression":
        import joblib

        estimator = Estimator("regression", loss_model=joblib.load(io.BytesIO(data)), features=metadata.features,
                              draws=config.draws)
        reference = metadata.metrics.model_dump().get(metric)
    else:
        estimator = Estimator(spec.task, threshold=threshold, draws=config.draws)
        on_test = estimator.on_probabilities(test_probabilities(data, spec.task, spec.class_labels))
        reference = on_test[ESTIMATED_AS[spec.task][metric]].value
    try:
        result = estimate_window(rows, spec, estimator, metric, reference, tolerance,
                                 min_rows=settings.drift.min_rows, chunk_hours=config.chunk_hours,
                                 min_labelled_rows=monitor.min_labelled_rows)
        if spec.task != "regression":
            result.detail += f"; {calibration_note(metadata)}"
        return result
    except (ValueError, KeyError) as error:  # the window's rows cannot be estimated on: said in the report
        return PerformanceEstimate(method=estimator.method, metric=metric, rows=len(rows), tolerance=tolerance,
                                   reference_value=reference, detail=f"no estimate: {error}")


def assess_multivariate(store, metadata, rows: pd.DataFrame, settings) -> MultivariateDrift | None:
    """The multivariate test against the judged version's reference rows (None: off, or no reference stored)."""
    from mlcycle.tasks.storage import get_verified

    config = settings.drift.multivariate
    record = metadata.artifacts.get(REFERENCE_SAMPLE_FILE)
    if not config.enabled or record is None or len(rows) < settings.drift.min_rows:
        return None
    reference = pd.read_parquet(io.BytesIO(get_verified(store, record.key, record.sha256)))
    return window_multivariate(rows, reference, metadata.features, config, seed=settings.training.seed)


def calibration_note(metadata) -> str:
    """What a CBPE estimate rests on: how calibrated the judged version's probabilities were on its test days."""
    c = metadata.calibration
    if c is None:
        return f"v{metadata.version} has no calibration report (CBPE assumes its probabilities are calibrated)"
    how = f"calibrated ({c.method})" if c.applied else "as fitted (not calibrated)"
    ece = "" if c.test_ece_after is None else f", test-day ECE {c.test_ece_after:.4f}"
    return f"v{metadata.version}'s probabilities are {how}{ece}"
