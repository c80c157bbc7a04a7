"""The service, tested through a real `bentoml serve` of a built bento (one shared process for request tests).

Also home of the packaged champion the package tests reuse: a small gradient-boosting model trained on a
few simulated validated days, promoted, imported into BentoML and built as a bento once per session
(:func:`packaged_champion`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tasks.storage import LocalStore
from tests.conftest import ROOT

SECRET = "s3cr3t-never-in-logs-9431"  # noqa: S105 - a marker: must not leak into /metadata or the log
SERVING = {"max_body_bytes": 64 * 1024, "max_records": 100, "canary_rows": 120, "latency_requests": 20}


@dataclass
class Champion:
    settings: object
    store: LocalStore
    model: object  # tasks.serving.PackagedModel
    bento: object  # tasks.serving.BentoRef
    loaded: object  # tasks.registry.LoadedModel


_CACHE: dict[str, Champion] = {}


def packaged_champion(tmp_path_factory) -> Champion:
    """Train, register and promote one small model, import it into BentoML and build its bento (once)."""
    if "champion" in _CACHE:
        return _CACHE["champion"]
    from threadpoolctl import threadpool_limits

    from tasks.evaluation import decide
    from tasks.registry import load_model, promote, register_candidate
    from tasks.serving import build_bento, import_model
    from tasks.training import compare_with_champion, select_window, train_challenger
    from tests.test_training import DAYS, fast_settings, seed_validated

    home = tmp_path_factory.mktemp("serving-champion")
    settings = fast_settings(home, training={"family": "hist_gradient_boosting"}, serving=SERVING)
    store = LocalStore(settings.store_root)
    with threadpool_limits(1):
        seed_validated(store, settings)
        candidate = train_challenger(store, settings, select_window(store, days=DAYS))
        comparison = compare_with_champion(store, settings, candidate)
        version = register_candidate(store, candidate, comparison, decide(settings.gate, candidate, comparison))
    promote(store, version.name, version.version, reason="serving tests")
    model = import_model(store, settings)
    bento = build_bento(settings, model)
    _CACHE["champion"] = Champion(settings, store, model, bento, load_model(store, version.name, version.version))
    return _CACHE["champion"]


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> Champion:
    return packaged_champion(tmp_path_factory)


@pytest.fixture(scope="module")
def server(champion):
    """ONE `bentoml serve` of the champion's bento for every test that only sends requests."""
    from tasks.serving import start_serving, wait_ready

    process = start_serving(champion.settings, champion.bento.tag, env={"MLCYCLE_S3_SECRET_KEY": SECRET,
                                                                         "MLCYCLE_S3_ACCESS_KEY": "AKIA-TEST"})
    try:
        wait_ready(process, champion.settings.serving.readiness_timeout_seconds)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def canaries(champion):
    from tasks.serving import canary_rows, records_payload

    frame, _ = canary_rows(champion.store, champion.settings, champion.model.name, champion.model.version, 120)
    features = [c.name for c in champion.loaded.metadata.features]
    return frame, records_payload(frame, champion.settings.dataset, features), champion.loaded.predict_proba(frame)


# --------------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------------


