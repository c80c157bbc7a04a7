"""Serving under faults, against a real `bentoml serve` of a real bento (one worker, a small admission limit).

* **flood**: 300 concurrent requests at a worker that admits 8 at a time: every request is answered (no
  client timeout), the surplus gets 503 with ``Retry-After`` long before the request timeout, nothing
  else fails, and normal requests succeed as soon as the flood is over;
* **oversized bodies**: over ``serving.max_body_bytes`` -> 413 before the body is read (declared or
  chunked, up to 50 MB), and the worker keeps serving;
* **worker killed under load**: SIGKILL of the worker process (not BentoML's arbiter) while clients send
  requests: the arbiter starts a new worker, ``/readyz`` does not answer while none is up and answers
  200 again after, requests after the recovery succeed, and the failures are only requests that were
  in flight on the killed worker (measured and printed: ``pytest -s``).

Nothing here asserts a wall-clock figure beyond "well before the request timeout"; the numbers a run
measured are printed, not asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.support.champion import GOOD

REQUEST_TIMEOUT = 30.0
MAX_IN_FLIGHT = 8
RETRY_AFTER = 2


@pytest.fixture(scope="module")
def champion(packaged_champion):
    return packaged_champion


@pytest.fixture(scope="module")
def small_server(champion):
    """One worker admitting MAX_IN_FLIGHT requests at a time (the limit set through MLCYCLE_SERVING__*)."""
    from mlcycle.tasks.serving.process import start_serving, wait_ready

    settings = champion.settings.model_copy(update={"serving": champion.settings.serving.model_copy(update={
        "workers": 1, "max_in_flight": MAX_IN_FLIGHT, "retry_after_seconds": RETRY_AFTER})})
    process = start_serving(settings, champion.bento.tag)
    try:
        wait_ready(process, settings.serving.readiness_timeout_seconds)
        yield process
    finally:
        process.stop()


def predict_body(records: int = 1) -> dict:
    return {"records": [GOOD] * records}


def refused_total(url: str, reason: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f'mlcycle_requests_refused_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


# --------------------------------------------------------------------------------------------------
# a flood above capacity
# --------------------------------------------------------------------------------------------------


def test_a_flood_gets_fast_503s_with_retry_after_and_the_service_recovers(small_server):
    url = small_server.url
    flood = 300

    async def send_flood() -> list[tuple[object, float, httpx.Response | None]]:
        limits = httpx.Limits(max_connections=flood, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as client:
            async def one():
                started = time.monotonic()
                try:
                    response = await client.post(f"{url}/predict", json=predict_body(5))
                    return response.status_code, time.monotonic() - started, response
                except httpx.HTTPError as exc:
                    return type(exc).__name__, time.monotonic() - started, None
            return await asyncio.gather(*[one() for _ in range(flood)])

    before = refused_total(url, "overloaded")
    answers = asyncio.run(send_flood())
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) <= {200, 503}, statuses  # every request answered: no timeout, no reset, no other 5xx
    shed = [(seconds, response) for status, seconds, response in answers if status == 503]
    served = [seconds for status, seconds, _ in answers if status == 200]
    assert shed and served, statuses
    for _, response in shed:
        assert response.headers["retry-after"] == str(RETRY_AFTER)
        assert f"limit of {MAX_IN_FLIGHT} requests in flight" in response.json()["error"]
    slowest_503 = max(seconds for seconds, _ in shed)
    assert slowest_503 < REQUEST_TIMEOUT / 3  # answered at once, not after queueing towards the timeout
    print(f"\nflood of {flood}: {statuses[200]} served, {statuses[503]} shed with 503 + Retry-After; "
          f"slowest 503 {slowest_503 * 1000:.0f} ms, slowest 200 {max(served) * 1000:.0f} ms")
    assert refused_total(url, "overloaded") - before == len(shed)

    with httpx.Client(timeout=REQUEST_TIMEOUT) as client:  # the flood is over: normal service at once
        for _ in range(20):
            response = client.post(f"{url}/predict", json=predict_body())
            assert response.status_code == 200, response.text
        assert client.get(f"{url}/readyz").status_code == 200


# --------------------------------------------------------------------------------------------------
# hostile bodies
# --------------------------------------------------------------------------------------------------


def test_oversized_bodies_get_413_before_they_are_read_and_the_worker_keeps_serving(small_server, champion):
    url = small_server.url
    limit = champion.settings.serving.max_body_bytes
    with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
        for size in (limit + 1, 10_000_000, 50_000_000):
            started = time.monotonic()
            response = client.post(f"{url}/predict", content=b"x" * size, headers={"Content-Type": "application/json"})
            seconds = time.monotonic() - started
            assert response.status_code == 413, response.text
            assert f"request body of {size} bytes is larger than the limit of {limit} bytes" in response.json()["error"]
            assert seconds < REQUEST_TIMEOUT / 3
        chunks = (b"x" * 65_536 for _ in range(160))  # 10 MB without Content-Length
        response = client.post(f"{url}/predict_batch", content=chunks)
        assert response.status_code == 413 and "serving.max_body_bytes" in response.json()["error"]
        assert client.post(f"{url}/predict", json=predict_body()).status_code == 200
        assert client.get(f"{url}/metadata").json()["limits"]["max_in_flight"] == MAX_IN_FLIGHT
    assert refused_total(url, "too_large") >= 4


# --------------------------------------------------------------------------------------------------
# the worker process killed under load (last: it disrupts the module's server)
# --------------------------------------------------------------------------------------------------


def worker_pids(serve_pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(serve_pid).children(recursive=True)
            if "_bentoml_impl.worker.service" in " ".join(p.cmdline())]


def test_a_killed_worker_is_restarted_and_readiness_follows_it(small_server):
    url = small_server.url
    (worker,) = worker_pids(small_server.pid)
    stop = threading.Event()
    outcomes: list[tuple[float, object]] = []  # (sent at, status or exception name)
    probes: list[tuple[float, object]] = []
    lock = threading.Lock()

    def client_loop() -> None:  # a bounded load: 4 clients (under the admission limit), sequential requests
        with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    outcome: object = client.post(f"{url}/predict", json=predict_body()).status_code
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with lock:
                    outcomes.append((sent, outcome))

    clients = [threading.Thread(target=client_loop) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(1.0)
    killed_at = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    deadline = killed_at + 120
    recovered_at = None
    while time.monotonic() < deadline:
        checked = time.monotonic()
        try:
            status: object = httpx.get(f"{url}/readyz", timeout=1.0).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        probes.append((checked - killed_at, status))
        if status == 200 and worker_pids(small_server.pid) not in ([], [worker]):
            recovered_at = time.monotonic()
            break
        time.sleep(0.25)
    time.sleep(1.0)
    stop.set()
    for thread in clients:
        thread.join(REQUEST_TIMEOUT + 5)
    assert not any(thread.is_alive() for thread in clients), "a client hung past the request timeout"

    assert recovered_at is not None, f"no new worker answered /readyz within 120 s: {probes[-5:]}"
    assert small_server.process.poll() is None  # the arbiter itself lived on
    (new_worker,) = worker_pids(small_server.pid)
    assert new_worker != worker
    not_ready = [status for _, status in probes if status != 200]
    assert not_ready, "readiness should not answer 200 while no worker is up"
    failures = Counter(outcome for _, outcome in outcomes if outcome != 200)
    assert set(failures) <= {"RemoteProtocolError", "ReadError", "ConnectError", "WriteError"}, failures
    assert "ReadTimeout" not in failures  # nothing hung: requests sent during the outage waited and were answered
    assert sum(failures.values()) <= 4 + 4, failures  # at most what was in flight or mid-connection at the kill
    after = [outcome for sent, outcome in outcomes if sent > recovered_at]
    assert after and all(outcome == 200 for outcome in after)
    print(f"\nworker {worker} killed: new worker {new_worker} ready after {recovered_at - killed_at:.1f} s; "
          f"/readyz did not answer for {len(not_ready)} probes ({sorted({str(s) for s in not_ready})}); "
          f"{len(outcomes)} requests, failed {dict(failures)}, {len(after)} after recovery all 200")
    with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
        assert json.loads(client.post(f"{url}/predict", json=predict_body(3)).text)["predictions"]
