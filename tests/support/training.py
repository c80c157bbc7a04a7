"""Small training data for the training, gate and registry tests (and the serving and rollout ones that
train a champion): a few simulated days written straight into ``validated/`` (no Great Expectations run:
validation has its own tests), and settings with a small search budget so every training takes about a
second.
"""

from __future__ import annotations

import datetime as dt
import shutil
from contextlib import contextmanager

import pandas as pd

from mlcycle.tasks.partitions import PartitionManifest, data_key, frame_to_parquet, write_partition
from mlcycle.tasks.records.data import SourceRecord
from mlcycle.tasks.settings import load_settings
from mlcycle.tasks.simulator import simulate_batch
from mlcycle.tasks.storage import LocalStore, sha256_bytes

START = dt.date(2026, 10, 1)
DAYS = 8
ROWS = 1500

# A small search budget, one worker, a short boosting: every training run in these tests is ~1 s.
FAST_TRAINING = {
    "family": "logistic_regression",
    "n_iter": 2,
    "n_jobs": 1,
    "window_days": DAYS,
    "families": {"hist_gradient_boosting": {"params": {"max_iter": 40}}},
}
FAST_GATE = {"bootstrap_samples": 300}


def fast_settings(home, **overrides):
    training = {**FAST_TRAINING, **overrides.pop("training", {})}
    gate = {**FAST_GATE, **overrides.pop("gate", {})}
    return load_settings(home=home, training=training, gate=gate, **overrides)


def write_day(store, settings, frame: pd.DataFrame, day: dt.date, zone: str = "validated",
              replace: bool = False) -> PartitionManifest:
    data, schema_hash = frame_to_parquet(frame)
    digest = sha256_bytes(data)
    manifest = PartitionManifest(
        dataset=settings.dataset.name, zone=zone, date=day, data_key=data_key(zone, day, digest), data_sha256=digest,
        data_bytes=len(data), rows=len(frame), columns=[str(c) for c in frame.columns], schema_hash=schema_hash,
        dataset_schema_hash=settings.dataset.schema_hash(), source=SourceRecord(kind="simulator"), logical_date=day,
        ingested_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    )
    return write_partition(store, manifest, data, replace=replace)


def simulated(settings, day: dt.date, rows: int = ROWS) -> pd.DataFrame:
    return simulate_batch(day, settings.simulator, settings.dataset, rows=rows).frame


def seed_validated(store, settings, start: dt.date = START, days: int = DAYS, rows: int = ROWS):
    return [write_day(store, settings, simulated(settings, start + dt.timedelta(days=i), rows), start + dt.timedelta(i))
            for i in range(days)]


def make_validated_template(root) -> object:
    """A store root holding DAYS validated days: written once per module, copied per test."""
    settings = load_settings(home=root)
    seed_validated(LocalStore(settings.store_root), settings)
    return settings.store_root


def project_store(home) -> object:
    """The local store folder of the project (the repository's mlcycle.yaml) at ``home``:
    ``home/store/<project_name>``."""
    return load_settings(home=home).store_root


def copy_template(template, home) -> object:
    """The template's validated days copied into the store of the project at ``home``; its folder."""
    shutil.copytree(template, project_store(home))
    return project_store(home)


def copy_train_env(tmp_path, template, **overrides):
    """(settings, store) on a fresh local store holding the template's validated days."""
    settings = fast_settings(tmp_path / "home", **overrides)
    shutil.copytree(template, settings.store_root)
    return settings, LocalStore(settings.store_root)


@contextmanager
def one_thread_per_fit():
    """One OpenMP/BLAS thread per fit: on a busy 2-core machine HGB's spinning threads cost 3-4x."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield
