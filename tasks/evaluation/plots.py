"""The report's plots as PNG bytes, per task: binary ROC and calibration curves, multiclass confusion
matrices, regression predicted-vs-actual and residuals; and permutation importance for every task.

:func:`comparison_plots` draws the task's plots of the challenger (and the champion, when there is one) on
the test window: what ``compare_with_champion`` stages as ``plots/<name>.png``.

Drawn with matplotlib's object API (a :class:`matplotlib.figure.Figure` on the Agg canvas), never pyplot:
pyplot keeps global state (the current figure, a registry of open figures) shared by everything in the
process.
"""

from __future__ import annotations

import io

import numpy as np

from mlcycle.tasks.evaluation.metrics import weighted_roc_auc
from mlcycle.tasks.records.evaluation import FeatureImportance


def _figure(figsize: tuple[float, float]):
    """A figure on its own Agg canvas (nothing registered with pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def roc_plot(y, curves: dict[str, np.ndarray], title: str) -> bytes:
    from sklearn.metrics import roc_curve

    fig = _figure((5, 5))
    ax = fig.subplots()
    for label, scores in curves.items():
        fpr, tpr, _ = roc_curve(y, scores)
        auc = weighted_roc_auc(np.asarray(y), np.asarray(scores, dtype=float), np.ones((1, len(y))))[0]
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    return _png(fig)


def calibration_plot(y, curves: dict[str, np.ndarray], title: str, n_bins: int = 10) -> bytes:
    from sklearn.calibration import calibration_curve

    fig = _figure((5, 5))
    ax = fig.subplots()
    for label, scores in curves.items():
        observed, predicted = calibration_curve(y, scores, n_bins=n_bins, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=label)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed default rate", title=title)
    ax.legend(loc="upper left")
    return _png(fig)


def confusion_plot(y, curves: dict[str, np.ndarray], classes: list[str], title: str) -> bytes:
    """One confusion matrix per model (rows: true class, columns: predicted class; shares of each true class)."""
    from sklearn.metrics import confusion_matrix

    k = len(classes)
    fig = _figure((4.6 * len(curves) + 0.6, 4.6 + 0.1 * k))
    axes = np.atleast_1d(fig.subplots(1, len(curves)))
    for ax, (label, probabilities) in zip(axes, curves.items(), strict=True):
        predicted = np.asarray(classes, dtype=object)[np.argmax(np.asarray(probabilities), axis=1)]
        counts = confusion_matrix(np.asarray(y, dtype=object), predicted, labels=classes)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), classes, rotation=45, fontsize=7)
        ax.set_yticks(range(k), classes, fontsize=7)
        ax.set(xlabel="predicted class", ylabel="true class", title=label)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def predicted_vs_actual_plot(y, curves: dict[str, np.ndarray], title: str, max_points: int = 5_000) -> bytes:
    y = np.asarray(y, dtype=float)
    shown = _sample(len(y), max_points)
    fig = _figure((5, 5))
    ax = fig.subplots()
    for label, values in curves.items():
        ax.scatter(y[shown], np.asarray(values, dtype=float)[shown], s=6, alpha=0.4, label=label)
    low, high = float(np.min(y)), float(np.max(y))
    ax.plot([low, high], [low, high], linestyle=":", color="grey")
    ax.set(xlabel="actual", ylabel="predicted", title=title)
    ax.legend(loc="upper left")
    return _png(fig)


def residuals_plot(y, curves: dict[str, np.ndarray], title: str, max_points: int = 5_000) -> bytes:
    """Residuals (actual - predicted) against the prediction, and their distribution, per model."""
    y = np.asarray(y, dtype=float)
    shown = _sample(len(y), max_points)
    fig = _figure((9, 4))
    scatter, histogram = fig.subplots(1, 2)
    for label, values in curves.items():
        values = np.asarray(values, dtype=float)
        residuals = y - values
        scatter.scatter(values[shown], residuals[shown], s=6, alpha=0.4, label=label)
        histogram.hist(residuals, bins=40, alpha=0.5, label=label)
    scatter.axhline(0, linestyle=":", color="grey")
    scatter.set(xlabel="predicted", ylabel="actual - predicted", title=title)
    histogram.set(xlabel="actual - predicted", ylabel="rows", title="residuals")
    scatter.legend(loc="upper right")
    fig.tight_layout()
    return _png(fig)


def _sample(n: int, size: int) -> np.ndarray:
    """A seeded subset of row positions, so a scatter of many rows stays readable and small."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))


def comparison_plots(task: str, y, curves: dict[str, np.ndarray], title: str,
                     classes: list[str] | None = None) -> dict[str, bytes]:
    """The task's plots of each model's test predictions (``curves``: label -> predictions), by file name."""
    if task == "multiclass":
        return {"plots/confusion_matrix.png": confusion_plot(y, curves, classes or [], f"confusion, {title}")}
    if task == "regression":
        return {"plots/predicted_vs_actual.png": predicted_vs_actual_plot(y, curves, f"predicted vs actual, {title}"),
                "plots/residuals.png": residuals_plot(y, curves, f"residuals, {title}")}
    return {"plots/roc.png": roc_plot(y, curves, f"ROC, {title}"),
            "plots/calibration.png": calibration_plot(y, curves, f"calibration, {title}")}


def importance_plot(importances: list[FeatureImportance], title: str, metric: str = "ROC AUC") -> bytes:
    fig = _figure((6, 0.4 * max(len(importances), 3) + 1.2))
    ax = fig.subplots()
    items = list(reversed(importances))
    ax.barh([i.feature for i in items], [i.importance for i in items], xerr=[i.std for i in items])
    ax.set(xlabel=f"drop of {metric} when permuted", title=title)
    fig.tight_layout()
    return _png(fig)
