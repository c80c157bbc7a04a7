"""The serving fast path (bentos/fastpath.py: ``compile_pipeline``) is the registry pipeline, bit for bit.

On real tables (tests/support/datasets.py), one per task -- ``fair`` (binary), ``anes96`` (multiclass, 7
classes), ``randhie`` (regression) -- each with numeric-coded categorical columns, and with each family the
config offers for the task (logistic regression or ridge, and gradient boosting): the pipeline that
``tasks/features.build_pipeline`` builds is fitted on rows with missing values, then asked about held-out
rows with missing numbers, missing categories and categories never declared, in the form the service
holds them (one array per feature, None for a missing category). The compiled transform must equal the
fitted ``ColumnTransformer``'s matrix and the compiled scores the pipeline's, exactly (``np.array_equal``,
no tolerance): the same floating-point operations in the same order, on the same matrix.

The gradient-boosting estimator's trees are compiled too (``compile_trees``: flat arrays walked for all
trees at once): its probabilities and predictions must equal the estimator's exactly on the fitted
matrices with missing values put back (the trees' own NaN rule), for one row, a few, and 1,000 rows on
both sides of the row budget above which the estimator itself scores; a model splitting on categories
(native categorical support) keeps the estimator's own call, and is still exact.

A pipeline of another structure is not compiled: the service scores through it (and says so); a request
without a feature the model reads is refused naming it.
"""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pandas as pd
import pytest

from mlcycle.bentos.fastpath import (
    CompiledPipeline,
    FramePipeline,
    MissingColumns,
    NotCompilable,
    compile_pipeline,
    compile_trees,
    serving_model,
)
from mlcycle.bentos.runtime import Scorer
from mlcycle.tasks.calibrated import CalibratedModel, ProbabilityMap
from mlcycle.tasks.features import build_pipeline, model_input, resolve_family, training_features
from mlcycle.tasks.predictions import model_scores
from mlcycle.tasks.settings import load_settings
from mlcycle.tasks.training.window import labels
from tests.support.datasets import anes96, fair, randhie
from tests.support.real_training import subset, write_config
from tests.support.training import one_thread_per_fit

TABLES = {"fair": fair, "anes96": anes96, "randhie": randhie}
CATEGORICAL = {"fair": ["occupation", "occupation_husb", "religious"], "anes96": ["educ", "vote"], "randhie": ["idp"]}
# the families of mlcycle.yaml for classification; ridge for regression (logistic regression cannot regress)
FAMILIES = {"fair": ["logistic_regression", "hist_gradient_boosting"],
            "anes96": ["logistic_regression", "hist_gradient_boosting"],
            "randhie": ["ridge", "hist_gradient_boosting"]}
CASES = [(table, family) for table, families in FAMILIES.items() for family in families]
TRAIN_ROWS, SERVED_ROWS = 900, 240
UNKNOWN = "not-declared"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread_per_fit():
        yield


@dataclasses.dataclass
class Fitted:
    task: str
    classes: list[str] | None
    pipeline: object
    reference: pd.DataFrame  # the held-out rows as the pipeline reads them (model_input: NaN for missing)
    columns: dict[str, np.ndarray]  # the same rows as the service holds them (None for a missing category)
    categorical: list[str]
    numeric: list[str]


def with_holes(frame: pd.DataFrame, columns: list[str], share: float, seed: int) -> pd.DataFrame:
    """``frame`` with a seeded ``share`` of each column's values missing."""
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    for column in columns:
        frame[column] = frame[column].astype("float64").mask(rng.random(len(frame)) < share)
    return frame


def request_columns(reference: pd.DataFrame, features) -> dict[str, np.ndarray]:
    """The rows as ``tasks.schema.RequestSchema`` gives them to the scorer: float64 with NaN, texts with None."""
    out = {}
    for f in features:
        values = reference[f.name]
        if f.kind == "numeric":
            out[f.name] = values.to_numpy(dtype=np.float64)
        else:
            out[f.name] = np.array([None if pd.isna(v) else v for v in values], dtype=object)
    return out


