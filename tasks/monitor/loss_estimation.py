"""Direct loss estimation (DLE): a regressor's MAE and RMSE on a window without labels.

Method, uncertainty and where it fails: tasks/monitor/estimation.py's docstring (NannyML's DLE: a "nanny"
gradient-boosting model of the monitored model's absolute error, and one of its squared error, fitted on
reference rows the model was not fitted on, applied to the window's inputs and predictions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mlcycle.tasks.monitor.estimation import (
    bootstrap_rows,
    check_draws,
    check_metrics,
    draw_blocks,
    draws_std,
    estimate_record,
)
from mlcycle.tasks.records.monitoring import MetricEstimate

MIN_REFERENCE_ROWS = 100  # DLE's reference: three out-of-fold fits need some rows each
PREDICTION_FEATURE = "__prediction__"  # the monitored model's prediction, a feature of the loss models
MAX_CATEGORIES = 255  # HistGradientBoosting's limit per categorical feature; rarer categories count as missing
RATIO_SAMPLE = 10_000  # reference error ratios kept with a LossEstimator for its bootstrap


def _values(a, name: str) -> np.ndarray:
    """A float vector of one value per row, checked (ValueError naming ``name`` and the problem)."""
    a = np.asarray(a, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one value per row, shape (n,); got shape {a.shape}")
    if len(a) == 0:
        raise ValueError(f"empty window: {name} hold no rows")
    if not np.isfinite(a).all():
        raise ValueError(
            f"{name} hold {np.sum(~np.isfinite(a))} NaN or infinite value(s), "
            f"first at row {np.flatnonzero(~np.isfinite(a))[0]}"
        )
    return a


def _same_rows(**sizes: int) -> None:
    if len(set(sizes.values())) > 1:
        raise ValueError("inconsistent numbers of rows: " + ", ".join(f"{k} {n}" for k, n in sizes.items()))


def realized_regression(y: np.ndarray, predictions: np.ndarray, metrics: Sequence[str]) -> dict[str, float]:
    """MAE and RMSE of the predictions against the labels."""
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    metrics = check_metrics("regression", metrics)
    y, v = _values(y, "y"), _values(predictions, "predictions")
    _same_rows(y=len(y), predictions=len(v))
    score = {"mae": mean_absolute_error, "rmse": root_mean_squared_error}
    return {m: float(score[m](y, v)) for m in metrics}


def _booster(seed: int):
    from sklearn.ensemble import HistGradientBoostingRegressor

    # squared error: the nanny predicts the conditional *mean* loss, whose average is the window's metric.
    # No early stopping: with a fixed number of iterations the fit is deterministic and uses every row.
    return HistGradientBoostingRegressor(
        max_iter=200,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )


class LossEstimator:
    """Direct loss estimation for a regressor: nanny models of its absolute and squared errors (module docstring).

    Fit on held-out reference rows (features, the model's predictions, the labels); numeric columns are read as
    float (NaN allowed), every other column (text, category, bool) as a categorical feature of at most
    :data:`MAX_CATEGORIES` categories (the most frequent; others and unseen ones count as missing). Plain
    attributes and scikit-learn models: it pickles with joblib.
    """

    def __init__(
        self, columns: list, categories: dict, absolute_model, squared_model, ratios: np.ndarray, reference_mae: float
    ) -> None:
        self.columns = columns  # the feature columns read, in order
        self.categories = categories  # column -> the categories kept (categorical columns only)
        self.absolute_model = absolute_model
        self.squared_model = squared_model
        self.ratios = ratios  # reference |error| / out-of-fold predicted |error|, for the bootstrap
        self.reference_mae = reference_mae

    @staticmethod
    def _keys(column: pd.Series) -> pd.Series:
        return column.astype(object).where(column.notna()).map(lambda v: v if pd.isna(v) else str(v))

    def design(self, features: pd.DataFrame, predictions: np.ndarray) -> pd.DataFrame:
        """The loss models' input: the fitted columns as float or pandas categories, plus the prediction."""
        if not isinstance(features, pd.DataFrame):
            raise ValueError(f"features must be a pandas DataFrame; got {type(features).__name__}")
        missing = [c for c in self.columns if c not in features.columns]
        if missing:
            raise ValueError(f"features lack the column(s) {missing} the loss estimator was fitted on")
        design = {}
        for i, column in enumerate(self.columns):
            values = features[column]
            if column in self.categories:
                design[f"f{i}"] = pd.Categorical(self._keys(values), categories=self.categories[column])
            else:
                design[f"f{i}"] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        design[PREDICTION_FEATURE] = np.asarray(predictions, dtype=float)
        return pd.DataFrame(design, index=range(len(features)))

    @classmethod
    def fit(cls, features: pd.DataFrame, predictions: np.ndarray, y: np.ndarray, *, seed: int = 0) -> LossEstimator:
        """Learn the model's errors on reference rows it was not fitted on (its in-sample errors are too small)."""
        from sklearn.model_selection import KFold, cross_val_predict

        if not isinstance(features, pd.DataFrame):
            raise ValueError(f"features must be a pandas DataFrame; got {type(features).__name__}")
        y, v = _values(y, "y"), _values(predictions, "predictions")
        _same_rows(features=len(features), predictions=len(v), y=len(y))
        if len(y) < MIN_REFERENCE_ROWS:
            raise ValueError(f"DLE needs at least {MIN_REFERENCE_ROWS} reference rows; got {len(y)}")
        if PREDICTION_FEATURE in features.columns:
            raise ValueError(f"features hold a column named {PREDICTION_FEATURE!r}, the name kept for the prediction")
        categories = {}
        for column in features.columns:
            kind = features[column].dtype
            if not pd.api.types.is_numeric_dtype(kind) or pd.api.types.is_bool_dtype(kind):
                counts = cls._keys(features[column]).value_counts()
                categories[column] = sorted(counts.index[:MAX_CATEGORIES])
        estimator = cls(list(features.columns), categories, None, None, np.ones(1), 0.0)
        X = estimator.design(features, v)
        absolute, squared = np.abs(y - v), (y - v) ** 2
        estimator.absolute_model = _booster(seed).fit(X, absolute)
        estimator.squared_model = _booster(seed).fit(X, squared)
        estimator.reference_mae = float(absolute.mean())
        if estimator.reference_mae > 0:
            folds = KFold(3, shuffle=True, random_state=seed)
            out_of_fold = np.clip(cross_val_predict(_booster(seed), X, absolute, cv=folds), 0, None)
            ratios = absolute / np.maximum(out_of_fold, 1e-3 * estimator.reference_mae)
            if len(ratios) > RATIO_SAMPLE:
                ratios = np.random.default_rng(seed).choice(ratios, RATIO_SAMPLE, replace=False)
            estimator.ratios = ratios
        return estimator

    def estimate(
        self,
        features: pd.DataFrame,
        predictions: np.ndarray,
        *,
        metrics: Sequence[str] = ("mae", "rmse"),
        draws: int = 200,
        seed: int = 0,
    ) -> dict[str, MetricEstimate]:
        """MAE and/or RMSE of the model on a window of ``features`` and its ``predictions``, without labels."""
        metrics = check_metrics("regression", metrics)
        check_draws(draws)
        if not isinstance(features, pd.DataFrame):
            raise ValueError(f"features must be a pandas DataFrame; got {type(features).__name__}")
        v = _values(predictions, "predictions")
        _same_rows(features=len(features), predictions=len(v))
        X = self.design(features, v)
        absolute = np.clip(self.absolute_model.predict(X), 0, None)
        values = {
            "mae": float(absolute.mean()),
            "rmse": float(np.sqrt(np.clip(self.squared_model.predict(X), 0, None).mean())),
        }

        rng = np.random.default_rng(seed)
        rows, scale = bootstrap_rows(len(absolute), rng)
        sample = absolute if rows is None else absolute[rows]
        drawn: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
        for size in draw_blocks(draws, len(sample)):
            errors = sample * self.ratios[rng.integers(0, len(self.ratios), size=(size, len(sample)))]
            for m in metrics:
                drawn[m].append(errors.mean(axis=1) if m == "mae" else np.sqrt((errors**2).mean(axis=1)))
        return {m: estimate_record(m, values[m], draws_std(drawn[m], scale), upper_bound=np.inf) for m in metrics}
