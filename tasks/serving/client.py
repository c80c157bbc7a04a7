"""The HTTP client of the service: canaries, the latency budget, test-serving, and example requests.

::

    check_running   against a server already answering (test-serving's, or a rollout candidate): /metadata
                    names the version; the test window's rows through /predict and /predict_batch equal the
                    in-process pipeline per task (binary probabilities and labels; multiclass every class's
                    probability and the label; regression the values), within serving.canary_tolerance;
                    single-row /predict p95 within serving.latency_budget_ms
    verify_serving  test-serving: start_serving + wait_ready + check_running + stop (any failure raises
                    ServeFailed / CanaryFailed naming the reason)
    example_request one valid /predict body for the printed curl example: the model's own first canary row

Every request body comes from the registry version's stored rows (its test window), so the canaries and
the examples fit whatever dataset the model was trained on. With ``api_token`` set, every request made
here carries it (:func:`api_headers`). Every canary and latency probe says ``X-Mlcycle-Traffic: canary``
(:func:`canary_headers`): the service logs those predictions as canary traffic, which monitoring never
counts and labels never join.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mlcycle.tasks.inference_log import CANARY, TRAFFIC_HEADER
from mlcycle.tasks.records.serving import BentoRef, CanaryReport, LatencyReport, ServingCheck
from mlcycle.tasks.serving.packaging import ServingError
from mlcycle.tasks.serving.process import start_serving, wait_ready
from mlcycle.tasks.settings import Settings
from mlcycle.tasks.storage import ObjectStore


class CanaryFailed(ServingError):
    """The served model disagrees with the in-process pipeline, fails requests, or is too slow."""


def api_headers(settings: Settings) -> dict[str, str]:
    """The headers a client of the service sends: the bearer token when ``api_token`` is configured."""
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def canary_headers(settings: Settings | None = None) -> dict[str, str]:
    """The headers of a canary or latency probe: ``X-Mlcycle-Traffic: canary`` (and the bearer token)."""
    return {**(api_headers(settings) if settings is not None else {}), TRAFFIC_HEADER: CANARY}


# --------------------------------------------------------------------------------------------------
# request bodies from the model's own rows
# --------------------------------------------------------------------------------------------------


def canary_rows(store: ObjectStore, settings: Settings, model_name: str, version: int, rows: int):
    """The first ``rows`` rows of the model's test window (its validated partitions, sha256-verified)."""
    from mlcycle.tasks.registry.versions import load_metadata
    from mlcycle.tasks.training.window import load_test_window

    metadata = load_metadata(store, model_name, version)
    frame = load_test_window(store, settings.dataset, metadata.lineage.split)
    split = metadata.lineage.split.test
    return frame.head(rows).reset_index(drop=True), f"{split.first_day}..{split.last_day}"


def records_payload(frame, spec, features: list[str]) -> list[dict[str, Any]]:
    """JSON-ready records: nulls for missing values, plain Python numbers, the id column as a string."""
    import pandas as pd

    out = []
    for row in frame[[spec.id_column, *features]].itertuples(index=False):
        record = {}
        for name, value in zip([spec.id_column, *features], row, strict=True):
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                record[name] = None
            elif name == spec.id_column:
                record[name] = str(value)
            elif hasattr(value, "item"):
                record[name] = value.item()
            else:
                record[name] = value
        out.append(record)
    return out


def columns_payload(records: list[dict[str, Any]], features: list[str], id_column: str) -> dict[str, list]:
    return {name: [r[name] for r in records] for name in [id_column, *features]}


def example_request(store: ObjectStore, settings: Settings, model_name: str, model_version: int) -> dict[str, Any]:
    """One valid /predict body, for the printed curl example: the first canary row of the model's test window.

    The row is the registry version's own (stored, validated) data with exactly the features the model
    reads, so the example fits any dataset declaration.
    """
    from mlcycle.tasks.registry.versions import load_metadata

    features = [c.name for c in load_metadata(store, model_name, model_version).features]
    frame, _ = canary_rows(store, settings, model_name, model_version, 1)
    return {"records": records_payload(frame, settings.dataset, features)}


def curl_example(url: str, body: dict[str, Any], *, bearer: bool = False) -> str:
    """A copy-paste curl; with ``bearer`` it sends the token from the shell's $MLCYCLE_API_TOKEN (never inline)."""
    auth = "-H \"Authorization: Bearer $MLCYCLE_API_TOKEN\" " if bearer else ""
    return (f"curl -s -X POST {url}/predict -H 'Content-Type: application/json' {auth}"
            f"-d '{json.dumps(body, separators=(',', ':'))}'")


