"""The BentoML service: the packaged registry model behind typed endpoints. Imports no Prefect.

Which model: the bento argument ``model_tag`` (set by ``mlcycle package`` at build time), a model in the
BentoML store that ``tasks.serving.packaging.import_model`` created from a registry version. Its
``served_model.json`` carries the registry version, the artifact's sha256, the threshold, the task and
classes, and the dataset declaration the request schema is generated from (``tasks.schema``); what a
model answers per task, and the answers' types, are ``tasks.predictions``. Runtime settings
(workers, limits, batching, the inference log's store) come from the same settings model as the rest
of mlcycle: ``mlcycle.yaml`` (bundled in the bento) and ``MLCYCLE_*`` variables.

Endpoints: ``POST /predict`` (records), ``POST /predict_batch`` (columns), ``GET|POST /metadata``, and
BentoML's ``/livez``, ``/readyz``, ``/metrics``, ``/docs.json``. With ``MLCYCLE_API_TOKEN`` set (read from
the environment or a secret file when the worker starts, never bundled in the bento), the three API
endpoints require ``Authorization: Bearer <token>``; probes, metrics and docs stay open. The request
guard (bentos/runtime.py) answers 401, 413, overload 503s and a bad ``X-Mlcycle-Traffic`` header before a
request reaches the API; each prediction is logged with that header's traffic (``canary`` or ``live``).
"""

import uuid
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from pydantic import BaseModel, Field

from mlcycle.bentos.fastpath import serving_model
from mlcycle.bentos.runtime import RequestGuard, Scorer, load_pipeline, quiet_gc, serving_context, traffic_of
from mlcycle.tasks.inference_log import TRAFFIC_HEADER, open_writer
from mlcycle.tasks.predictions import model_scores, prediction_columns, response_models
from mlcycle.tasks.schema import InferenceLogStatus, ServedTask, ServiceMetadata, build_schema


class ServiceArgs(BaseModel):
    model_tag: str  # the BentoML model to serve, name:version


ARGS = bentoml.use_arguments(ServiceArgs)
MODEL = bentoml.models.BentoModel(ARGS.model_tag)
# In the bento, this file is src/mlcycle/bentos/service.py and the project config src/mlcycle.yaml
BUNDLED_CONFIG = Path(__file__).resolve().parents[2] / "mlcycle.yaml"
SERVED, SETTINGS = serving_context(MODEL, bundled_config=BUNDLED_CONFIG)
SERVING = SETTINGS.serving
SCHEMA = build_schema(SERVED.dataset, SERVED.features, max_batch_rows=SERVING.max_batch_request_rows)
Record, Columns = SCHEMA.record, SCHEMA.columns
Records = Annotated[list[Record], Field(min_length=1, max_length=SERVING.max_records)]
REQUEST_SCHEMAS = (Record.model_json_schema(), Columns.model_json_schema())
ANSWERS = response_models(SERVED.task, SERVED.classes)
PredictAnswer, BatchAnswer = ANSWERS.response, ANSWERS.batch
API_PATHS = ("/predict", "/predict_batch", "/metadata")
LOGGED_PATHS = ("/predict", "/predict_batch")
LOG_EVENTS = bentoml.metrics.Counter(name="mlcycle_inference_log_rows", labelnames=["event"],
                                     documentation="inference log: rows written and dropped, uploads failed, "
                                                   "parts spilled to local disk")
REFUSED = bentoml.metrics.Counter(name="mlcycle_requests_refused", labelnames=["reason"],
                                  documentation="API requests the request guard refused: method (405), unauthorized "
                                                "(401), bad_traffic_header (400), too_large (413), overloaded (503 "
                                                "with Retry-After)")


