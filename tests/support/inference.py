"""Inference-log test helpers: a writer on a store with test-sized batches, and rows to submit to it."""

from __future__ import annotations

import numpy as np

from mlcycle.tasks.inference_log import InferenceLogWriter


def columns(spec, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for f in spec.features:
        if f.kind == "numeric":
            out[f.name] = rng.uniform(f.min or 0, f.max or 1, n).round(0 if f.dtype == "int" else 3)
        else:
            out[f.name] = np.array(rng.choice(f.categories, n), dtype=object)
    return out


def writer(store, spec, tmp_path, **kw) -> InferenceLogWriter:
    options = {"queue_rows": 10_000, "flush_rows": 1_000, "flush_interval_seconds": 60.0, "retry_delay_seconds": 0.01,
               **kw}
    return InferenceLogWriter(store, model="loans-default", model_version=3, features=spec.features,
                              id_column=spec.id_column, spill_dir=tmp_path / "spill", **options)


def submit(log, spec, request_id: str, n: int, ts=None, seed=0) -> bool:
    probabilities = np.linspace(0, 1, n)
    return log.submit(request_id, "predict", columns(spec, n, seed), [f"id-{request_id}-{i}" for i in range(n)],
                      {"probability": probabilities, "label": (probabilities >= 0.5).astype(np.int64)}, ts=ts)
