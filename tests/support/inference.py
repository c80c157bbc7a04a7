"""Inference-log test helpers: a writer on a store with test-sized batches, and rows to submit to it.

Also the journal tests' flower table (importable from a child process, which a test module is not): a multiclass
table with numeric features with gaps, a categorical one with a missing value and one probability per class.
"""

from __future__ import annotations

import numpy as np

from mlcycle.tasks.inference_log import InferenceLogWriter
from mlcycle.tasks.settings import FeatureSpec
from mlcycle.tasks.storage import LocalStore


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


FLOWER_FEATURES = [FeatureSpec(name="sepal_length", kind="numeric", nullable=True),
                   FeatureSpec(name="petal_count", kind="numeric", dtype="int"),
                   FeatureSpec(name="soil", kind="categorical", categories=["clay", "sand"], nullable=True)]
FLOWER_CLASSES = ["setosa", "versicolor", "virginica"]


def flowers(n: int, seed: int) -> tuple[dict, dict]:
    """(columns, multiclass predictions) of one request of ``n`` rows, the same for the same seed."""
    rng = np.random.default_rng(seed)
    length = rng.uniform(4, 8, n).round(2)
    length[rng.random(n) < 0.3] = np.nan
    soil = np.array(rng.choice(["clay", "sand"], n), dtype=object)
    soil[0] = None
    proba = rng.dirichlet(np.ones(3), n)
    best = proba.argmax(axis=1)
    values = {"sepal_length": length, "petal_count": rng.integers(3, 9, n).astype(np.float64), "soil": soil}
    return values, {"label": np.array([FLOWER_CLASSES[i] for i in best], dtype=object),
                    "probability": proba.max(axis=1), "probabilities": proba}


def flower_writer(store_root, spill, version: int = 4, **kw) -> InferenceLogWriter:
    """A multiclass writer on a local store at ``store_root`` that flushes only once a minute."""
    return InferenceLogWriter(LocalStore(store_root), model="iris-species", model_version=version,
                              features=FLOWER_FEATURES, id_column="plant_id", spill_dir=spill, task="multiclass",
                              flush_interval_seconds=60.0, **kw)


def send(log: InferenceLogWriter, requests: int, first_seed: int = 0) -> int:
    """Submit ``requests`` flower requests (1 to 5 rows each, seeded from ``first_seed``); the rows sent."""
    rows = 0
    for seed in range(first_seed, first_seed + requests):
        n = 1 + seed % 5
        values, predictions = flowers(n, seed)
        assert log.submit(f"req-{seed}", "predict", values, [f"plant-{seed}-{i}" for i in range(n)], predictions)
        rows += n
    return rows
