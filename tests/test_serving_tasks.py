"""Serving for every task, on real tables: a binary (fair), a multiclass (anes96) and a regression (randhie) model,
each registered, packaged with `bentoml build` and served by `bentoml serve` (one server per table, module-scoped).

What each must show: the served predictions are the registry pipeline's own on the whole test window,
exactly, through /predict and /predict_batch; category values sent as strings, numbers or booleans get the
same answer; responses, /metadata and the OpenAPI document are typed for the task; test-serving's check
passes and its requests are logged as canary traffic, every other request as live, with the task's
prediction columns.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from tests.support.serving import BOOLEANS, CATEGORIES

TASKS = {"fair": "binary", "anes96": "multiclass", "randhie": "regression"}


@pytest.fixture(scope="module", params=list(TASKS), ids=[f"{t}-{task}" for t, task in TASKS.items()])
def served(request, served_tables):
    """One table's packaged model, served by a real `bentoml serve` of its bento."""
    from mlcycle.tasks.serving.process import start_serving, wait_ready

    table = served_tables.get(request.param)
    process = start_serving(table.settings, table.bento.tag)
    try:
        wait_ready(process, table.settings.serving.readiness_timeout_seconds)
        yield table, process.url
    finally:
        process.stop()


def window_rows(table):
    """The registry version's test window and the features the model reads."""
    from mlcycle.tasks.training.window import load_test_window

    frame = load_test_window(table.store, table.spec, table.version.lineage.split)
    return frame, [c.name for c in table.version.features]


def registry_answers(table, frame, features):
    """What the registry's pipeline itself says about ``frame``: (values per row, labels per row or None)."""
    from mlcycle.tasks.features import model_input

    pipeline, spec = table.pipeline, table.spec
    x = model_input(frame, table.version.features)
    if spec.task == "binary":
        p = pipeline.predict_proba(x)[:, 1]
        return p, (p >= table.version.threshold).astype(int).tolist()
    if spec.task == "multiclass":
        fitted = [str(c) for c in pipeline.classes_]
        p = pipeline.predict_proba(x)[:, [fitted.index(c) for c in spec.class_labels]]
        return p, [spec.class_labels[i] for i in p.argmax(axis=1)]
    return pipeline.predict(x), None


def record_answers(table, predictions):
    spec = table.spec
    if spec.task == "binary":
        return np.array([p["probability"] for p in predictions]), [p["label"] for p in predictions]
    if spec.task == "multiclass":
        assert all(list(p["probabilities"]) == spec.class_labels for p in predictions)  # class order
        return (np.array([[p["probabilities"][c] for c in spec.class_labels] for p in predictions]),
                [p["label"] for p in predictions])
    return np.array([p["prediction"] for p in predictions]), None


def batch_answers(table, body):
    spec = table.spec
    if spec.task == "binary":
        return np.array(body["probabilities"]), body["labels"]
    if spec.task == "multiclass":
        assert list(body["probabilities"]) == spec.class_labels
        return np.column_stack([body["probabilities"][c] for c in spec.class_labels]), body["labels"]
    return np.array(body["predictions"]), None


def test_served_predictions_equal_the_registry_pipelines_on_the_whole_test_window(served):
    """The regression check of issue 17, for every task: exactly equal, not within a tolerance."""
    from mlcycle.tasks.serving.client import columns_payload, records_payload

    table, url = served
    frame, features = window_rows(table)
    expected, expected_labels = registry_answers(table, frame, features)
    records = records_payload(frame, table.spec, features)
    answered = []
    for start in range(0, len(records), 100):
        response = httpx.post(f"{url}/predict", json={"records": records[start:start + 100]})
        assert response.status_code == 200, response.text
        answered += response.json()["predictions"]
    values, labels = record_answers(table, answered)
    assert values.shape == expected.shape and np.array_equal(values, expected)
    assert labels == expected_labels
    body = httpx.post(f"{url}/predict_batch", json={"columns": columns_payload(records, features,
                                                                              table.spec.id_column)}).json()
    assert body["rows"] == len(frame) and body["model_version"] == table.version.version
    values, labels = batch_answers(table, body)
    assert np.array_equal(values, expected) and labels == expected_labels


