"""The serving fast path: the fitted pipeline compiled to numpy, bit for bit the registry's pipeline.

* :func:`serving_model` -- what the service scores with: the fitted pipeline compiled to numpy
  (:class:`CompiledPipeline`, :func:`compile_pipeline`: the same matrix and predictions bit for bit, without
  the ``ColumnTransformer``'s ~4.5 ms per call) when it has the structure ``tasks/features.py`` builds, else
  the pipeline itself on a DataFrame of the request (:class:`FramePipeline`); the serve log says which, and why.

Serving is its only user (the bento ships it: bentos/bentofile.yaml); no Prefect, no BentoML import here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


class NotCompilable(ValueError):
    """The fitted model is not the structure ``tasks/features.py`` builds; the message says what differs."""


class MissingColumns(ValueError):
    """The columns to score lack features the model reads; the message names them."""


@dataclass(frozen=True)
class NumericBlock:
    """``SimpleImputer(median, add_indicator)`` then ``StandardScaler``, as their fitted numbers."""

    names: tuple[str, ...]
    medians: np.ndarray  # the imputer's statistics_
    indicators: np.ndarray  # its indicator_.features_: the columns that had missing values in training
    mean: np.ndarray | None  # the scaler's mean_ (None when with_mean is off)
    scale: np.ndarray | None  # its scale_ (None when with_std is off)
    start: int  # the block's first output column

    @property
    def width(self) -> int:
        return len(self.names) + len(self.indicators)

    def write(self, out: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Fill this block's columns of ``out`` with the operations of the fitted steps, in their order:
        NaN -> median, the indicators appended (0/1), then ``-= mean_`` and ``/= scale_`` over both."""
        k = len(self.names)
        values = np.empty((out.shape[0], k))
        for j, name in enumerate(self.names):
            values[:, j] = columns[name]
        missing = np.isnan(values)
        block = out[:, self.start:self.start + self.width]
        block[:, :k] = np.where(missing, self.medians, values)
        block[:, k:] = missing[:, self.indicators]
        if self.mean is not None:
            block -= self.mean
        if self.scale is not None:
            block /= self.scale


