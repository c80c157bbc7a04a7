"""The inference log's reading side: the logged predictions (and labels parts) back as DataFrames.

The monitor reads its window here, the labels import finds the predictions it labels, and the CLI
lists the logged dates. The layout (``<prefix>/date=YYYY-MM-DD/part-*.parquet``) is the writer's, in
``tasks/inference_log.py``; this module is not part of the serving bento.

**Only live traffic counts.** :func:`read_inference_log` keeps the ``live`` rows unless asked for others:
the canaries of test-serving and of each rollout (``traffic`` = ``canary``) are real requests, logged like
any other, but no monitoring window counts them and :func:`join_labels` never gives them a label. Rows of
logs written before the column existed are live.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from mlcycle.tasks.inference_log import CANARY, INFERENCE_PREFIX, LIVE
from mlcycle.tasks.inference_rows import TRAFFIC_COLUMN
from mlcycle.tasks.settings import DatasetSpec
from mlcycle.tasks.storage import ObjectStore


def list_parts(store: ObjectStore, prefix: str, dates: Iterable[dt.date] | None = None) -> list[str]:
    """Keys of the Parquet parts under ``prefix/`` for ``dates`` (all dates when None), in time order."""
    if dates is None:
        keys = store.list(f"{prefix}/")
    else:
        keys = [k for day in sorted(set(dates)) for k in store.list(f"{prefix}/date={day.isoformat()}/")]
    return [k for k in keys if k.rsplit("/", 1)[-1].startswith("part-") and k.endswith(".parquet")]


def read_parts(store: ObjectStore, keys: list[str], columns: list[str] | None = None):
    """The parts as one DataFrame, in order; ``columns``: only those (a part lacking one has it null).

    Parts whose columns differ in type (a labels target written as numbers by an older version, as class
    texts by this one) are put together by pandas rather than Arrow, which refuses to merge them.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for key in keys:
        data = store.get_bytes(key)
        present = columns if columns is None else \
            [c for c in columns if c in pq.read_schema(pa.BufferReader(data)).names]
        tables.append(pq.read_table(pa.BufferReader(data), columns=present))
    if not tables:
        return pd.DataFrame(columns=columns)
    try:
        return pa.concat_tables(tables, promote_options="default").to_pandas()
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True)


def read_inference_log(store: ObjectStore, dates: Iterable[dt.date] | None = None, *,
                       columns: list[str] | None = None, traffic: str | None = LIVE):
    """The logged predictions of ``dates`` (every date when None) as one DataFrame, in write order.

    ``traffic``: only the rows of that traffic (default ``live``: what monitoring and labels read), or every
    row when None; the ``traffic`` column is filled (``live`` for rows logged before it existed).
    ``columns``: read only those (and ``traffic`` when filtering on it), as one monitoring task per feature does.
    """
    wanted = columns if columns is None else list(dict.fromkeys([*columns, TRAFFIC_COLUMN]))
    frame = read_parts(store, list_parts(store, INFERENCE_PREFIX, dates), wanted)
    if frame.empty and not len(frame.columns):
        return frame
    frame[TRAFFIC_COLUMN] = frame[TRAFFIC_COLUMN].fillna(LIVE) if TRAFFIC_COLUMN in frame.columns else LIVE
    if traffic is not None:
        frame = frame[(frame[TRAFFIC_COLUMN] == traffic).to_numpy()].reset_index(drop=True)
    if columns is not None and TRAFFIC_COLUMN not in columns:
        frame = frame.drop(columns=[TRAFFIC_COLUMN])
    return frame


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
    (``labeled_at``) wins. A canary row never gets one. The target is typed per task, as the labels
    import writes it: classification the canonical class text (object, None when missing), regression a
    float (NaN when missing).
    """
    import numpy as np
    import pandas as pd

    from mlcycle.tasks.settings.problem import category_keys_of, is_classification

    target = spec.target
    classification = is_classification(spec.task)
    out = inference.copy()
    out[target] = pd.Series([None] * len(out), index=out.index, dtype=object) if classification else np.nan
    if labels is None or len(labels) == 0 or target not in labels.columns:
        return out
    latest = labels.sort_values("labeled_at", kind="mergesort") if "labeled_at" in labels.columns else labels
    live = (out[TRAFFIC_COLUMN] != CANARY).to_numpy() if TRAFFIC_COLUMN in out.columns else np.ones(len(out), bool)
    for keys in (["request_id", "row"], [spec.id_column]):
        if not set(keys) <= set(latest.columns) or not set(keys) <= set(out.columns):
            continue
        known = latest.dropna(subset=keys).drop_duplicates(subset=keys, keep="last")[[*keys, target]]
        if known.empty:
            continue
        found = out[keys].merge(known, on=keys, how="left", validate="many_to_one")[target]
        found = category_keys_of(found) if classification else pd.to_numeric(found, errors="coerce")
        fill = out[target].isna().to_numpy() & found.notna().to_numpy() & live
        out.loc[fill, target] = found.to_numpy()[fill]
    return out