def as_numbers(records, columns, *, floats: bool):
    """Category texts written as the numbers they stand for (``"3"`` -> ``3`` or ``3.0``), booleans as booleans."""
    out = []
    for record in records:
        record = dict(record)
        for column in columns:
            value = record[column]
            if value in ("true", "false"):
                record[column] = value == "true"
            else:
                record[column] = float(value) if floats else int(value)
        out.append(record)
    return out


def test_category_values_as_strings_numbers_or_booleans_get_the_same_answer(served):
    from mlcycle.tasks.serving.client import columns_payload, records_payload

    table, url = served
    frame, features = window_rows(table)
    records = records_payload(frame.head(20), table.spec, features)
    categorical = list(CATEGORIES[table.table.name])
    assert all(isinstance(r[c], str) for r in records for c in categorical)  # the stored canonical texts
    answers = []
    for variant in (records, as_numbers(records, categorical, floats=False),
                    as_numbers(records, categorical, floats=True)):
        response = httpx.post(f"{url}/predict", json={"records": variant})
        assert response.status_code == 200, response.text
        answers.append(response.json()["predictions"])
        batch = httpx.post(f"{url}/predict_batch", json={"columns": columns_payload(variant, features,
                                                                                   table.spec.id_column)})
        assert batch.status_code == 200, batch.text
    assert answers[0] == answers[1] == answers[2]
    for column in BOOLEANS.get(table.table.name, []):
        assert {type(r[column]) for r in as_numbers(records, [column], floats=False)} == {bool}
    column = categorical[0]
    declared = table.spec.feature(column).categories
    for bad in (99, "99", 1.5, True if "true" not in declared else 7):
        response = httpx.post(f"{url}/predict", json={"records": [{**records[0], column: bad}]})
        assert response.status_code == 400, response.text
        assert f"records.0.{column}: Input should be " in response.json()["error"]
        assert all(repr(c) in response.json()["error"] for c in declared)  # the declared categories, listed


