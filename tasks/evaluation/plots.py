"""The report's plots as PNG bytes: ROC curves, calibration curves, permutation importance.

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


def importance_plot(importances: list[FeatureImportance], title: str) -> bytes:
    fig = _figure((6, 0.4 * max(len(importances), 3) + 1.2))
    ax = fig.subplots()
    items = list(reversed(importances))
    ax.barh([i.feature for i in items], [i.importance for i in items], xerr=[i.std for i in items])
    ax.set(xlabel="drop of ROC AUC when permuted", title=title)
    fig.tight_layout()
    return _png(fig)
