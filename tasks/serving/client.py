"""The HTTP client of the service: canaries, the latency budget, test-serving, and example requests.

::

    check_running   against a server already answering (test-serving's, or a rollout candidate): /metadata
                    names the version; the test window's rows through /predict and /predict_batch equal the
                    in-process pipeline (abs tol serving.canary_tolerance); single-row /predict p95 within
                    serving.latency_budget_ms
    verify_serving  test-serving: start_serving + wait_ready + check_running + stop (any failure raises
                    ServeFailed / CanaryFailed naming the reason)
    example_request one valid /predict body for the printed curl example: the model's own first canary row

Every request body comes from the registry version's stored rows (its test window), so the canaries and
the examples fit whatever dataset the model was trained on. With ``api_token`` set, every request made
here carries it (:func:`api_headers`).
"""

from __future__ import annotations

import json
import time
from typing import Any

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


def check_canaries(url: str, frame, expected, spec, features: list[str], threshold: float, tolerance: float,
                   test_window: str, client=None) -> CanaryReport:
    """Send ``frame`` through /predict (one request per 50 rows) and /predict_batch; compare with ``expected``."""
    import httpx
    import numpy as np

    records = records_payload(frame, spec, features)
    client = client or httpx.Client(timeout=60.0)
    served = []
    for start in range(0, len(records), 50):
        response = client.post(f"{url}/predict", json={"records": records[start:start + 50]})
        if response.status_code != 200:
            raise CanaryFailed(f"canary /predict request (rows {start}..{start + 49}) got HTTP {response.status_code}: "
                               f"{response.text[:500]}")
        served += [p["probability"] for p in response.json()["predictions"]]
    response = client.post(f"{url}/predict_batch", json={"columns": columns_payload(records, features,
                                                                                     spec.id_column)})
    if response.status_code != 200:
        raise CanaryFailed(f"canary /predict_batch request got HTTP {response.status_code}: {response.text[:500]}")
    body = response.json()
    batch = np.asarray(body["probabilities"], dtype=float)
    served_arr = np.asarray(served, dtype=float)
    expected = np.asarray(expected, dtype=float)
    diff_predict = np.abs(served_arr - expected)
    diff_batch = np.abs(batch - expected)
    mismatches = int(((diff_predict > tolerance) | (diff_batch > tolerance)).sum())
    labels_agree = bool(np.array_equal(np.asarray(body["labels"]), (expected >= threshold).astype(int)))
    report = CanaryReport(rows=len(records), test_window=test_window, max_abs_diff_predict=float(diff_predict.max()),
                          max_abs_diff_batch=float(diff_batch.max()), tolerance=tolerance, mismatches=mismatches,
                          labels_agree=labels_agree)
    if mismatches or not labels_agree:
        worst = int(np.argmax(np.maximum(diff_predict, diff_batch)))
        raise CanaryFailed(
            f"the served model disagrees with the in-process pipeline on {mismatches} of {len(records)} canary rows "
            f"of the test window {test_window} (tolerance {tolerance:g}): worst row {worst} "
            f"({records[worst].get(spec.id_column)}) served {served_arr[worst]!r} / batch {batch[worst]!r}, "
            f"expected {expected[worst]!r}" + ("" if labels_agree else "; labels differ too"))
    return report


def check_latency(url: str, records: list[dict[str, Any]], requests: int, budget_ms: float,
                  client=None) -> LatencyReport:
    """Time ``requests`` sequential single-row /predict calls; CanaryFailed if p95 is over the budget."""
    import httpx
    import numpy as np

    client = client or httpx.Client(timeout=60.0)
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
    window must get the in-process pipeline's probabilities through /predict and /predict_batch; sequential
    single-row requests must meet ``serving.latency_budget_ms`` (p95). CanaryFailed names what failed.
    """
    import httpx

    from mlcycle.tasks.registry.versions import load_model

    cfg = settings.serving
    loaded = load_model(store, model_name, model_version)
    frame, window = canary_rows(store, settings, model_name, model_version, cfg.canary_rows)
    expected = loaded.predict_proba(frame)
    threshold = cfg.threshold or loaded.metadata.threshold
    features = [c.name for c in loaded.metadata.features]
    with httpx.Client(timeout=60.0, headers=api_headers(settings)) as client:
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
