"""The inference log's reading side: the logged predictions (and labels parts) back as DataFrames.

The monitor reads its window here, the labels import finds the predictions it labels, and the CLI
lists the logged dates. The layout (``<prefix>/date=YYYY-MM-DD/part-*.parquet``) is the writer's, in
``tasks/inference_log.py``; this module is not part of the serving bento.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable

from mlcycle.tasks.inference_log import INFERENCE_PREFIX
from mlcycle.tasks.settings import DatasetSpec
from mlcycle.tasks.storage import ObjectStore


def list_parts(store: ObjectStore, prefix: str, dates: Iterable[dt.date] | None = None) -> list[str]:
    """Keys of the Parquet parts under ``prefix/`` for ``dates`` (all dates when None), in time order."""
    if dates is None:
        keys = store.list(f"{prefix}/")
    else:
        keys = [k for day in sorted(set(dates)) for k in store.list(f"{prefix}/date={day.isoformat()}/")]
    return [k for k in keys if k.rsplit("/", 1)[-1].startswith("part-") and k.endswith(".parquet")]


def read_parts(store: ObjectStore, keys: list[str]):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(io.BytesIO(store.get_bytes(k))) for k in keys]
    if not tables:
        return pd.DataFrame()
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def read_inference_log(store: ObjectStore, dates: Iterable[dt.date] | None = None):
    """Every logged prediction of ``dates`` (every date when None) as one DataFrame, in write order."""
    return read_parts(store, list_parts(store, INFERENCE_PREFIX, dates))


def inference_dates(store: ObjectStore) -> list[dt.date]:
    """Dates that have at least one inference log part."""
    days = set()
    for key in list_parts(store, INFERENCE_PREFIX):
        segment = key.split("/")[1]
        if segment.startswith("date="):
            days.add(dt.date.fromisoformat(segment[5:]))
    return sorted(days)


def join_labels(inference, labels, spec: DatasetSpec):
    """Predictions with the label that arrived later (``spec.target``, null when none arrived yet).

    Labels carrying ``request_id`` and ``row`` join on those; labels carrying only the dataset's id
    column fill the remaining predictions by that id. When a prediction got several labels, the latest
    (``labeled_at``) wins.
    """
    import pandas as pd

    target = spec.target
    out = inference.copy()
    out[target] = pd.array([pd.NA] * len(out), dtype="Int64")
    if labels is None or len(labels) == 0 or target not in labels.columns:
        return out
    latest = labels.sort_values("labeled_at", kind="mergesort") if "labeled_at" in labels.columns else labels
    for keys in (["request_id", "row"], [spec.id_column]):
        if not set(keys) <= set(latest.columns) or not set(keys) <= set(out.columns):
            continue
        known = latest.dropna(subset=keys).drop_duplicates(subset=keys, keep="last")[[*keys, target]]
        if known.empty:
            continue
        found = out[keys].merge(known, on=keys, how="left", validate="many_to_one")[target]
        out[target] = out[target].fillna(pd.Series(pd.array(found, dtype="Int64"), index=out.index))
    return out
