"""Metrics on the test window, per task, their weighted forms for the paired bootstrap, and permutation importance.

Metrics (:func:`compute_metrics`), per ``dataset.task`` (tasks/settings/problem.py: METRICS):

* binary: ROC AUC, PR AUC (average precision), log loss, Brier score, and F1, recall and precision at the
  model's decision threshold, from the positive class's probability;
* multiclass: log loss, macro F1, balanced accuracy, one-vs-rest ROC AUC (macro) and accuracy, from every
  class's probability in ``dataset.class_labels`` order (the predicted class is the most probable one);
* regression: RMSE, MAE and R2, from the predicted values.

The same per value of each categorical feature (:func:`slice_metrics`; values as canonical texts, nulls the
``__missing__`` slice). A metric is ``None`` where the rows cannot define it: AUCs with a single class,
R2 with a constant target.

"Improvement" (:func:`improvement`) is always oriented so that positive is better: challenger minus champion
for a higher-is-better metric, champion minus challenger for a lower-is-better one.

Why hand-written weighted metrics: the bootstrap (tasks/evaluation/bootstrap.py) needs the metric on ~1000
resamples. A resample is represented by per-row multiplicities (weights), and every resample's metric is
computed in one vectorised pass (the rank-based AUC over the scores sorted once, :func:`weighted_roc_auc`;
confusion counts as weight-matrix products for the class metrics): ~1000 resamples of a few thousand rows
take well under a second, where 1000 calls to scikit-learn take tens of seconds. The weighted formulas
reduce to scikit-learn's exactly at unit weights (tested); the multiclass and regression metrics of
:func:`compute_metrics` *are* those formulas at unit weights, so the bootstrap and the reported metric
cannot disagree. Multiclass ROC AUC is the mean of the one-vs-rest AUCs of the classes present in the rows
(scikit-learn's ``roc_auc_score(multi_class="ovr")`` when every class is present; it refuses otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlcycle.tasks.records.evaluation import FeatureImportance, Metrics, ModelScores, SliceMetrics
from mlcycle.tasks.settings.problem import LOWER_IS_BETTER, category_keys_of

MISSING_SLICE = "__missing__"
_EPS = 1e-15


def compute_metrics(y, predictions, threshold: float | None = 0.5, *, task: str = "binary",
                    classes: list[str] | None = None) -> Metrics:
    """The task's metrics of ``predictions`` against ``y`` (binary 0/1, multiclass class texts, regression values).

    ``predictions``: binary the positive class's probability (n,), multiclass every class's probability in
    ``classes`` order (n, k), regression the predicted values (n,). ``threshold`` is binary only.
    """
    if task == "multiclass":
        return _multiclass_metrics(y, predictions, classes)
    if task == "regression":
        return _regression_metrics(y, predictions)
    return _binary_metrics(y, predictions, 0.5 if threshold is None else threshold)


def _binary_metrics(y, scores, threshold: float) -> Metrics:
    from sklearn.metrics import average_precision_score

    y = np.asarray(y, dtype=np.int64)
    p = np.clip(np.asarray(scores, dtype=float), _EPS, 1 - _EPS)
    positives = int(y.sum())
    both = 0 < positives < len(y)
    predicted = p >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    fn = positives - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return Metrics(
        rows=len(y), positives=positives, threshold=threshold,
        roc_auc=float(weighted_roc_auc(y, p, np.ones((1, len(y))))[0]) if both else None,
        pr_auc=float(average_precision_score(y, p)) if both else None,
        log_loss=float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        brier=float(np.mean((p - y) ** 2)),
        f1=float(f1), recall=float(recall), precision=float(precision),
    )


def _defined(values: np.ndarray) -> float | None:
    value = float(values[0])
    return None if np.isnan(value) else value


def _multiclass_metrics(y, probabilities, classes: list[str] | None) -> Metrics:
    index = class_index(y, classes)
    p = np.asarray(probabilities, dtype=float).reshape(len(index), -1)
    ones = np.ones((1, len(index)))
    return Metrics(
        task="multiclass", rows=len(index),
        log_loss=_defined(weighted_multiclass_log_loss(index, p, ones)),
        f1_macro=_defined(weighted_f1_macro(index, p, ones)),
        balanced_accuracy=_defined(weighted_balanced_accuracy(index, p, ones)),
        roc_auc_ovr=_defined(weighted_roc_auc_ovr(index, p, ones)),
        accuracy=_defined(weighted_accuracy(index, p, ones)),
    )


def _regression_metrics(y, values) -> Metrics:
    y = np.asarray(y, dtype=float)
    v = np.asarray(values, dtype=float)
    ones = np.ones((1, len(y)))
    return Metrics(task="regression", rows=len(y), rmse=_defined(weighted_rmse(y, v, ones)),
                   mae=_defined(weighted_mae(y, v, ones)), r2=_defined(weighted_r2(y, v, ones)))


def class_index(y, classes: list[str] | None) -> np.ndarray:
    """Multiclass labels (canonical class texts) as positions in ``classes``; ValueError naming an unknown one."""
    if not classes:
        raise ValueError("multiclass metrics need the dataset's classes")
    position = {c: i for i, c in enumerate(classes)}
    labels = [str(v) for v in np.asarray(y, dtype=object)]
    unknown = sorted(set(labels) - set(position))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the declared classes {classes}")
    return np.fromiter((position[v] for v in labels), dtype=np.int64, count=len(labels))


def slice_metrics(frame, y, predictions, features: Sequence[str], threshold: float | None, *, task: str = "binary",
                  classes: list[str] | None = None) -> list[SliceMetrics]:
    """Metrics per value of each categorical feature in ``features`` (nulls: the ``__missing__`` slice)."""
    y = np.asarray(y)
    predictions = np.asarray(predictions)
    out = []
    for feature in features:
        values = slice_values(frame[feature])
        for value in sorted(set(values)):
            mask = values == value
            out.append(SliceMetrics(feature=feature, value=value, metrics=compute_metrics(
                y[mask], predictions[mask], threshold, task=task, classes=classes)))
    return out


def slice_values(column) -> np.ndarray:
    """A categorical column as its canonical texts (``1.0`` -> ``"1"``), nulls as ``__missing__``."""
    keys = category_keys_of(column)
    return keys.where(keys.notna(), MISSING_SLICE).astype(str).to_numpy()


def score_model(frame, y, predictions, slice_features: Sequence[str], threshold: float | None, *,
                task: str = "binary", classes: list[str] | None = None) -> ModelScores:
    return ModelScores(overall=compute_metrics(y, predictions, threshold, task=task, classes=classes),
                       slices=slice_metrics(frame, y, predictions, slice_features, threshold, task=task,
                                            classes=classes))


# --------------------------------------------------------------------------------------------------
# weighted metrics (for the bootstrap): W has shape (resamples, rows), rows in the original order
# --------------------------------------------------------------------------------------------------


def _tie_groups(sorted_scores: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])


def weighted_roc_auc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under each row of ``weights``: P(score_pos > score_neg) + 0.5 P(tie), weighted by rows."""
    order = np.argsort(scores, kind="mergesort")
    starts = _tie_groups(scores[order])
    w = weights[:, order]
    ys = y[order].astype(float)
    pos = np.add.reduceat(w * ys, starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - ys), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (pos * (neg_below + 0.5 * neg)).sum(axis=1) / denominator, np.nan)


