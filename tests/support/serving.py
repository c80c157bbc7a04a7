"""One small served model per task, on the real tables of ``tests/support/datasets.py``.

:func:`served_table` declares a table as a user would (``mlcycle.yaml`` with its own ``dataset:``: fair's
numeric-coded categories declared as numbers, anes96's ``vote`` as a boolean category), stores a few days
of its real rows as validated partitions (categories as their canonical texts), splits them with the
training stage's own window functions, fits the task's model (fair: logistic regression; anes96:
gradient boosting over 7 classes; randhie: ridge), registers and promotes it through the registry, imports
it into BentoML and builds its bento with ``bentoml build``. Built once per session and table.

The fit itself is the smallest honest stand-in for the training stage's per-task search (another part of
issue 13 makes ``train_challenger`` fit multiclass and regression models): the same pipeline
(``tasks.features.build_preprocessor`` + the family's estimator for the task, ``problem.estimator_class``),
fitted on the split's training rows, scored on its test window.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import yaml

from tests.support.datasets import TABLES, RealTable
from tests.support.training import write_day

START = dt.date(2026, 9, 1)
DAYS = 6
ROWS = {"fair": 1500, "anes96": 944, "randhie": 1500}
FAMILY = {"fair": "logistic_regression", "anes96": "hist_gradient_boosting", "randhie": "ridge"}
SMALL = {"hist_gradient_boosting": {"max_iter": 30}}  # a few boosting rounds: a second to fit
CATEGORIES = {  # numeric-coded columns declared as categories, with the values the config writes
    "fair": {"religious": [1, 2, 3, 4], "occupation": [1, 2, 3, 4, 5, 6], "occupation_husb": [1, 2, 3, 4, 5, 6]},
    "anes96": {"educ": [1, 2, 3, 4, 5, 6, 7], "vote": [True, False]},
    "randhie": {"idp": [0, 1]},
}
BOOLEANS = {"anes96": ["vote"]}  # 0/1 columns the user's table holds as booleans
SERVING = {"canary_rows": 60, "latency_requests": 5, "max_records": 100,
           "inference_log": {"flush_interval_seconds": 0.5}}


@dataclass
class ServedTable:
    table: RealTable
    settings: object
    store: object  # LocalStore
    version: object  # tasks.records.registry.ModelVersion (the champion)
    pipeline: object  # the registered, fitted pipeline
    model: object  # tasks.records.serving.PackagedModel
    bento: object  # tasks.records.serving.BentoRef

    @property
    def spec(self):
        return self.settings.dataset


_CACHE: dict[str, ServedTable] = {}


def declaration(table: RealTable) -> dict:
    """The ``dataset:`` section a user writes for ``table`` (ids and timestamps added by :func:`stored_days`)."""
    features = []
    for column in table.features:
        if column in CATEGORIES[table.name]:
            features.append({"name": column, "kind": "categorical", "categories": CATEGORIES[table.name][column]})
        else:
            values = table.frame[column]
            whole = bool((values == values.round()).all())
            features.append({"name": column, "kind": "numeric", "dtype": "int" if whole else "float",
                             "min": float(values.min()), "max": float(values.max())})
    section = {"name": table.name, "task": table.task, "id_column": "rid", "timestamp_column": "ts",
               "target": table.target, "features": features}
    if table.task == "multiclass":
        section["classes"] = sorted(int(c) for c in table.frame[table.target].unique())
    return section


def stored_days(store, settings, table: RealTable) -> None:
    """``ROWS[table]`` real rows over ``DAYS`` validated days: an id, a timestamp, categories as canonical texts."""
    from mlcycle.tasks.settings.problem import category_keys_of

    rng = np.random.default_rng(13)
    frame = table.frame.iloc[rng.permutation(len(table.frame))[:ROWS[table.name]]].reset_index(drop=True)
    frame = frame.drop(columns=[table.leak] if table.leak else [])
    for column in BOOLEANS.get(table.name, []):
        frame[column] = frame[column].astype(bool)
    for column in CATEGORIES[table.name]:
        frame[column] = category_keys_of(frame[column]).astype("str")
    for i, idx in enumerate(np.array_split(np.arange(len(frame)), DAYS)):
        day = START + dt.timedelta(days=i)
        rows = frame.iloc[idx].reset_index(drop=True)
        seconds = np.sort(rng.integers(0, 86_400, len(rows)))
        rows.insert(0, "ts", pd.Timestamp(day, tz="UTC") + pd.to_timedelta(seconds, unit="s"))
        rows.insert(0, "rid", [f"{table.name}-{day:%Y%m%d}-{j:04d}" for j in range(len(rows))])
        write_day(store, settings, rows, day)


def target_values(frame, spec) -> np.ndarray:
    """The target as the model is fitted on it: binary 0/1, multiclass the class texts, regression floats."""
    from mlcycle.tasks.settings.problem import category_keys_of
    from mlcycle.tasks.training.window import labels

    if spec.task == "binary":
        return labels(frame, spec)
    if spec.task == "multiclass":
        return category_keys_of(frame[spec.target]).to_numpy(dtype=object)
    return frame[spec.target].to_numpy(dtype=np.float64)


def task_metrics(spec, y, scores, threshold: float):
    from sklearn import metrics

    from mlcycle.tasks.evaluation.metrics import compute_metrics
    from mlcycle.tasks.records.evaluation import Metrics

    if spec.task == "binary":
        return compute_metrics(y, scores, threshold)
    if spec.task == "multiclass":
        predicted = np.asarray(spec.class_labels, dtype=object)[scores.argmax(axis=1)]
        return Metrics(task="multiclass", rows=len(y), accuracy=float(metrics.accuracy_score(y, predicted)),
                       log_loss=float(metrics.log_loss(y, scores, labels=spec.class_labels)))
    return Metrics(task="regression", rows=len(y), rmse=float(metrics.root_mean_squared_error(y, scores)),
                   mae=float(metrics.mean_absolute_error(y, scores)), r2=float(metrics.r2_score(y, scores)))


def fit_and_register(store, settings):
    """Split the stored days as training does, fit the task's model, register and promote it."""
    from sklearn.pipeline import Pipeline

    from mlcycle.tasks.features import STEP, build_preprocessor, input_schema, model_input, training_features
    from mlcycle.tasks.predictions import model_scores
    from mlcycle.tasks.records.evaluation import GateDecision, ModelScores
    from mlcycle.tasks.records.training import Candidate, Comparison, SearchSummary, StagedArtifact
    from mlcycle.tasks.registry.aliases import promote
    from mlcycle.tasks.registry.versions import MODEL_FILE, register_candidate, staging_prefix
    from mlcycle.tasks.settings.problem import estimator_class
    from mlcycle.tasks.training.challenger import dump_model, model_name
    from mlcycle.tasks.training.window import load_rows, select_window, time_split

    spec, training = settings.dataset, settings.training
    window = select_window(store, days=DAYS)
    split, frames = time_split(load_rows(store, spec, window.partitions), spec, training, window.partitions)
    features = training_features(settings)
    family = training.families[training.family]
    cls = estimator_class(family.estimator, spec.task)
    params = {**family.params, **SMALL.get(training.family, {})}
    if "random_state" in cls().get_params():
        params["random_state"] = 0
    pipeline = Pipeline([("preprocess", build_preprocessor(features)), (STEP, cls(**params))])
    pipeline.fit(model_input(frames["train"], features), target_values(frames["train"], spec))
    test = frames["test"]
    scores = model_scores(pipeline, model_input(test, features), spec.task, spec.class_labels)
    metrics = task_metrics(spec, target_values(test, spec), scores, training.threshold)
    name = model_name(settings)
    prefix = staging_prefix(name, uuid.uuid4().hex)
    info = store.put_bytes(prefix + MODEL_FILE, dump_model(pipeline))
    now = dt.datetime.now(dt.UTC)
    candidate = Candidate(
        model_name=name, staging_prefix=prefix, family=training.family,
        estimator=family.estimator, params={k: v for k, v in params.items() if isinstance(v, int | float | str)},
        seed=0, threshold=training.threshold, features=input_schema(features), dataset=spec.name,
        dataset_schema_hash=spec.schema_hash(), window=window, split=split,
        search=SearchSummary(strategy="random", cv="holdout", scoring="fixed", n_candidates=1, best_params={},
                             best_score=0.0, candidates=[], backend="loky", n_jobs=1, seconds=0.0),
        scores=ModelScores(overall=metrics), importances=[],
        artifacts={MODEL_FILE: StagedArtifact(key=info.key, sha256=info.sha256, bytes=info.size)})
    decision = GateDecision(promote=True, primary_metric=settings.gate.primary_metric, champion_version=None,
                            rules=[], summary="promote: the serving tests' model", decided_at=now)
    version = register_candidate(store, candidate, Comparison(), decision)
    promote(store, version.name, version.version, reason="serving tests")
    return version, pipeline


def served_table(name: str, home: Path) -> ServedTable:
    """The table ``name`` declared, stored, fitted, registered, promoted, imported and built (once)."""
    if name in _CACHE:
        return _CACHE[name]
    from threadpoolctl import threadpool_limits

    from mlcycle.tasks.serving.packaging import build_bento, import_model
    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.storage import LocalStore

    table = TABLES[name]()
    config = home / "mlcycle.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({
        "dataset": declaration(table),
        "training": {"family": FAMILY[name], "window_days": DAYS, "min_rows": 50},
        "serving": SERVING,
    }, sort_keys=False))
    # the project's own config while its settings load and its bento builds (the build imports the service)
    with mock.patch.dict(os.environ, {"MLCYCLE_CONFIG": str(config)}):
        settings = load_settings(home=home / "home")
        store = LocalStore(settings.store_root)
        with threadpool_limits(1):
            stored_days(store, settings, table)
            version, pipeline = fit_and_register(store, settings)
        model = import_model(store, settings)
        bento = build_bento(settings, model)
    _CACHE[name] = ServedTable(table, settings, store, version, pipeline, model, bento)
    return _CACHE[name]