# --------------------------------------------------------------------------------------------------
# test-serving: canaries and the latency budget
# --------------------------------------------------------------------------------------------------


def check_canaries(url: str, frame, expected, spec, features: list[str], threshold: float | None, tolerance: float,
                   test_window: str, client=None) -> CanaryReport:
    """Send ``frame`` through /predict (one request per 50 rows) and /predict_batch; compare with ``expected``.

    ``expected`` is the in-process pipeline's ``tasks.predictions.model_scores`` for the frame (the
    dataset's task and classes). Per task: binary, the positive class's probability and the label at
    ``threshold``; multiclass, every class's probability and the label; regression, the value, whose
    tolerance is relative to its size (``tolerance * max(1, |expected|)``, as a probability's is to 1).
    """
    import httpx
    import numpy as np

    from mlcycle.tasks.predictions import prediction_columns

    task, classes = spec.task, spec.class_labels
    records = records_payload(frame, spec, features)
    client = client or httpx.Client(timeout=60.0, headers=canary_headers())
    answered = []
    for start in range(0, len(records), 50):
        response = client.post(f"{url}/predict", json={"records": records[start:start + 50]})
        if response.status_code != 200:
            raise CanaryFailed(f"canary /predict request (rows {start}..{start + 49}) got HTTP {response.status_code}: "
                               f"{response.text[:500]}")
        answered += response.json()["predictions"]
    response = client.post(f"{url}/predict_batch", json={"columns": columns_payload(records, features,
                                                                                     spec.id_column)})
    if response.status_code != 200:
        raise CanaryFailed(f"canary /predict_batch request got HTTP {response.status_code}: {response.text[:500]}")
    served, served_labels = _record_answers(answered, task, classes)
    batch, batch_labels = _batch_answers(response.json(), task, classes)
    expected = np.asarray(expected, dtype=float)
    scale = np.maximum(1.0, np.abs(expected)) if task == "regression" else 1.0
    diff_predict, diff_batch = _row_diff(served, expected, scale), _row_diff(batch, expected, scale)
    mismatches = int(((diff_predict > tolerance) | (diff_batch > tolerance)).sum())
    labels_agree = True
    if task != "regression":
        want = prediction_columns(expected, task, threshold=threshold, classes=classes)["label"].tolist()
        labels_agree = served_labels == want and batch_labels == want
    report = CanaryReport(task=task, rows=len(records), test_window=test_window,
                          max_abs_diff_predict=float(diff_predict.max()), max_abs_diff_batch=float(diff_batch.max()),
                          tolerance=tolerance, mismatches=mismatches, labels_agree=labels_agree)
    if mismatches or not labels_agree:
        worst = int(np.argmax(np.maximum(diff_predict, diff_batch)))
        raise CanaryFailed(
            f"the served model disagrees with the in-process pipeline on {mismatches} of {len(records)} canary rows "
            f"of the test window {test_window} (tolerance {tolerance:g}): worst row {worst} "
            f"({records[worst].get(spec.id_column)}) served {_shown(served[worst])} / batch {_shown(batch[worst])}, "
            f"expected {_shown(expected[worst])}" + ("" if labels_agree else "; labels differ too"))
    return report


def _record_answers(predictions: list[dict], task: str, classes: list[str] | None):
    """/predict's per-record answers as (scores like model_scores, labels or None)."""
    import numpy as np

    if task == "binary":
        return np.asarray([p["probability"] for p in predictions], float), [p["label"] for p in predictions]
    if task == "multiclass":
        return (np.asarray([[p["probabilities"][c] for c in classes] for p in predictions], float),
                [p["label"] for p in predictions])
    return np.asarray([p["prediction"] for p in predictions], float), None


def _batch_answers(body: dict, task: str, classes: list[str] | None):
    """/predict_batch's column answer as (scores like model_scores, labels or None)."""
    import numpy as np

    if task == "binary":
        return np.asarray(body["probabilities"], float), body["labels"]
    if task == "multiclass":
        return np.column_stack([np.asarray(body["probabilities"][c], float) for c in classes]), body["labels"]
    return np.asarray(body["predictions"], float), None


def _row_diff(served, expected, scale):
    """The largest absolute difference per row (over the classes of a multiclass row), over ``scale``."""
    import numpy as np

    diff = np.abs(served - expected) / scale
    return diff.max(axis=1) if diff.ndim == 2 else diff


def _shown(value) -> str:
    return repr(value.tolist() if hasattr(value, "tolist") else value)