@dataclass(frozen=True)
class CategoricalBlock:
    """``SimpleImputer(constant)`` then ``OneHotEncoder(handle_unknown="ignore")``, as one lookup per feature.

    ``lookups[j]`` maps each category text of feature ``j`` to its output column; None (missing) maps to the
    column of the imputer's fill value (``__missing__``), an unknown text to nothing (all zeros).
    """

    names: tuple[str, ...]
    lookups: tuple[dict[str | None, int], ...]
    start: int
    width: int

    def write(self, out: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        n = out.shape[0]
        rows = np.arange(n)
        for name, lookup in zip(self.names, self.lookups, strict=True):
            # ``v == v`` is False only for a NaN: missing, like None
            codes = np.fromiter((lookup.get(v, -1) if v == v else lookup[None] for v in columns[name]),
                                dtype=np.intp, count=n)
            hit = codes >= 0
            out[rows[hit], codes[hit]] = 1.0


@dataclass(frozen=True)
class CompiledPipeline:
    """The fitted pipeline of ``tasks/features.py`` as plain numpy, on the service's validated columns.

    Why: for one row the pipeline spends ~4.5 of its ~5.8 ms in the ``ColumnTransformer`` (pandas column
    selection, ``check_array``, feature-name checks and parameter validation in every step:
    benchmarks/README.md), not in the model. The compiled transform reads the *fitted* attributes (medians,
    indicator columns, scaler mean and scale, one-hot categories) and writes the same float64 matrix with the
    same floating-point operations in the same order, so it is equal bit for bit (tests/test_fastpath.py);
    the estimator then runs on it under ``config_context(assume_finite=True, skip_parameter_validation=True)``,
    checks that change no number. A calibrated version's map is applied as ``CalibratedModel`` applies it.

    It answers like the pipeline (``predict_proba``, ``predict``, ``classes_``), so
    ``tasks.predictions.model_scores`` turns it into the task's scores; only its input differs: ``columns``
    maps each feature to an array, numeric ones float with NaN for missing, categorical ones canonical texts
    with None (or NaN) for missing, as ``tasks.schema.RequestSchema`` builds them (other keys are ignored).

    It lives under bentos/ because serving is its only user, and the bento ships exactly the modules its
    bentofile lists (``bentos/fastpath.py`` among them).
    """

    inputs: tuple[str, ...]
    width: int
    blocks: tuple[NumericBlock | CategoricalBlock, ...]
    estimator: Any
    calibration: Any = None  # the tasks.calibrated.ProbabilityMap of a calibrated version

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator.classes_

    def transform(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """The matrix the fitted ``ColumnTransformer`` would produce for these columns."""
        missing = [name for name in self.inputs if name not in columns]
        if missing:
            raise MissingColumns(f"the columns to score have no feature(s) {missing} that the model reads; they "
                                 f"have {sorted(columns)}")
        rows = {name: len(columns[name]) for name in self.inputs}
        n = rows[self.inputs[0]] if self.inputs else 0
        if any(r != n for r in rows.values()):
            raise ValueError(f"the feature columns differ in length (values per column: {rows}); each needs one "
                             "value per row")
        out = np.zeros((n, self.width))
        for block in self.blocks:
            block.write(out, columns)
        return out

    def predict_proba(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        from sklearn import config_context

        matrix = self.transform(columns)
        with config_context(assume_finite=True, skip_parameter_validation=True):
            proba = self.estimator.predict_proba(matrix)
        return proba if self.calibration is None else self.calibration.apply(proba)

    def predict(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        from sklearn import config_context

        if self.calibration is not None:  # as CalibratedModel.predict: the most probable calibrated class
            return np.asarray(self.classes_)[self.predict_proba(columns).argmax(axis=1)]
        matrix = self.transform(columns)
        with config_context(assume_finite=True, skip_parameter_validation=True):
            return self.estimator.predict(matrix)


def compile_pipeline(model) -> CompiledPipeline:
    """The :class:`CompiledPipeline` of a fitted pipeline (or a calibrated version of one), or
    :class:`NotCompilable` saying how it differs from what ``tasks/features.build_pipeline`` builds.

    Only exact types are accepted (a subclass may transform differently); then the compiled transform and
    predictions are compared bit for bit with the pipeline's on probe rows (medians and declared
    categories, missing values, an unknown category, values off the medians) before they are trusted.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    from mlcycle.tasks.calibrated import CalibratedModel

    calibrated = model
    calibration = None
    if type(model) is CalibratedModel:
        model, calibration = model.model, model.calibration
    if type(model) is not Pipeline or [name for name, _ in model.steps] != ["preprocess", "model"]:
        raise NotCompilable(f"a {type(model).__name__} is not Pipeline([preprocess, model])")
    preprocess, estimator = model.steps[0][1], model.steps[1][1]
    if type(preprocess) is not ColumnTransformer or preprocess.sparse_output_ or preprocess.transformer_weights:
        raise NotCompilable("the preprocess step is not a dense, unweighted ColumnTransformer")
    if hasattr(estimator, "feature_names_in_"):
        raise NotCompilable("the estimator was fitted on named columns (a pandas output), not on a numpy matrix")
    blocks: list[NumericBlock | CategoricalBlock] = []
    for name, transformer, names in preprocess.transformers_:
        if name == "remainder" and transformer == "drop":
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise NotCompilable(f"transformer {name!r} selects its columns by position, not by name")
        if name not in ("numeric", "categorical"):
            raise NotCompilable(f"the ColumnTransformer has a transformer {name!r} (only numeric and categorical)")
        make = _numeric_block if name == "numeric" else _categorical_block
        blocks.append(make(transformer, names, preprocess.output_indices_[name]))
    width = sum(block.width for block in blocks)
    if width != getattr(estimator, "n_features_in_", width):
        raise NotCompilable(f"the transform writes {width} columns, the estimator reads {estimator.n_features_in_}")
    compiled = CompiledPipeline(tuple(n for block in blocks for n in block.names), width, tuple(blocks), estimator,
                                calibration)
    _check_on_probes(compiled, preprocess, calibrated)
    return compiled


def _fitted_steps(transformer, expected: list[tuple[str, type]], what: str) -> list[Any]:
    from sklearn.pipeline import Pipeline

    if type(transformer) is not Pipeline or [(n, type(s)) for n, s in transformer.steps] != expected:
        raise NotCompilable(f"the {what} transformer is not Pipeline({[(n, t.__name__) for n, t in expected]})")
    return [step for _, step in transformer.steps]


def _numeric_block(transformer, names: list[str], where: slice) -> NumericBlock:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    imputer, scaler = _fitted_steps(transformer, [("impute", SimpleImputer), ("scale", StandardScaler)], "numeric")
    medians = np.asarray(imputer.statistics_, dtype=np.float64)
    if imputer.strategy != "median" or not _is_nan(imputer.missing_values) or np.isnan(medians).any():
        raise NotCompilable("the numeric imputer is not a median imputer of NaN with a median for every column")
    indicators = imputer.indicator_.features_ if imputer.add_indicator else np.empty(0, dtype=np.intp)
    block = NumericBlock(tuple(names), medians, np.asarray(indicators, dtype=np.intp),
                         scaler.mean_ if scaler.with_mean else None, scaler.scale_ if scaler.with_std else None,
                         where.start)
    if where.stop - where.start != block.width:
        raise NotCompilable(f"the numeric block has {where.stop - where.start} columns, not {block.width}")
    return block


def _categorical_block(transformer, names: list[str], where: slice) -> CategoricalBlock:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    imputer, encoder = _fitted_steps(transformer, [("impute", SimpleImputer), ("onehot", OneHotEncoder)],
                                     "categorical")
    if imputer.strategy != "constant" or not _is_nan(imputer.missing_values) or imputer.add_indicator:
        raise NotCompilable("the categorical imputer is not a constant imputer of NaN without indicator")
    if (encoder.handle_unknown != "ignore" or encoder.drop is not None or encoder.sparse_output
            or encoder.min_frequency is not None or encoder.max_categories is not None
            or np.dtype(encoder.dtype) != np.float64):
        raise NotCompilable("the one-hot encoder is not dense float64 with handle_unknown='ignore', nothing dropped "
                            "or grouped")
    lookups, column = [], where.start
    for categories in encoder.categories_:
        texts = categories.tolist()
        if not all(isinstance(c, str) for c in texts):
            raise NotCompilable("the one-hot categories are not texts")
        lookup: dict[str | None, int] = {c: column + i for i, c in enumerate(texts)}
        lookup[None] = lookup.get(imputer.fill_value, -1)  # missing: the fill value, then one-hot encoded
        lookups.append(lookup)
        column += len(texts)
    if column != where.stop:
        raise NotCompilable(f"the categorical block has {where.stop - where.start} columns, not {column - where.start}")
    return CategoricalBlock(tuple(names), tuple(lookups), where.start, column - where.start)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _check_on_probes(compiled: CompiledPipeline, preprocess, model) -> None:
    """Compare the compiled transform and predictions with the pipeline's on probe rows, bit for bit."""
    import pandas as pd

    probes: dict[str, np.ndarray] = {}
    for block in compiled.blocks:
        if isinstance(block, NumericBlock):
            for name, median in zip(block.names, block.medians.tolist(), strict=True):
                probes[name] = np.array([median, np.nan, median * 1.5 + 1.0, -median - 0.25])
        else:
            for name, lookup in zip(block.names, block.lookups, strict=True):
                known = [c for c in lookup if c is not None]
                probes[name] = np.array([known[0], None, "\x00not a category", known[-1]], dtype=object)
    # the pipeline's frame as training fed it: NaN, not None, for a missing category
    frame = pd.DataFrame({name: [np.nan if v is None else v for v in probes[name]] if name in probes else [np.nan] * 4
                          for name in preprocess.feature_names_in_})
    expected = preprocess.transform(frame)
    if not isinstance(expected, np.ndarray) or not np.array_equal(expected, compiled.transform(probes)):
        raise NotCompilable("the compiled transform differs from the pipeline's on probe rows")
    method = "predict_proba" if hasattr(model, "predict_proba") else "predict"
    if not np.array_equal(getattr(model, method)(frame), getattr(compiled, method)(probes)):
        raise NotCompilable(f"the compiled {method} differs from the pipeline's on probe rows")


class FramePipeline:
    """The fallback: the pipeline itself, on a DataFrame of the columns (the model input training had)."""

    def __init__(self, pipeline, features: list[str]) -> None:
        self.pipeline = pipeline
        self.features = features

    @property
    def classes_(self) -> np.ndarray:
        return self.pipeline.classes_

    def frame(self, columns: dict[str, np.ndarray]):
        """The DataFrame of the columns; a missing category is NaN, as in training (``tasks.features.model_input``).

        An object column holding None where values are missing is read by pandas as text, None becoming NaN,
        unless every value is None: such a column stays object and the pipeline's imputer (of NaN) would pass
        the None to the encoder as an unknown category (all zeros, not ``__missing__``).
        """
        import pandas as pd

        data = {}
        for name in self.features:
            values = columns[name]
            if values.dtype == object and any(v is None for v in values):
                values = np.array([np.nan if v is None else v for v in values], dtype=object)
            data[name] = values
        return pd.DataFrame(data, columns=self.features, copy=False)

    def predict_proba(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return self.pipeline.predict_proba(self.frame(columns))

    def predict(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return self.pipeline.predict(self.frame(columns))


def serving_model(pipeline, features: list[str], say: Callable[[str], None] | None = None
                  ) -> CompiledPipeline | FramePipeline:
    """What the service scores with: the :class:`CompiledPipeline` when the fitted pipeline has the structure
    ``tasks/features.py`` builds, else the pipeline itself on a DataFrame (:class:`FramePipeline`); which one,
    and why, goes to ``say`` (default: the serve log, stderr)."""
    import sys

    say = say or (lambda message: print(message, file=sys.stderr, flush=True))
    try:
        compiled = compile_pipeline(pipeline)
    except NotCompilable as exc:
        say(f"mlcycle serving: fast path off, scoring through the pipeline on a DataFrame: {exc}")
        return FramePipeline(pipeline, features)
    say(f"mlcycle serving: fast path on: the pipeline compiled to numpy ({len(compiled.inputs)} features -> "
        f"{compiled.width} columns, {type(compiled.estimator).__name__}"
        f"{', calibrated' if compiled.calibration is not None else ''})")
    return compiled