@pytest.fixture
def fit(tmp_path, monkeypatch):
    """``fit(table, family)`` -> :class:`Fitted`: the table's pipeline fitted on rows with missing values."""

    def make(name: str, family: str) -> Fitted:
        table = dataclasses.replace(TABLES[name](), categorical=CATEGORICAL[name])
        table = subset(table, TRAIN_ROWS + SERVED_ROWS, seed=3)
        monkeypatch.setenv("MLCYCLE_CONFIG", str(write_config(tmp_path / "mlcycle.yaml", table, family=family)))
        settings = load_settings(home=tmp_path / "home")
        spec, features = settings.dataset, training_features(settings)
        numeric = [f.name for f in features if f.kind == "numeric"]
        categorical = [f.name for f in features if f.kind == "categorical"]
        assert numeric and sorted(categorical) == sorted(CATEGORICAL[name])
        frame = with_holes(table.frame, [*numeric[:3], *categorical], share=0.08, seed=1)
        train, served = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:].reset_index(drop=True)
        pipeline = build_pipeline(features, resolve_family(settings, family)[1], seed=0, task=spec.task)
        pipeline.fit(model_input(train, features), labels(train, spec))
        # held out: more missing values (in every numeric column, some never missing in training), and
        # categories no declaration has
        reference = model_input(with_holes(served, numeric, share=0.1, seed=2), features).copy()
        rng = np.random.default_rng(4)
        for column in categorical:
            reference.loc[rng.random(len(reference)) < 0.1, column] = UNKNOWN
        return Fitted(spec.task, spec.class_labels, pipeline, reference, request_columns(reference, features),
                      categorical, numeric)

    return make


def rows(columns: dict[str, np.ndarray], index) -> dict[str, np.ndarray]:
    return {name: values[index] for name, values in columns.items()}


@pytest.mark.parametrize(("table", "family"), CASES)
def test_the_compiled_pipeline_equals_the_registry_pipeline_bit_for_bit(fit, table, family):
    fitted = fit(table, family)
    compiled = compile_pipeline(fitted.pipeline)
    assert isinstance(compiled, CompiledPipeline) and compiled.calibration is None
    reference, columns = fitted.reference, fitted.columns
    # the rows exercise every rule: missing numbers, missing and unknown categories
    assert reference[fitted.numeric].isna().any().all()
    assert all(reference[c].isna().any() and (reference[c] == UNKNOWN).any() for c in fitted.categorical)

    matrix = fitted.pipeline.named_steps["preprocess"].transform(reference)
    assert matrix.dtype == np.float64 and np.array_equal(compiled.transform(columns), matrix)
    expected = model_scores(fitted.pipeline, reference, fitted.task, fitted.classes)
    assert np.array_equal(model_scores(compiled, columns, fitted.task, fitted.classes), expected)
    # what the service does when the pipeline cannot be compiled gives the same answers
    fallback = FramePipeline(fitted.pipeline, list(columns))
    assert np.array_equal(model_scores(fallback, columns, fitted.task, fitted.classes), expected)

    # one row per call, as a single-record /predict: a missing category alone in its column included
    missing = {c: int(np.flatnonzero(reference[c].isna())[0]) for c in fitted.categorical}
    unknown = {c: int(np.flatnonzero(reference[c] == UNKNOWN)[0]) for c in fitted.categorical}
    for i in sorted({0, 1, 2, *missing.values(), *unknown.values()}):
        one = model_scores(fitted.pipeline, reference.iloc[[i]], fitted.task, fitted.classes)
        assert np.array_equal(model_scores(compiled, rows(columns, [i]), fitted.task, fitted.classes), one), i
        assert np.array_equal(model_scores(fallback, rows(columns, [i]), fitted.task, fitted.classes), one), i


@pytest.mark.parametrize(("table", "family"), [("fair", "logistic_regression")])
def test_a_missing_category_is_its_own_column_and_an_unknown_one_is_all_zeros(fit, table, family):
    fitted = fit(table, family)
    compiled = compile_pipeline(fitted.pipeline)
    names = list(fitted.pipeline.named_steps["preprocess"].get_feature_names_out())
    column = fitted.categorical[0]
    own = [i for i, n in enumerate(names) if n.startswith(f"categorical__{column}_")]
    one = rows(fitted.columns, [0, 1])
    one[column] = np.array([None, UNKNOWN], dtype=object)
    one[fitted.numeric[0]] = np.array([np.nan, 1.0])
    matrix = compiled.transform(one)
    assert matrix[0, own].tolist() == [0.0] * (len(own) - 1) + [1.0]  # __missing__ is the last category
    assert names[own[-1]] == f"categorical__{column}___missing__"
    assert matrix[1, own].tolist() == [0.0] * len(own)
    # a missing number: its median, and its indicator 1 (both then standardised, like every numeric column)
    numeric = fitted.pipeline.named_steps["preprocess"].named_transformers_["numeric"]
    median = numeric.named_steps["impute"].statistics_[0]
    mean, scale = numeric.named_steps["scale"].mean_, numeric.named_steps["scale"].scale_
    indicator = names.index(f"numeric__missingindicator_{fitted.numeric[0]}")
    assert matrix[0, 0] == (median - mean[0]) / scale[0]
    assert matrix[:, indicator].tolist() == [(1.0 - mean[indicator]) / scale[indicator],
                                             (0.0 - mean[indicator]) / scale[indicator]]


