"""The serving fast path: the fitted pipeline compiled to numpy, bit for bit the registry's pipeline.

* :func:`serving_model` -- what the service scores with: the fitted pipeline compiled to numpy
  (:class:`CompiledPipeline`, :func:`compile_pipeline`: the same matrix and predictions bit for bit, without
  the ``ColumnTransformer``'s ~4.5 ms per call) when it has the structure ``tasks/features.py`` builds, else
  the pipeline itself on a DataFrame of the request (:class:`FramePipeline`); the serve log says which, and why.
* :func:`compile_trees` -- a fitted ``HistGradientBoostingClassifier``/``Regressor`` (the default family)
  compiled to flat arrays (:class:`CompiledTrees`), which the compiled pipeline scores small batches with.

Why compiled trees: for one row the estimator itself takes ~1.1 ms with 200 iterations, because
``_predict_iterations`` calls each ``TreePredictor`` in turn (~5 us each: an output array and an OpenMP
region per tree). :class:`CompiledTrees` stacks every tree's nodes into flat arrays and walks all trees for
all rows at once, one numpy step per depth level (benchmarks/README.md: the figures and the crossover).

How it stays exact (tests/test_fastpath.py compares with ``np.array_equal``): the walk is the rule of
scikit-learn's ``_predictor.pyx`` (NaN -> the node's ``missing_go_to_left``, else ``x <= num_threshold`` ->
left); a leaf's value is copied, not computed; the raw scores are accumulated as ``_raw_predict`` does,
``baseline`` then each iteration's tree ``k`` added to column ``k`` in iteration order (a sequential
``cumsum`` along the tree axis: a plain ``sum`` would add pairwise and round differently); and the link is
the estimator's own (its loss's ``predict_proba``, its inverse link, its ``> 0`` / ``argmax`` rule for
classes). Splits on categories (native categorical support), a remapping preprocessor, NaN thresholds or a
missing attribute are not compiled (:class:`NotCompilable`): the estimator is then called as it is. Above
:data:`ROW_DEPTH_BUDGET` (rows x the deepest leaf) the estimator's own predict, whose cost is mostly per
tree, is faster, so large batches go to it. Reading the fitted trees needs scikit-learn's private
attributes ``_predictors``, ``_baseline_prediction`` and ``_loss`` (there is no public access to them):
their absence is a clear :class:`NotCompilable`, and the start-up probe check compares the compiled
predictions with the pipeline's bit for bit whatever scikit-learn version is installed.

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


# rows x the deepest leaf up to which CompiledTrees scores a batch, above it the estimator's own predict: the
# walk costs per (row, tree, level), the estimator mostly per tree, so the crossover is a rows x depth figure
# whatever the number of trees (benchmarks/README.md: ~115 rows at depth 18, i.e. ~2,000); 1,000 keeps the walk
# where it is clearly faster (50 rows at depth 18: 0.94 ms against 1.59)
ROW_DEPTH_BUDGET = 1000


@dataclass(frozen=True)
class CompiledTrees:
    """A fitted ``HistGradientBoostingClassifier``/``Regressor``'s trees as flat arrays, walked all at once.

    The walk's state is ``2 x`` a node's position in the stacked nodes, so that ``state + go_left`` picks
    the next state in ``child`` (``child[2i]`` the right child's state, ``child[2i + 1]`` the left's); a
    leaf's children are itself, so ``depth`` steps bring every (row, tree) to its leaf. ``column`` is the
    split's feature, plus ``n_features`` when missing values go left: that half of the walked matrix holds
    ``-inf`` for NaN (``-inf <= threshold`` goes left), the first half NaN (``NaN <= threshold`` is False:
    right), so one comparison applies the NaN rule (exact because no threshold is NaN: compile_trees).
    """

    estimator: Any
    roots: np.ndarray  # each tree's root state, in _predictors order (iteration-major, then class k)
    child: np.ndarray  # per state: the next state when going right (even) or left (odd)
    column: np.ndarray  # per state: the column of the walked matrix the split reads
    threshold: np.ndarray  # per state: the split's num_threshold
    value: np.ndarray  # per state: the node's value (a leaf's output)
    baseline: np.ndarray  # _baseline_prediction, shape (1, trees per iteration)
    loss: Any  # the estimator's _loss: its predict_proba and inverse link
    depth: int  # the deepest leaf's depth
    n_features: int
    max_rows: int  # larger batches go to the estimator's own predict

    def raw_predict(self, matrix: np.ndarray) -> np.ndarray:
        """The estimator's ``_raw_predict(matrix)``, bit for bit: (rows, trees per iteration), Fortran order."""
        n, f = matrix.shape
        walked = np.empty((n, 2 * f))
        walked[:, :f] = matrix
        walked[:, f:] = np.where(np.isnan(matrix), -np.inf, matrix)
        flat = walked.ravel()
        row_start = (np.arange(n) * (2 * f))[:, None]
        state = np.broadcast_to(self.roots, (n, len(self.roots)))
        for _ in range(self.depth):
            state = self.child[state + (flat[row_start + self.column[state]] <= self.threshold[state])]
        k = self.baseline.shape[1]
        iterations = len(self.roots) // k
        terms = np.empty((n, iterations + 1, k))
        terms[:, 0, :] = np.zeros((n, k)) + self.baseline  # as _raw_predict: zeros, += baseline
        terms[:, 1:, :] = self.value[state].reshape(n, iterations, k)
        np.cumsum(terms, axis=1, out=terms)  # sequential, in iteration order, as _predict_iterations adds
        return np.asfortranarray(terms[:, -1, :])

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        if len(matrix) > self.max_rows:
            return self.estimator.predict_proba(matrix)
        return self.loss.predict_proba(self.raw_predict(matrix))

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if len(matrix) > self.max_rows:
            return self.estimator.predict(matrix)
        raw = self.raw_predict(matrix)
        if not hasattr(self.estimator, "classes_"):  # the regressor: its inverse link
            return self.loss.link.inverse(raw.ravel())
        # as HistGradientBoostingClassifier.predict: "> 0" for two classes (argmax would pick 0 on a tie)
        encoded = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return self.estimator.classes_[encoded]


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
    trees: CompiledTrees | None = None  # the estimator's trees compiled, for a HistGradientBoosting estimator
    trees_off: str | None = None  # why a HistGradientBoosting estimator's trees were not compiled

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator.classes_

    @property
    def scorer(self) -> Any:
        """What scores the matrix: the compiled trees when there are, else the estimator."""
        return self.estimator if self.trees is None else self.trees

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
            proba = self.scorer.predict_proba(matrix)
        return proba if self.calibration is None else self.calibration.apply(proba)

    def predict(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        from sklearn import config_context

        if self.calibration is not None:  # as CalibratedModel.predict: the most probable calibrated class
            return np.asarray(self.classes_)[self.predict_proba(columns).argmax(axis=1)]
        matrix = self.transform(columns)
        with config_context(assume_finite=True, skip_parameter_validation=True):
            return self.scorer.predict(matrix)


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
    trees, trees_off = None, None
    if type(estimator) in _boosting_types():
        try:
            trees = compile_trees(estimator)
        except NotCompilable as exc:  # the estimator is then called as it is
            trees_off = str(exc)
    compiled = CompiledPipeline(tuple(n for block in blocks for n in block.names), width, tuple(blocks), estimator,
                                calibration, trees, trees_off)
    _check_on_probes(compiled, preprocess, calibrated)
    return compiled


def _boosting_types() -> tuple[type, ...]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    return HistGradientBoostingClassifier, HistGradientBoostingRegressor


def compile_trees(estimator, budget: int = ROW_DEPTH_BUDGET) -> CompiledTrees:
    """The :class:`CompiledTrees` of a fitted ``HistGradientBoostingClassifier``/``Regressor`` (exact types), or
    :class:`NotCompilable` saying what it cannot replicate; checked bit for bit against the estimator on rows
    drawn from the split thresholds (each threshold, just above it, NaN) before it is returned.

    ``budget``: rows x depth up to which the compiled trees score a batch (:data:`ROW_DEPTH_BUDGET`).
    """
    name = type(estimator).__name__
    if type(estimator) not in _boosting_types():
        raise NotCompilable(f"a {name} is not a HistGradientBoostingClassifier or HistGradientBoostingRegressor")
    # scikit-learn's private attributes: the only access to the fitted trees (module docstring)
    predictors = getattr(estimator, "_predictors", None)
    baseline = getattr(estimator, "_baseline_prediction", None)
    loss = getattr(estimator, "_loss", None)
    if predictors is None or baseline is None or loss is None:
        raise NotCompilable(f"the {name} has no _predictors, _baseline_prediction or _loss (not fitted, or a "
                            "scikit-learn version that keeps its trees elsewhere)")
    k = estimator.n_trees_per_iteration_
    baseline = np.asarray(baseline)
    if baseline.dtype != np.float64 or baseline.shape != (1, k) or not predictors:
        raise NotCompilable(f"the {name}'s baseline is not float64 of shape (1, {k}), or it has no trees")
    if any(len(iteration) != k for iteration in predictors):
        raise NotCompilable(f"an iteration of the {name} does not have {k} trees")
    fields = ("value", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf",
              "is_categorical", "depth")
    tables = [getattr(tree, "nodes", None) for iteration in predictors for tree in iteration]
    if not all(isinstance(t, np.ndarray) and t.dtype.names and set(fields) <= set(t.dtype.names) for t in tables):
        raise NotCompilable(f"the {name}'s trees have no nodes array with the fields {list(fields)}")
    nodes = np.concatenate(tables)
    split = ~nodes["is_leaf"].astype(bool)
    if nodes["is_categorical"].any():
        raise NotCompilable(f"the {name} splits on categories (native categorical support): its trees are not "
                            "compiled")
    if getattr(estimator, "_preprocessor", None) is not None or getattr(estimator, "is_categorical_", None) is not None:
        raise NotCompilable(f"the {name} remaps its input (categorical_features): its trees are not compiled")
    if np.isnan(nodes["num_threshold"][split]).any():
        raise NotCompilable(f"a split of the {name} has a NaN threshold (infinite values in training)")
    depth = int(nodes["depth"].max())
    if budget // max(depth, 1) < 1:
        raise NotCompilable(f"the {name}'s trees are {depth} deep: the estimator's own predict is faster")
    sizes = np.array([len(t) for t in tables])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
    position = np.arange(len(nodes), dtype=np.intp)
    start = np.repeat(starts, sizes)
    left = np.where(split, nodes["left"].astype(np.intp) + start, position)
    right = np.where(split, nodes["right"].astype(np.intp) + start, position)
    child = np.empty(2 * len(nodes), dtype=np.intp)
    child[0::2], child[1::2] = 2 * right, 2 * left
    f = estimator.n_features_in_
    column = np.where(split, nodes["feature_idx"] + f * nodes["missing_go_to_left"].astype(np.intp), 0)
    trees = CompiledTrees(estimator, 2 * starts, child, np.repeat(column.astype(np.intp), 2),
                          np.repeat(np.where(split, nodes["num_threshold"], 0.0), 2),
                          np.repeat(nodes["value"].astype(np.float64), 2), baseline, loss, depth, f,
                          budget // max(depth, 1))
    _check_on_thresholds(trees, nodes[split])
    return trees


def _check_on_thresholds(trees: CompiledTrees, splits: np.ndarray) -> None:
    """Compare the compiled trees with the estimator, bit for bit, on up to ``max_rows`` rows whose values in
    each column are drawn from its splits' thresholds, the next float above them, NaN and 0 (the walk's rules
    at their boundaries)."""
    f = trees.n_features
    values = [np.unique(splits["num_threshold"][splits["feature_idx"] == j]) for j in range(f)]
    values = [np.concatenate([v, np.nextafter(v, np.inf), [np.nan, 0.0]]) for v in values]
    n = min(max(len(v) for v in values), trees.max_rows)
    rng = np.random.default_rng(0)
    matrix = np.column_stack([rng.choice(v, n) if len(v) > n else np.resize(v, n) for v in values])
    method = "predict_proba" if hasattr(trees.estimator, "predict_proba") else "predict"
    if not np.array_equal(getattr(trees, method)(matrix), getattr(trees.estimator, method)(matrix)):
        raise NotCompilable(f"the compiled trees' {method} differs from the {type(trees.estimator).__name__}'s")


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
    trees = compiled.trees
    if trees is not None:
        trees_said = (f"; its {len(trees.roots)} trees compiled ({trees.depth} deep), for batches of up to "
                      f"{trees.max_rows} rows")
    else:
        trees_said = f"; its trees not compiled: {compiled.trees_off}" if compiled.trees_off else ""
    say(f"mlcycle serving: fast path on: the pipeline compiled to numpy ({len(compiled.inputs)} features -> "
        f"{compiled.width} columns, {type(compiled.estimator).__name__}"
        f"{', calibrated' if compiled.calibration is not None else ''}{trees_said})")
    return compiled
