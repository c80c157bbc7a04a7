"""The leakage check: how well each feature *alone* predicts the target, before anyone trusts a model built on it.

A column written from the outcome (an amount known only once a loan defaulted, a follow-up date recorded
only for events, the count the binary target was derived from) makes a model look perfect on its test
window and useless in production. Such a column predicts the target on its own, so each feature gets a
small model of its own, fitted on the training window and scored on the validation window (rows the model
did not see; the time order is kept):

* a numeric feature: a decision tree of at most ``LEAVES`` leaves on that one column, missing values kept
  as missing (scikit-learn's trees send them down the side that fits best), so "non-null exactly when the
  label is 1" is one split and scores a perfect 1.0, as does any threshold relation; for regression also
  isotonic (monotone, up and down) fits, which interpolate where a tree cannot (a copy of a skewed count
  target leaves gaps in its tail that a tree's steps miss by a few points of R2); the best of them counts;
* a categorical feature: the target's distribution per category (missing as a category of its own) in the
  training window, read back for the validation rows: exactly what any model of that column alone can
  learn, whatever the number of categories.

The score per task (``gate.leakage``): binary ROC AUC, multiclass balanced accuracy of the most probable
class, regression R2. The result is a :class:`~mlcycle.tasks.records.evaluation.LeakageCheck` carried in the
Candidate; the gate (tasks/evaluation/gate.py) compares it with the thresholds and names the feature.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlcycle.tasks.evaluation.metrics import compute_metrics
from mlcycle.tasks.predictions import class_probabilities
from mlcycle.tasks.records.evaluation import FeatureLeakage, LeakageCheck
from mlcycle.tasks.settings import DatasetSpec, FeatureSpec, LeakageSettings
from mlcycle.tasks.settings.problem import category_keys_of

LEAVES = 64  # enough for any threshold or step relation, too few to memorise noise
MIN_LEAF_SHARE = 0.001  # a leaf holds at least this share of the training rows (and at least 5 of them)


def check_leakage(frames: dict[str, pd.DataFrame], y: dict[str, np.ndarray], features: list[FeatureSpec],
                  spec: DatasetSpec, config: LeakageSettings, seed: int) -> LeakageCheck:
    """Each feature's single-feature score on the validation window (see the module docstring)."""
    metric, _ = config.feature_threshold(spec.task)
    train, y_train = frames["train"], y["train"]
    if len(train) > config.max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(train), size=config.max_rows, replace=False))
        train, y_train = train.iloc[keep], y_train[keep]
    validation, y_validation = frames["validation"], y["validation"]
    scores = []
    for feature in features:
        if feature.kind == "categorical":
            candidates = [_per_category(train[feature.name], y_train, validation[feature.name], spec)]
        else:
            candidates = _numeric_models(train[feature.name], y_train, validation[feature.name], spec, seed)
        values = [compute_metrics(y_validation, predicted, 0.5, task=spec.task, classes=spec.class_labels).get(metric)
                  for predicted in candidates]
        values = [v for v in values if v is not None]
        scores.append(FeatureLeakage(feature=feature.name, score=max(values) if values else None))
    scores.sort(key=lambda f: np.inf if f.score is None else -f.score)  # undefined last
    return LeakageCheck(metric=metric, train_rows=len(train), validation_rows=len(validation), features=scores)


def _numbers(values) -> np.ndarray:
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan).reshape(-1, 1)


def _numeric_models(train_values, y_train: np.ndarray, validation_values, spec: DatasetSpec,
                    seed: int) -> list[np.ndarray]:
    """The validation predictions of each small model of one numeric column (none if it is all missing)."""
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    x, x_validation = _numbers(train_values), _numbers(validation_values)
    if np.isnan(x).all():
        return []
    options = {"max_leaf_nodes": LEAVES, "min_samples_leaf": max(5, int(MIN_LEAF_SHARE * len(x))),
               "random_state": seed}
    if spec.task == "regression":
        y = np.asarray(y_train, dtype=float)
        return [DecisionTreeRegressor(**options).fit(x, y).predict(x_validation),
                *(_isotonic(x[:, 0], y, x_validation[:, 0], increasing) for increasing in (True, False))]
    tree = DecisionTreeClassifier(**options).fit(x, y_train)
    probabilities = tree.predict_proba(x_validation)
    if spec.task == "binary":
        return [probabilities[:, list(tree.classes_).index(1)] if 1 in tree.classes_ else np.zeros(len(probabilities))]
    return [class_probabilities(tree.classes_, probabilities, spec.class_labels or [])]


def _isotonic(x: np.ndarray, y: np.ndarray, x_validation: np.ndarray, increasing: bool) -> np.ndarray:
    """A monotone fit of the present values; missing ones get the target's mean over the training rows where
    the feature is missing (or over all, if none is)."""
    from sklearn.isotonic import IsotonicRegression

    present, present_validation = ~np.isnan(x), ~np.isnan(x_validation)
    fallback = float(y[~present].mean()) if (~present).any() else float(y.mean())
    out = np.full(len(x_validation), fallback)
    model = IsotonicRegression(increasing=increasing, out_of_bounds="clip").fit(x[present], y[present])
    out[present_validation] = model.predict(x_validation[present_validation])
    return out


def _per_category(train_values, y_train: np.ndarray, validation_values, spec: DatasetSpec) -> np.ndarray:
    missing = "\0missing"  # a key no canonical text can be
    keys = category_keys_of(train_values).fillna(missing).to_numpy(dtype=object)
    looked_up = category_keys_of(validation_values).fillna(missing)
    if spec.task == "multiclass":
        classes = spec.class_labels or []
        table = pd.crosstab(pd.Series(keys, name="key"), pd.Series(y_train, name="y"), normalize="index")
        table = table.reindex(columns=classes, fill_value=0.0)
        prior = pd.Series(y_train).value_counts(normalize=True).reindex(classes, fill_value=0.0)
        rows = table.reindex(looked_up.to_numpy()).to_numpy(dtype=float, copy=True)
        unseen = np.isnan(rows).any(axis=1)
        rows[unseen] = prior.to_numpy()
        return rows
    means = pd.Series(np.asarray(y_train, dtype=float)).groupby(keys).mean()
    return looked_up.map(means).fillna(float(np.mean(y_train))).to_numpy(dtype=float)
