"""The paired bootstrap of a challenger's improvement over the champion, for every task's metrics.

Resample test rows with replacement; score both models on the *same* resample each time. Pairing removes
the between-resample variance the two models share, so the interval is about the difference, not the two
metrics. A resample is a row of multiplicities (weights), and every metric is computed for a chunk of
resamples at once by its weighted form (tasks/evaluation/metrics.py), which equals scikit-learn's metric on
the resampled rows: the same resampling for binary, multiclass and regression, seeded (``gate.bootstrap_seed``)
and reproducible, drawn in chunks of at most ``max_cells`` weights.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from mlcycle.tasks.evaluation.metrics import (
    class_index,
    improvement,
    weighted_accuracy,
    weighted_average_precision,
    weighted_balanced_accuracy,
    weighted_brier,
    weighted_f1_macro,
    weighted_log_loss,
    weighted_mae,
    weighted_multiclass_log_loss,
    weighted_r2,
    weighted_rmse,
    weighted_roc_auc,
    weighted_roc_auc_ovr,
    weighted_threshold_counts,
)
from mlcycle.tasks.records.evaluation import BootstrapResult

Weighted = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _precision(y, scores, weights, threshold):
    tp, fp, _ = weighted_threshold_counts(y, scores, weights, threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fp > 0, tp / (tp + fp), 0.0)


def _recall(y, scores, weights, threshold):
    tp, _, positives = weighted_threshold_counts(y, scores, weights, threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(positives > 0, tp / positives, 0.0)


def _f1(y, scores, weights, threshold):
    tp, fp, positives = weighted_threshold_counts(y, scores, weights, threshold)
    denominator = tp + fp + positives  # 2 tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, 0.0)


def weighted_metric(task: str, metric: str, threshold: float = 0.5) -> Weighted:
    """The weighted form of ``task``'s ``metric``: ``fn(y, predictions, weights) -> one value per resample``."""
    table: dict[str, dict[str, Weighted]] = {
        "binary": {"roc_auc": weighted_roc_auc, "pr_auc": weighted_average_precision, "log_loss": weighted_log_loss,
                   "brier": weighted_brier, "f1": partial(_f1, threshold=threshold),
                   "recall": partial(_recall, threshold=threshold),
                   "precision": partial(_precision, threshold=threshold)},
        "multiclass": {"log_loss": weighted_multiclass_log_loss, "f1_macro": weighted_f1_macro,
                       "balanced_accuracy": weighted_balanced_accuracy, "roc_auc_ovr": weighted_roc_auc_ovr,
                       "accuracy": weighted_accuracy},
        "regression": {"rmse": weighted_rmse, "mae": weighted_mae, "r2": weighted_r2},
    }
    if metric not in table.get(task, {}):
        raise ValueError(f"no bootstrap for metric {metric!r} of a {task} task; choose one of "
                         f"{sorted(table.get(task, {}))}")
    return table[task][metric]


def paired_bootstrap(y, challenger, champion, metric: str, *, samples: int, seed: int, confidence: float = 0.95,
                     max_cells: int = 4_000_000, task: str = "binary", classes: list[str] | None = None,
                     threshold: float = 0.5) -> BootstrapResult:
    """The improvement of ``metric`` (positive: the challenger is better) with its paired bootstrap interval.

    ``challenger``/``champion`` are the two models' predictions on the same rows, as
    :func:`~mlcycle.tasks.evaluation.metrics.compute_metrics` takes them for ``task`` (multiclass: the
    probabilities in ``classes`` order); ``threshold`` is the binary decision threshold of F1/recall/precision.
    """
    fn = weighted_metric(task, metric, threshold)
    if task == "multiclass":
        y = class_index(y, classes)
    else:
        y = np.asarray(y, dtype=float)
    a = np.asarray(challenger, dtype=float)
    b = np.asarray(champion, dtype=float)
    if not len(y) == len(a) == len(b):
        raise ValueError(f"paired bootstrap needs equal lengths, got y={len(y)}, challenger={len(a)}, "
                         f"champion={len(b)}")
    n = len(y)
    ones = np.ones((1, n))
    observed = improvement(metric, float(fn(y, a, ones)[0]), float(fn(y, b, ones)[0]))
    rng = np.random.default_rng(seed)
    chunk = max(1, min(samples, max_cells // max(n, 1)))
    deltas = []
    done = 0
    while done < samples:
        size = min(chunk, samples - done)
        draws = rng.integers(0, n, size=(size, n))
        offsets = (np.arange(size) * n)[:, None]
        weights = np.bincount((draws + offsets).ravel(), minlength=size * n).reshape(size, n).astype(float)
        deltas.append(improvement(metric, fn(y, a, weights), fn(y, b, weights)))
        done += size
    d = np.concatenate(deltas)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        raise ValueError(f"{metric} is undefined on every bootstrap resample (does the test window hold "
                         "both classes, or a target that varies?)")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(d, [tail, 100 - tail])
    return BootstrapResult(metric=metric, samples=samples, seed=seed, confidence=confidence, observed=observed,
                           mean=float(d.mean()), low=float(low), high=float(high), valid_samples=len(d))