def check_latency(url: str, records: list[dict[str, Any]], requests: int, budget_ms: float,
                  client=None) -> LatencyReport:
    """Time ``requests`` sequential single-row /predict calls; CanaryFailed if p95 is over the budget."""
    import httpx
    import numpy as np

    client = client or httpx.Client(timeout=60.0, headers=canary_headers())
    times = []
    for i in range(requests + 3):
        started = time.perf_counter()
        response = client.post(f"{url}/predict", json={"records": [records[i % len(records)]]})
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise CanaryFailed(f"latency probe got HTTP {response.status_code}: {response.text[:300]}")
        if i >= 3:  # the first calls warm connections and caches
            times.append(elapsed)
    t = np.asarray(times)
    report = LatencyReport(requests=len(t), p50_ms=round(float(np.percentile(t, 50)), 2),
                           p95_ms=round(float(np.percentile(t, 95)), 2), max_ms=round(float(t.max()), 2),
                           budget_ms=budget_ms)
    if report.p95_ms > budget_ms:
        raise CanaryFailed(f"single-row /predict latency p95 {report.p95_ms:.1f} ms (p50 {report.p50_ms:.1f} ms, "
                           f"{report.requests} requests) is over the budget of {budget_ms:.0f} ms "
                           "(serving.latency_budget_ms)")
    return report


def check_running(store: ObjectStore, settings: Settings, url: str, model_name: str,
                  model_version: int) -> tuple[CanaryReport, LatencyReport]:
    """The canary and latency checks against a server already answering at ``url`` (test-serving, rollout).

    /metadata must report ``model_version``; the first ``serving.canary_rows`` rows of the model's test
    window must get the in-process pipeline's predictions through /predict and /predict_batch; sequential
    single-row requests must meet ``serving.latency_budget_ms`` (p95). CanaryFailed names what failed. Every
    request is canary traffic (:func:`canary_headers`).
    """
    import httpx

    from mlcycle.tasks.features import model_input
    from mlcycle.tasks.predictions import model_scores
    from mlcycle.tasks.registry.versions import load_model

    cfg, spec = settings.serving, settings.dataset
    loaded = load_model(store, model_name, model_version)
    frame, window = canary_rows(store, settings, model_name, model_version, cfg.canary_rows)
    expected = model_scores(loaded.pipeline, model_input(frame, loaded.metadata.features), spec.task,
                            spec.class_labels)
    threshold = (cfg.threshold or loaded.metadata.threshold) if spec.task == "binary" else None
    features = [c.name for c in loaded.metadata.features]
    with httpx.Client(timeout=60.0, headers=canary_headers(settings)) as client:
        response = client.get(f"{url}/metadata")
        if response.status_code != 200 or response.json().get("model_version") != model_version:
            raise CanaryFailed(f"/metadata at {url} does not report {model_name} v{model_version}: "
                               f"HTTP {response.status_code} {response.text[:300]}")
        canary = check_canaries(url, frame, expected, settings.dataset, features, threshold, cfg.canary_tolerance,
                                window, client=client)
        latency = check_latency(url, records_payload(frame, settings.dataset, features), cfg.latency_requests,
                                cfg.latency_budget_ms, client=client)
    return canary, latency


def verify_serving(store: ObjectStore, settings: Settings, bento: BentoRef, *,
                   port: int | None = None) -> ServingCheck:
    """Test-serving: start the bento, wait for /readyz, run :func:`check_running`, stop it.

    ServeFailed (it does not start or get ready) or CanaryFailed (wrong answers, too slow) say why.
    (TFX's InfraValidator idea: the artifact that will be rolled out answers real requests correctly and
    in time before anything downstream sees it.)
    """
    serving = start_serving(settings, bento.tag, port=port,
                            log_path=settings.run_dir / f"test-serve-{bento.model_version}.log")
    try:
        ready = wait_ready(serving, settings.serving.readiness_timeout_seconds)
        canary, latency = check_running(store, settings, serving.url, bento.model_name, bento.model_version)
    finally:
        serving.stop()
    return ServingCheck(bento_tag=bento.tag, url=serving.url, ready_seconds=ready, canary=canary,
                        latency=latency, metadata_version=bento.model_version)


# --------------------------------------------------------------------------------------------------
# Prefect tasks: thin wrappers (flows/package.py)
# --------------------------------------------------------------------------------------------------

from mlcycle.tasks.lazy_task import NO_CACHE, task  # noqa: E402


@task(name="test-serve", cache_policy=NO_CACHE)
def verify_serving_task(settings: Settings, bento: BentoRef) -> ServingCheck:
    from mlcycle.tasks.storage import open_store

    return verify_serving(open_store(settings), settings, bento)
