"""Property-based tests (hypothesis) of the path declaration -> validation suite -> serving request schema.

Strategies are generated from a dataset declaration (``DatasetSpec``): the project's own ``mlcycle.yaml``
and random declarations (numeric float/int features with or without bounds, categorical ones, nullable
or not). On them:

* **hostile records and column batches** through the request schema (tasks/schema.py): any JSON value
  for any field, missing and extra keys, NaN/Infinity, huge numbers, wrong types, unseen categories,
  lists of different lengths -- the only outcome besides acceptance is pydantic's ValidationError, its
  rendered message names fields that exist in the request, and what is accepted converts to model
  input within the declared ranges and categories;
* **random frames** through the generated GX suite (tasks/validation/): valid rows, boundary values,
  nulls, wrong types, unseen categories, out-of-range values, missing and extra columns, and the dtypes
  pandas gives the same data (nullable ``Int64``, whole-number ``float64`` for an int feature,
  ``category`` and ``object`` strings) -- ``validate_frame`` always answers; a frame with a breaking
  change fails; and **every frame validation accepts is accepted by the serving schema** (as records
  and as a column batch) and yields exactly the model-input columns the pipeline reads from the frame.

GX costs about a second per call, so that property runs 20 examples of up to 30 rows each; the schema
properties run 150 each (the generated request models are cached per declaration). No example
database is written (``database=None``).
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mlcycle.tasks.features import model_input
from mlcycle.tasks.schema import build_schema, error_message
from mlcycle.tasks.serving.client import columns_payload, records_payload
from mlcycle.tasks.settings import DatasetSpec, FeatureSpec
from tests.support.env import make_settings

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=20, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
UNSEEN = "zz-never-declared"
EXTRA = "shoe_size"


@pytest.fixture(scope="module")
def project_spec(tmp_path_factory) -> DatasetSpec:
    # one row is a batch here: the row-count expectation is not what these properties are about
    return make_settings(tmp_path_factory.mktemp("properties")).dataset.model_copy(update={"min_rows_per_batch": 1})


# --------------------------------------------------------------------------------------------------
# strategies from a declaration
# --------------------------------------------------------------------------------------------------


@st.composite
def numeric_feature(draw, name: str) -> FeatureSpec:
    dtype = draw(st.sampled_from(["float", "int"]))
    low = draw(st.none() | st.integers(-1000, 1000).map(float))
    high = draw(st.none() | st.integers(0, 2000).map(float))
    if low is not None and high is not None and low > high:
        low, high = high, low
    return FeatureSpec(name=name, kind="numeric", dtype=dtype, min=low, max=high, nullable=draw(st.booleans()))


@st.composite
def categorical_feature(draw, name: str) -> FeatureSpec:
    categories = draw(st.lists(st.sampled_from(["a", "b", "north", "x y", "é", "0", "True"]), min_size=1,
                               max_size=4, unique=True))
    return FeatureSpec(name=name, kind="categorical", categories=categories, nullable=draw(st.booleans()))


@st.composite
def declarations(draw) -> DatasetSpec:
    """A random dataset declaration: 1-5 features, numeric (float/int, bounded or not) or categorical."""
    count = draw(st.integers(1, 5))
    features = [draw(st.one_of(numeric_feature(f"f{i}"), categorical_feature(f"f{i}"))) for i in range(count)]
    return DatasetSpec(name="random", id_column="rid", timestamp_column="ts", target="y", features=features,
                       min_rows_per_batch=1)


@functools.lru_cache(maxsize=64)
def _schema(spec_json: str, max_batch_rows: int):
    spec = DatasetSpec.model_validate_json(spec_json)
    return build_schema(spec, spec.feature_names, max_batch_rows=max_batch_rows)


def schema_of(spec: DatasetSpec, max_batch_rows: int = 50):
    """The request schema of ``spec`` (cached: generating the pydantic models is the slow part)."""
    return _schema(spec.model_dump_json(), max_batch_rows)


def bounds(f: FeatureSpec) -> tuple[float, float]:
    return (f.min if f.min is not None else -1e9), (f.max if f.max is not None else 1e9)


def valid_value(f: FeatureSpec) -> st.SearchStrategy:
    """A value validation and serving must both accept: in range / in the categories, boundaries included."""
    if f.kind == "categorical":
        value = st.sampled_from(f.categories)
    elif f.dtype == "int":
        low, high = bounds(f)
        value = st.integers(math.ceil(low), math.floor(high))
    else:
        low, high = bounds(f)
        value = st.sampled_from([low, high]) | st.floats(low, high, allow_nan=False, allow_infinity=False)
    return value | st.none() if f.nullable else value


def hostile_value(f: FeatureSpec) -> st.SearchStrategy:
    """Anything a client may send for a feature."""
    low, high = bounds(f)
    return st.one_of(
        valid_value(f), st.none(), st.booleans(), st.text(max_size=8), st.sampled_from([UNSEEN, "42", ""]),
        st.integers(-(2 ** 80), 2 ** 80), st.sampled_from([math.nan, math.inf, -math.inf, low - 0.5, high + 0.5]),
        st.floats(), st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


# the changes a frame may get besides its dtypes; each breaking one must fail validation
BREAKING = {"null_in_required", "out_of_range", "unseen_category", "wrong_type", "missing_column",
            "extra_column"}


def applicable(spec: DatasetSpec) -> list[str]:
    out = ["none", "none", "none", "missing_column", "extra_column", "wrong_type"]
    features = spec.features
    if any(not f.nullable for f in features):
        out.append("null_in_required")
    if any(f.kind == "numeric" and (f.min is not None or f.max is not None) for f in features):
        out.append("out_of_range")
    if any(f.kind == "categorical" for f in features):
        out.append("unseen_category")
    return out


# the dtypes pandas holds the same values in (what a CSV, Parquet or a nullable column gives)
INT_DTYPES = ["int64", "float64", "Int64"]  # float64: whole numbers, NaN for missing
STRING_DTYPES = ["str", "object", "category"]


@st.composite
def frames(draw, spec: DatasetSpec) -> tuple[pd.DataFrame, str]:
    """A batch of the declaration's columns (1-30 rows) in random dtypes, with at most one change."""
    rows = draw(st.integers(1, 30))
    data: dict[str, object] = {
        spec.id_column: [f"id-{i}" for i in range(rows)],
        spec.timestamp_column: pd.date_range("2026-10-01", periods=rows, freq="min", tz="UTC"),
    }
    for f in spec.features:
        values = draw(st.lists(valid_value(f), min_size=rows, max_size=rows))
        if f.kind == "categorical":
            data[f.name] = pd.Series(values, dtype="str" if None not in values else object).astype(
                draw(st.sampled_from(STRING_DTYPES)))
        elif f.dtype == "int":
            dtype = draw(st.sampled_from(INT_DTYPES if None not in values else INT_DTYPES[1:]))
            data[f.name] = pd.Series(values, dtype="Int64").astype(dtype) if dtype != "float64" else \
                np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        else:
            data[f.name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    data[spec.target] = np.array(draw(st.lists(st.sampled_from([0, 1]), min_size=rows, max_size=rows)))
    frame = pd.DataFrame(data)
    change = draw(st.sampled_from(applicable(spec)))
    row = draw(st.integers(0, rows - 1))

    def pick(condition) -> FeatureSpec:
        return draw(st.sampled_from([f for f in spec.features if condition(f)]))

    if change == "null_in_required":
        f = pick(lambda f: not f.nullable)
        frame[f.name] = frame[f.name].astype(object if f.kind == "categorical" else "float64")
        frame.loc[row, f.name] = None if f.kind == "categorical" else np.nan
    elif change == "out_of_range":
        f = pick(lambda f: f.kind == "numeric" and (f.min is not None or f.max is not None))
        value = (f.max + 1) if f.max is not None else (f.min - 1)
        frame[f.name] = frame[f.name].astype("float64")
        frame.loc[row, f.name] = value
    elif change == "unseen_category":
        f = pick(lambda f: f.kind == "categorical")
        frame[f.name] = frame[f.name].astype(object)
        frame.loc[row, f.name] = UNSEEN
    elif change == "wrong_type":
        f = pick(lambda f: True)
        frame[f.name] = ["41"] * rows if f.kind == "numeric" else list(range(rows))
    elif change == "missing_column":
        frame = frame.drop(columns=[pick(lambda f: True).name])
    elif change == "extra_column":
        frame[EXTRA] = 44
    return frame, change


# --------------------------------------------------------------------------------------------------
# the request schema: hostile input never crashes it
# --------------------------------------------------------------------------------------------------


def assert_accepted_is_in_declaration(schema, columns: dict[str, np.ndarray]) -> None:
    for f in schema.features:
        values = columns[f.name]
        if f.kind == "numeric":
            present = values[~np.isnan(values)]
            assert np.isfinite(present).all()
            low, high = f.min if f.min is not None else -np.inf, f.max if f.max is not None else np.inf
            assert ((present >= low) & (present <= high)).all()
            if f.dtype == "int":
                assert (present == np.round(present)).all()
            if not f.nullable:
                assert not np.isnan(values).any()
        else:
            assert all(v in f.categories or (v is None and f.nullable) for v in values)


def assert_error_names_request_fields(exc: ValidationError, known: set[str]) -> None:
    message = error_message(exc.errors())
    assert message
    for err in exc.errors():
        names = [p for p in err["loc"] if isinstance(p, str)]
        assert not names or names[-1] in known or names[0] in known, err["loc"]


@st.composite
def hostile_records(draw, spec: DatasetSpec) -> list[dict]:
    records = []
    for _ in range(draw(st.integers(1, 3))):
        record = {}
        for f in spec.features:
            if draw(st.integers(0, 9)) > 0:  # sometimes left out
                record[f.name] = draw(hostile_value(f))
        if draw(st.booleans()):
            record[spec.id_column] = draw(st.none() | st.text(max_size=140) | st.integers())
        if draw(st.integers(0, 9)) == 0:
            record[EXTRA] = 44
        records.append(record)
    return records


@FAST
@given(data=st.data())
def test_any_record_is_accepted_within_the_declaration_or_refused_naming_a_field(project_spec, data):
    spec = data.draw(st.just(project_spec) | declarations(), label="declaration")
    schema = schema_of(spec)
    records = data.draw(hostile_records(spec), label="records")
    text = json.dumps({"records": records})  # NaN / Infinity as JSON clients (and Python) write them
    known = {*spec.feature_names, spec.id_column, EXTRA}
    accepted = []
    for record in json.loads(text)["records"]:
        try:
            accepted.append(schema.record.model_validate_json(json.dumps(record)))
        except ValidationError as exc:
            assert_error_names_request_fields(exc, known)
    if accepted:
        assert_accepted_is_in_declaration(schema, schema.records_to_columns(accepted))


@FAST
@given(data=st.data())
def test_any_column_batch_is_accepted_within_the_declaration_or_refused_naming_a_field(project_spec, data):
    spec = data.draw(st.just(project_spec) | declarations(), label="declaration")
    schema = schema_of(spec, 20)
    columns = {}
    for f in spec.features:
        if data.draw(st.integers(0, 9)) > 0:
            columns[f.name] = data.draw(st.lists(hostile_value(f), max_size=4) | hostile_value(f))
    if data.draw(st.booleans()):
        columns[EXTRA] = [1]
    try:
        batch = schema.columns.model_validate_json(json.dumps({"columns": columns}))
    except ValidationError as exc:
        assert_error_names_request_fields(exc, {*spec.feature_names, spec.id_column, EXTRA, "columns"})
        return
    arrays = schema.batch_to_columns(batch)
    assert len({len(v) for v in arrays.values()}) == 1
    assert_accepted_is_in_declaration(schema, arrays)


@FAST
@given(payload=st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=12))
def test_arbitrary_json_is_refused_with_a_validation_error_only(project_spec, payload):
    schema = schema_of(project_spec, 20)
    for model in (schema.record, schema.columns):
        try:
            model.model_validate_json(json.dumps(payload))
        except ValidationError as exc:
            assert error_message(exc.errors())


