"""The service, tested through a real `bentoml serve` of a built bento (one shared process for request tests).

Also home of the packaged champion the package tests reuse: a small gradient-boosting model trained on a
few simulated validated days, promoted, imported into BentoML and built as a bento once per session
(:func:`packaged_champion`).
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.storage import LocalStore
from tests.support.champion import BUILD_TOKEN, GOOD, Champion
from tests.support.env import ROOT

SECRET = "s3cr3t-never-in-logs-9431"  # noqa: S105 - a marker: must not leak into /metadata or the log
TOKEN = "tok-3f9a1c-serving-tests"  # noqa: S105 - the guarded server's bearer token (a test value)


@pytest.fixture(scope="module")
def champion(packaged_champion) -> Champion:
    return packaged_champion


@contextmanager
def _serving(champion, env: dict[str, str]) -> Iterator:
    """`bentoml serve` of the champion's bento with ``env`` added to its environment, ready, then stopped."""
    from mlcycle.tasks.serving.process import start_serving, wait_ready

    process = start_serving(champion.settings, champion.bento.tag, env=env)
    try:
        wait_ready(process, champion.settings.serving.readiness_timeout_seconds)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def server(champion):
    """ONE `bentoml serve` of the champion's bento for every test that only sends requests."""
    with _serving(champion, {"MLCYCLE_S3_SECRET_KEY": SECRET, "MLCYCLE_S3_ACCESS_KEY": "AKIA-TEST"}) as process:
        yield process


@pytest.fixture(scope="module")
def guarded_server(champion):
    """A second `bentoml serve` of the same bento, started with MLCYCLE_API_TOKEN in its environment."""
    with _serving(champion, {"MLCYCLE_API_TOKEN": TOKEN}) as process:
        yield process


@pytest.fixture(scope="module")
def canaries(champion):
    from mlcycle.tasks.serving.client import canary_rows, records_payload

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


API_OPERATIONS = {"POST /predict", "POST /predict_batch", "POST /metadata", "GET /metadata"}


