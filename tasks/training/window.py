"""The data a challenger is trained and tested on: the window of validated days, and its time split.

Contracts:

* **Only validated data.** Partitions come from ``validated/`` manifests; quarantined days are not in
  that zone and cannot enter. Every data file is verified against its manifest's sha256 on read.
* **Time split, no leakage.** Rows are sorted by the timestamp column; the latest days of the window
  are the test window, the days before them validation, the rest training
  (``training.validation_fraction`` / ``test_fraction`` of the window's days, at least one day each).
  Boundaries are UTC midnights, so ``max(train) < min(validation)`` and ``max(validation) <
  min(test)`` hold by construction and are asserted anyway.
* **Labels per task** (:func:`labels`): binary 0/1 (1 for ``dataset.positive_label``), multiclass the
  canonical class texts (``category_key``), regression floats.
* **Bad input fails early, by name.** No validated data, a window with no partitions, too few rows, a
  classification split holding fewer than two classes (the message names the split and the classes it
  lacks), a class the dataset does not declare, or a regression split with a missing or constant target
  raise :class:`TrainingDataError`; a window asked for with both a number of days and a start date, or with
  no day, a :class:`~mlcycle.tasks.settings.ConfigError`.
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
    """The target as the model is fitted on it: binary 0/1 (1 = ``positive_label``), multiclass the canonical
    class texts (an object array), regression floats."""
    from mlcycle.tasks.settings.problem import category_keys_of

    target = frame[spec.target]
    if spec.task == "binary":
        return (category_keys_of(target) == spec.positive_label).to_numpy().astype(np.int64)
    if spec.task == "multiclass":
        keys = category_keys_of(target)
        missing = int(keys.isna().sum())
        if missing:
            raise TrainingDataError(f"{missing} rows have no {spec.target!r}; a classifier needs every label")
        undeclared = sorted(set(keys) - set(spec.class_labels or []))
        if undeclared:
            raise TrainingDataError(f"{spec.target!r} holds class(es) {undeclared} that dataset.classes does not "
                                    f"declare ({spec.class_labels})")
        return keys.to_numpy(dtype=object)
    return pd.to_numeric(target, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


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
        where = f"the {name} window ({lo.date()}..{(hi - pd.Timedelta(days=1)).date()})"
        y = labels(rows, spec)
        if len(rows) < training.min_rows:
            raise TrainingDataError(f"{where} has {len(rows)} rows; at least training.min_rows={training.min_rows} "
                                    "are needed")
        used = sorted(set(rows[_PARTITION_COL].tolist()))
        parts[name] = SplitPart(
            name=name, start=lo.to_pydatetime(), end=hi.to_pydatetime(), first_day=lo.date(),
            last_day=(hi - pd.Timedelta(days=1)).date(), rows=len(rows),
            partitions=[PartitionRef(**partitions[i].model_dump(include=set(PartitionRef.model_fields)))
                        for i in used], **_target_summary(y, spec, where))
        frames[name] = rows
    # no leakage: every training row precedes every validation row, which precedes every test row
    assert frames["train"][spec.timestamp_column].max() < frames["validation"][spec.timestamp_column].min()
    assert frames["validation"][spec.timestamp_column].max() < frames["test"][spec.timestamp_column].min()
    return SplitSummary(timestamp_column=spec.timestamp_column, **parts), frames


def _target_summary(y: np.ndarray, spec: DatasetSpec, where: str) -> dict:
    """What a split holds of the target (for its SplitPart), refusing a split that cannot train or test."""
    if spec.task == "regression":
        bad = int((~np.isfinite(y)).sum())
        if bad:
            raise TrainingDataError(f"{where} has {bad} rows whose {spec.target!r} is missing or not a number; a "
                                    "regression target needs a value in every row")
        if np.ptp(y) == 0:
            raise TrainingDataError(f"{where} holds a constant {spec.target!r} ({y[0]:g} in all {len(y)} rows): "
                                    "there is nothing to learn or to measure")
        return {"target_mean": float(np.mean(y))}
    if spec.task == "binary":
        if len(np.unique(y)) < 2:
            present = spec.positive_label if y[0] == 1 else "the negative class"
            lacks = "the negative class" if y[0] == 1 else spec.positive_label
            raise TrainingDataError(f"{where} holds a single class of {spec.target!r} ({int(y[0])} in all {len(y)} "
                                    f"rows: {present} only, no {lacks}); a classifier needs both")
        return {"positives": int(y.sum())}
    counts = pd.Series(y).value_counts()
    present = [c for c in spec.class_labels or [] if c in counts.index]
    if len(present) < 2:
        lacks = [c for c in spec.class_labels or [] if c not in counts.index]
        raise TrainingDataError(f"{where} holds a single class of {spec.target!r} ({present[0]!r} in all {len(y)} "
                                f"rows; it lacks {lacks}); a classifier needs at least two")
    return {"classes": {c: int(counts.get(c, 0)) for c in spec.class_labels or []}}


def load_test_window(store: ObjectStore, spec: DatasetSpec, split: SplitSummary) -> pd.DataFrame:
    """Re-read exactly the test window's rows (same order as at training) from its partitions."""
    frame = load_rows(store, spec, split.test.partitions)
    ts = frame[spec.timestamp_column]
    return frame[(ts >= split.test.start) & (ts < split.test.end)].reset_index(drop=True)
