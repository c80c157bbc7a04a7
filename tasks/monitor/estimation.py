"""Performance estimated without labels: CBPE for classifiers, DLE for regressors.

Labels arrive late or never; the monitor still wants to know whether the served model got worse on the
window it is judging. Two NannyML methods do that from what the inference log holds (NannyML docs, "How it
works: performance estimation", https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html):

* **CBPE**, confidence-based performance estimation (binary and multiclass). If the probabilities are
  calibrated, each row's label is Bernoulli(p), so the confusion matrix at the threshold has expected cells
  TP = sum p[pred=1], FP = sum (1-p)[pred=1], FN = sum p[pred=0], TN = sum (1-p)[pred=0], and accuracy,
  precision, recall and F1 follow from them (ratios of expectations, as NannyML does: consistent, biased by
  O(1/n)). The expected ROC AUC is the area of the expected ROC curve: cumulative sums of p and 1-p down the
  scores, ties grouped, trapezoid rule; computed here as scikit-learn's ROC AUC with every row counted twice,
  once positive with weight p and once negative with weight 1-p, which is that same area. Multiclass: one
  versus rest with p[:, k] per class, macro averaged; accuracy is the mean probability of the argmax class
  (Average Confidence, shown unbiased and consistent under calibration by Kivimäki, Białek, Nurminen and
  Kuberski, "Confidence-based Estimators for Predictive Performance in Model Monitoring", arXiv:2407.08649).
* **DLE**, direct loss estimation (regression; tasks/monitor/loss_estimation.py): a gradient-boosting
  "nanny" model learns the monitored model's absolute error |y - prediction| from the features and the
  prediction, on reference rows the model was *not* fitted on (in-sample errors are too small); a second one
  learns the squared error. The window's MAE is the mean predicted absolute error, its RMSE the root of the
  mean predicted squared error.

``std`` is the sampling uncertainty of the *realized* metric on a window of this many rows, if the
probabilities (CBPE) or the loss model (DLE) are right: a parametric bootstrap (Efron and Tibshirani 1993,
ch. 6) with ``draws`` label draws from a seeded generator. CBPE draws y* ~ Bernoulli(p) (a categorical draw
per row for multiclass) and computes each draw's realized metric; the scores' ranks do not change between
draws, so a draw's AUC is the Mann-Whitney statistic of the positives' rank sum (Hanley and McNeil 1982),
and all draws of a block are one matrix product. DLE draws each row's absolute error as its predicted one
times a ratio |e| / predicted |e| resampled from the reference rows (out-of-fold, so not shrunk by
overfitting): a multiplicative noise model, exact for noise whose scale depends on the inputs. It captures
the label noise given the window's inputs, not the nanny model's own error. Windows above
:data:`BOOTSTRAP_ROWS` rows get the std of a seeded subsample of that many rows times sqrt(m / n) (a
metric's sampling std shrinks as 1/sqrt(n)). ``lower``/``upper`` are ``value -/+ 3 std`` (NannyML's band),
clipped to the metric's range ([0, 1]; errors at 0). An estimate undefined on the window (an AUC with every
probability 0) is NaN, as is a realized metric the labels leave undefined (an AUC with one class).

Where they fail:

* pure concept drift (P(y|x) changes, the inputs do not) is invisible without labels: both methods read the
  inputs and the model's outputs only, and neither changed (tests/test_estimation.py shows it);
* CBPE needs calibrated probabilities: an over-confident model's estimate is too optimistic; calibrate on
  held-out data first. It also trusts the model outside its training support, where calibration is unknown;
* DLE needs the reference errors to depend on the inputs (heteroscedastic noise, regions the model fits
  badly): with errors independent of x it can only return the reference MAE, right or not, and it cannot
  extrapolate to inputs far outside the reference rows (a tree model predicts flat beyond them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from mlcycle.tasks.records.monitoring import MetricEstimate

ESTIMABLE: dict[str, tuple[str, ...]] = {
    "binary": ("roc_auc", "accuracy", "f1", "precision", "recall"),
    # roc_auc_ovr / f1_macro: the names the evaluation gives the same macro metrics (tasks/settings/problem.py)
    "multiclass": ("roc_auc", "accuracy", "f1", "roc_auc_ovr", "f1_macro"),
    "regression": ("mae", "rmse"),
}
BAND = 3.0  # lower/upper = value -/+ BAND std
BOOTSTRAP_ROWS = 200_000  # above this many rows the std comes from a subsample of this size, rescaled
BLOCK_CELLS = 4_000_000  # label draws held in memory at once (draws x rows x classes)


def check_metrics(task: str, metrics: Sequence[str]) -> list[str]:
    """The asked metrics, deduplicated; ValueError naming any that ``task`` cannot estimate."""
    asked = [metrics] if isinstance(metrics, str) else list(metrics)
    supported = ESTIMABLE[task]
    unknown = [m for m in asked if m not in supported]
    if unknown or not asked:
        raise ValueError(f"cannot estimate {task} metric(s) {unknown or 'none asked'}: supported are {list(supported)}")
    return list(dict.fromkeys(asked))


def _finite_in_unit(p: np.ndarray, what: str) -> np.ndarray:
    if p.shape[0] == 0:
        raise ValueError(f"empty window: {what} hold no rows, nothing to estimate")
    bad = ~np.isfinite(p)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(p), -1).any(axis=1))
        raise ValueError(f"{what} hold {bad.sum()} NaN or infinite value(s), first at row {rows[0]}")
    outside = (p < 0) | (p > 1)
    if outside.any():
        rows = np.flatnonzero(outside.reshape(len(p), -1).any(axis=1))
        raise ValueError(f"{what} outside [0, 1] in {len(rows)} row(s), e.g. {p[rows[0]]} at row {rows[0]}")
    return p


def binary_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """The positive class's probabilities as a float vector, checked (ValueError naming the problem)."""
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 1:
        raise ValueError(
            f"binary probabilities must be one per row, shape (n,); got shape {p.shape} "
            "(pass the positive class's column, e.g. proba[:, 1])"
        )
    return _finite_in_unit(p, "binary probabilities")


