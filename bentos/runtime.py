"""What the service needs at run time besides its schema: the verified model, batching, a request guard.

* :func:`load_pipeline` -- the registry's joblib file from the BentoML model directory, its sha256
  checked against the one the registry recorded *before* unpickling (a joblib file is code).
* :class:`Scorer` -- adaptive batching of concurrent requests into one pipeline call. The fitted
  scikit-learn pipeline costs ~5 ms per call whatever the rows (column transformer overhead), and a
  few microseconds per extra row, so throughput comes from scoring many requests per call. While one
  call runs (in a worker thread), arriving requests queue; the next call takes all of them, up to
  ``max_batch_rows``. No load shedding: at low load a request is scored at once; under load (the last
  call served several requests) the scorer first waits ``max_wait_ms`` (a few ms) so the requests
  whose answers just went out are scored together rather than in alternating halves. Back-pressure
  is BentoML's ``traffic`` timeout and concurrency.
  (BentoML's own ``batchable`` APIs lose the request context -- the request id the inference log
  needs -- and shed requests by a latency estimate; benchmarks/README.md has the measurements.)
* :class:`RequestGuard` -- an ASGI middleware in front of the API: refuses bodies over
  ``max_body_bytes`` with 413, reads every body as JSON whatever its Content-Type, rewrites BentoML's
  400 body so ``error`` names each field and problem, and answers ``GET /metadata`` like POST.

No Prefect, no BentoML import here (the service passes BentoML objects in).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tasks.schema import error_message


class ServiceStartError(RuntimeError):
    """The service cannot start; the message (also printed to stderr, i.e. the serve log) says why."""


def serving_context(model, bundled_config: Path):
    """(ServedModel, Settings) for a BentoModel reference, or ServiceStartError naming the problem.

    The settings file is ``MLCYCLE_CONFIG`` when set, else the ``mlcycle.yaml`` bundled in the bento.
    Errors are re-raised as ServiceStartError (not ValueError: BentoML would take a ValueError for "not a
    bento tag" and report a misleading import error instead).
    """
    import os
    import sys

    from tasks.schema import ServedModel
    from tasks.settings import CONFIG_ENV, load_settings

    try:
        if not os.environ.get(CONFIG_ENV) and bundled_config.is_file():
            os.environ[CONFIG_ENV] = str(bundled_config)
        stored = model.stored
        if stored is None:
            raise ServiceStartError(f"model {model.tag} is not in the BentoML model store "
                                    f"(BENTOML_HOME={os.environ.get('BENTOML_HOME', '~/bentoml')}); package it "
                                    "first (mlcycle package)")
        served = ServedModel.model_validate_json(Path(stored.path_of("served_model.json")).read_text())
        return served, load_settings()
    except Exception as exc:
        message = f"mlcycle service cannot start: {type(exc).__name__}: {exc}"
        print(message, file=sys.stderr, flush=True)
        raise ServiceStartError(message) from None


class ModelIntegrityError(RuntimeError):
    """The model file does not match the sha256 the registry recorded: it is not unpickled."""


def load_pipeline(path: Path, expected_sha256: str):
    """Unpickle ``path`` only if its sha256 is ``expected_sha256`` (raise ModelIntegrityError otherwise)."""
    import joblib

    data = Path(path).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ModelIntegrityError(f"{path}: sha256 {actual} does not match the registry's {expected_sha256}; "
                                  "the model file was altered after packaging, refusing to load it")
    import io

    return joblib.load(io.BytesIO(data))


# --------------------------------------------------------------------------------------------------
# adaptive batching
# --------------------------------------------------------------------------------------------------


class Scorer:
    """Coalesce concurrent scoring requests into one call of ``predict(frame) -> probabilities``."""

    def __init__(self, predict: Callable[[Any], np.ndarray], columns: list[str], *, max_batch_rows: int,
                 max_wait_ms: float = 0.0, threads: int = 1) -> None:
        self._predict = predict
        self._columns = columns
        self.max_batch_rows = max_batch_rows
        self.max_wait = max_wait_ms / 1000.0
        self._pending: deque[tuple[dict[str, np.ndarray], int, asyncio.Future]] = deque()
        self._pending_rows = 0
        self._runner: asyncio.Task | None = None
        # one scoring thread; its OpenMP/BLAS pools limited to ``threads`` (HGB's OpenMP threads spin, and
        # workers x cores threads on a small machine cost far more than they give)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer",
                                            initializer=_limit_threads, initargs=(threads,))
        self.calls = 0  # pipeline calls
        self.requests = 0  # requests they answered
        self.rows = 0

    async def score(self, columns: dict[str, np.ndarray], rows: int) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((columns, rows, future))
        self._pending_rows += rows
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        coalesced = 1
        while self._pending:
            if self.max_wait and coalesced > 1 and self._pending_rows < self.max_batch_rows:
                # under load (the last call served several requests) wait a moment for the requests whose
                # answers just went out: one call for all of them instead of two calls for halves
                await asyncio.sleep(self.max_wait)
            jobs = self._take()
            coalesced = len(jobs)
            try:
                frame = self._frame([j[0] for j in jobs])
                scores = await loop.run_in_executor(self._executor, self._predict, frame)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                for _, _, fut in jobs:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.calls += 1
            self.requests += len(jobs)
            self.rows += len(scores)
            start = 0
            for _, n, fut in jobs:
                if not fut.done():
                    fut.set_result(scores[start:start + n])
                start += n

    def _take(self) -> list[tuple[dict[str, np.ndarray], int, asyncio.Future]]:
        jobs = [self._pending.popleft()]
        rows = jobs[0][1]
        while self._pending and rows + self._pending[0][1] <= self.max_batch_rows:
            job = self._pending.popleft()
            jobs.append(job)
            rows += job[1]
        self._pending_rows -= rows
        return jobs

    def _frame(self, parts: list[dict[str, np.ndarray]]):
        import pandas as pd

        if len(parts) == 1:
            data = parts[0]
        else:
            data = {c: np.concatenate([p[c] for p in parts]) for c in self._columns}
        return pd.DataFrame(data, columns=self._columns, copy=False)

    def stats(self) -> dict[str, float]:
        calls = max(self.calls, 1)
        return {"calls": self.calls, "requests": self.requests, "rows": self.rows,
                "requests_per_call": round(self.requests / calls, 2), "rows_per_call": round(self.rows / calls, 2)}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _limit_threads(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


# --------------------------------------------------------------------------------------------------
# the request guard
# --------------------------------------------------------------------------------------------------


class RequestGuard:
    """ASGI middleware: 413 for oversized bodies, JSON whatever the Content-Type, readable 400s."""

    def __init__(self, app, *, max_body_bytes: int, api_paths: list[str], get_paths: list[str] = ()) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_paths = set(api_paths)
        self.get_paths = set(get_paths)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.api_paths:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET" and scope["path"] in self.get_paths:
            scope = dict(scope, method="POST")
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type",)]
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _send_json(send, 413, {"error": f"request body of {length.decode(errors='replace')} bytes is "
                                                  f"larger than the limit of {self.max_body_bytes} bytes "
                                                  "(serving.max_body_bytes); split it into smaller requests"})
            return
        if length is None and scope["method"] == "POST":  # chunked: read it here, within the limit
            body, ok = await _read_limited(receive, self.max_body_bytes)
            if not ok:
                await _send_json(send, 413, {"error": f"request body is larger than the limit of "
                                                      f"{self.max_body_bytes} bytes (serving.max_body_bytes); "
                                                      "split it into smaller requests"})
                return
            receive = _replay(body, receive)
            headers.append((b"content-length", str(len(body)).encode()))
        headers.append((b"content-type", b"application/json"))
        scope = dict(scope, headers=headers)
        await self.app(scope, receive, _ReadableErrors(send))


class _ReadableErrors:
    """Wraps ``send``: a 400 JSON body with pydantic ``detail`` gets an ``error`` naming each field."""

    def __init__(self, send) -> None:
        self.send = send
        self.start: dict | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] == 400:
                self.start = message
                return
            await self.send(message)
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(self.chunks)
        try:
            payload = json.loads(body)
            detail = payload.get("detail") if isinstance(payload, dict) else None
            if isinstance(detail, list) and detail:
                payload["error"] = error_message(detail)
                body = json.dumps(payload).encode()
        except ValueError:
            pass
        headers = [(k, v) for k, v in self.start["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


async def _read_limited(receive, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks), True


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the real disconnect

    return replay


async def _send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
