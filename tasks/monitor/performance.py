"""The live performance check: the task's metric on the labelled rows of a window, against the champion.

``monitor.performance_metric`` (resolved per task at load: the gate's primary metric unless set) is
computed on the window's rows that have a label, from the inference log's prediction columns for the task
(``tasks/inference_log.py: PREDICTION_COLUMNS``):

* binary: ``probability`` (of the positive class) for roc_auc, pr_auc, log_loss and brier; the served
  ``label`` (0/1 at the serving threshold) for f1, recall and precision;
* multiclass: ``probabilities`` (every class's probability, in ``dataset.class_labels`` order) for
  log_loss, roc_auc_ovr (the mean of the one-vs-rest AUCs defined on the rows), and for the predicted
  class (the most probable one) behind f1_macro, balanced_accuracy and accuracy;
* regression: ``prediction`` for rmse, mae and r2.

The formulas are those of the training's evaluation (``tasks/evaluation/metrics.py``), so the live value
and the champion's test value measure the same thing.

The comparison follows the metric's direction (``tasks/settings/problem.py: direction``): a *drop* for a
higher-is-better metric, a *rise* for a lower-is-better one, beyond ``monitor.performance_tolerance``
(absolute, in the metric's own units), is a degradation. Too few labels, labels outside the declared
classes, or rows on which the metric is undefined (a single class for an AUC, a constant target for r2)
decide nothing, and the check's ``detail`` says which.
"""

from __future__ import annotations

import numpy as np

from mlcycle.tasks.records.monitoring import PerformanceCheck
from mlcycle.tasks.settings.problem import category_keys_of, direction

_EPS = 1e-15
# metrics that need both classes (binary) or two classes present (multiclass) among the labelled rows
_NEED_TWO_CLASSES = {"roc_auc", "pr_auc", "roc_auc_ovr"}


class Undefined(ValueError):
    """The metric cannot be computed on these rows; the message says why, in words."""


def truth(values, spec) -> np.ndarray:
    """The labelled target as the model sees it: binary 0/1, multiclass class texts, regression values.

    Binary labels may arrive as the declared classes (``"yes"``/``"no"``, ``1``/``0``) or already encoded 0/1.
    """
    import pandas as pd

    if spec.task == "regression":
        y = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
        if np.isnan(y).any():
            raise Undefined(f"labels of {spec.target!r} that are not numbers")
        return y
    keys = category_keys_of(pd.Series(values)).to_numpy(dtype=object)
    classes = spec.class_labels
    unknown = sorted(set(keys) - set(classes))
    if spec.task == "binary":
        if not unknown:
            return (keys == spec.positive_label).astype(np.int64)
        if set(keys) <= {"0", "1"}:  # already encoded: 1 is the positive label
            return (keys == "1").astype(np.int64)
    if unknown:
        raise Undefined(f"labels {unknown[:5]} that are not among the declared classes {classes}")
    return keys


def _column(rows, name: str) -> np.ndarray:
    if name not in rows.columns:
        raise Undefined(f"an inference log without the {name!r} column")
    return rows[name].to_numpy()


