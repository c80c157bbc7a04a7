"""Metrics on the test window, their weighted forms for the paired bootstrap, and permutation importance.

Metrics (:func:`compute_metrics`): ROC AUC, PR AUC (average precision), log loss, Brier score, and F1,
recall and precision at the model's decision threshold; the same per value of each categorical feature
(:func:`slice_metrics`; nulls are the ``__missing__`` slice). AUCs are ``None`` where the rows hold a
single class.

"Improvement" (:func:`improvement`) is always oriented so that positive is better: challenger minus
champion for ROC/PR AUC, champion minus challenger for log loss and Brier.

Why a hand-written AUC: the bootstrap needs the metric on ~1000 resamples. A resample is represented
by per-row multiplicities (weights), and the rank-based AUC of every resample is computed in one
vectorised pass over the scores sorted once (:func:`weighted_roc_auc`): ~1000 resamples of a few
thousand rows take well under a second, where 1000 calls to scikit-learn take tens of seconds. The
weighted formulas reduce to scikit-learn's exactly at unit weights (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mlcycle.tasks.records.evaluation import BootstrapResult, FeatureImportance, Metrics, ModelScores, SliceMetrics
from mlcycle.tasks.settings.problem import LOWER_IS_BETTER

MISSING_SLICE = "__missing__"
_EPS = 1e-15


def compute_metrics(y, scores, threshold: float) -> Metrics:
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


def slice_metrics(frame, y, scores, features: Sequence[str], threshold: float) -> list[SliceMetrics]:
    """Metrics per value of each categorical feature in ``features`` (nulls: the ``__missing__`` slice)."""
    y = np.asarray(y)
    scores = np.asarray(scores)
    out = []
    for feature in features:
        values = slice_values(frame[feature])
        for value in sorted(set(values)):
            mask = values == value
            out.append(SliceMetrics(feature=feature, value=value,
                                    metrics=compute_metrics(y[mask], scores[mask], threshold)))
    return out


def slice_values(column) -> np.ndarray:
    import pandas as pd

    return pd.Series(column, dtype=object).where(lambda s: s.notna(), MISSING_SLICE).astype(str).to_numpy()


def score_model(frame, y, scores, slice_features: Sequence[str], threshold: float) -> ModelScores:
    return ModelScores(overall=compute_metrics(y, scores, threshold),
                      slices=slice_metrics(frame, y, scores, slice_features, threshold))


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


WEIGHTED: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "roc_auc": weighted_roc_auc,
    "pr_auc": weighted_average_precision,
    "log_loss": weighted_log_loss,
    "brier": weighted_brier,
}


def improvement(metric: str, challenger: float, champion: float) -> float:
    """Positive when the challenger is better, whatever the metric's direction."""
    return champion - challenger if metric in LOWER_IS_BETTER else challenger - champion


# --------------------------------------------------------------------------------------------------
# paired bootstrap
# --------------------------------------------------------------------------------------------------


def paired_bootstrap(y, challenger_scores, champion_scores, metric: str, *, samples: int, seed: int,
                     confidence: float = 0.95, max_cells: int = 4_000_000) -> BootstrapResult:
    """Resample test rows with replacement; score both models on the *same* resample each time.

    Pairing removes the between-resample variance the two models share, so the interval is about the
    difference, not the two metrics. Resamples are drawn in chunks of at most ``max_cells`` weights.
    """
    if metric not in WEIGHTED:
        raise ValueError(f"no bootstrap for metric {metric!r}; choose one of {sorted(WEIGHTED)}")
    y = np.asarray(y, dtype=float)
    a = np.asarray(challenger_scores, dtype=float)
    b = np.asarray(champion_scores, dtype=float)
    if not len(y) == len(a) == len(b):
        raise ValueError(f"paired bootstrap needs equal lengths, got y={len(y)}, challenger={len(a)}, "
                         f"champion={len(b)}")
    n = len(y)
    fn = WEIGHTED[metric]
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
                         "both classes?)")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(d, [tail, 100 - tail])
    return BootstrapResult(metric=metric, samples=samples, seed=seed, confidence=confidence, observed=observed,
                           mean=float(d.mean()), low=float(low), high=float(high), valid_samples=len(d))


# --------------------------------------------------------------------------------------------------
# feature importance
# --------------------------------------------------------------------------------------------------


def permutation_importances(pipeline, frame, y, *, seed: int, n_repeats: int = 3,
                            max_rows: int = 5_000) -> list[FeatureImportance]:
    """Permutation importance of each *input* feature (so one-hot columns count as one feature)."""
    from sklearn.inspection import permutation_importance

    y = np.asarray(y)
    if len(y) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(y), size=max_rows, replace=False))
        frame, y = frame.iloc[idx], y[idx]
    if len(np.unique(y)) < 2:
        return []
    result = permutation_importance(pipeline, frame, y, scoring="roc_auc", n_repeats=n_repeats,
                                    random_state=seed, n_jobs=1)
    items = [FeatureImportance(feature=str(c), importance=float(m), std=float(s))
             for c, m, s in zip(frame.columns, result.importances_mean, result.importances_std, strict=True)]
    return sorted(items, key=lambda f: -f.importance)
