"""What prediction problem a dataset poses, and what follows from it for every stage.

One declaration, ``dataset.task``, decides how a model is fitted, measured, gated, served and monitored:

* ``binary``: the target takes two values (``dataset.classes``, default ``[0, 1]``), one of them the
  ``positive_label``; the model outputs the positive class's probability, and a label at a threshold.
* ``multiclass``: the target takes one of ``dataset.classes`` (declared, so that validation refuses an
  unknown class and every model version answers with the same probability columns).
* ``regression``: the target is a number (optionally within ``target_min``/``target_max``); the model
  outputs a value.

**Category values** (of categorical features and of classes) may be strings, numbers or booleans in the
config, in the data and in requests. They are compared through one canonical text, :func:`category_key`,
applied the same way at validation, training and serving: ``1``, ``1.0`` and ``"1"`` are the same category,
``True`` is ``"true"``, ``5.5`` is ``"5.5"``.

**Metrics** per task, with the direction that makes one better (:data:`METRICS`); the gate's primary
metric, floors and ceilings, and the monitor's live metric default per task (:data:`DEFAULT_PRIMARY`...).

**Estimators**: a model family names a short alias (resolved per task: ``hist_gradient_boosting`` is the
classifier for a classification task and the regressor for regression) or the import path of any class
in the environment with ``fit``/``predict`` (``sklearn.ensemble.RandomForestRegressor``,
``mypackage.models:MyModel``). :func:`estimator_class` imports it and checks that it fits the task.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Literal

from mlcycle.tasks.settings.base import ConfigError

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")


def is_classification(task: str) -> bool:
    return task in ("binary", "multiclass")


# --------------------------------------------------------------------------------------------------
# category values
# --------------------------------------------------------------------------------------------------


def category_key(value: Any) -> str | None:
    """The canonical text of a category value; None for a missing one (None, NaN, pandas' NA).

    ``True``/``False`` -> ``"true"``/``"false"``; an integral number (``1``, ``1.0``, ``numpy.int64(1)``) ->
    ``"1"``; any other number -> its shortest round-trip text (``5.5`` -> ``"5.5"``); a string as it is.
    """
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise ValueError(f"{value!r} is not a category value")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    try:  # pandas.NA and friends
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError, ImportError):
        pass
    raise ValueError(f"{value!r} ({type(value).__name__}) is not a category value: use a string, number or boolean")


def category_keys(values: list[Any], what: str) -> list[str]:
    """``values`` as canonical texts, refusing missing values and values that collide (``1`` and ``1.0``)."""
    keys = []
    for value in values:
        key = category_key(value)
        if key is None:
            raise ValueError(f"{what} lists a missing value ({value!r})")
        keys.append(key)
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"{what} lists {dupes} more than once (values are compared as text: 1, 1.0 and '1' are "
                         "the same category)")
    return keys


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------

HIGHER, LOWER = 1, -1
# Every metric the evaluation computes per task, and whether higher (1) or lower (-1) is better.
METRICS: dict[str, dict[str, int]] = {
    "binary": {"roc_auc": HIGHER, "pr_auc": HIGHER, "log_loss": LOWER, "brier": LOWER, "f1": HIGHER,
               "recall": HIGHER, "precision": HIGHER},
    "multiclass": {"log_loss": LOWER, "f1_macro": HIGHER, "balanced_accuracy": HIGHER, "roc_auc_ovr": HIGHER,
                   "accuracy": HIGHER},
    "regression": {"rmse": LOWER, "mae": LOWER, "r2": HIGHER},
}
# The gate compares challenger and champion on this metric unless gate.primary_metric says otherwise; the
# monitor judges live performance on it unless monitor.performance_metric does.
DEFAULT_PRIMARY: dict[str, str] = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
# Absolute bounds every version must meet, champion or not, unless gate.floors / gate.ceilings say otherwise.
# binary: clearly better than chance (ROC AUC 0.5 is chance whatever the base rate); regression: better than
# predicting the mean (R2 0). multiclass: no default (chance depends on the number and balance of classes).
# No default ceiling: a Brier or log-loss bound depends on the base rate (predicting a 32% rate scores Brier
# 0.22), so a fixed one refuses sound models of some datasets; declare one for yours (the demo does).
DEFAULT_FLOORS: dict[str, dict[str, float]] = {"binary": {"roc_auc": 0.70}, "multiclass": {}, "regression": {"r2": 0.0}}
DEFAULT_CEILINGS: dict[str, dict[str, float]] = {"binary": {}, "multiclass": {}, "regression": {}}


# Metric names mean the same in every task that computes them (log_loss is lower-is-better everywhere).
LOWER_IS_BETTER: frozenset[str] = frozenset(m for by_task in METRICS.values() for m, d in by_task.items() if d == LOWER)


def direction(task: str, metric: str) -> int:
    """1 when a higher ``metric`` is better for ``task``, -1 when lower is; ConfigError naming the choices."""
    try:
        return METRICS[task][metric]
    except KeyError:
        raise ConfigError(f"metric {metric!r} is not computed for a {task} task; {task} metrics are "
                          f"{sorted(METRICS.get(task, {}))}") from None


# --------------------------------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------------------------------

# Short names a model family may use, per kind of task: "classification" covers binary and multiclass.
ESTIMATOR_ALIASES: dict[str, dict[str, str]] = {
    "logistic_regression": {"classification": "sklearn.linear_model:LogisticRegression"},
    "hist_gradient_boosting": {"classification": "sklearn.ensemble:HistGradientBoostingClassifier",
                               "regression": "sklearn.ensemble:HistGradientBoostingRegressor"},
    "random_forest": {"classification": "sklearn.ensemble:RandomForestClassifier",
                      "regression": "sklearn.ensemble:RandomForestRegressor"},
    "ridge": {"regression": "sklearn.linear_model:Ridge"},
}


def _kind(task: str) -> str:
    return "classification" if is_classification(task) else "regression"


def estimator_path(estimator: str, task: str) -> str:
    """The ``module:Class`` an estimator name stands for in ``task`` (an alias, or an import path)."""
    if estimator in ESTIMATOR_ALIASES:
        by_kind = ESTIMATOR_ALIASES[estimator]
        if _kind(task) not in by_kind:
            fitting = sorted(a for a, kinds in ESTIMATOR_ALIASES.items() if _kind(task) in kinds)
            raise ConfigError(f"estimator {estimator!r} is for {' and '.join(by_kind)} tasks, not {task}; "
                              f"for {task} use one of {fitting} or an import path")
        return by_kind[_kind(task)]
    module, sep, name = estimator.partition(":") if ":" in estimator else estimator.rpartition(".")
    if not sep or not module or not name:
        raise ConfigError(f"estimator {estimator!r} is neither a known alias {sorted(ESTIMATOR_ALIASES)} nor an "
                          "import path such as sklearn.ensemble.RandomForestRegressor or mypackage.models:MyModel")
    return f"{module}:{name}"


def estimator_class(estimator: str, task: str) -> type:
    """Import the estimator class for ``task`` and check that it can be fitted and used for it.

    A classifier must offer ``predict_proba`` (the gate, the monitor and serving read probabilities); a
    regressor ``predict``. scikit-learn's own tag (``is_classifier`` / ``is_regressor``) decides when the
    class declares one.
    """
    path = estimator_path(estimator, task)
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"estimator {estimator!r}: cannot import module {module_name!r} ({exc})") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"estimator {estimator!r}: module {module_name!r} has no class {class_name!r}")
    missing = [m for m in ("fit", "predict", "get_params", "set_params") if not callable(getattr(cls, m, None))]
    if missing:
        raise ConfigError(f"estimator {estimator!r} ({path}) lacks {missing}: a scikit-learn-compatible "
                          "estimator has fit, predict, get_params and set_params")
    from sklearn.base import is_classifier, is_regressor

    try:
        instance = cls()
    except TypeError as exc:
        raise ConfigError(f"estimator {estimator!r} ({path}) cannot be created without arguments: {exc}") from None
    if is_classification(task):
        if is_regressor(instance) or not callable(getattr(cls, "predict_proba", None)):
            raise ConfigError(f"estimator {estimator!r} ({path}) is not a classifier with predict_proba, which a "
                              f"{task} task needs")
    elif is_classifier(instance):
        raise ConfigError(f"estimator {estimator!r} ({path}) is a classifier; a regression task needs a regressor")
    return cls


def category_keys_of(values) -> Any:
    """:func:`category_key` over a pandas Series (or array), vectorised for the common dtypes.

    The result is an object Series of canonical texts, None where a value is missing; the index is kept.
    """
    import numpy as np
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(values)
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        out = series.map({True: "true", False: "false"})
    elif pd.api.types.is_integer_dtype(dtype):
        out = series.astype("Int64").astype("string").astype(object)
    elif pd.api.types.is_float_dtype(dtype):
        array = series.to_numpy(dtype=float)
        whole = np.isfinite(array) & (array == np.round(array))
        out = pd.Series([None if np.isnan(x) else (str(int(x)) if w else repr(float(x)))
                         for x, w in zip(array, whole, strict=True)], index=series.index, dtype=object)
    else:
        out = series.map(category_key, na_action="ignore")
    return out.astype(object).where(series.notna(), None)
