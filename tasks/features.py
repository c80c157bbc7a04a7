"""The model's input schema and the one scikit-learn ``Pipeline`` that is trained, evaluated and served.

Why one pipeline: imputation, scaling and one-hot encoding live *inside* the fitted object
(``ColumnTransformer`` then the estimator), so the object the gate evaluates is byte for byte the one
the registry stores and serving loads. There is no separate "serving transform" that could drift.

Contract of the pipeline built by :func:`build_pipeline`:

* Input: a DataFrame holding at least the columns of :func:`input_schema` (extra columns, such as the
  id, timestamp or target, are dropped by the ``ColumnTransformer``). Numeric columns may hold nulls
  (median-imputed, with a missing-indicator column); categorical columns may hold nulls (their own
  ``__missing__`` category) and values never declared (encoded as all-zeros, never an error).
* Categorical columns hold the **canonical texts** of their values (``category_key``: ``1``, ``1.0`` and
  ``"1"`` are ``"1"``). :func:`model_input` makes them so from whatever the data holds (numbers, booleans,
  strings); serving's validated requests already are. The normalisation is outside the pipeline on
  purpose: the fitted object stays scikit-learn only, and serving's fast path feeds it unchanged.
* Categories are the *declared* ones from ``DatasetSpec``, not those seen in training, so the encoded
  width does not depend on which days were in the window.
* The estimator is the family's, resolved for the dataset's task (``problem.estimator_class``: an alias or
  any import path). Output per task (:func:`predictions`): binary, ``predict_proba(X)[:, 1]`` is the
  probability of ``dataset.positive_label`` (the model is fitted on y = 1 for that label, 0 otherwise);
  multiclass, the probability of each class in ``dataset.class_labels`` order (the model is fitted on
  the canonical class texts; a class missing from the training rows gets probability 0); regression,
  ``predict(X)``.

Everything is derived from :class:`~tasks.settings.DatasetSpec` and a :class:`~tasks.settings.ModelFamily`;
nothing here names a column. The fitted pipeline contains only scikit-learn objects (and the family's
estimator), so loading it needs scikit-learn and not this package.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlcycle.tasks.records.training import InputColumn
from mlcycle.tasks.settings import ConfigError, FeatureSpec, ModelFamily, ParamSpace, Settings
from mlcycle.tasks.settings.problem import category_keys_of, estimator_class

MISSING_CATEGORY = "__missing__"
STEP = "model"  # the estimator's step name: search parameters are prefixed with "model__"


def training_features(settings: Settings) -> list[FeatureSpec]:
    """The features a model is trained on: ``training.features`` or every declared feature."""
    spec = settings.dataset
    names = settings.training.features or spec.feature_names
    return [spec.feature(n) for n in names]


def input_schema(features: list[FeatureSpec]) -> list[InputColumn]:
    return [InputColumn(name=f.name, kind=f.kind, dtype=f.dtype, nullable=f.nullable, categories=f.categories)
            for f in features]


def resolve_family(settings: Settings, family: str | None) -> tuple[str, ModelFamily]:
    """The named family (default ``training.family``), its parameters checked against the estimator class it
    resolves to for the dataset's task (an alias or an import path; ConfigError naming what is wrong)."""
    name = family or settings.training.family
    families = settings.training.families
    if name not in families:
        raise ConfigError(f"unknown model family {name!r}; configured families (training.families) are "
                          f"{sorted(families)}")
    spec = families[name]
    try:
        cls = estimator_class(spec.estimator, settings.dataset.task)
    except ConfigError as exc:
        raise ConfigError(f"training.families.{name}.estimator: {exc}") from None
    valid = set(cls().get_params())
    for where, keys in (("params", spec.params), ("search_space", spec.search_space)):
        unknown = sorted(k for k in keys if k not in valid)
        if unknown:
            raise ConfigError(
                f"training.families.{name}.{where} names unknown parameter(s) {unknown} of "
                f"{cls.__name__}; valid parameters are {sorted(valid)}"
            )
    return name, spec