@pytest.mark.parametrize(("table", "family", "calibration"), [
    ("fair", "hist_gradient_boosting", ProbabilityMap("sigmoid", binary=True, slopes=(1.3,), intercepts=(-0.2,))),
    ("anes96", "logistic_regression", ProbabilityMap("temperature", binary=False, temperature=1.7)),
])
def test_a_calibrated_version_is_compiled_with_its_map(fit, table, family, calibration):
    fitted = fit(table, family)
    calibrated = CalibratedModel(fitted.pipeline, calibration)
    compiled = compile_pipeline(calibrated)
    assert compiled.calibration is calibration
    expected = model_scores(calibrated, fitted.reference, fitted.task, fitted.classes)
    assert np.array_equal(model_scores(compiled, fitted.columns, fitted.task, fitted.classes), expected)
    assert np.array_equal(compiled.predict(fitted.columns), calibrated.predict(fitted.reference))


def test_the_scorer_batches_requests_through_the_compiled_pipeline(fit):
    fitted = fit("anes96", "hist_gradient_boosting")
    said: list[str] = []
    model = serving_model(fitted.pipeline, list(fitted.columns), say=said.append)
    assert isinstance(model, CompiledPipeline) and "fast path on" in said[0] and "trees compiled" in said[0]
    scorer = Scorer(lambda columns: model_scores(model, columns, fitted.task, fitted.classes), list(fitted.columns),
                    max_batch_rows=1000)

    async def concurrent_requests() -> list[np.ndarray]:
        parts = [rows(fitted.columns, slice(start, start + 7)) for start in range(0, 70, 7)]
        return await asyncio.gather(*(scorer.score(part, 7) for part in parts))

    try:
        answers = asyncio.run(concurrent_requests())
    finally:
        scorer.close()
    expected = model_scores(fitted.pipeline, fitted.reference.iloc[:70], fitted.task, fitted.classes)
    assert scorer.calls < 10  # coalesced
    assert np.array_equal(np.concatenate(answers), expected)  # boosting scores each row on its own


def test_a_pipeline_of_another_structure_is_served_through_the_pipeline_and_the_log_says_why(fit):
    from sklearn.base import clone
    from sklearn.preprocessing import MinMaxScaler

    fitted = fit("fair", "logistic_regression")
    other = clone(fitted.pipeline).set_params(preprocess__numeric__scale=MinMaxScaler())
    train = fitted.reference.fillna({c: 0.0 for c in fitted.numeric})
    other.fit(train, np.arange(len(train)) % 2)
    said: list[str] = []
    model = serving_model(other, list(fitted.columns), say=said.append)
    assert isinstance(model, FramePipeline)
    assert "fast path off" in said[0] and "numeric transformer" in said[0] and "StandardScaler" in said[0]
    assert np.array_equal(model_scores(model, fitted.columns, "binary"),
                          model_scores(other, fitted.reference, "binary"))
    with pytest.raises(NotCompilable, match="is not Pipeline"):
        compile_pipeline(fitted.pipeline.named_steps["model"])


def test_a_request_without_a_feature_the_model_reads_is_refused_naming_it(fit):
    fitted = fit("randhie", "ridge")
    compiled = compile_pipeline(fitted.pipeline)
    gone = fitted.categorical[0]
    columns = {name: values for name, values in fitted.columns.items() if name != gone}
    with pytest.raises(MissingColumns, match=rf"no feature\(s\) \['{gone}'\] that the model reads"):
        model_scores(compiled, columns, fitted.task)
    uneven = dict(fitted.columns, **{gone: fitted.columns[gone][:3]})
    with pytest.raises(ValueError, match="differ in length"):
        compiled.transform(uneven)