def weighted_average_precision(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's step-wise definition) under each row of ``weights``."""
    order = np.argsort(-scores, kind="mergesort")
    starts = _tie_groups(scores[order])
    w = weights[:, order]
    ys = y[order].astype(float)
    tp = np.add.reduceat(w * ys, starts, axis=1)
    fp = np.add.reduceat(w * (1.0 - ys), starts, axis=1)
    cum_tp, cum_fp = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    total_pos = cum_tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cum_tp + cum_fp > 0, cum_tp / (cum_tp + cum_fp), 0.0)
        ap = (tp / total_pos * precision).sum(axis=1)
    return np.where(total_pos[:, 0] > 0, ap, np.nan)


def weighted_log_loss(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    p = np.clip(scores, _EPS, 1 - _EPS)
    loss = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return weights @ loss / weights.sum(axis=1)


def weighted_brier(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return weights @ ((scores - y) ** 2) / weights.sum(axis=1)


def weighted_threshold_counts(y: np.ndarray, scores: np.ndarray, weights: np.ndarray, threshold: float):
    """Binary (true positives, false positives, positives) at ``threshold`` under each row of ``weights``."""
    predicted = (scores >= threshold).astype(float)
    return weights @ (predicted * y), weights @ (predicted * (1 - y)), weights @ y


# multiclass: y is the class index per row (class_index), p the (rows, classes) probabilities


def _one_hot(index: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(index), k))
    out[np.arange(len(index)), index] = 1.0
    return out


def weighted_multiclass_log_loss(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    loss = -np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1.0))
    return weights @ loss / weights.sum(axis=1)