def multiclass_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Rows of class probabilities, shape (n, k >= 2), each row summing to 1 (within 1e-3; renormalised)."""
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(
            f"multiclass probabilities must be shape (n, k) with k >= 2 class columns; got shape {p.shape}"
        )
    p = _finite_in_unit(p, "multiclass probabilities")
    off = np.flatnonzero(np.abs(p.sum(axis=1) - 1.0) > 1e-3)
    if len(off):
        raise ValueError(
            f"multiclass probabilities of {len(off)} row(s) do not sum to 1, e.g. row {off[0]} sums to "
            f"{p[off[0]].sum():.6f}"
        )
    return p / p.sum(axis=1, keepdims=True)


def _labels(y: np.ndarray, n: int, classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"labels must be one per row, shape ({n},) like the probabilities; got shape {y.shape}")
    if y.dtype.kind not in "biuf" or not np.all(np.isin(y, np.arange(classes))):
        bad = np.setdiff1d(np.unique(y.astype(object).astype(str)), [str(c) for c in range(classes)])
        raise ValueError(f"labels must be integer class codes 0..{classes - 1}; found {list(bad[:5])}")
    return y.astype(np.int64)


def _ratio(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    return np.divide(
        numerator, denominator, out=np.zeros(np.broadcast(numerator, denominator).shape), where=denominator != 0
    )


def _from_cells(metric: str, tp, fp, fn, tn):
    """A confusion-matrix metric from its cells (expected or realized, scalars or one per draw)."""
    if metric == "accuracy":
        return _ratio(tp + tn, tp + fp + fn + tn)
    if metric == "precision":
        return _ratio(tp, tp + fp)
    if metric == "recall":
        return _ratio(tp, tp + fn)
    return _ratio(2 * tp, 2 * tp + fp + fn)  # f1


def _expected_auc(score: np.ndarray, p_positive: np.ndarray) -> float:
    """Area under the expected ROC curve: each row a positive of weight p and a negative of weight 1 - p."""
    from sklearn.metrics import roc_auc_score

    if p_positive.sum() <= 0 or (1 - p_positive).sum() <= 0:
        return float("nan")  # no expected positives (or negatives): the AUC is undefined
    n = len(score)
    truth = np.r_[np.ones(n), np.zeros(n)]
    return float(roc_auc_score(truth, np.r_[score, score], sample_weight=np.r_[p_positive, 1 - p_positive]))


def _mann_whitney_auc(draws: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """AUC of each draw (a row of 0/1 labels) for fixed scores with average ``ranks``: NaN if one class."""
    positives = draws.sum(axis=1)
    negatives = draws.shape[1] - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (draws @ ranks - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def bootstrap_rows(n: int, rng: np.random.Generator) -> tuple[np.ndarray | None, float]:
    """Rows of the bootstrap (None: all) and the factor that rescales its std to n rows."""
    if n <= BOOTSTRAP_ROWS:
        return None, 1.0
    return np.sort(rng.choice(n, BOOTSTRAP_ROWS, replace=False)), float(np.sqrt(BOOTSTRAP_ROWS / n))


def draw_blocks(draws: int, cells_per_draw: int) -> list[int]:
    size = max(1, BLOCK_CELLS // max(1, cells_per_draw))
    return [min(size, draws - start) for start in range(0, draws, size)]


def draws_std(values: list[np.ndarray], scale: float) -> float:
    drawn = np.concatenate(values)
    drawn = drawn[np.isfinite(drawn)]
    return float(np.std(drawn, ddof=1) * scale) if len(drawn) > 1 else float("nan")


def estimate_record(metric: str, value: float, std: float, upper_bound: float = 1.0) -> MetricEstimate:
    return MetricEstimate(
        metric=metric,
        value=float(value),
        std=std,
        lower=float(np.clip(value - BAND * std, 0.0, upper_bound)),
        upper=float(np.clip(value + BAND * std, 0.0, upper_bound)),
    )


def check_draws(draws: int) -> None:
    if int(draws) < 2:
        raise ValueError(f"draws must be at least 2 for a standard deviation; got {draws}")


def cbpe_binary(
    probabilities: np.ndarray,
    threshold: float,
    *,
    metrics: Sequence[str] = ("roc_auc", "accuracy", "f1"),
    draws: int = 200,
    seed: int = 0,
) -> dict[str, MetricEstimate]:
    """Each metric of a binary classifier on a window, from its positive-class probabilities alone.

    Rows with ``probability >= threshold`` are predicted positive (the serving rule). Module docstring: method,
    uncertainty, and where it fails.
    """
    metrics = check_metrics("binary", metrics)
    p = binary_probabilities(probabilities)
    if not np.isfinite(threshold) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a probability in [0, 1]; got {threshold}")
    check_draws(draws)
    predicted = p >= threshold
    cells = (p[predicted].sum(), (1 - p[predicted]).sum(), p[~predicted].sum(), (1 - p[~predicted]).sum())
    values = {m: _expected_auc(p, p) if m == "roc_auc" else float(_from_cells(m, *cells)) for m in metrics}

    rng = np.random.default_rng(seed)
    rows, scale = bootstrap_rows(len(p), rng)
    if rows is not None:
        p, predicted = p[rows], predicted[rows]
    n, pred, ranks = len(p), predicted.astype(float), rankdata(p)
    drawn: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for size in draw_blocks(draws, n):
        y = (rng.random((size, n)) < p).astype(float)  # y* ~ Bernoulli(p), one row per draw
        tp = y @ pred
        fp, fn = pred.sum() - tp, y.sum(axis=1) - tp
        for m in metrics:
            drawn[m].append(
                _mann_whitney_auc(y, ranks) if m == "roc_auc" else _from_cells(m, tp, fp, fn, n - tp - fp - fn)
            )
    return {m: estimate_record(m, values[m], draws_std(drawn[m], scale)) for m in metrics}


def cbpe_multiclass(
    probabilities: np.ndarray,
    *,
    metrics: Sequence[str] = ("roc_auc", "accuracy", "f1"),
    draws: int = 200,
    seed: int = 0,
) -> dict[str, MetricEstimate]:
    """Each metric of a multiclass classifier on a window, from its class probabilities (n, k) alone.

    Columns in class order; the predicted class is the argmax; roc_auc is the macro one-vs-rest AUC over the
    classes where it is defined, f1 the macro F1 over all k classes.
    """
    metrics = check_metrics("multiclass", metrics)
    p = multiclass_probabilities(probabilities)
    check_draws(draws)
    k = p.shape[1]
    predicted = np.argmax(p, axis=1)
    chosen = predicted[:, None] == np.arange(k)  # (n, k): the predicted class of each row
    expected = {
        "accuracy": float(np.mean(p[np.arange(len(p)), predicted])),
        "f1": float(np.mean(_ratio(2 * (p * chosen).sum(axis=0), p.sum(axis=0) + chosen.sum(axis=0)))),
    }
    if {"roc_auc", "roc_auc_ovr"} & set(metrics):
        aucs = np.array([_expected_auc(p[:, c], p[:, c]) for c in range(k)])
        expected["roc_auc"] = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
    alias = {"roc_auc_ovr": "roc_auc", "f1_macro": "f1"}

    rng = np.random.default_rng(seed)
    rows, scale = bootstrap_rows(len(p), rng)
    if rows is not None:
        p, predicted, chosen = p[rows], predicted[rows], chosen[rows]
    n = len(p)
    ranks = np.column_stack([rankdata(p[:, c]) for c in range(k)])
    cumulative = np.cumsum(p, axis=1)[:, :-1]
    drawn: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for size in draw_blocks(draws, n * k):
        y = (rng.random((size, n, 1)) > cumulative).sum(axis=2)  # a categorical draw per row: inverse CDF
        per_class = [(y == c).astype(float) for c in range(k)]
        for m in metrics:
            base = alias.get(m, m)
            if base == "accuracy":
                drawn[m].append(np.mean(y == predicted, axis=1))
            elif base == "f1":
                f1 = [
                    _ratio(2 * (yc @ chosen[:, c]), yc.sum(axis=1) + chosen[:, c].sum())
                    for c, yc in enumerate(per_class)
                ]
                drawn[m].append(np.mean(f1, axis=0))
            else:
                auc = np.array([_mann_whitney_auc(yc, ranks[:, c]) for c, yc in enumerate(per_class)])
                defined = np.isfinite(auc).sum(axis=0)
                drawn[m].append(np.where(defined > 0, np.nansum(auc, axis=0) / np.maximum(defined, 1), np.nan))
    return {m: estimate_record(m, expected[alias.get(m, m)], draws_std(drawn[m], scale)) for m in metrics}


def realized_binary(
    y: np.ndarray, probabilities: np.ndarray, threshold: float, metrics: Sequence[str]
) -> dict[str, float]:
    """The metrics from the labels (0/1), with the estimate's definitions (zero_division=0; AUC NaN if one class)."""
    from sklearn.metrics import roc_auc_score

    metrics = check_metrics("binary", metrics)
    p = binary_probabilities(probabilities)
    y = _labels(y, len(p), 2)
    pred = p >= threshold
    cells = tuple(float(np.sum(a & b)) for a, b in [(y == 1, pred), (y == 0, pred), (y == 1, ~pred), (y == 0, ~pred)])
    one_class = len(np.unique(y)) < 2
    return {
        m: (float("nan") if one_class else float(roc_auc_score(y, p)))
        if m == "roc_auc"
        else float(_from_cells(m, *cells))
        for m in metrics
    }


def realized_multiclass(y: np.ndarray, probabilities: np.ndarray, metrics: Sequence[str]) -> dict[str, float]:
    """The metrics from integer class codes 0..k-1: macro F1 over all k classes, AUC over the classes it is
    defined for (present and absent among the labels, as tasks/monitor/performance.py does)."""
    from sklearn.metrics import f1_score, roc_auc_score

    metrics = check_metrics("multiclass", metrics)
    p = multiclass_probabilities(probabilities)
    k = p.shape[1]
    y = _labels(y, len(p), k)
    predicted = np.argmax(p, axis=1)
    aucs = [roc_auc_score(y == c, p[:, c]) for c in range(k) if 0 < np.sum(y == c) < len(y)]
    value = {
        "accuracy": float(np.mean(y == predicted)),
        "f1": float(f1_score(y, predicted, labels=np.arange(k), average="macro", zero_division=0)),
        "roc_auc": float(np.mean(aucs)) if aucs else float("nan"),
    }
    alias = {"roc_auc_ovr": "roc_auc", "f1_macro": "f1"}
    return {m: value[alias.get(m, m)] for m in metrics}