# --------------------------------------------------------------------------------------------------
# validation suite vs serving schema: what validation accepts, serving accepts, with the same model input
# --------------------------------------------------------------------------------------------------


def model_columns(frame: pd.DataFrame, features: list[FeatureSpec]) -> dict[str, list]:
    """The pipeline's input read from the frame: numbers as float (missing: NaN), categories as str."""
    data = model_input(frame, features)
    out = {}
    for f in features:
        column = data[f.name]
        if f.kind == "numeric":
            out[f.name] = column.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            out[f.name] = [None if pd.isna(v) else str(v) for v in column.astype(object)]
    return out


def assert_same_model_input(expected: dict, served: dict[str, np.ndarray], features: list[FeatureSpec]) -> None:
    for f in features:
        if f.kind == "numeric":
            assert np.array_equal(expected[f.name], served[f.name], equal_nan=True), f.name
        else:
            assert list(served[f.name]) == expected[f.name], f.name


@SLOW
@given(data=st.data())
def test_validation_always_answers_and_what_it_accepts_serving_accepts_with_the_same_model_input(project_spec,
                                                                                                data):
    from mlcycle.tasks.validation.runner import validate_frame

    spec = data.draw(st.just(project_spec) | declarations(), label="declaration")
    frame, change = data.draw(frames(spec), label="frame")
    report = validate_frame(frame, spec)  # never raises, whatever the frame holds
    assert report.evaluated > 0
    if change in BREAKING:
        assert not report.success, f"{change} passed validation"
        assert report.failed and all(o.expectation for o in report.failed)
        return
    assert report.success, (change, report.failure_summary())
    features = spec.features
    schema = schema_of(spec, 100)
    records = json.loads(json.dumps(records_payload(frame, spec, spec.feature_names)))
    validated = [schema.record.model_validate(r) for r in records]  # ValidationError here = the bug
    expected = model_columns(frame, features)
    assert_same_model_input(expected, schema.records_to_columns(validated), features)
    batch = schema.columns.model_validate_json(json.dumps(columns_payload(records, spec.feature_names,
                                                                          spec.id_column)))
    assert_same_model_input(expected, schema.batch_to_columns(batch), features)


def test_a_whole_number_float_for_an_int_feature_is_accepted_and_a_fraction_is_not(project_spec):
    """The case the properties above found: pandas holds a nullable int column as float64 (41.0)."""
    schema = build_schema(project_spec, project_spec.feature_names, max_batch_rows=5)
    record = {"income": None, "age": 41.0, "debt_ratio": 0.3, "credit_score": 700, "loan_amount": 12000,
              "employment_type": "salaried", "region": "north", "loan_purpose": "car"}
    assert schema.record.model_validate_json(json.dumps(record)).age == 41
    for bad in (41.5, True, "41", math.inf):
        with pytest.raises(ValidationError, match="age"):
            schema.record.model_validate_json(json.dumps({**record, "age": bad}))