@pytest.mark.parametrize("guarded", [False, True], ids=["open", "with-token"])
def test_schemathesis_every_endpoint_no_server_error_and_responses_match_the_openapi_document(
        request, guarded, tmp_path):
    """Requests generated from the service's own OpenAPI document (coverage + fuzzing phases, 40 examples
    per operation, every operation including GET /metadata and the probes): no 5xx, every response's
    status, content type, headers and body conform to the document, bad input is refused, and with a
    token the API refuses requests without it (schemathesis's ``ignored_auth``).

    ``positive_data_acceptance`` is left out on purpose: a column batch whose lists differ in length is
    valid JSON Schema (the rule is not expressible there) yet rightly refused with 400 naming the columns.
    """
    server = request.getfixturevalue("guarded_server" if guarded else "server")
    report = tmp_path / "schemathesis.json"
    argv = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.url}/docs.json",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--max-examples", "40",
            "--seed", "20261001", "--workers", "1", "--request-timeout", "20", "--generation-database", "none",
            "--no-color", "--report", "json", "--report-json-path", str(report)]
    if guarded:
        argv += ["-H", f"Authorization: Bearer {TOKEN}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    summary = json.loads(report.read_text())
    assert summary["failures"] == [] and summary["errors"] == [] and summary["operations"]["errored"] == 0
    tested = summary["valid_rates"]
    assert set(tested) >= API_OPERATIONS, tested
    for operation in API_OPERATIONS:  # each API operation got schema-valid requests through and answered
        assert sum(phase["accepted"] for phase in tested[operation].values()) >= 2, (operation, tested[operation])
    assert summary["test_cases"]["generated"] >= 300
    if guarded:
        assert TOKEN not in result.stdout and TOKEN not in report.read_text()


# --------------------------------------------------------------------------------------------------
# the bearer token (MLCYCLE_API_TOKEN)
# --------------------------------------------------------------------------------------------------


def test_with_a_token_the_api_requires_it_and_the_probes_stay_open(guarded_server):
    url = guarded_server.url
    for path, send in (("/predict", lambda h: httpx.post(f"{url}/predict", content=body(), headers=h)),
                       ("/predict_batch", lambda h: httpx.post(f"{url}/predict_batch", headers=h, json={
                           "columns": {k: [v] for k, v in GOOD.items()}})),
                       ("/metadata", lambda h: httpx.get(f"{url}/metadata", headers=h))):
        missing = send({})
        assert missing.status_code == 401, (path, missing.text)
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert "missing bearer token" in missing.json()["error"] and "Authorization: Bearer" in missing.json()["error"]
        wrong = send({"Authorization": f"Bearer {TOKEN}x"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid bearer token"
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        assert send({"Authorization": f"Basic {TOKEN}"}).status_code == 401
        assert send({"Authorization": f"Bearer {TOKEN}"}).status_code == 200, path
        assert send({"Authorization": f"bearer   {TOKEN}"}).status_code == 200, path  # scheme is case-insensitive
    for probe in ("/livez", "/readyz", "/metrics", "/docs.json"):
        assert httpx.get(f"{url}{probe}").status_code == 200, probe
    metrics = httpx.get(f"{url}/metrics").text
    assert 'mlcycle_requests_refused_total{reason="unauthorized"}' in metrics


def test_the_token_comes_from_the_environment_at_serve_time_and_never_shows(champion, server, guarded_server):
    """Built with a token in the environment, the bento holds none: the server started without one is open."""
    bento_files = [p for p in Path(champion.bento.path).rglob("*") if p.is_file()]
    assert bento_files and not any(BUILD_TOKEN.encode() in p.read_bytes() for p in bento_files)
    assert httpx.post(f"{server.url}/predict", content=body()).status_code == 200
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/metadata", "/docs.json", "/metrics"):
        assert TOKEN not in httpx.get(f"{guarded_server.url}{path}", headers=headers).text
    httpx.post(f"{guarded_server.url}/predict", content=body(), headers={"Authorization": f"Bearer {TOKEN}-wrong"})
    assert TOKEN not in guarded_server.log_path.read_text(errors="replace")


def test_the_openapi_document_declares_the_bearer_scheme_and_the_refusals(server, guarded_server):
    guarded = httpx.get(f"{guarded_server.url}/docs.json").json()
    assert guarded["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "the token configured as MLCYCLE_API_TOKEN"}
    for path, methods in (("/predict", ["post"]), ("/predict_batch", ["post"]), ("/metadata", ["post", "get"])):
        for method in methods:
            operation = guarded["paths"][path][method]
            assert operation["security"] == [{"bearerAuth": []}]
            assert {"400", "401", "413", "503"} <= set(operation["responses"])
            assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert "security" not in guarded["paths"]["/readyz"]["get"]
    open_doc = httpx.get(f"{server.url}/docs.json").json()
    assert "securitySchemes" not in open_doc["components"]
    assert "401" not in open_doc["paths"]["/predict"]["post"]["responses"]


def test_every_client_of_the_service_sends_the_configured_token(champion, guarded_server):
    """Test-serving's canary check (the rollout's too: it runs the same check_running) and the simulated
    traffic all authenticate."""
    from pydantic import SecretStr

    from mlcycle.tasks.rollout import orchestrate
    from mlcycle.tasks.serving.client import CanaryFailed, check_running
    from mlcycle.tasks.traffic import send_http

    assert inspect.signature(orchestrate.rollout).parameters["canary"].default is check_running
    with_token = champion.settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    name, version = champion.model.name, champion.model.version
    canary, latency = check_running(champion.store, with_token, guarded_server.url, name, version)
    assert canary.mismatches == 0 and latency.requests == with_token.serving.latency_requests
    sent = send_http(guarded_server.url, with_token, [dt.date(2026, 10, 9)], rows_per_day=40)
    assert sent == {"requests": 2, "failed": 0, "rows": 40}
    with pytest.raises(CanaryFailed, match="HTTP 401"):
        check_running(champion.store, champion.settings, guarded_server.url, name, version)


def test_the_request_guard_sheds_beyond_max_in_flight_and_counts_back_down():
    """In process, with an app that holds its requests: the third concurrent request gets 503 at once."""
    import asyncio

    from mlcycle.bentos.runtime import RequestGuard

    release = asyncio.Event()

    async def app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def call(guard, method="POST"):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "path": "/predict", "method": method, "headers": [(b"content-length", b"2")]}
        await guard(scope, receive, send)
        start = sent[0]
        return start["status"], dict(start["headers"]), json.loads(sent[1]["body"])

    async def scenario():
        refused = []
        guard = RequestGuard(app, max_body_bytes=1024, api_paths=["/predict"], max_in_flight=2,
                             retry_after_seconds=3, on_refused=refused.append)
        held = [asyncio.create_task(call(guard)) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert guard.in_flight == 2
        status, headers, payload = await asyncio.wait_for(call(guard), timeout=1)
        assert status == 503 and headers[b"retry-after"] == b"3" and "serving.max_in_flight" in payload["error"]
        status, headers, _ = await call(guard, method="PUT")
        assert status == 405 and headers[b"allow"] == b"POST"
        release.set()
        assert [r[0] for r in await asyncio.gather(*held)] == [200, 200]
        assert guard.in_flight == 0 and refused == ["overloaded", "method"]
        assert (await call(guard))[0] == 200

    asyncio.run(scenario())


def test_a_burst_at_the_benchmark_concurrency_is_never_shed(server):
    """wrk -c32 (benchmarks/serving.py) stays far below serving.max_in_flight: 3 bursts of 32, all 200."""
    import asyncio

    async def bursts():
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            for _ in range(3):
                answers = await asyncio.gather(*[client.post(f"{server.url}/predict", content=body())
                                                 for _ in range(32)])
                assert [a.status_code for a in answers] == [200] * 32

    asyncio.run(bursts())


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


def test_mlcycle_serve_logs_every_request_and_flushes_on_sigterm(champion, monkeypatch, capsys):
    from mlcycle.tasks.inference_reader import read_inference_log
    from mlcycle.tasks.serving.process import free_port
    from mlcycle.tasks.simulator import simulate_batch

    settings = champion.settings
    port = free_port()
    env = {**os.environ, "MLCYCLE_HOME": str(settings.home), "MLCYCLE_SERVING__PORT": str(port),
           "MLCYCLE_SERVING__MAX_RECORDS": "100", "MLCYCLE_SERVING__MAX_BODY_BYTES": str(1 << 20),
           # nothing is written before the stop: what the log holds afterwards was flushed on shutdown
           "MLCYCLE_SERVING__INFERENCE_LOG__FLUSH_INTERVAL_SECONDS": "3600",
           "MLCYCLE_SERVING__INFERENCE_LOG__FLUSH_ROWS": "1000000"}
    proc = subprocess.Popen([sys.executable, "-m", "mlcycle.flows.cli", "serve", "--json"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc)
        day = dt.date(2026, 10, 9)
        frame = simulate_batch(day, settings.simulator, settings.dataset).frame.head(150)
        from mlcycle.tasks.serving.client import records_payload

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
    from mlcycle.tasks.inference_reader import join_labels
    from mlcycle.tasks.labels import read_labels
    from mlcycle.tasks.settings import get_settings
    from tests.support.env import run_cli

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


# --------------------------------------------------------------------------------------------------
# example requests: from the model's own stored rows, for any dataset declaration
# --------------------------------------------------------------------------------------------------

MACHINES = """\
dataset:
  name: machines
  id_column: reading_id
  timestamp_column: measured_at
  target: failed
  features:
    - {name: temperature_c, kind: numeric, dtype: float, min: -40, max: 200}
    - {name: vibration_mm_s, kind: numeric, dtype: float, min: 0, max: 100, nullable: true}
    - {name: load_pct, kind: numeric, dtype: int, min: 0, max: 100}
    - {name: line, kind: categorical, categories: [press, lathe, mill]}
"""


def machine_readings(day: dt.date, rows: int, rng) -> pd.DataFrame:
    """A day of sensor readings whose failures depend on temperature, vibration and the line."""
    temperature = rng.normal(80, 25, rows).clip(-40, 200).round(2)
    vibration = rng.gamma(2.0, 4.0, rows).clip(0, 100).round(3)
    vibration[rng.random(rows) < 0.05] = np.nan
    load = rng.integers(0, 101, rows)
    line = rng.choice(["press", "lathe", "mill"], rows)
    logit = 0.04 * (temperature - 80) + 0.15 * (np.nan_to_num(vibration, nan=8.0) - 8) + (line == "press") - 1.0
    start = pd.Timestamp(day, tz="UTC")
    return pd.DataFrame({
        "reading_id": [f"{day:%Y%m%d}-m{i:05d}" for i in range(rows)],
        "measured_at": start + pd.to_timedelta(np.sort(rng.integers(0, 86_400, rows)), unit="s"),
        "temperature_c": temperature, "vibration_mm_s": vibration, "load_pct": load, "line": line,
        "failed": (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int),
    })


def test_the_example_request_comes_from_the_models_own_rows_for_any_dataset(tmp_path, monkeypatch):
    """A dataset that shares no column with the demo's: the example is the model's first canary row (its
    test window), it names only that dataset's columns, and the schema the service builds from the packaged
    model's served_model.json accepts it."""
    from threadpoolctl import threadpool_limits

    from mlcycle.tasks.evaluation.gate import decide
    from mlcycle.tasks.registry.registration import register_candidate
    from mlcycle.tasks.schema import ServedModel, build_schema
    from mlcycle.tasks.serving.client import canary_rows, curl_example, example_request
    from mlcycle.tasks.serving.packaging import import_model
    from mlcycle.tasks.training.challenger import compare_with_champion, train_challenger
    from mlcycle.tasks.training.window import select_window
    from tests.support.env import make_settings
    from tests.support.training import DAYS, START, write_day

    config = tmp_path / "mlcycle.yaml"
    config.write_text(MACHINES)
    monkeypatch.setenv("MLCYCLE_CONFIG", str(config))
    settings = make_settings(tmp_path / "home", gate={"bootstrap_samples": 300}, training={
        "family": "logistic_regression", "n_iter": 2, "n_jobs": 1, "window_days": DAYS})
    assert settings.dataset.name == "machines"
    store = LocalStore(settings.store_root)
    rng = np.random.default_rng(7)
    days = [START + dt.timedelta(days=i) for i in range(DAYS)]
    for day in days:
        write_day(store, settings, machine_readings(day, 400, rng), day)
    with threadpool_limits(1):
        candidate = train_challenger(store, settings, select_window(store, days=DAYS))
        comparison = compare_with_champion(store, settings, candidate)
        version = register_candidate(store, candidate, comparison, decide(settings.gate, candidate, comparison))

    body = example_request(store, settings, version.name, version.version)
    (record,) = body["records"]
    first, _ = canary_rows(store, settings, version.name, version.version, 1)
    assert record["reading_id"] == first["reading_id"][0]  # the model's own first test-window row
    assert set(record) == {"reading_id", "temperature_c", "vibration_mm_s", "load_pct", "line"}
    assert record["line"] in ("press", "lathe", "mill") and isinstance(record["load_pct"], int)

    packaged = import_model(store, settings, version.version)
    served = ServedModel.model_validate_json((Path(packaged.path) / "served_model.json").read_text())
    schema = build_schema(served.dataset, served.features, max_batch_rows=settings.serving.max_batch_request_rows)
    wire = json.loads(json.dumps(body))  # what curl sends
    validated = schema.record.model_validate(wire["records"][0])
    assert schema.record_ids([validated]) == [record["reading_id"]]
    assert json.loads(curl_example("http://x", body).split("-d '", 1)[1].rstrip("'")) == body
