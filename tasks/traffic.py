"""Live traffic for the monitoring flow's input: rows posted to a prediction service, or scored in-process.

* :func:`post_records` posts a frame's rows to a running prediction service (``/predict``), as a client
  would; the service logs them itself, as live traffic (no ``X-Mlcycle-Traffic`` header).
  :func:`send_http` posts the simulator's applications of some days (the demo on its loans data);
  :func:`send_stored` the rows of validated partitions (the demo on any other dataset: the user's own rows).
* :func:`log_in_process` scores them with the registry's champion in this process and writes them
  through the same :class:`~tasks.inference_log.InferenceLogWriter` the service uses, stamping each
  record with the application's own timestamp. Tests and benchmarks use it to lay down days of
  traffic quickly, with event times that fall in the monitoring windows they examine.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from mlcycle.tasks.settings import Settings
from mlcycle.tasks.simulator import simulate_batch
from mlcycle.tasks.storage import ObjectStore


def log_in_process(store: ObjectStore, settings: Settings, model, days: list[dt.date], rows_per_day: int,
                   spill_dir: Path, request_rows: int = 50) -> int:
    """Score simulated applications with ``model`` (a registry LoadedModel) and log them; returns rows."""
    from mlcycle.tasks.features import model_input
    from mlcycle.tasks.inference_log import InferenceLogWriter
    from mlcycle.tasks.predictions import model_scores, prediction_columns

    spec = settings.dataset
    features = [spec.feature(c.name) for c in model.metadata.features]
    writer = InferenceLogWriter(store, model=model.metadata.name, model_version=model.version, features=features,
                                id_column=spec.id_column, spill_dir=spill_dir, task=spec.task, queue_rows=10_000_000,
                                flush_rows=50_000, flush_interval_seconds=3600).start()
    total = 0
    try:
        for day in days:
            frame = simulate_batch(day, settings.simulator, spec, rows=rows_per_day).frame
            scores = model_scores(model.pipeline, model_input(frame, model.metadata.features), spec.task,
                                  spec.class_labels)
            predictions = prediction_columns(scores, spec.task, threshold=model.metadata.threshold,
                                             classes=spec.class_labels)
            for start in range(0, len(frame), request_rows):
                part = frame.iloc[start:start + request_rows]
                ts = part[spec.timestamp_column].iloc[0].to_pydatetime()
                writer.submit(uuid.uuid4().hex, "/predict", {f.name: part[f.name].to_numpy() for f in features},
                              part[spec.id_column].astype(str).tolist(),
                              {k: v[start:start + len(part)] for k, v in predictions.items()}, ts=ts)
                total += len(part)
    finally:
        status = writer.close()
    if status.dropped_rows:
        raise RuntimeError(f"traffic: {status.dropped_rows} rows dropped by the inference log writer")
    return total


def send_http(url: str, settings: Settings, days: list[dt.date], rows_per_day: int, request_rows: int = 20,
              token: str | None = None, timeout: float = 30.0) -> dict[str, int]:
    """POST the simulator's applications for ``days`` to ``url``/predict; returns request/row counts.

    ``token``: the bearer token to send; None: the configured ``api_token`` (if any).
    """
    import pandas as pd

    frames = [simulate_batch(day, settings.simulator, settings.dataset, rows=rows_per_day).frame for day in days]
    return post_records(url, settings, pd.concat(frames, ignore_index=True), request_rows, token, timeout)


def send_stored(url: str, settings: Settings, store: ObjectStore, days: list[dt.date], request_rows: int = 20,
                token: str | None = None, timeout: float = 30.0) -> dict[str, int]:
    """POST the rows of the validated partitions of ``days`` (any dataset: the user's own stored rows)."""
    import pandas as pd

    from mlcycle.tasks.partitions import read_manifest, read_partition

    frames = [read_partition(store, read_manifest(store, "validated", day).ref()) for day in days]
    return post_records(url, settings, pd.concat(frames, ignore_index=True), request_rows, token, timeout)


def post_records(url: str, settings: Settings, frame, request_rows: int = 20, token: str | None = None,
                 timeout: float = 30.0) -> dict[str, int]:
    """POST ``frame``'s id and feature columns to ``url``/predict, ``request_rows`` records a request, as a
    client would (live traffic: no traffic header); returns request, failure and row counts."""
    import httpx

    spec = settings.dataset
    names = [f.name for f in spec.features]
    if token is None and settings.api_token is not None:
        token = settings.api_token.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    columns = [c for c in (spec.id_column, *names) if c in frame.columns]
    records = frame[columns].astype(object).where(frame[columns].notna(), None).to_dict("records")
    for record in records:  # the id travels as text; numpy scalars as plain Python values
        if record.get(spec.id_column) is not None:
            record[spec.id_column] = str(record[spec.id_column])
    sent = failed = rows = 0
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers=headers) as client:
        for start in range(0, len(records), request_rows):
            batch = records[start:start + request_rows]
            response = client.post("/predict", json={"records": batch})
            sent += 1
            if response.status_code == 200:
                rows += len(batch)
            else:
                failed += 1
    return {"requests": sent, "failed": failed, "rows": rows}
