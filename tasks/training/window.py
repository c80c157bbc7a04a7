"""The data a challenger is trained and tested on: the window of validated days, and its time split.

Contracts:

* **Only validated data.** Partitions come from ``validated/`` manifests; quarantined days are not in
  that zone and cannot enter. Every data file is verified against its manifest's sha256 on read.
* **Time split, no leakage.** Rows are sorted by the timestamp column; the latest days of the window
  are the test window, the days before them validation, the rest training
  (``training.validation_fraction`` / ``test_fraction`` of the window's days, at least one day each).
  Boundaries are UTC midnights, so ``max(train) < min(validation)`` and ``max(validation) <
  min(test)`` hold by construction and are asserted anyway.
* **Bad input fails early, by name.** No validated data, a window with no partitions, too few rows or a
  single class in a split raise :class:`TrainingDataError`; a window asked for with both a number of
  days and a start date, or with no day, a :class:`~mlcycle.tasks.settings.ConfigError`.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from mlcycle.tasks.partitions import PartitionRef, list_partitions, read_manifest, read_partition
from mlcycle.tasks.records.training import InputPartition, SplitName, SplitPart, SplitSummary, TrainingWindow
from mlcycle.tasks.settings import ConfigError, DatasetSpec, TrainingSettings
from mlcycle.tasks.storage import ObjectStore

_PARTITION_COL = "__partition__"


class TrainingDataError(ValueError):
    """The data cannot train a model: no validated partitions, too few rows, a single class..."""


def select_window(store: ObjectStore, *, days: int | None = None, end: dt.date | None = None,
                  start: dt.date | None = None) -> TrainingWindow:
    """The validated partitions to train on: ``start..end``, or the last ``days`` validated days up to ``end``."""
    if start is not None and days is not None:
        raise ConfigError("give either a number of days or a start date for the training window, not both")
    if start is None and (days is None or days < 1):
        raise ConfigError(f"the training window needs at least 1 day, got {days!r}")
    if start is not None and end is not None and end < start:
        raise TrainingDataError(f"training window end {end} is before its start {start}")
    available = list_partitions(store, "validated")
    if not available:
        raise TrainingDataError(f"no validated partitions in {store.description}: ingest and validate data first "
                                "(mlcycle ingest --start ... --end ...)")
    chosen = [d for d in available if (end is None or d <= end) and (start is None or d >= start)]
    if start is None:
        chosen = chosen[-days:]
        requested = f"last {days} validated days" + (f" up to {end}" if end else "")
    else:
        requested = f"validated days {start}..{end or available[-1]}"
    if not chosen:
        raise TrainingDataError(
            f"no validated partitions in the training window ({requested}); validated dates available: "
            f"{available[0]}..{available[-1]} ({len(available)} dates)")
    partitions = []
    for day in chosen:
        manifest = read_manifest(store, "validated", day)
        partitions.append(InputPartition(**manifest.ref().model_dump(),
                                         dataset_schema_hash=manifest.dataset_schema_hash))
    return TrainingWindow(partitions=partitions, first_day=chosen[0], last_day=chosen[-1], requested=requested)


def load_rows(store: ObjectStore, spec: DatasetSpec, partitions: list[PartitionRef]) -> pd.DataFrame:
    """The partitions' rows (sha256-verified), sorted by (timestamp, id), tagged with their partition."""
    columns = [spec.id_column, spec.timestamp_column, *spec.feature_names, spec.target]
    frames = []
    for i, ref in enumerate(partitions):
        try:
            frame = read_partition(store, ref, columns=columns)
        except (KeyError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise TrainingDataError(f"validated partition {ref.date} ({ref.data_key}) lacks columns the dataset "
                                    f"declares ({columns}): {str(exc).splitlines()[0]}") from None
        frame[_PARTITION_COL] = i
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if frame[spec.timestamp_column].isna().any():
        raise TrainingDataError(f"{int(frame[spec.timestamp_column].isna().sum())} rows have no "
                                f"{spec.timestamp_column!r}; a time split needs every timestamp")
    frame[spec.timestamp_column] = pd.to_datetime(frame[spec.timestamp_column], utc=True)
    return frame.sort_values([spec.timestamp_column, spec.id_column], kind="mergesort").reset_index(drop=True)


def labels(frame: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    from mlcycle.tasks.settings.problem import category_keys_of

    return (category_keys_of(frame[spec.target]) == spec.positive_label).to_numpy().astype(np.int64)


# --------------------------------------------------------------------------------------------------
# the time split
# --------------------------------------------------------------------------------------------------


def time_split(frame: pd.DataFrame, spec: DatasetSpec, training: TrainingSettings,
               partitions: list[PartitionRef]) -> tuple[SplitSummary, dict[SplitName, pd.DataFrame]]:
    """Split sorted rows by day into train < validation < test; refuse splits that cannot train or test."""
    ts = frame[spec.timestamp_column]
    days = sorted(ts.dt.floor("D").unique())
    n = len(days)
    if n < 3:
        raise TrainingDataError(f"the window holds {n} day(s) of data; a time split into train, validation and "
                                "test needs at least 3 days (widen the window)")
    n_test = max(1, round(n * training.test_fraction))
    n_val = max(1, round(n * training.validation_fraction))
    if n - n_test - n_val < 1:
        n_test, n_val = 1, 1
    val_start = pd.Timestamp(days[n - n_test - n_val])
    test_start = pd.Timestamp(days[n - n_test])
    bounds = {
        "train": (ts.min().floor("D"), val_start),
        "validation": (val_start, test_start),
        "test": (test_start, ts.max().floor("D") + pd.Timedelta(days=1)),
    }
    parts, frames = {}, {}
    for name, (lo, hi) in bounds.items():
        rows = frame[(ts >= lo) & (ts < hi)]
        y = labels(rows, spec)
        if len(rows) < training.min_rows:
            raise TrainingDataError(f"the {name} window ({lo.date()}..{(hi - pd.Timedelta(days=1)).date()}) has "
                                    f"{len(rows)} rows; at least training.min_rows={training.min_rows} are needed")
        if len(np.unique(y)) < 2:
            raise TrainingDataError(f"the {name} window ({lo.date()}..{(hi - pd.Timedelta(days=1)).date()}) holds a "
                                    f"single class of {spec.target!r} ({int(y[0])} in all {len(rows)} rows); a "
                                    "classifier needs both")
        used = sorted(set(rows[_PARTITION_COL].tolist()))
        parts[name] = SplitPart(
            name=name, start=lo.to_pydatetime(), end=hi.to_pydatetime(), first_day=lo.date(),
            last_day=(hi - pd.Timedelta(days=1)).date(), rows=len(rows), positives=int(y.sum()),
            partitions=[PartitionRef(**partitions[i].model_dump(include=set(PartitionRef.model_fields)))
                        for i in used])
        frames[name] = rows
    # no leakage: every training row precedes every validation row, which precedes every test row
    assert frames["train"][spec.timestamp_column].max() < frames["validation"][spec.timestamp_column].min()
    assert frames["validation"][spec.timestamp_column].max() < frames["test"][spec.timestamp_column].min()
    return SplitSummary(timestamp_column=spec.timestamp_column, **parts), frames


def load_test_window(store: ObjectStore, spec: DatasetSpec, split: SplitSummary) -> pd.DataFrame:
    """Re-read exactly the test window's rows (same order as at training) from its partitions."""
    frame = load_rows(store, spec, split.test.partitions)
    ts = frame[spec.timestamp_column]
    return frame[(ts >= split.test.start) & (ts < split.test.end)].reset_index(drop=True)
