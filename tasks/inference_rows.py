"""The inference log's rows: what one answered request becomes in a Parquet part (see tasks/inference_log.py).

:class:`LogEntry` is one request as the writer queues it and its journal records it (tasks/inference_journal.py);
:class:`RowLayout` is what a writer logs (the model, its version, task, id column and features) and turns
entries into one Arrow table. A journal segment carries its writer's layout as its header, so a worker of
another model version replays a dead one's segment as that version's rows.

Pure Python + numpy + pyarrow; no Prefect, no BentoML (the service imports it).
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlcycle.tasks.settings import FeatureSpec

# What each prediction records, per task: binary the positive class's probability and the 0/1 label at the
# threshold; multiclass the predicted class (canonical text), its probability and every class's probability
# (a list, in the served model's class order); regression the predicted value.
PREDICTION_COLUMNS: dict[str, list[str]] = {
    "binary": ["probability", "label"],
    "multiclass": ["label", "probability", "probabilities"],
    "regression": ["prediction"],
}
TRAFFIC_COLUMN = "traffic"


@dataclass
class LogEntry:
    """One answered request's predictions."""

    request_id: str
    endpoint: str
    ts: dt.datetime
    columns: dict[str, np.ndarray]
    ids: list[str | None] | None
    predictions: dict[str, np.ndarray]  # PREDICTION_COLUMNS[task] -> one value (multiclass: a row) per record
    traffic: str

    @property
    def rows(self) -> int:
        return len(next(iter(self.predictions.values())))


@dataclass(frozen=True)
class RowLayout:
    """What a writer logs, and how its entries become one table."""

    model: str
    model_version: int
    task: str
    id_column: str
    features: tuple[FeatureSpec, ...]

    @property
    def prediction_columns(self) -> list[str]:
        return PREDICTION_COLUMNS[self.task]

    def header(self) -> dict:
        return {"model": self.model, "model_version": self.model_version, "task": self.task,
                "id_column": self.id_column, "features": [f.model_dump(mode="json") for f in self.features]}

    @classmethod
    def from_header(cls, header: dict) -> RowLayout:
        return cls(model=header["model"], model_version=int(header["model_version"]), task=header["task"],
                   id_column=header["id_column"],
                   features=tuple(FeatureSpec.model_validate(f) for f in header["features"]))

    def table(self, entries: list[LogEntry]):
        import pyarrow as pa

        sizes = [e.rows for e in entries]
        arrays: dict[str, Any] = {
            "request_id": pa.array(np.repeat([e.request_id for e in entries], sizes), pa.string()),
            "row": pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in sizes]), pa.int32()),
            "ts": pa.array(np.repeat(np.array([e.ts.replace(tzinfo=None) for e in entries], dtype="datetime64[us]"),
                                     sizes), pa.timestamp("us", tz="UTC")),
            "endpoint": pa.array(np.repeat([e.endpoint for e in entries], sizes), pa.string()),
            "model": pa.array([self.model] * sum(sizes), pa.string()),
            "model_version": pa.array(np.full(sum(sizes), self.model_version, dtype=np.int32), pa.int32()),
            self.id_column: pa.array([i for e in entries for i in (e.ids if e.ids is not None else [None] * e.rows)],
                                     pa.string()),
        }
        for f in self.features:
            values = np.concatenate([e.columns[f.name] for e in entries])
            if f.kind == "numeric" and f.dtype == "int" and not f.nullable:
                arrays[f.name] = pa.array(values.astype(np.int64), pa.int64())
            elif f.kind == "numeric":
                arrays[f.name] = pa.array(values.astype(np.float64), pa.float64(), from_pandas=True)
            else:
                arrays[f.name] = pa.array(values, pa.string(), from_pandas=True)
        for name in self.prediction_columns:
            values = np.concatenate([e.predictions[name] for e in entries])
            arrays[name] = _prediction_array(name, values, self.task)
        arrays[TRAFFIC_COLUMN] = pa.array(np.repeat([e.traffic for e in entries], sizes), pa.string())
        return pa.table(arrays)


def table_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _prediction_array(name: str, values: np.ndarray, task: str):
    """One prediction column as Arrow: binary labels int8, class labels strings, probabilities a list column."""
    import pyarrow as pa

    if name == "probabilities":  # (rows, classes) -> one list of class probabilities per row
        offsets = pa.array(np.arange(0, values.size + 1, values.shape[1], dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), pa.float64()))
    if name == "label":
        return pa.array(values.astype(np.int8), pa.int8()) if task == "binary" else pa.array(values, pa.string())
    return pa.array(values.astype(np.float64), pa.float64())


def by_date(entries: list[LogEntry]) -> dict[dt.date, list[LogEntry]]:
    out: dict[dt.date, list[LogEntry]] = {}
    for e in entries:
        out.setdefault(e.ts.astimezone(dt.UTC).date(), []).append(e)
    return out


def parquet_rows(data: bytes) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
