"""Labels that arrive after the prediction: imported into ``labels/date=YYYY-MM-DD/`` for the monitor.

A labels part holds the outcome (``dataset.target``) of predictions already made, keyed by
``request_id`` and ``row`` (what every /predict and /predict_batch answer and the inference log
carry), or by the dataset's id column when the client sent one. ``labeled_at`` records when the
outcome became known; the part's date is the day it was imported. :func:`tasks.inference_reader.join_labels`
joins them to the inference log (live predictions only: a canary never gets a label).

The target is typed per task: for classification the canonical text of the class (``1``, ``1.0`` and
``"1"`` are class ``"1"``; a value outside ``dataset.classes`` is refused, naming it), for regression a
float (within ``target_min``/``target_max`` when declared).

Two writers:

* ``mlcycle labels --file outcomes.csv`` (or .parquet): :func:`import_labels_file`;
* the simulator (``mlcycle labels --simulate --date D``): :func:`simulator_labels` finds the outcome of
  every logged prediction whose id came from the simulator (``YYYYMMDD-nnnnnnn``) by regenerating that
  day's batch (deterministic), so the demo can close the loop without waiting for real defaults.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlcycle.tasks.inference_log import LABELS_PREFIX, part_key
from mlcycle.tasks.inference_reader import list_parts, read_inference_log, read_parts
from mlcycle.tasks.inference_rows import table_bytes
from mlcycle.tasks.settings import DatasetSpec, Settings
from mlcycle.tasks.storage import ObjectStore


class LabelsError(ValueError):
    """A labels file cannot be imported; the message names the column or rows at fault."""


class LabelsWritten(BaseModel):
    key: str
    uri: str
    rows: int
    date: dt.date
    keys: list[str]  # what the labels join on


def label_keys(frame: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    if {"request_id", "row"} <= set(frame.columns):
        return ["request_id", "row"]
    if spec.id_column in frame.columns:
        return [spec.id_column]
    raise LabelsError(f"labels need columns request_id and row (as returned by /predict), or {spec.id_column!r}; "
                      f"got {list(frame.columns)}")


def normalize_labels(frame: pd.DataFrame, spec: DatasetSpec, now: dt.datetime | None = None) -> pd.DataFrame:
    """Check and normalise a labels frame: its keys, the target typed per task, ``labeled_at`` (default: now)."""
    keys = label_keys(frame, spec)
    target = spec.target
    if target not in frame.columns:
        raise LabelsError(f"labels need the target column {target!r}; got {list(frame.columns)}")
    if frame.empty:
        raise LabelsError("the labels file has no rows")
    out = pd.DataFrame({k: frame[k] for k in keys})
    if "request_id" in keys:
        out["request_id"] = out["request_id"].astype(str)
        rows = pd.to_numeric(frame["row"], errors="coerce")
        bad = rows.isna() | (rows < 0) | (rows != rows.round())
        if bad.any():
            raise LabelsError(f"column 'row' must hold whole numbers >= 0; bad at line(s) {_lines(bad)}")
        out["row"] = rows.astype("int64")
    else:
        out[spec.id_column] = out[spec.id_column].astype(str)
    missing_keys = out[keys].isna().any(axis=1)
    if missing_keys.any():
        raise LabelsError(f"labels without {' / '.join(keys)} at line(s) {_lines(missing_keys)}")
    out[target] = typed_target(frame[target], spec)
    stamp = now or dt.datetime.now(dt.UTC)
    out["labeled_at"] = pd.to_datetime(frame["labeled_at"], utc=True) if "labeled_at" in frame.columns else stamp
    return out.reset_index(drop=True)


def typed_target(values: pd.Series, spec: DatasetSpec) -> pd.Series:
    """The target as the task reads it (module docstring); LabelsError naming the bad values and their lines."""
    from mlcycle.tasks.settings.problem import category_keys_of, is_classification

    target = spec.target
    if is_classification(spec.task):
        classes = spec.class_labels or []
        try:
            typed = category_keys_of(values)
        except ValueError as exc:
            raise LabelsError(f"column {target!r}: {exc}") from None
        bad = ~typed.isin(classes)
        expected = f"one of the classes {classes} (dataset.classes)"
    else:
        typed = pd.to_numeric(values, errors="coerce").astype("float64")
        low = spec.target_min if spec.target_min is not None else -np.inf
        high = spec.target_max if spec.target_max is not None else np.inf
        bad = ~(np.isfinite(typed) & (typed >= low) & (typed <= high))
        expected = "a number" + (f" in [{low:g}, {high:g}]" if np.isfinite([low, high]).any() else "")
    if bad.any():
        shown = sorted(set(values[bad].astype(str)))[:5]
        raise LabelsError(f"column {target!r} must be {expected}; bad value(s) {shown} at line(s) {_lines(bad)}")
    return typed


def _lines(mask: pd.Series, limit: int = 5) -> str:
    lines = [str(i + 2) for i in np.flatnonzero(mask.to_numpy())[:limit]]  # +2: 1-based, after the header
    more = int(mask.sum()) - len(lines)
    return ", ".join(lines) + (f" and {more} more" if more > 0 else "")


def write_labels(store: ObjectStore, spec: DatasetSpec, frame: pd.DataFrame,
                 now: dt.datetime | None = None) -> LabelsWritten:
    """Write one labels part (atomic) under ``labels/date=<today>/``."""
    import pyarrow as pa

    now = now or dt.datetime.now(dt.UTC)
    labels = normalize_labels(frame, spec, now)
    key = part_key(LABELS_PREFIX, now.date(), now)
    info = store.put_bytes(key, table_bytes(pa.Table.from_pandas(labels, preserve_index=False)))
    return LabelsWritten(key=info.key, uri=store.uri(info.key), rows=len(labels), date=now.date(),
                         keys=label_keys(labels, spec))


def read_labels_file(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"labels file {path} does not exist")
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    if path.suffix.lower() in (".csv", ".txt"):
        return pd.read_csv(path, dtype={"request_id": str})
    raise LabelsError(f"labels file {path} must be .csv or .parquet")


def import_labels_file(store: ObjectStore, spec: DatasetSpec, path: Path) -> LabelsWritten:
    return write_labels(store, spec, read_labels_file(path))


def read_labels(store: ObjectStore, dates: list[dt.date] | None = None) -> pd.DataFrame:
    """Every labels part of ``dates`` (every date when None)."""
    return read_parts(store, list_parts(store, LABELS_PREFIX, dates))


def simulator_labels(store: ObjectStore, settings: Settings, dates: list[dt.date]) -> pd.DataFrame:
    """Outcomes of the predictions logged on ``dates`` whose id the simulator generated.

    Simulator ids are ``YYYYMMDD-nnnnnnn`` (day and row of ``tasks.simulator.simulate_batch`` at
    ``simulator.rows_per_day`` rows); the day's batch is regenerated and the target looked up by id.
    Predictions without such an id are skipped.
    """
    from mlcycle.tasks.simulator import simulate_batch

    spec = settings.dataset
    logged = read_inference_log(store, dates)
    if logged.empty or spec.id_column not in logged.columns:
        return pd.DataFrame(columns=["request_id", "row", spec.target])
    ids = logged[spec.id_column].astype("string")
    days = ids.str.extract(r"^(\d{8})-\d+$")[0]
    logged = logged[days.notna()].assign(_day=days[days.notna()])
    truth = []
    for day in sorted(logged["_day"].unique()):
        batch = simulate_batch(dt.datetime.strptime(day, "%Y%m%d").date(), settings.simulator, spec).frame
        truth.append(batch[[spec.id_column, spec.target]])
    if not truth:
        return pd.DataFrame(columns=["request_id", "row", spec.target])
    known = pd.concat(truth, ignore_index=True).astype({spec.id_column: str})
    joined = logged.astype({spec.id_column: str}).merge(known, on=spec.id_column, how="inner")
    return joined[["request_id", "row", spec.target]].reset_index(drop=True)
