"""The serving request schema is generated from the dataset declaration, and its errors name the field."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from mlcycle.tasks.schema import build_schema, error_message
from tests.support.env import make_settings


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


# --------------------------------------------------------------------------------------------------
# category values as strings, numbers or booleans
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coded():
    """A declaration whose categories are numbers and booleans in the config (as a survey's codes are)."""
    from mlcycle.tasks.settings import DatasetSpec

    spec = DatasetSpec(name="survey", id_column="rid", timestamp_column="ts", target="y", features=[
        {"name": "occupation", "kind": "categorical", "categories": [1, 2, 3]},
        {"name": "children", "kind": "categorical", "categories": [0, 5.5]},
        {"name": "voted", "kind": "categorical", "categories": [True, False], "nullable": True},
        {"name": "age", "kind": "numeric", "dtype": "int", "min": 0, "max": 120}])
    return build_schema(spec, spec.feature_names, max_batch_rows=5)


@pytest.mark.parametrize("occupation, children, voted", [
    ("1", "5.5", "true"), (1, 5.5, True), (1.0, 5.5, True), ("1", 5.5, True)])
def test_category_values_are_normalised_before_the_membership_check(coded, occupation, children, voted):
    record = coded.record.model_validate_json(json.dumps(
        {"occupation": occupation, "children": children, "voted": voted, "age": 30}))
    assert (record.occupation, record.children, record.voted) == ("1", "5.5", "true")
    columns = coded.records_to_columns([record])
    assert columns["occupation"].tolist() == ["1"] and columns["voted"].tolist() == ["true"]
    batch = coded.columns.model_validate_json(json.dumps(
        {"occupation": [occupation, 2], "children": [0, children], "voted": [voted, None], "age": [30, 31]}))
    assert coded.batch_to_columns(batch)["occupation"].tolist() == ["1", "2"]
    assert coded.batch_to_columns(batch)["children"].tolist() == ["0", "5.5"]


@pytest.mark.parametrize("change, fragment", [
    ({"occupation": 4}, "occupation: Input should be '1', '2' or '3'"),
    ({"occupation": "1.0"}, "occupation: Input should be '1', '2' or '3'"),  # a text is taken as it is
    ({"occupation": True}, "occupation: Input should be '1', '2' or '3'"),  # true is "true", not 1
    ({"occupation": float("nan")}, "occupation: Input should be '1', '2' or '3'"),  # NaN is no category
    ({"occupation": [1]}, "occupation: Input should be '1', '2' or '3'"),
    ({"voted": 1}, "voted: Input should be 'true' or 'false'"),
    ({"voted": "True"}, "voted: Input should be 'true' or 'false'"),
    ({"children": 5}, "children: Input should be '0' or '5.5'"),
])
def test_a_value_outside_the_categories_is_refused_listing_them(coded, change, fragment):
    good = {"occupation": 1, "children": 0, "voted": True, "age": 30}
    assert fragment in errors_of(coded.record, {**good, **change})


def test_the_request_schema_lists_every_accepted_form_of_each_category(coded):
    properties = coded.record.model_json_schema()["properties"]
    assert properties["occupation"]["enum"] == ["1", 1, "2", 2, "3", 3]
    assert properties["children"]["enum"] == ["0", 0, "5.5", 5.5]
    assert properties["voted"]["anyOf"] == [{"enum": ["true", True, "false", False]}, {"type": "null"}]
    assert coded.columns.model_json_schema()["properties"]["occupation"]["items"]["enum"] == ["1", 1, "2", 2, "3", 3]


# --------------------------------------------------------------------------------------------------
# predictions and answers per task (tasks/predictions.py)
# --------------------------------------------------------------------------------------------------


def test_class_probabilities_follow_the_declared_order_and_a_class_never_seen_gets_zero():
    from mlcycle.tasks.predictions import class_probabilities

    fitted = np.array(["10", "2", "3"], dtype=object)  # the estimator sorts classes as text
    p = np.array([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]])
    assert class_probabilities(fitted, p, ["2", "3", "10"]).tolist() == [[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]
    assert class_probabilities(fitted, p, ["2", "3", "7", "10"]).tolist() == [[0.2, 0.3, 0.0, 0.5],
                                                                            [0.6, 0.3, 0.0, 0.1]]
    with pytest.raises(ValueError, match=r"predicts class\(es\) \['10'\] that the dataset does not declare"):
        class_probabilities(fitted, p, ["2", "3"])


def test_predictions_per_task_and_the_first_class_wins_a_tie():
    from mlcycle.tasks.predictions import prediction_columns

    binary = prediction_columns(np.array([0.2, 0.5, 0.9]), "binary", threshold=0.5)
    assert list(binary) == ["probability", "label"] and binary["label"].tolist() == [0, 1, 1]
    scores = np.array([[0.4, 0.4, 0.2], [0.1, 0.3, 0.6]])
    multi = prediction_columns(scores, "multiclass", classes=["b", "a", "c"])
    assert list(multi) == ["label", "probability", "probabilities"]
    assert multi["label"].tolist() == ["b", "c"] and multi["probability"].tolist() == [0.4, 0.6]
    assert list(prediction_columns(np.array([1.5]), "regression")) == ["prediction"]


def test_answers_per_task_are_typed_and_keep_the_binary_answer_as_it_was():
    from mlcycle.tasks.predictions import prediction_columns, response_models

    binary = response_models("binary")
    answer = binary.predict_response("r1", "m", 3, 0.5, prediction_columns(np.array([0.7]), "binary", threshold=0.5))
    assert answer.model_dump() == {"request_id": "r1", "model": "m", "model_version": 3, "threshold": 0.5,
                                   "predictions": [{"probability": 0.7, "label": 1}]}
    classes = ["0", "1", "2"]
    multi = response_models("multiclass", classes)
    predictions = prediction_columns(np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]), "multiclass", classes=classes)
    record = multi.predict_response("r2", "m", 3, None, predictions).model_dump()["predictions"][0]
    assert record == {"label": "1", "probabilities": {"0": 0.2, "1": 0.5, "2": 0.3}}
    batch = multi.batch_response("r2", "m", 3, None, predictions).model_dump()
    assert batch["labels"] == ["1", "0"] and batch["probabilities"] == {"0": [0.2, 0.6], "1": [0.5, 0.3],
                                                                         "2": [0.3, 0.1]}
    assert "threshold" not in batch and batch["rows"] == 2
    with pytest.raises(ValidationError):  # a label the declaration does not have cannot be answered
        multi.record(label="7", probabilities={})
    regression = response_models("regression")
    predictions = prediction_columns(np.array([2.5, 4.0]), "regression")
    assert regression.batch_response("r3", "m", 1, None, predictions).model_dump()["predictions"] == [2.5, 4.0]
    assert regression.predict_response("r3", "m", 1, None, predictions).model_dump()["predictions"] == \
        [{"prediction": 2.5}, {"prediction": 4.0}]