def live_value(metric: str, spec, y: np.ndarray, rows, threshold: float = 0.5) -> float:
    """``metric`` for the task of ``spec`` on the labelled ``rows`` (truth ``y`` from :func:`truth`)."""
    from sklearn import metrics as m

    if spec.task == "binary":
        if metric in _NEED_TWO_CLASSES and len(np.unique(y)) < 2:
            raise Undefined(f"a single class ({int(y[0])}) among the labels")
        if metric in ("f1", "recall", "precision"):
            label = rows["label"].to_numpy(dtype=float) if "label" in rows.columns else \
                (_column(rows, "probability").astype(float) >= threshold)
            score = {"f1": m.f1_score, "recall": m.recall_score, "precision": m.precision_score}[metric]
            return float(score(y, np.asarray(label, dtype=np.int64), zero_division=0))
        p = np.clip(_column(rows, "probability").astype(float), _EPS, 1 - _EPS)
        return float({"roc_auc": lambda: m.roc_auc_score(y, p), "pr_auc": lambda: m.average_precision_score(y, p),
                      "log_loss": lambda: -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)),
                      "brier": lambda: np.mean((p - y) ** 2)}[metric]())
    if spec.task == "multiclass":
        classes = spec.class_labels
        if metric in _NEED_TWO_CLASSES and len(set(y)) < 2:
            raise Undefined(f"a single class ({y[0]}) among the labels")
        p = np.array([np.asarray(row, dtype=float) for row in _column(rows, "probabilities")])
        if p.ndim != 2 or p.shape[1] != len(classes):
            raise Undefined(f"logged probabilities that are not one per declared class ({len(classes)})")
        index = np.array([classes.index(c) for c in y])
        predicted = np.asarray(classes, dtype=object)[np.argmax(p, axis=1)]
        if metric == "log_loss":
            return float(-np.mean(np.log(np.clip(p[np.arange(len(index)), index], _EPS, 1.0))))
        if metric == "roc_auc_ovr":
            aucs = [m.roc_auc_score(index == k, p[:, k]) for k in range(len(classes))
                    if 0 < np.sum(index == k) < len(y)]
            return float(np.mean(aucs))
        if metric == "f1_macro":
            return float(m.f1_score(y.astype(str), predicted.astype(str), average="macro", zero_division=0))
        if metric == "balanced_accuracy":
            return float(m.balanced_accuracy_score(y.astype(str), predicted.astype(str)))
        return float(np.mean(predicted == y))  # accuracy
    v = _column(rows, "prediction").astype(float)
    if metric == "r2":
        if len(y) < 2 or np.all(y == y[0]):
            raise Undefined("a constant target among the labels")
        return float(m.r2_score(y, v))
    if metric == "mae":
        return float(np.mean(np.abs(v - y)))
    return float(np.sqrt(np.mean((v - y) ** 2)))  # rmse


def check_performance(rows, spec, champion_metrics: dict, config) -> PerformanceCheck:
    """``config.performance_metric`` on the labelled rows of the window vs the champion's test-window value.

    ``rows``: the window's inference log with the target joined (null where no label arrived yet);
    ``champion_metrics``: the champion's test ``Metrics`` as a dict (its ``threshold`` labels a binary log
    that holds no served label); ``config``: the ``MonitorSettings``.
    """
    threshold = champion_metrics.get("threshold") or 0.5
    metric = config.performance_metric
    higher = direction(spec.task, metric) > 0
    champion_value = champion_metrics.get(metric)
    labelled = rows[rows[spec.target].notna()] if len(rows) and spec.target in rows.columns else rows.iloc[:0]
    n = len(labelled)
    check = PerformanceCheck(metric=metric, task=spec.task, higher_is_better=higher, labelled_rows=n,
                             min_labelled_rows=config.min_labelled_rows, champion_value=champion_value,
                             tolerance=config.performance_tolerance, detail="")
    if n < config.min_labelled_rows:
        check.detail = (f"not enough labels: {n} labelled rows, at least {config.min_labelled_rows} needed "
                        "(monitor.min_labelled_rows)")
        return check
    try:
        check.live_value = live_value(metric, spec, truth(labelled[spec.target], spec), labelled, threshold)
    except Undefined as why:
        check.detail = f"{metric} undefined on {n} labelled rows: {why}"
        return check
    if champion_value is None:
        check.detail = f"live {metric} {check.live_value:.4f}; the champion recorded no {metric}"
        return check
    check.worse_by = (champion_value - check.live_value) if higher else (check.live_value - champion_value)
    check.degraded = check.worse_by > config.performance_tolerance
    change = ("drop" if higher else "rise") if check.worse_by > 0 else ("gain" if higher else "fall")
    check.detail = (f"live {metric} {check.live_value:.4f} on {n} labelled rows vs champion test {champion_value:.4f}: "
                    f"{change} of {abs(check.worse_by):.4f} ({'higher' if higher else 'lower'} is better), "
                    f"{'beyond' if check.degraded else 'within'} the tolerance {config.performance_tolerance}")
    return check
