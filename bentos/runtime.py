"""What the service needs at run time besides its schema: the verified model, batching, a request guard.

* :func:`load_pipeline` -- the registry's joblib file from the BentoML model directory, its sha256
  checked against the one the registry recorded *before* unpickling (a joblib file is code).
* the model the scorer calls is the fast path's (bentos/fastpath.py: ``serving_model``): the fitted pipeline
  compiled to numpy when it has the structure ``tasks/features.py`` builds.
* :class:`Scorer` -- adaptive batching of concurrent requests into one model call (its ``predict`` gives
  the task's scores of the requests' columns, ``tasks.predictions.model_scores``: one value or one row of
  class probabilities per record, sliced back per request by row). A call has a fixed cost (the model's
  per-call overhead: ~1.2 ms for 200 boosting iterations compiled, ~6 ms through the pipeline) and a few
  microseconds per extra row, so throughput comes from scoring many requests per call. While one
  call runs (in a worker thread), arriving requests queue; the next call takes all of them, up to
  ``max_batch_rows``. At low load a request is scored at once; under load (the last call served
  several requests) the scorer first waits ``max_wait_ms`` (a few ms) so the requests whose answers
  just went out are scored together rather than in alternating halves. The scorer sheds nothing: the
  request guard bounds what reaches it.
  (BentoML's own ``batchable`` APIs lose the request context -- the request id the inference log
  needs -- and shed requests by a latency estimate; benchmarks/README.md has the measurements.)
* :class:`RequestGuard` -- an ASGI middleware in front of the API (``/predict``, ``/predict_batch``,
  ``/metadata``; the probes ``/livez``, ``/readyz``, ``/metrics`` and the docs pass untouched), in order:

  0. a method the endpoint does not answer -> 405 with the right ``Allow`` header;
  1. **bearer token** (``api_token`` set): no or a wrong ``Authorization: Bearer`` -> 401 with
     ``WWW-Authenticate: Bearer``; compared in constant time, never logged or echoed;
  2. **traffic**: on the endpoints whose requests are logged (``traffic_paths``), an
     ``X-Mlcycle-Traffic`` header other than ``live`` or ``canary`` -> 400 naming the allowed values (the
     service logs the request's traffic, :func:`traffic_of`, so that monitoring counts only live rows);
  3. **body size**: a declared or streamed body over ``max_body_bytes`` -> 413, before reading it;
  4. **admission control**: with ``max_in_flight`` API requests of this worker already in flight, the
     next one gets 503 with ``Retry-After`` at once, instead of queueing until it times out (BentoML's
     ``traffic.max_concurrency`` answers 429 without Retry-After, and counts every path). The limit is
     per worker process, like the middleware itself; the default (512) is 16x the benchmark's wrk
     concurrency and about 0.6 s of queue at the measured ~900 single-row requests/s per worker (128
     shed 4.4% of a 10-minute soak at 70% of capacity: benchmarks/README.md);
  5. JSON whatever the Content-Type, BentoML's 400 body rewritten so ``error`` names each field and
     problem, ``GET /metadata`` answered like POST.

  It also completes the OpenAPI document (``/docs.json``): the bearer scheme when a token is required,
  ``GET /metadata``, the traffic header, and the 400/401/413/503 answers with the body they really have.

No Prefect, no BentoML import here (the service passes BentoML objects in).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mlcycle.tasks.inference_log import LIVE, TRAFFIC_HEADER, TRAFFIC_VALUES
from mlcycle.tasks.schema import error_message


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

    from mlcycle.tasks.schema import ServedModel
    from mlcycle.tasks.settings import CONFIG_ENV, load_settings

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
    """Coalesce concurrent scoring requests into one call of ``predict(columns) -> scores`` (``columns``: one
    array per feature, the requests' rows concatenated in order)."""

    def __init__(self, predict: Callable[[dict[str, np.ndarray]], np.ndarray], columns: list[str], *,
                 max_batch_rows: int, max_wait_ms: float = 0.0, threads: int = 1) -> None:
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
                columns = self._concatenated([j[0] for j in jobs])
                scores = await loop.run_in_executor(self._executor, self._predict, columns)
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

    def _concatenated(self, parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if len(parts) == 1:
            return parts[0]
        return {c: np.concatenate([p[c] for p in parts]) for c in self._columns}

    def stats(self) -> dict[str, float]:
        calls = max(self.calls, 1)
        return {"calls": self.calls, "requests": self.requests, "rows": self.rows,
                "requests_per_call": round(self.requests / calls, 2), "rows_per_call": round(self.rows / calls, 2)}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def quiet_gc(threshold: int) -> None:
    """Keep Python's cyclic garbage collector off the request path of a worker whose model is loaded.

    Why: under steady single-row load the service's p99 was ~9x its p50 (169 vs 18.6 ms at 32 connections),
    with the inference log on or off and the journal on or off (the same p99 either way); the stalls were
    collections that walk the whole heap the model, pandas, scikit-learn and BentoML left (hundreds of
    thousands of objects), every few hundred requests. So once the model is loaded: one collection, then
    ``gc.freeze()`` (those objects are never scanned again), and a young collection only every ``threshold``
    new objects instead of 700 (the older generations every 20 young ones, as often relative to it as
    Python's 10). Measured: p99 169 -> 91 ms with the freeze alone, 56 ms with both (p50 ~19 ms either way;
    benchmarks/README.md). Memory: garbage in reference cycles lives at most ``threshold`` allocations
    longer; nothing is leaked. ``threshold`` 0 leaves Python's defaults.
    """
    import gc

    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 20, 20)


def _limit_threads(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


# --------------------------------------------------------------------------------------------------
# the request guard
# --------------------------------------------------------------------------------------------------


def traffic_of(header: str | None) -> str:
    """The traffic an ``X-Mlcycle-Traffic`` header value names (none: live); ValueError naming the allowed
    values for any other."""
    if header is None:
        return LIVE
    value = header.strip()
    if value not in TRAFFIC_VALUES:
        raise ValueError(f"header {TRAFFIC_HEADER} must be {' or '.join(TRAFFIC_VALUES)} (or left out: live), "
                         f"got {header[:40]!r}")
    return value


class RequestGuard:
    """ASGI middleware: token, 413, admission control with Retry-After, JSON bodies, readable 400s."""

    def __init__(self, app, *, max_body_bytes: int, api_paths: list[str], get_paths: list[str] = (),
                 traffic_paths: list[str] = (), api_token: str | None = None, max_in_flight: int | None = None,
                 retry_after_seconds: int = 1, on_refused: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_paths = set(api_paths)
        self.get_paths = set(get_paths)
        self.traffic_paths = set(traffic_paths)
        self._token = api_token.encode() if api_token else None
        self.max_in_flight = max_in_flight
        self.retry_after_seconds = retry_after_seconds
        self.on_refused = on_refused
        self.in_flight = 0  # API requests of this worker between admission and their last response byte

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.api_paths:
            if scope["type"] == "http" and scope["path"] == OPENAPI_PATH and scope["method"] == "GET":
                send = _amended_openapi(send, lambda doc: amend_openapi(
                    doc, api_paths=sorted(self.api_paths), get_paths=sorted(self.get_paths),
                    traffic_paths=sorted(self.traffic_paths), token_required=self._token is not None))
            await self.app(scope, receive, send)
            return
        allowed = ("GET", "POST") if scope["path"] in self.get_paths else ("POST",)
        if scope["method"] not in allowed:
            await self._refuse(send, "method", 405, f"{scope['method']} is not allowed on {scope['path']}; "
                                                    f"use {' or '.join(allowed)}",
                               [(b"allow", ", ".join(allowed).encode())])
            return
        if self._token is not None:
            problem = self._unauthorized(scope["headers"])
            if problem:
                await self._refuse(send, "unauthorized", 401, problem, [
                    (b"www-authenticate", b'Bearer realm="mlcycle"' +
                     (b', error="invalid_token"' if problem.startswith("invalid") else b""))])
                return
        if scope["path"] in self.traffic_paths:
            header = next((v for k, v in scope["headers"] if k == TRAFFIC_HEADER_KEY), None)
            try:
                traffic_of(None if header is None else header.decode("latin-1"))
            except ValueError as exc:
                await self._refuse(send, "bad_traffic_header", 400, str(exc))
                return
        if scope["method"] == "GET" and scope["path"] in self.get_paths:
            scope = dict(scope, method="POST")
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type",)]
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._refuse(send, "too_large", 413, f"request body of {length.decode(errors='replace')} bytes "
                                                       f"is larger than the limit of {self.max_body_bytes} bytes "
                                                       "(serving.max_body_bytes); split it into smaller requests")
            return
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            await self._refuse(send, "overloaded", 503, (
                f"the service is at its limit of {self.max_in_flight} requests in flight per worker "
                f"(serving.max_in_flight); retry after {self.retry_after_seconds} s"),
                [(b"retry-after", str(self.retry_after_seconds).encode())])
            return
        self.in_flight += 1
        try:
            if length is None and scope["method"] == "POST":  # chunked: read it here, within the limit
                body, ok = await _read_limited(receive, self.max_body_bytes)
                if not ok:
                    await self._refuse(send, "too_large", 413, f"request body is larger than the limit of "
                                                               f"{self.max_body_bytes} bytes "
                                                               "(serving.max_body_bytes); split it into smaller "
                                                               "requests")
                    return
                receive = _replay(body, receive)
                headers.append((b"content-length", str(len(body)).encode()))
            headers.append((b"content-type", b"application/json"))
            scope = dict(scope, headers=headers)
            await self.app(scope, receive, _readable_errors(send))
        finally:
            self.in_flight -= 1

    def _unauthorized(self, headers) -> str | None:
        """None if the request carries the token, else why not (the token itself is never repeated)."""
        value = next((v for k, v in headers if k == b"authorization"), None)
        if value is None:
            return ("missing bearer token: this service requires the header 'Authorization: Bearer <token>' "
                    "(the token configured as MLCYCLE_API_TOKEN)")
        scheme, _, credentials = value.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            return "missing bearer token: the Authorization header must be 'Bearer <token>'"
        if not hmac.compare_digest(credentials.strip(), self._token):
            return "invalid bearer token"
        return None

    async def _refuse(self, send, reason: str, status: int, error: str,
                      headers: list[tuple[bytes, bytes]] = ()) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)
        await _send_json(send, status, {"error": error}, headers)


OPENAPI_PATH = "/docs.json"
ERROR_SCHEMA = "ErrorResponse"
TRAFFIC_HEADER_KEY = TRAFFIC_HEADER.lower().encode()
REFUSALS = {"400": "the request is not valid JSON or does not match the schema: `error` names each field and "
                   f"problem, `detail` lists them (or its {TRAFFIC_HEADER} header names no known traffic)",
            "401": "no or a wrong bearer token (only when the service requires one)",
            "413": "the request body is larger than serving.max_body_bytes",
            "503": "the worker is at serving.max_in_flight requests in flight: retry after the Retry-After "
                   "header's seconds"}


TRAFFIC_PARAMETER = {
    "name": TRAFFIC_HEADER, "in": "header", "required": False,
    "schema": {"type": "string", "enum": list(TRAFFIC_VALUES)},
    "description": "who sends the request: canary for test-serving and rollout checks, whose predictions are "
                   "logged as such and never counted by monitoring; live (the default) for every other client"}


def amend_openapi(doc: dict[str, Any], *, api_paths: list[str], get_paths: list[str],
                  token_required: bool, traffic_paths: list[str] = ()) -> dict[str, Any]:
    """BentoML's OpenAPI document plus what the request guard adds (pure: returns the amended copy).

    Every API operation documents the answers the guard gives (400 with the body it really has, 413,
    503 with Retry-After, and 401 plus the ``bearerAuth`` scheme when a token is required); each path of
    ``get_paths`` gets a GET operation like its POST (the guard answers both); the operations of
    ``traffic_paths`` declare the optional traffic header.
    """
    import copy

    doc = copy.deepcopy(doc)
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {})[ERROR_SCHEMA] = {
        "type": "object", "title": ERROR_SCHEMA, "required": ["error"],
        "properties": {"error": {"type": "string"}, "detail": {}}}
    if token_required:
        components.setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http", "scheme": "bearer", "description": "the token configured as MLCYCLE_API_TOKEN"}
    error = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}}
    paths = doc.get("paths", {})
    for path in api_paths:
        operations = paths.get(path)
        if not operations or "post" not in operations:
            continue
        if path in get_paths and "get" not in operations:
            get = copy.deepcopy(operations["post"])
            get.pop("requestBody", None)
            if get.get("operationId"):
                get["operationId"] += "_get"
            operations["get"] = get
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in REFUSALS.items():
                if status == "401" and not token_required:
                    continue
                responses[status] = {"description": description, "content": error}
            responses["503"]["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                                           "description": "seconds to wait before retrying"}}
            if token_required:
                operation["security"] = [{"bearerAuth": []}]
            if path in traffic_paths:
                operation.setdefault("parameters", []).append(TRAFFIC_PARAMETER)
    return doc


class _JsonBodyRewriter:
    """Wraps ``send``: a response whose status ``rewrites`` selects is buffered, and its JSON body passes
    through ``amend`` (a body that is not JSON goes out unchanged); every other response streams through."""

    def __init__(self, send, amend: Callable[[Any], Any], rewrites: Callable[[int], bool]) -> None:
        self.send = send
        self.amend = amend
        self.rewrites = rewrites
        self.start: dict | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start":
            if not self.rewrites(message["status"]):
                await self.send(message)
                return
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(self.chunks)
        with contextlib.suppress(ValueError):  # not JSON: passed on as it is
            body = json.dumps(self.amend(json.loads(body))).encode()
        headers = [(k, v) for k, v in self.start["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


def _amended_openapi(send, amend: Callable[[dict], dict]) -> _JsonBodyRewriter:
    """GET /docs.json: the document passes through ``amend``."""
    return _JsonBodyRewriter(send, amend, rewrites=lambda status: status == 200)


def _with_field_errors(payload: Any) -> Any:
    """A 400 body with pydantic's ``detail`` list gets an ``error`` naming each field."""
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, list) and detail:
        payload["error"] = error_message(detail)
    return payload


def _readable_errors(send) -> _JsonBodyRewriter:
    return _JsonBodyRewriter(send, _with_field_errors, rewrites=lambda status: status == 400)


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


async def _send_json(send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