def with_missing_values(matrix: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """``rows`` rows drawn from ``matrix`` with a seeded 10% of the values NaN (the trees' missing rule)."""
    rng = np.random.default_rng(seed)
    drawn = matrix[rng.integers(0, len(matrix), rows)]
    drawn[rng.random(drawn.shape) < 0.1] = np.nan
    return drawn


def answers(model, matrix: np.ndarray, classifier: bool) -> list[np.ndarray]:
    """What a boosting estimator answers: predict, and predict_proba for a classifier."""
    return [model.predict(matrix), *([model.predict_proba(matrix)] if classifier else [])]


@pytest.mark.parametrize("table", ["fair", "anes96", "randhie"])
def test_the_compiled_trees_equal_the_boosting_estimator_bit_for_bit(fit, table):
    fitted = fit(table, "hist_gradient_boosting")
    compiled = compile_pipeline(fitted.pipeline)
    estimator, trees = compiled.estimator, compiled.trees
    assert trees is not None and compiled.trees_off is None and trees.estimator is estimator
    assert len(trees.roots) == 40 * (7 if table == "anes96" else 1)  # every tree of every iteration
    assert 1 < trees.max_rows < 1000  # 1,000 rows go to the estimator's own predict
    matrix = with_missing_values(compiled.transform(fitted.columns), 1000, seed=5)
    assert np.isnan(matrix).any(axis=1).mean() > 0.5
    walked_everywhere = compile_trees(estimator, budget=1000 * trees.depth)  # 1,000 rows through the walk too
    assert walked_everywhere.max_rows >= 1000
    classifier = fitted.task != "regression"
    for rows in (1, 2, 5, trees.max_rows, trees.max_rows + 1, 1000):
        part = matrix[:rows]
        expected = answers(estimator, part, classifier)
        for compiled_trees in (trees, walked_everywhere):
            got = answers(compiled_trees, part, classifier)
            assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True)), rows
    for i in range(20):  # one row per call, as a single-record /predict
        one = matrix[[i]]
        assert all(np.array_equal(g, e) for g, e in zip(answers(trees, one, classifier),
                                                         answers(estimator, one, classifier), strict=True)), i
    if classifier:  # the raw scores themselves, before the link
        raw = walked_everywhere.raw_predict(matrix)
        decision = estimator.decision_function(matrix)
        assert np.array_equal(raw.ravel() if raw.shape[1] == 1 else raw, decision)


def test_a_boosting_model_that_splits_on_categories_keeps_the_estimator_call_and_is_exact(fit):
    from sklearn.base import clone

    fitted = fit("anes96", "hist_gradient_boosting")
    native = clone(fitted.pipeline)
    matrix = native.named_steps["preprocess"].fit_transform(fitted.reference)  # as the fit below will make it
    names = list(native.named_steps["preprocess"].get_feature_names_out())
    one_hot = [i for i, n in enumerate(names) if n.startswith("categorical__")]
    native.set_params(model__categorical_features=one_hot)
    # labels that a category decides (its most even one-hot column), so that the trees split on it
    deciding = one_hot[int(np.argmin(np.abs(matrix[:, one_hot].mean(axis=0) - 0.5)))]
    classes = fitted.pipeline.classes_
    native.fit(fitted.reference, np.where(matrix[:, deciding] == 1.0, classes[0], classes[1]))
    estimator = native.named_steps["model"]
    assert any(tree.nodes["is_categorical"].any() for iteration in estimator._predictors for tree in iteration)
    with pytest.raises(NotCompilable, match="categor"):
        compile_trees(estimator)
    said: list[str] = []
    model = serving_model(native, list(fitted.columns), say=said.append)
    assert isinstance(model, CompiledPipeline) and model.trees is None and "categor" in model.trees_off
    assert "trees not compiled" in said[0]
    expected = model_scores(native, fitted.reference, fitted.task, fitted.classes)
    assert np.array_equal(model_scores(model, fitted.columns, fitted.task, fitted.classes), expected)
    one = model_scores(native, fitted.reference.iloc[[0]], fitted.task, fitted.classes)
    assert np.array_equal(model_scores(model, rows(fitted.columns, [0]), fitted.task, fitted.classes), one)


def test_only_the_exact_boosting_types_are_compiled(fit):
    fitted = fit("fair", "logistic_regression")
    with pytest.raises(NotCompilable, match="LogisticRegression is not a HistGradientBoosting"):
        compile_trees(fitted.pipeline.named_steps["model"])
    assert compile_pipeline(fitted.pipeline).trees is None and compile_pipeline(fitted.pipeline).trees_off is None


def test_a_loaded_worker_freezes_its_heap_and_collects_young_objects_less_often():
    """quiet_gc: what is allocated when the model has loaded is out of the collector's reach, a young collection
    waits for serving.gc_threshold new objects; 0 leaves Python's collector as it is."""
    import gc

    from mlcycle.bentos.runtime import quiet_gc

    before = gc.get_threshold()
    try:
        quiet_gc(0)
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        loaded = [{"weights": list(range(10))} for _ in range(1000)]  # stands for the model's objects
        quiet_gc(50_000)
        assert gc.get_threshold() == (50_000, 20, 20)
        assert gc.get_freeze_count() >= len(loaded)  # the loaded objects are frozen, never scanned again
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
