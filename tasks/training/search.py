"""The hyper-parameter search of a challenger, and where its fits run (joblib locally, or a Dask cluster).

* **Search.** ``RandomizedSearchCV`` (or ``HalvingRandomSearchCV``) over the family's space. With
  ``cv: holdout`` candidates are fitted on the training window and scored on the validation window;
  with ``cv: time_series`` on expanding time folds of both. The best candidate is refitted on training
  + validation: that fitted pipeline is what is scored on the test window, registered and served.
* **Scored on the gate's primary metric** (:func:`search_scorer`), per task: scikit-learn's scorer where
  it means what tasks/evaluation/metrics.py computes (binary ``roc_auc``, ``average_precision``,
  ``neg_log_loss``, ``neg_brier_score``; multiclass ``f1_macro``, ``balanced_accuracy``, ``accuracy``;
  regression ``neg_root_mean_squared_error``, ``neg_mean_absolute_error``, ``r2``), else
  :class:`MetricScorer`, which scores with those metrics themselves: multiclass ``neg_log_loss`` and
  ``roc_auc_ovr`` over the *declared* classes (scikit-learn's scorers take the classes from each fold's
  rows and fail on a fold that lacks one), binary F1/recall/precision at ``training.threshold``.
* **Reproducible.** The search's sampler and the estimator take the seed, each candidate's fit is
  independent of the others, so the same seed and data give the same model and metrics whatever the
  number of joblib workers or the backend (loky, threading, or a Dask cluster).
* **Where it runs.** With ``training.dask_scheduler`` set (it defaults to ``dask.address``), every
  candidate fit goes to that cluster through joblib's Dask backend, connected by
  :func:`~mlcycle.tasks.runners.dask_client` within ``dask.connect_timeout_seconds``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.tasks.evaluation.metrics import compute_metrics
from mlcycle.tasks.features import model_input, search_distributions
from mlcycle.tasks.predictions import model_scores
from mlcycle.tasks.records.training import CandidateScore, SearchSummary, SplitName
from mlcycle.tasks.runners import dask_client
from mlcycle.tasks.settings import ConfigError, DaskSettings, TrainingSettings
from mlcycle.tasks.settings.problem import LOWER_IS_BETTER

# scikit-learn's scorers that compute a task's metric as tasks/evaluation/metrics.py does (higher is better)
SCORERS: dict[str, dict[str, str]] = {
    "binary": {"roc_auc": "roc_auc", "pr_auc": "average_precision", "log_loss": "neg_log_loss",
               "brier": "neg_brier_score"},
    "multiclass": {"f1_macro": "f1_macro", "balanced_accuracy": "balanced_accuracy", "accuracy": "accuracy"},
    "regression": {"rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error", "r2": "r2"},
}
SCHEDULER_KEY = "training.dask_scheduler (MLCYCLE_TRAINING__DASK_SCHEDULER; defaults to dask.address)"


@contextmanager
def search_backend(training: TrainingSettings, dask: DaskSettings) -> Iterator[str]:
    """The joblib backend of the search: loky/threading locally, or ``dask`` on a cluster.

    With ``training.dask_scheduler`` set, joblib's Dask backend sends every candidate fit to that
    cluster (the workers need the same scikit-learn); a scheduler that does not answer within
    ``dask.connect_timeout_seconds`` raises :class:`~mlcycle.tasks.runners.DaskUnavailable`. Without a
    scheduler, ``joblib_backend: dask`` is an error.
    """
    import joblib

    backend = training.resolved_backend
    if backend != "dask":
        inner = {"inner_max_num_threads": training.threads_per_fit} if (
            backend == "loky" and training.threads_per_fit) else {}
        with joblib.parallel_config(backend=backend, **inner):
            yield backend
        return
    if not training.dask_scheduler:
        raise ConfigError("training.joblib_backend is 'dask' but training.dask_scheduler is not set; give the "
                          "scheduler address (tcp://host:8786): MLCYCLE_DASK__ADDRESS (dask.address) for all "
                          "heavy work, or MLCYCLE_TRAINING__DASK_SCHEDULER for the search alone")
    # the process's default client: joblib's Dask backend sends its work there
    with dask_client(training.dask_scheduler, dask.connect_timeout_seconds, setting=SCHEDULER_KEY,
                     as_default=True) as client, joblib.parallel_config(backend="dask"):
        yield f"dask ({training.dask_scheduler}, {len(client.scheduler_info().get('workers', {}))} workers)"


@contextmanager
def fit_threads(training: TrainingSettings) -> Iterator[None]:
    """Cap OpenMP/BLAS threads in this process at ``training.threads_per_fit`` (no cap when None)."""
    if training.threads_per_fit is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=training.threads_per_fit):
        yield


class MetricScorer:
    """A scorer ``(estimator, X, y) -> float`` (higher is better) computing ``metric`` with
    :func:`~mlcycle.tasks.evaluation.metrics.compute_metrics`, over the declared classes.

    Picklable (a module-level class of plain attributes): joblib's workers and a Dask cluster receive it.
    """

    def __init__(self, task: str, metric: str, class_labels: list[str] | None = None, threshold: float = 0.5):
        self.task, self.metric, self.class_labels, self.threshold = task, metric, class_labels, threshold

    @property
    def name(self) -> str:
        name = f"neg_{self.metric}" if self.metric in LOWER_IS_BETTER else self.metric
        return f"{name}@{self.threshold}" if self.task == "binary" else name

    def __call__(self, estimator, X, y) -> float:
        scores = model_scores(estimator, X, self.task, self.class_labels)
        value = compute_metrics(y, scores, self.threshold, task=self.task, classes=self.class_labels).get(self.metric)
        if value is None:
            return float("nan")
        return -value if self.metric in LOWER_IS_BETTER else value

    def __repr__(self) -> str:
        return f"MetricScorer({self.name})"


def search_scorer(task: str, metric: str, class_labels: list[str] | None = None, threshold: float = 0.5):
    """The scorer of the search (and of permutation importance) for ``task``'s ``metric``: a scikit-learn
    scorer name, or a :class:`MetricScorer`."""
    return SCORERS[task].get(metric) or MetricScorer(task, metric, class_labels, threshold)


def scorer_name(scoring) -> str:
    return scoring if isinstance(scoring, str) else scoring.name


def run_search(pipeline, family, frames: dict[SplitName, pd.DataFrame], y: dict[SplitName, np.ndarray],
               features, training: TrainingSettings, dask: DaskSettings, *, scoring, n_iter: int, seed: int):
    """Search the family's space; return the best pipeline refitted on train + validation, and a summary.

    ``scoring`` is :func:`search_scorer`'s answer for the gate's primary metric.
    """
    from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV, TimeSeriesSplit

    X = model_input(pd.concat([frames["train"], frames["validation"]], ignore_index=True), features)
    target = np.concatenate([y["train"], y["validation"]])
    if training.cv == "holdout":
        cv = PredefinedSplit(np.r_[np.full(len(y["train"]), -1), np.zeros(len(y["validation"]), dtype=int)])
    else:
        cv = TimeSeriesSplit(n_splits=training.cv_folds)  # rows are in time order
    space = search_distributions(family)
    n_iter = min(n_iter, _grid_size(space))
    common = dict(scoring=scoring, cv=cv, n_jobs=training.n_jobs, random_state=seed, refit=True,
                  error_score="raise")
    if training.search == "halving":
        from sklearn.experimental import enable_halving_search_cv  # noqa: F401
        from sklearn.model_selection import HalvingRandomSearchCV

        # "exhaust": the last round uses all rows; the default "smallest" starts on a handful of rows,
        # too few to hold both classes
        search = HalvingRandomSearchCV(pipeline, space, n_candidates=max(n_iter, 2), factor=2,
                                       min_resources="exhaust", **common)
    else:
        search = RandomizedSearchCV(pipeline, space, n_iter=n_iter, **common)
    started = time.perf_counter()
    with search_backend(training, dask) as backend:
        search.fit(X, target)
    seconds = time.perf_counter() - started
    results = search.cv_results_
    candidates = [
        CandidateScore(params=plain_params(results["params"][i]), mean_score=float(results["mean_test_score"][i]),
                       std_score=float(results["std_test_score"][i]), rank=int(results["rank_test_score"][i]))
        for i in range(len(results["params"]))
    ]
    summary = SearchSummary(
        strategy=training.search, cv=training.cv, scoring=scorer_name(scoring), n_candidates=len(candidates),
        best_params=plain_params(search.best_params_), best_score=float(search.best_score_),
        candidates=sorted(candidates, key=lambda c: c.rank), backend=backend, n_jobs=training.n_jobs,
        seconds=round(seconds, 3),
    )
    return search.best_estimator_, summary


def _grid_size(space: dict[str, Any]) -> int:
    if any(not isinstance(v, list) for v in space.values()):
        return 1_000_000_000
    return math.prod(len(v) for v in space.values())


def plain_params(params: dict[str, Any]) -> dict[str, Any]:
    """JSON-able parameter values (numpy scalars to Python), keys without the pipeline step prefix."""
    out = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        out[key.split("__", 1)[-1]] = value
    return out
