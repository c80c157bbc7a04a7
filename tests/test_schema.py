"""The serving request schema is generated from the dataset declaration, and its errors name the field."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from mlcycle.tasks.schema import build_schema, error_message
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return make_settings(tmp_path_factory.mktemp("schema")).dataset


@pytest.fixture(scope="module")
def schema(spec):
    return build_schema(spec, spec.feature_names, max_batch_rows=5)


GOOD = {"income": 52000.0, "age": 41, "debt_ratio": 0.3, "credit_score": 700, "loan_amount": 12000,
        "employment_years": 5.5, "employment_type": "salaried", "region": "north", "loan_purpose": "car"}


def errors_of(model, payload) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(payload if isinstance(payload, str) else json.dumps(payload))
    return error_message(info.value.errors())


def test_a_valid_record_passes_and_nullable_features_may_be_null_or_absent(schema):
    record = schema.record.model_validate({**GOOD, "income": None})
    assert record.income is None and record.age == 41
    without = {k: v for k, v in GOOD.items() if k != "employment_years"}
    assert schema.record.model_validate(without).employment_years is None
    assert schema.record.model_validate({**GOOD, "application_id": "20261001-0000001"}).application_id


@pytest.mark.parametrize("change, fragment", [
    ({"age": None}, "age: Input should be a valid integer"),
    ({"age": "41"}, "age: Input should be a valid integer"),
    ({"age": 41.5}, "age: Input should be a valid integer"),
    ({"credit_score": True}, "credit_score: Input should be a valid number"),
    ({"debt_ratio": 10.5}, "debt_ratio: Input should be less than or equal to 10"),
    ({"loan_amount": 10}, "loan_amount: Input should be greater than or equal to 500"),
    ({"region": "atlantis"}, "region: Input should be 'north', 'south', 'east', 'west' or 'central'"),
    ({"region": None}, "region: Input should be 'north'"),
    ({"incme": 1}, "incme: Extra inputs are not permitted"),
])
def test_each_bad_value_is_refused_naming_the_field_and_the_problem(schema, change, fragment):
    assert fragment in errors_of(schema.record, {**GOOD, **change})


def test_nan_and_infinity_are_refused(schema):
    body = json.dumps(GOOD)
    assert "income: Input should be a finite number" in errors_of(schema.record, body.replace("52000.0", "NaN"))
    assert "income: Input should be a finite number" in errors_of(schema.record, body.replace("52000.0", "Infinity"))
    assert "income: Input should be a finite number" in errors_of(schema.record, body.replace("52000.0", "1e999"))


def test_a_missing_required_feature_is_named(schema):
    assert "age: Field required" in errors_of(schema.record, {k: v for k, v in GOOD.items() if k != "age"})


def test_the_schema_follows_the_declaration(spec):
    """A new category or a tighter range in mlcycle.yaml changes what the service accepts, with no code change."""
    changed = spec.model_copy(deep=True)
    changed.feature("region").categories.append("islands")
    changed.feature("age").max = 80
    schema = build_schema(changed, changed.feature_names, max_batch_rows=5)
    assert schema.record.model_validate({**GOOD, "region": "islands"}).region == "islands"
    assert "age: Input should be less than or equal to 80" in errors_of(schema.record, {**GOOD, "age": 90})
    subset = build_schema(spec, ["age", "region"], max_batch_rows=5)
    assert "income: Extra inputs are not permitted" in errors_of(subset.record, {"age": 30, "region": "east",
                                                                                 "income": 1.0})


def test_columns_must_have_equal_lengths_and_respect_the_row_limit(schema):
    columns = {k: [v, v] for k, v in GOOD.items()}
    assert schema.columns.model_validate(columns).age == [41, 41]
    assert "every column must have the same length: income has 2 values, age has 1" in errors_of(
        schema.columns, {**columns, "age": [41]})
    assert "age: List should have at most 5 items" in errors_of(
        schema.columns, {k: [v] * 6 for k, v in GOOD.items()})
    assert "region.1: Input should be 'north'" in errors_of(schema.columns, {**columns, "region": ["north", "x"]})


def test_validated_records_become_typed_columns_for_the_pipeline(schema):
    records = [schema.record.model_validate(GOOD), schema.record.model_validate({**GOOD, "income": None})]
    columns = schema.records_to_columns(records)
    assert columns["income"].dtype == np.float64 and np.isnan(columns["income"][1])
    assert columns["region"].dtype == object and list(columns["region"]) == ["north", "north"]
    batch = schema.columns.model_validate({k: [v, v] for k, v in GOOD.items()})
    assert {k: v.tolist() for k, v in schema.batch_to_columns(batch).items() if k != "income"} == \
        {k: v.tolist() for k, v in columns.items() if k != "income"}


def test_error_message_lists_field_paths_and_caps_its_length():
    errors = [{"loc": ("records", i, "age"), "msg": "Input should be less than or equal to 100"} for i in range(12)]
    message = error_message(errors)
    assert message.startswith("records.0.age: Input should be less than or equal to 100; records.1.age")
    assert message.endswith("and 2 more error(s)")
