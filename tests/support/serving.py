"""One small served model per task, on the real tables of ``tests/support/datasets.py``.

:func:`served_table` declares a table as a user would (``mlcycle.yaml`` with its own ``dataset:``: fair's
numeric-coded categories declared as numbers, anes96's ``vote`` as a boolean category), stores a few days
of its real rows as validated partitions (categories as their canonical texts), splits them with the
training stage's own window functions, fits the task's model (fair: logistic regression; anes96:
gradient boosting over 7 classes; randhie: ridge), registers and promotes it through the registry, imports
it into BentoML and builds its bento with ``bentoml build``. Built once per session and table.

The model is trained by the training stage itself (``train_challenger``, one search candidate), gated and
registered like any other version (no floors: the serving tests need a champion, not a good one).
"""

from __future__ import annotations

import datetime as dt
import os
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


def fit_and_register(store, settings):
    """Train, gate and register the task's model through the training stage itself, and promote it."""
    from mlcycle.tasks.evaluation.gate import decide
    from mlcycle.tasks.registry.aliases import promote
    from mlcycle.tasks.registry.registration import register_candidate
    from mlcycle.tasks.registry.versions import load_model
    from mlcycle.tasks.training.challenger import compare_with_champion, train_challenger
    from mlcycle.tasks.training.window import select_window

    window = select_window(store, days=DAYS)
    candidate = train_challenger(store, settings, window, n_iter=1, seed=0)
    comparison = compare_with_champion(store, settings, candidate)
    version = register_candidate(store, candidate, comparison, decide(settings.gate, candidate, comparison))
    promote(store, version.name, version.version, reason="serving tests")
    return version, load_model(store, version.name, version.version).pipeline


def served_table(name: str, home: Path) -> ServedTable:
    """The table ``name`` declared, stored, fitted, registered, promoted, imported and built in ``home``
    (the session fixture ``served_tables`` of tests/conftest.py builds each once)."""
    from threadpoolctl import threadpool_limits

    from mlcycle.tasks.serving.packaging import build_bento, import_model
    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.storage import LocalStore

    table = TABLES[name]()
    config = home / "mlcycle.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({
        "dataset": declaration(table),
        # one search candidate, a few boosting rounds: a second to fit
        "training": {"family": FAMILY[name], "window_days": DAYS, "min_rows": 50, "n_iter": 1, "n_jobs": 1,
                     "families": {"hist_gradient_boosting": {"estimator": "hist_gradient_boosting",
                                                             "params": {"early_stopping": False, "max_iter": 30}},
                                  "logistic_regression": {"estimator": "logistic_regression",
                                                          "params": {"max_iter": 1000}},
                                  "ridge": {"estimator": "ridge"}}},
        "gate": {"floors": {}, "ceilings": {}, "bootstrap_samples": 200},
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
    return ServedTable(table, settings, store, version, pipeline, model, bento)


class ServedTables:
    """Each table's :func:`served_table`, built on first use in its own folder and kept for the session."""

    def __init__(self, tmp_path_factory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.built: dict[str, ServedTable] = {}

    def get(self, name: str) -> ServedTable:
        if name not in self.built:
            self.built[name] = served_table(name, self.tmp_path_factory.mktemp(f"serving-{name}"))
        return self.built[name]