def build_preprocessor(features: list[FeatureSpec]):
    """Imputation + scaling for numeric features, imputation + one-hot for categorical ones."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [f.name for f in features if f.kind == "numeric"]
    categorical = [f for f in features if f.kind == "categorical"]
    transformers = []
    if numeric:
        transformers.append(("numeric", Pipeline([
            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
            ("scale", StandardScaler()),
        ]), numeric))
    if categorical:
        transformers.append(("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
            ("onehot", OneHotEncoder(categories=[[*f.categories, MISSING_CATEGORY] for f in categorical],
                                     handle_unknown="ignore", sparse_output=False)),
        ]), [f.name for f in categorical]))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)


def build_pipeline(features: list[FeatureSpec], family: ModelFamily, seed: int, *, task: str):
    """The unfitted pipeline: preprocessing, then the family's estimator for ``task`` (a classifier for
    binary and multiclass, a regressor for regression) with its fixed parameters."""
    from sklearn.pipeline import Pipeline

    cls = estimator_class(family.estimator, task)
    params: dict[str, Any] = dict(family.params)
    if "random_state" in cls().get_params():
        params.setdefault("random_state", seed)  # reproducibility: same seed, same model
    return Pipeline([("preprocess", build_preprocessor(features)), (STEP, cls(**params))])


def search_distributions(family: ModelFamily) -> dict[str, Any]:
    """The family's search space as ``RandomizedSearchCV`` distributions on the pipeline's step."""
    return {f"{STEP}__{name}": _distribution(space) for name, space in family.search_space.items()}


def _distribution(space: ParamSpace):
    from scipy import stats

    if space.choices is not None:
        return list(space.choices)
    low, high = float(space.low), float(space.high)
    if space.integer:
        if space.log:
            return _LogIntUniform(int(low), int(high))
        return stats.randint(int(low), int(high) + 1)
    if space.log:
        return stats.loguniform(low, high)
    return stats.uniform(low, high - low)


class _LogIntUniform:
    """Whole numbers in [low, high], log-uniformly: as many small leaves (10..20) as large (100..200)."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def rvs(self, random_state=None):
        from scipy import stats

        value = stats.loguniform(self.low, self.high + 1).rvs(random_state=random_state)
        return int(min(self.high, max(self.low, int(value))))

    def __repr__(self) -> str:
        return f"log-int-uniform({self.low}, {self.high})"


class SchemaMismatch(ValueError):
    """A frame lacks columns the model reads; the message names them."""


def model_input(frame, features: list[FeatureSpec]):
    """The feature columns of ``frame`` in schema order (the pipeline ignores anything else), categorical
    ones as canonical texts (missing values NaN, which the pipeline's imputer reads as missing).

    ``features`` are FeatureSpecs or InputColumns (anything with ``name`` and ``kind``). Raises
    :class:`SchemaMismatch` naming the missing columns, rather than a KeyError from deep inside scikit-learn.
    """
    names = [f.name for f in features]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise SchemaMismatch(f"the data has no column(s) {missing} that the model reads; it has "
                             f"{list(frame.columns)}")
    data = frame[names]
    convert = [f.name for f in features if f.kind == "categorical" and not _is_text(data[f.name])]
    if not convert:
        return data
    data = data.copy()
    for name in convert:
        column = data[name]
        # NaN for missing: an object column holding None is not what SimpleImputer reads as missing
        data[name] = category_keys_of(column).where(column.notna(), np.nan)
    return data


def _is_text(column) -> bool:
    """A pandas string column (pandas 3's ``str``) holds canonical texts already, NaN where missing."""
    import pandas as pd

    return isinstance(column.dtype, pd.StringDtype)


# --------------------------------------------------------------------------------------------------
# what a fitted pipeline outputs, per task
# --------------------------------------------------------------------------------------------------