@bentoml.service(
    name=SERVING.bento_name,
    workers=SERVING.workers,
    traffic={"timeout": SERVING.timeout_seconds,
             **({"max_concurrency": SERVING.max_concurrency} if SERVING.max_concurrency else {})},
    logging={"access": {"enabled": SERVING.access_log}},
    # OpenTelemetry spans cost ~0.4 ms per request and no exporter is configured: off unless asked for
    tracing={} if SERVING.trace_requests else {"excluded_urls": list(API_PATHS)},
)
class ModelService:
    model = MODEL

    def __init__(self) -> None:
        self.pipeline = load_pipeline(Path(self.model.path_of(SERVED.model_file)), SERVED.model_sha256)
        # the pipeline compiled to numpy (same predictions bit for bit), or the pipeline itself: the log says which
        self.scoring = serving_model(self.pipeline, SERVED.features)
        self.threshold = (SERVING.threshold or SERVED.threshold) if SERVED.task == "binary" else None
        self.scorer = Scorer(self._scores, SERVED.features, max_batch_rows=SERVING.max_batch_rows,
                             max_wait_ms=SERVING.batch_wait_ms, threads=SERVING.model_threads)
        self.log = open_writer(SETTINGS, SERVED, on_event=lambda event, n: LOG_EVENTS.labels(event=event).inc(n))
        quiet_gc(SERVING.gc_threshold)  # last: what is loaded now is frozen, out of the collector's way

    def _scores(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return model_scores(self.scoring, columns, SERVED.task, SERVED.classes)

    async def _predict(self, endpoint: str, columns, rows: int, ids, ctx: bentoml.Context) -> tuple[str, dict]:
        """Score, then log the predictions with the request's traffic (the guard has checked the header)."""
        scores = await self.scorer.score(columns, rows)
        predictions = prediction_columns(scores, SERVED.task, threshold=self.threshold, classes=SERVED.classes)
        request_id = uuid.uuid4().hex
        if self.log is not None:
            self.log.submit(request_id, endpoint, columns, ids, predictions,
                            traffic=traffic_of(ctx.request.headers.get(TRAFFIC_HEADER)))
        return request_id, predictions

    @bentoml.api(route="/predict")
    async def predict(self, records: Records, ctx: bentoml.Context) -> PredictAnswer:
        """Score 1..serving.max_records records: one prediction per record, in order."""
        columns = SCHEMA.records_to_columns(records)
        request_id, predictions = await self._predict("predict", columns, len(records), SCHEMA.record_ids(records),
                                                      ctx)
        return ANSWERS.predict_response(request_id, SERVED.name, SERVED.version, self.threshold, predictions)

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, columns: Columns, ctx: bentoml.Context) -> BatchAnswer:
        """Score a column-oriented batch (one list per feature, up to serving.max_batch_request_rows rows)."""
        arrays = SCHEMA.batch_to_columns(columns)
        rows = len(next(iter(arrays.values())))
        request_id, predictions = await self._predict("predict_batch", arrays, rows, SCHEMA.batch_ids(columns), ctx)
        return ANSWERS.batch_response(request_id, SERVED.name, SERVED.version, self.threshold, predictions)

    @bentoml.api(route="/metadata")
    def metadata(self) -> ServiceMetadata:
        """The served model (registry version, sha256, lineage summary), limits, and the request schemas."""
        return ServiceMetadata(
            model=SERVED.name, model_version=SERVED.version, model_sha256=SERVED.model_sha256,
            bento_model_tag=str(MODEL.tag), features=SERVED.features,
            predicts=ServedTask(task=SERVED.task, classes=SERVED.classes, positive_label=SERVED.positive_label,
                                threshold=self.threshold),
            dataset=SERVED.dataset.name, dataset_schema_hash=SERVED.dataset.schema_hash(), lineage=SERVED.lineage,
            limits={"max_records": SERVING.max_records, "max_batch_request_rows": SERVING.max_batch_request_rows,
                    "max_body_bytes": SERVING.max_body_bytes, "max_batch_rows": SERVING.max_batch_rows,
                    **({"max_in_flight": SERVING.max_in_flight} if SERVING.max_in_flight else {})},
            batching=self.scorer.stats(),
            inference_log=self.log.status() if self.log is not None else InferenceLogStatus(enabled=False),
            request_schema=REQUEST_SCHEMAS[0], batch_request_schema=REQUEST_SCHEMAS[1])

    @bentoml.on_shutdown
    def flush_inference_log(self) -> None:
        """Write every queued prediction before the worker exits (spilled locally if the store is down)."""
        self.scorer.close()
        if self.log is not None:
            self.log.close()


ModelService.add_asgi_middleware(
    RequestGuard, max_body_bytes=SERVING.max_body_bytes, api_paths=list(API_PATHS), get_paths=["/metadata"],
    traffic_paths=list(LOGGED_PATHS),
    api_token=SETTINGS.api_token.get_secret_value() if SETTINGS.api_token else None,
    max_in_flight=SERVING.max_in_flight, retry_after_seconds=SERVING.retry_after_seconds,
    on_refused=lambda reason: REFUSED.labels(reason=reason).inc())