def test_responses_metadata_and_the_openapi_document_are_typed_for_the_task(served):
    table, url = served
    spec = table.spec
    meta = httpx.get(f"{url}/metadata").json()
    predicts = meta["predicts"]
    assert predicts["task"] == spec.task and predicts["classes"] == spec.class_labels
    assert (predicts["threshold"] is None) == (predicts["positive_label"] is None) == (spec.task != "binary")
    doc = httpx.get(f"{url}/docs.json").json()
    schemas = doc["components"]["schemas"]
    predict = doc["paths"]["/predict"]["post"]
    answer = predict["responses"]["200"]["content"]["application/json"]["schema"]  # BentoML inlines it
    batch = doc["paths"]["/predict_batch"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    if spec.task == "binary":
        assert answer["title"].startswith("PredictResponse") and "threshold" in answer["properties"]
        assert set(schemas["Prediction"]["properties"]) == {"probability", "label"}
        assert {"probabilities", "labels", "threshold"} <= set(batch["properties"])
    elif spec.task == "multiclass":
        assert answer["title"].startswith("ClassPredictResponse") and "threshold" not in answer["properties"]
        record = schemas["ClassPrediction"]["properties"]
        assert record["label"]["enum"] == spec.class_labels
        assert list(record["probabilities"]["properties"]) == spec.class_labels
        assert record["probabilities"]["required"] == spec.class_labels
        assert batch["properties"]["labels"]["items"]["enum"] == spec.class_labels
        assert list(batch["properties"]["probabilities"]["properties"]) == spec.class_labels
    else:
        assert answer["title"].startswith("ValuePredictResponse") and "threshold" not in answer["properties"]
        assert set(schemas["ValuePrediction"]["properties"]) == {"prediction"}
        assert batch["properties"]["predictions"]["items"] == {"type": "number"}
    column = next(iter(CATEGORIES[table.table.name]))
    accepted = meta["request_schema"]["properties"][column]["enum"]
    declared = spec.feature(column).categories
    assert set(declared) <= set(accepted) and len(accepted) == 2 * len(declared)  # "3" and 3, "true" and true
    header = [p for p in predict["parameters"] if p["in"] == "header"]
    assert header == [{"name": "X-Mlcycle-Traffic", "in": "header", "required": False,
                       "schema": {"type": "string", "enum": ["live", "canary"]},
                       "description": header[0]["description"]}]


def test_every_answer_conforms_to_the_openapi_document_of_the_task(served, tmp_path):
    """schemathesis from the service's own document (as tests/test_serving.py runs it on the demo model): the
    generated class and value answers, the accepted category forms and the traffic header all hold."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    _, url = served
    report = tmp_path / "schemathesis.json"
    argv = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/docs.json", "--checks", "all",
            "--exclude-checks", "positive_data_acceptance", "--max-examples", "30", "--seed", "20261002",
            "--workers", "1", "--request-timeout", "20", "--generation-database", "none", "--no-color",
            "--report", "json", "--report-json-path", str(report)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    summary = json.loads(report.read_text())
    assert summary["failures"] == [] and summary["errors"] == []
    for operation in ("POST /predict", "POST /predict_batch"):  # schema-valid requests got answers
        assert sum(phase["accepted"] for phase in summary["valid_rates"][operation].values()) >= 2


def test_test_serving_passes_and_the_log_tells_canaries_from_live_traffic(served):
    """check_running (test-serving's and the rollout's check) passes per task; its requests are logged as
    canary rows, other requests as live, with the task's prediction columns; a bad header is refused."""
    from mlcycle.tasks.inference_reader import read_inference_log
    from mlcycle.tasks.inference_rows import PREDICTION_COLUMNS
    from mlcycle.tasks.serving.client import check_running, records_payload

    table, url = served
    spec = table.spec
    canary, latency = check_running(table.store, table.settings, url, table.version.name, table.version.version)
    assert canary.task == spec.task and canary.mismatches == 0 and canary.labels_agree
    assert canary.rows == table.settings.serving.canary_rows and latency.requests == 5
    frame, features = window_rows(table)
    records = records_payload(frame.tail(7), spec, features)
    live = httpx.post(f"{url}/predict", json={"records": records}).json()["request_id"]
    explicit = httpx.post(f"{url}/predict", json={"records": records[:2]}, headers={"X-Mlcycle-Traffic": "live"})
    refused = httpx.post(f"{url}/predict", json={"records": records}, headers={"X-Mlcycle-Traffic": "test"})
    assert refused.status_code == 400
    assert refused.json()["error"] == ("header X-Mlcycle-Traffic must be live or canary (or left out: live), "
                                       "got 'test'")
    ids = {live, explicit.json()["request_id"]}
    canary_ids = set(frame[spec.id_column].head(canary.rows))  # the first rows of the test window
    canaries = canary.rows * 2 + latency.requests + 3  # /predict, /predict_batch, the probes and 3 warm-ups

    def sent_as_canaries(logged):
        return int(((logged["traffic"] == "canary") & logged[spec.id_column].isin(canary_ids)).sum())

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server writes a part every 0.5 s (serving.inference_log)
        logged = read_inference_log(table.store, traffic=None)
        if ids <= set(logged["request_id"]) and sent_as_canaries(logged) >= canaries:
            break
        time.sleep(0.3)
    assert sent_as_canaries(logged) == canaries
    assert logged[logged["request_id"].isin(ids)]["traffic"].tolist() == ["live"] * 9
    assert [c for c in logged.columns if c in {"probability", "label", "probabilities", "prediction"}] == \
        PREDICTION_COLUMNS[spec.task]
    live_rows = read_inference_log(table.store)  # what monitoring and labels read
    assert ids <= set(live_rows["request_id"]) and set(live_rows["traffic"]) == {"live"}
    assert len(live_rows) == (logged["traffic"] == "live").sum()
    if spec.task == "multiclass":
        assert set(logged["label"]) <= set(spec.class_labels)
        assert all(len(p) == len(spec.class_labels) for p in logged["probabilities"])
        assert np.allclose(logged["probability"], [max(p) for p in logged["probabilities"]])
    elif spec.task == "regression":
        assert logged["prediction"].dtype == np.float64
    else:
        assert set(logged["label"]) <= {0, 1}