def test_predictions_equal_the_in_process_pipeline(server, champion, canaries):
    frame, records, expected = canaries
    served, ids = [], set()
    for start in range(0, len(records), 40):
        response = httpx.post(f"{server.url}/predict", json={"records": records[start:start + 40]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == champion.model.name and body["model_version"] == champion.model.version
        ids.add(body["request_id"])
        served += [p["probability"] for p in body["predictions"]]
        assert [p["label"] for p in body["predictions"]] == [int(p >= body["threshold"]) for p in
                                                               (x["probability"] for x in body["predictions"])]
    assert len(ids) == 3
    assert np.max(np.abs(np.array(served) - expected)) <= 1e-9
    features = [c.name for c in champion.loaded.metadata.features]
    columns = {name: [r[name] for r in records] for name in features}
    batch = httpx.post(f"{server.url}/predict_batch", json={"columns": columns}).json()
    assert batch["rows"] == len(records) and batch["model_version"] == champion.model.version
    assert np.max(np.abs(np.array(batch["probabilities"]) - expected)) <= 1e-9
    assert batch["labels"] == (expected >= batch["threshold"]).astype(int).tolist()


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, canaries):
    _, records, expected = canaries
    results: dict[int, float] = {}

    def send(i: int) -> None:
        body = httpx.post(f"{server.url}/predict", json={"records": [records[i]]}, timeout=30).json()
        results[i] = body["predictions"][0]["probability"]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 60
    assert max(abs(results[i] - expected[i]) for i in results) <= 1e-9


# --------------------------------------------------------------------------------------------------
# bad requests: 4xx naming the field and the problem, never a 5xx
# --------------------------------------------------------------------------------------------------

GOOD = {"income": 52000.0, "age": 41, "debt_ratio": 0.3, "credit_score": 700, "loan_amount": 12000,
        "employment_years": 5.5, "employment_type": "salaried", "region": "north", "loan_purpose": "car"}


def body(**change) -> str:
    record = {k: v for k, v in {**GOOD, **change}.items() if v != "<absent>"}
    return json.dumps({"records": [record]})


@pytest.mark.parametrize("payload, status, fragment", [
    (body(age="<absent>"), 400, "records.0.age: Field required"),
    (body(age="forty"), 400, "records.0.age: Input should be a valid integer"),
    (body(income=1.5).replace("1.5", "NaN"), 400, "records.0.income: Input should be a finite number"),
    (body(income=1.5).replace("1.5", "Infinity"), 400, "records.0.income: Input should be a finite number"),
    (body(income=1.5).replace("1.5", "-Infinity"), 400, "records.0.income: Input should be a finite number"),
    (body(age=141), 400, "records.0.age: Input should be less than or equal to 100"),
    (body(debt_ratio=-1), 400, "records.0.debt_ratio: Input should be greater than or equal to 0"),
    (body(region="atlantis"), 400, "records.0.region: Input should be 'north', 'south', 'east', 'west' or 'central'"),
    (body(shoe_size=44), 400, "records.0.shoe_size: Extra inputs are not permitted"),
    (json.dumps({"records": []}), 400, "records: List should have at least 1 item"),
    (json.dumps({"records": [GOOD] * 101}), 400, "records: List should have at most 100 items"),
    (json.dumps({"rows": [GOOD]}), 400, "records: Field required"),
    ('{"records": [{"age": 41,', 400, "Invalid JSON"),
    ("", 400, "records: Field required"),
    ("[1, 2]", 400, "Input should be an object"),
    (json.dumps({"records": [GOOD] * 60, "pad": "x" * 70_000}), 413, "larger than the limit of 65536 bytes"),
])
def test_bad_requests_get_a_4xx_naming_the_problem(server, payload, status, fragment):
    response = httpx.post(f"{server.url}/predict", content=payload, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_bad_batches_name_the_column(server):
    columns = {k: [v, v] for k, v in GOOD.items()}
    cases = [({**columns, "age": [41]}, "every column must have the same length: income has 2 values, age has 1"),
             ({**columns, "age": [41, "x"]}, "columns.age.1: Input should be a valid integer"),
             ({**columns, "region": ["north", None]}, "columns.region.1: Input should be 'north'"),
             ({k: v for k, v in columns.items() if k != "credit_score"}, "columns.credit_score: Field required")]
    for payload, fragment in cases:
        response = httpx.post(f"{server.url}/predict_batch", json={"columns": payload})
        assert response.status_code == 400 and fragment in response.json()["error"], response.text


def test_oversized_chunked_body_and_any_content_type(server):
    chunks = (b"x" * 16_384 for _ in range(8))  # no Content-Length: the guard counts what arrives
    response = httpx.post(f"{server.url}/predict", content=chunks)
    assert response.status_code == 413 and "larger than the limit" in response.json()["error"]
    # curl -d sends application/x-www-form-urlencoded: the API reads every body as JSON
    response = httpx.post(f"{server.url}/predict", content=body(),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    response = httpx.post(f"{server.url}/predict", content=body(), headers={"Content-Type": "multipart/form-data"})
    assert response.status_code == 200, response.text


def test_schemathesis_finds_no_server_error(server, tmp_path):
    """Property-based requests generated from the service's own OpenAPI document: never a 5xx."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.url}/docs.json",
         "--checks", "not_a_server_error", "--max-time", "25", "--workers", "1", "--request-timeout", "20"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "passed" in result.stdout and "generated" in result.stdout


# --------------------------------------------------------------------------------------------------
# metadata, health, metrics
# --------------------------------------------------------------------------------------------------


def test_metadata_says_what_is_served_and_where_it_came_from_without_secrets(server, champion):
    response = httpx.get(f"{server.url}/metadata")
    assert response.status_code == 200
    meta = response.json()
    assert meta["model_version"] == champion.model.version and meta["model_sha256"] == champion.model.model_sha256
    assert meta["bento_model_tag"] == champion.model.tag
    assert meta["lineage"]["partitions"] == [p.date.isoformat() for p in champion.loaded.metadata.lineage.partitions]
    assert meta["lineage"]["dataset_schema_hash"] == champion.settings.dataset.schema_hash()
    assert meta["request_schema"]["properties"]["age"]["maximum"] == 100
    assert meta["limits"]["max_records"] == 100 and meta["inference_log"]["enabled"]
    assert httpx.post(f"{server.url}/metadata").json()["model_version"] == champion.model.version
    for path in ("/metadata", "/docs.json"):
        text = httpx.get(f"{server.url}{path}").text
        assert SECRET not in text and "AKIA-TEST" not in text


def test_health_and_metrics_endpoints(server):
    assert httpx.get(f"{server.url}/livez").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    httpx.post(f"{server.url}/predict", content=body(), headers={"Content-Type": "application/json"})
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "bentoml_service_request_total" in metrics and 'endpoint="/predict"' in metrics
    deadline = time.monotonic() + 15  # the inference log's own counters appear once a part is written
    while 'mlcycle_inference_log_rows_total{event="written_rows"}' not in metrics and time.monotonic() < deadline:
        time.sleep(0.5)
        metrics = httpx.get(f"{server.url}/metrics").text
    assert 'mlcycle_inference_log_rows_total{event="written_rows"}' in metrics


# --------------------------------------------------------------------------------------------------
# `mlcycle serve`: until SIGTERM, then every prediction is in the inference log; labels join it
# --------------------------------------------------------------------------------------------------


CLI = "from flows.cli import app, main; from flows.serve_cli import register; register(app); main()"


def test_mlcycle_serve_logs_every_request_and_flushes_on_sigterm(champion, monkeypatch, capsys):
    from tasks.inference_log import read_inference_log
    from tasks.serving import free_port
    from tasks.sources import simulate_batch

    settings = champion.settings
    port = free_port()
    env = {**os.environ, "MLCYCLE_HOME": str(settings.home), "MLCYCLE_SERVING__PORT": str(port),
           "MLCYCLE_SERVING__MAX_RECORDS": "100", "MLCYCLE_SERVING__MAX_BODY_BYTES": str(1 << 20),
           # nothing is written before the stop: what the log holds afterwards was flushed on shutdown
           "MLCYCLE_SERVING__INFERENCE_LOG__FLUSH_INTERVAL_SECONDS": "3600",
           "MLCYCLE_SERVING__INFERENCE_LOG__FLUSH_ROWS": "1000000"}
    proc = subprocess.Popen([sys.executable, "-c", CLI, "serve", "--json"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc)
        day = dt.date(2026, 10, 9)
        frame = simulate_batch(day, settings.simulator, settings.dataset).frame.head(150)
        from tasks.serving import records_payload

        records = records_payload(frame, settings.dataset, settings.dataset.feature_names)
        answers: list[tuple[str, int]] = []
        lock = threading.Lock()

        def send(chunk: list[dict]) -> None:
            response = httpx.post(f"{url}/predict", json={"records": chunk}, timeout=30)
            assert response.status_code == 200, response.text
            with lock:
                answers.append((response.json()["request_id"], len(chunk)))

        chunks, start = [], 0
        while start < 140:  # requests of 1..7 records
            size = min(1 + len(chunks) % 7, 140 - start)
            chunks.append(records[start:start + size])
            start += size
        threads = [threading.Thread(target=send, args=(chunk,)) for chunk in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batch = httpx.post(f"{url}/predict_batch", json={"columns": {
            k: [r[k] for r in records[140:150]] for k in records[0]}}).json()
        answers.append((batch["request_id"], 10))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    info = json.loads(out)
    assert info["url"] == url and info["model_version"] == champion.model.version and "curl" in info["example"]
    log = read_inference_log(champion.store)
    mine = log[log["request_id"].isin([r for r, _ in answers])]
    assert len(answers) == len(chunks) + 1 and len(mine) == 150
    assert mine.groupby("request_id").size().to_dict() == dict(answers)  # every request, each row once
    assert set(mine["endpoint"]) == {"predict", "predict_batch"}
    assert mine[settings.dataset.id_column].str.startswith("20261009-").all()
    parts = [champion.store.get_bytes(k) for k in champion.store.list("inference/")]
    assert not any(SECRET.encode() in p for p in parts)

    # the simulator knows the outcome of every simulated record it sent: `mlcycle labels --simulate`
    from flows.cli import app
    from flows.serve_cli import register
    from tasks.inference_log import join_labels
    from tasks.labels import read_labels
    from tasks.settings import get_settings
    from tests.test_cli import run_cli

    register(app)
    monkeypatch.setenv("MLCYCLE_HOME", str(settings.home))
    get_settings.cache_clear()
    try:
        code, out, err = run_cli(monkeypatch, capsys, "labels", "--simulate", "--json")
        assert code == 0, err
        assert json.loads(out)["rows"] >= 150  # and the canaries other tests sent: their ids are simulated too
        code, _, err = run_cli(monkeypatch, capsys, "labels")
        assert code == 2 and "give either --file PATH or --simulate" in err
    finally:
        get_settings.cache_clear()
    joined = join_labels(mine, read_labels(champion.store), settings.dataset)
    truth = frame.set_index(settings.dataset.id_column)[settings.dataset.target]
    assert (joined[settings.dataset.target].astype(int).to_numpy() ==
            truth.loc[joined[settings.dataset.id_column]].to_numpy()).all()


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlcycle serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"mlcycle serve not ready at {url}")
