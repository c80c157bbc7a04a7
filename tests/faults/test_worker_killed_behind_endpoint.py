"""A serving worker SIGKILLed under steady load behind the stable endpoint: no request fails but one the victim
had begun to answer (a truncated response, at most one per client in flight), and every answered request is in
the inference log.

A real table (anes96: seven classes, its own columns), its packaged bento served by `bentoml serve` with two
workers, nginx in front with the endpoint's retry. The log's flush interval is a minute, so what the killed
worker answered is nowhere but in its memory and its write-ahead journal when it dies: the replacement worker
(or the surviving one) replays the journal (tasks/inference_journal.py). Without the journal those
requests were answered and never logged.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.support.endpoint import Client

pytestmark = pytest.mark.slow


def serving_workers(serve_pid: int) -> list[int]:
    found = []
    for p in psutil.Process(serve_pid).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker.service" in " ".join(p.cmdline()):
                found.append(p.pid)
        except psutil.Error:
            continue
    return sorted(found)


def journaling_workers(workers: list[int], journal: Path) -> list[int]:
    """The workers holding an open journal segment: they answered requests that are not written yet."""
    holding = []
    for pid in workers:
        try:
            if any(Path(f.path).parent == journal for f in psutil.Process(pid).open_files()):
                holding.append(pid)
        except psutil.Error:
            continue
    return holding


def test_a_killed_worker_fails_only_a_response_it_had_begun_and_logs_every_answer(served_tables, tmp_path):
    from mlcycle.tasks.inference_reader import read_inference_log
    from mlcycle.tasks.rollout import endpoint
    from mlcycle.tasks.rollout.endpoint import Upstream
    from mlcycle.tasks.serving.client import records_payload
    from mlcycle.tasks.serving.process import free_port, start_serving, wait_ready
    from mlcycle.tasks.training.window import load_test_window
    from tests.support.env import make_settings

    table = served_tables.get("anes96")
    serving = table.settings.serving
    settings = table.settings.model_copy(update={"serving": serving.model_copy(update={
        "workers": 2, "inference_log": serving.inference_log.model_copy(update={
            "flush_interval_seconds": 60.0, "spill_dir": tmp_path / "spill"})})})
    frame = load_test_window(table.store, table.spec, table.version.lineage.split)
    records = records_payload(frame, table.spec, [c.name for c in table.version.features])
    before = set(read_inference_log(table.store)["request_id"]) if table.store.list("inference/") else set()

    ep = make_settings(tmp_path / "endpoint", rollout={"endpoint_port": free_port()})
    server = start_serving(settings, table.bento.tag)
    try:
        wait_ready(server, settings.serving.readiness_timeout_seconds)
        deadline = time.monotonic() + 60
        while len(serving_workers(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        endpoint.start_endpoint(ep, Upstream(deployment_id="anes96", port=server.port))
        url = endpoint.endpoint_url(ep)
        def body(i: int, k: int) -> dict:  # three real rows, a different slice for each request
            return {"records": records[(i * 4 + k) % len(records):][:3]}

        clients = [Client(url, path="/predict", body=lambda i, k=k: body(i, k),
                          version_of=lambda answer: answer["request_id"], max_seconds=60) for k in range(4)]
        for c in clients:
            c.__enter__()
        time.sleep(2.0)
        # the kernel may hand every connection to one worker: kill one that has answered requests queued
        holding = journaling_workers(serving_workers(server.pid), tmp_path / "spill" / "journal")
        assert holding, "no serving worker holds a journal segment after 2 s of load"
        victim = holding[0]
        psutil.Process(victim).send_signal(signal.SIGKILL)
        time.sleep(4.0)
        for c in clients:
            c.__exit__(None, None, None)
        answered = {rid for c in clients for rid in c.versions}
        failures = [f for c in clients for f in c.failures]
        # The one failure a client can see: the victim had already sent a response's headers (nginx passed
        # them on) and died before its body. nginx retries a failed *connection* on the other worker
        # (rollout.endpoint_retries), never a response already begun (proxy_next_upstream cannot): such a
        # request ends truncated, at most one per client in flight at the kill, and nothing else fails (no
        # refused connection, no 502). Seen once in CI (2026-12-07), not in local runs.
        truncated = [f for f in failures if f.startswith(
            "RemoteProtocolError('peer closed connection without sending complete message body")]
        assert failures == truncated and len(truncated) <= len(clients), failures[:5]
        assert len(answered) >= 40 and victim not in serving_workers(server.pid)
    finally:
        endpoint.stop_endpoint(ep)
        server.stop()  # a clean stop: the living workers write what they queued
    log = server.log_path.read_text(errors="replace")
    frame = read_inference_log(table.store)
    logged = frame[~frame["request_id"].isin(before)]
    missing = answered - set(logged["request_id"])
    assert not missing, f"{len(missing)} of {len(answered)} answered requests are not in the inference log"
    assert "replayed from its journal" in log  # the killed worker had answered requests queued
    assert (logged.groupby("request_id").size() <= 3).all()  # replayed once: no request's rows twice
    # a request the killed worker journaled but never answered was retried on the other worker: logged once
    # more under its own id, at most one per client in flight at the kill
    assert len(set(logged["request_id"]) - answered) <= len(clients)
