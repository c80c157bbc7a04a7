"""Training on real tables (tests/support/datasets.py): a declaration and a config file as a user would write
them, and the table's rows written as validated daily partitions (no Great Expectations run: validation has
its own tests), so training, evaluation and the gate run through their real functions on data that is not
the demo's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mlcycle.tasks.settings import load_settings
from mlcycle.tasks.settings.problem import category_keys
from mlcycle.tasks.storage import LocalStore
from tests.support.datasets import RealTable, daily_batches
from tests.support.training import write_day

START = dt.date(2026, 3, 1)
DAYS = 8
ID, TIME = "row_id", "recorded_at"
# Small budgets: a handful of candidates, one worker, short boosting.
FAMILIES = {
    "hist_gradient_boosting": {"estimator": "hist_gradient_boosting", "params": {"early_stopping": False,
                                                                                 "max_iter": 40},
                               "search_space": {"learning_rate": {"low": 0.03, "high": 0.2, "log": True},
                                                "min_samples_leaf": {"low": 10, "high": 60, "integer": True}}},
    "logistic_regression": {"estimator": "logistic_regression", "params": {"max_iter": 1000},
                            "search_space": {"C": {"low": 0.01, "high": 10, "log": True}}},
    "ridge": {"estimator": "ridge", "search_space": {"alpha": {"low": 0.01, "high": 100, "log": True}}},
    "forest": {"estimator": "sklearn.ensemble.RandomForestRegressor",
               "params": {"n_estimators": 25, "max_depth": 8, "n_jobs": 1},
               "search_space": {"min_samples_leaf": {"low": 5, "high": 40, "integer": True}}},
}


def subset(table: RealTable, rows: int, seed: int = 0) -> RealTable:
    """The table with a seeded sample of ``rows`` of its rows (all of them when it has fewer)."""
    if len(table.frame) <= rows:
        return table
    return dataclasses.replace(table, frame=table.frame.sample(rows, random_state=seed).reset_index(drop=True))


def declaration(table: RealTable, *, with_leak: bool = False, extra_numeric: tuple[str, ...] = ()) -> dict:
    """``dataset:`` for the table: its categorical columns with the categories found in the data (numbers, as
    a user's YAML would list them), every other column numeric and nullable."""
    frame = table.frame
    features = []
    names = [*table.features, *([table.leak] if with_leak and table.leak else []), *extra_numeric]
    for name in names:
        if name in table.categorical:
            values = sorted(frame[name].dropna().unique().tolist())
            features.append({"name": name, "kind": "categorical", "categories": [float(v) for v in values],
                             "nullable": True})
        else:
            features.append({"name": name, "kind": "numeric", "dtype": "float", "nullable": True})
    spec = {"name": table.name, "task": table.task, "id_column": ID, "timestamp_column": TIME,
            "target": table.target, "features": features}
    if table.task == "multiclass":
        spec["classes"] = sorted(frame[table.target].dropna().unique().tolist())
        category_keys(spec["classes"], "classes")  # fails here if the table's classes collide as texts
    if table.task == "binary":
        spec["positive_label"] = 1
    return spec


def write_config(path: Path, table: RealTable, *, gate: dict | None = None, family: str = "hist_gradient_boosting",
                 training: dict | None = None, **dataset_options) -> Path:
    """A project config for the table (MLCYCLE_CONFIG points at it in the tests)."""
    families = {k: v for k, v in FAMILIES.items()
                if table.task == "regression" or k not in ("ridge", "forest")}
    if table.task == "regression":
        families.pop("logistic_regression")
    config = {
        "project_name": table.name,
        "dataset": declaration(table, **dataset_options),
        "ingest": {"source": "landing"},
        "training": {"model_name": f"{table.name}-model", "family": family, "families": families,
                     "window_days": DAYS, "n_iter": 3, "n_jobs": 1, "min_rows": 100, **(training or {})},
        "gate": {"bootstrap_samples": 300, "min_slice_rows": 100, **(gate or {})},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def seed_table(home: Path, table: RealTable, *, frame: pd.DataFrame | None = None, seed: int = 0):
    """(settings, store): the table's rows over DAYS validated days (random order: no drift)."""
    settings = load_settings(home=home)
    store = LocalStore(settings.store_root)
    source = dataclasses.replace(table, frame=frame) if frame is not None else table
    for day, batch in daily_batches(source, START, DAYS, drifted=False, seed=seed):
        batch = batch.copy()
        midnight = pd.Timestamp(day, tz="UTC")
        batch.insert(0, ID, [f"{day:%Y%m%d}-{i:05d}" for i in range(len(batch))])
        batch.insert(1, TIME, midnight + pd.to_timedelta(np.arange(len(batch)), unit="s"))
        write_day(store, settings, batch, day)
    return settings, store


def train_and_gate(store, settings, *, family=None, seed=None):
    """Train a challenger on the last DAYS days, compare it with the champion, gate it and register it."""
    from mlcycle.tasks.evaluation.gate import decide
    from mlcycle.tasks.registry.registration import register_candidate
    from mlcycle.tasks.training.challenger import compare_with_champion, train_challenger
    from mlcycle.tasks.training.window import select_window

    candidate = train_challenger(store, settings, select_window(store, days=DAYS), family=family, seed=seed)
    comparison = compare_with_champion(store, settings, candidate)
    decision = decide(settings.gate, candidate, comparison)
    version = register_candidate(store, candidate, comparison, decision)
    return candidate, comparison, decision, version