def weighted_accuracy(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return weights @ (np.argmax(p, axis=1) == y).astype(float) / weights.sum(axis=1)


def weighted_balanced_accuracy(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present (scikit-learn's balanced_accuracy_score)."""
    truth = _one_hot(y, p.shape[1])
    correct = (np.argmax(p, axis=1) == y).astype(float)
    hits, support = weights @ (truth * correct[:, None]), weights @ truth
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, hits / support, 0.0)
        return (recall * (support > 0)).sum(axis=1) / (support > 0).sum(axis=1)


def weighted_f1_macro(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes true or predicted in the rows (scikit-learn's ``f1_score(average="macro")``)."""
    k = p.shape[1]
    truth, predicted = _one_hot(y, k), _one_hot(np.argmax(p, axis=1), k)
    tp = weights @ (truth * predicted)
    denominator = weights @ truth + weights @ predicted  # 2 tp + fp + fn
    present = denominator > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(present, 2 * tp / denominator, 0.0)
        return f1.sum(axis=1) / present.sum(axis=1)


def weighted_roc_auc_ovr(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean one-vs-rest ROC AUC over the classes it is defined for (present, and not every row)."""
    per_class = np.stack([weighted_roc_auc((y == c).astype(np.int64), p[:, c], weights) for c in range(p.shape[1])])
    defined = ~np.isnan(per_class)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined.any(axis=0), np.nansum(per_class, axis=0) / defined.sum(axis=0), np.nan)


# regression: y and the predictions are values


def weighted_rmse(y: np.ndarray, v: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.sqrt(weights @ ((v - y) ** 2) / weights.sum(axis=1))


def weighted_mae(y: np.ndarray, v: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return weights @ np.abs(v - y) / weights.sum(axis=1)


def weighted_r2(y: np.ndarray, v: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """1 - SSE / SST under each resample; NaN where the resampled target is constant."""
    total = weights.sum(axis=1)
    centred = y - y.mean()  # centred first: SST as a difference of sums loses no precision
    sst = weights @ centred**2 - (weights @ centred) ** 2 / total
    sse = weights @ ((v - y) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sst > 1e-12 * np.maximum(weights @ centred**2, 1e-300), 1 - sse / sst, np.nan)


def improvement(metric: str, challenger: float, champion: float) -> float:
    """Positive when the challenger is better, whatever the metric's direction."""
    return champion - challenger if metric in LOWER_IS_BETTER else challenger - champion


# --------------------------------------------------------------------------------------------------
# feature importance
# --------------------------------------------------------------------------------------------------


def permutation_importances(pipeline, frame, y, *, seed: int, scoring="roc_auc", n_repeats: int = 3,
                            max_rows: int = 5_000) -> list[FeatureImportance]:
    """Permutation importance of each *input* feature (so one-hot columns count as one feature).

    ``scoring`` is the search's scorer of the gate's primary metric (tasks/training/search.py: search_scorer),
    so an importance is the drop of that metric when the feature is permuted.
    """
    from sklearn.inspection import permutation_importance

    y = np.asarray(y)
    if len(y) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(y), size=max_rows, replace=False))
        frame, y = frame.iloc[idx], y[idx]
    if len(np.unique(y)) < 2:
        return []
    result = permutation_importance(pipeline, frame, y, scoring=scoring, n_repeats=n_repeats,
                                    random_state=seed, n_jobs=1)
    items = [FeatureImportance(feature=str(c), importance=float(m), std=float(s))
             for c, m, s in zip(frame.columns, result.importances_mean, result.importances_std, strict=True)]
    return sorted(items, key=lambda f: -f.importance)
