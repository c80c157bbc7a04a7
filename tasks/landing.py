"""The landing zone: CSV or Parquet files dropped under a prefix (a local folder or ``s3://bucket/prefix``).

One file, or one folder of files, per date with ``date=YYYY-MM-DD`` in its name. The files used are
named with their sha256 in the manifest, so a date already ingested from the same files is a no-op.
A file that cannot be read at all (empty, truncated, not CSV or Parquet) is refused with a
``SourceError`` naming it; anything readable is ingested as it arrived, for validation to judge.

A real export rarely holds exactly the declared columns. Each file is shaped onto the declaration as
``ingest:`` says (:func:`shape_landing_frame`), and what was done is recorded in the batch (and so in the
partition manifest):

* ``columns`` renames landing columns to declared names; a mapped column absent from the file is an
  error naming the file and the column;
* ``extra_columns``: columns the declaration does not name are dropped (``ignore``) or kept, so that
  validation fails naming them and the batch is quarantined (``quarantine``);
* ``ids: generate`` gives rows without an id column ``<date>-<file sha256 prefix>-<row number>``: the same
  file bytes give the same ids, and two different files of one date never share one (two copies of one
  file do, which validation refuses as duplicated ids); ``column`` requires the column;
* ``timestamps: file_date`` sets an absent timestamp column to midnight UTC of the file's date;
  ``column`` requires the column.

Categorical features, and a classification target, are turned into their canonical texts
(``category_keys_of``, tasks/settings/problem.py) for CSV and Parquet alike: ``"1"``, ``1`` and ``1.0`` in
the data are the category ``"1"``, as in validation, training and serving. A CSV file is read as pandas
reads it, types inferred per column (only the id column is kept as text), so a CSV and a Parquet export of
the same table land alike.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pandas as pd

from mlcycle.tasks.batch import Batch, SourceFile
from mlcycle.tasks.settings import DatasetSpec, IngestSettings
from mlcycle.tasks.settings.problem import category_keys_of, is_classification
from mlcycle.tasks.sources import SourceError
from mlcycle.tasks.storage import ObjectStore, sha256_bytes

ID_DIGEST_CHARS = 12  # sha256 prefix of the file in a generated id: collisions between two files of a day ~1e-14


class LandingZone:
    """Files for each date under a local folder or an object-store prefix."""

    def __init__(self, location: str, store: ObjectStore | None = None) -> None:
        """``location`` is a local folder; when ``store`` is given it is a key prefix in that store."""
        self.location = location
        self.store = store

    def _names(self) -> list[str]:
        if self.store is not None:
            prefix = self.location.strip("/")
            return [k[len(prefix) + 1:] if prefix else k for k in self.store.list(prefix + "/" if prefix else "")]
        root = Path(self.location)
        if not root.is_dir():
            raise SourceError(f"landing path {self.location!r} is not a folder")
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def _read(self, name: str) -> bytes:
        if self.store is not None:
            prefix = self.location.strip("/")
            return self.store.get_bytes(f"{prefix}/{name}" if prefix else name)
        root = Path(self.location).resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root):  # a symbolic link out of the landing folder: not landing data
            raise SourceError(f"landing file {name!r} resolves to {str(path)!r}, outside the landing path "
                              f"{self.location!r}; refusing to read it")
        return path.read_bytes()

    def files_for(self, day: dt.date) -> list[str]:
        tag = f"date={day.isoformat()}"
        return [
            name for name in self._names()
            if tag in name and name.lower().endswith((".csv", ".parquet", ".pq"))
            and not Path(name).name.startswith((".", "_"))
        ]

    def fetch(self, day: dt.date, spec: DatasetSpec, ingest: IngestSettings | None = None) -> Batch:
        """The batch for ``day``: every file of the date, each shaped onto ``spec`` as ``ingest`` says."""
        ingest = ingest or IngestSettings()
        names = self.files_for(day)
        if not names:
            raise SourceError(
                f"no data for {day}: no CSV or Parquet file with 'date={day}' in its name under landing path "
                f"{self.location!r}"
            )
        batch = Batch(frame=pd.DataFrame(), kind="landing")
        frames = []
        for name in names:
            data = self._read(name)
            file = SourceFile(name=name, sha256=sha256_bytes(data), bytes=len(data))
            batch.files.append(file)
            frames.append(shape_landing_frame(read_landing_file(name, data, spec, ingest), file, day, spec, ingest,
                                              batch))
        batch.frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return batch


def read_landing_file(name: str, data: bytes, spec: DatasetSpec, ingest: IngestSettings | None = None) -> pd.DataFrame:
    """Parse one landing file (its id column kept as text); refuse empty, truncated or corrupted files."""
    return parse_table(name, data, text_columns=(landing_name(spec.id_column, ingest or IngestSettings()),))


def parse_table(name: str, data: bytes, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV (by its name) or Parquet file as pandas reads it, ``text_columns`` of a CSV kept as text.

    The one reader of landing files, also what ``mlcycle init`` profiles (tasks/profiling.py), so that the
    declaration it writes sees the types ingest will see. Refuses empty, truncated or corrupted files and
    files without rows, naming the file.
    """
    if not data:
        raise SourceError(f"landing file {name!r} is empty (0 bytes)")
    if name.lower().endswith(".csv"):
        frame = _read_csv(name, data, text_columns)
    else:
        frame = _read_parquet(name, data)
    if frame.empty:
        raise SourceError(f"landing file {name!r} has no rows (columns: {list(frame.columns)})")
    return frame


def landing_name(column: str, ingest: IngestSettings) -> str:
    """The name a declared column has in the landing files (through ``ingest.columns``)."""
    return next((source for source, declared in ingest.columns.items() if declared == column), column)


def shape_landing_frame(frame: pd.DataFrame, file: SourceFile, day: dt.date, spec: DatasetSpec,
                        ingest: IngestSettings, batch: Batch) -> pd.DataFrame:
    """One landing file's rows as the declaration names them; what was done is recorded in ``batch``.

    Renames (``ingest.columns``), generates ids and timestamps where the modes allow it, drops or keeps the
    extra columns, turns categorical values into canonical texts, and orders the declared columns first.
    """
    _rename(frame, file.name, spec, ingest, batch)
    if spec.id_column not in frame.columns:
        if ingest.ids != "generate":
            raise SourceError(f"landing file {file.name!r} has no id column {spec.id_column!r} (ingest.ids: column); "
                              "map it in ingest.columns, or set ingest.ids: generate")
        frame[spec.id_column] = generated_ids(day, file.sha256, len(frame))
        _note(batch, f"generated ids {day.isoformat()}-<sha256 of the file, {ID_DIGEST_CHARS} characters>-<row "
                     "number> (ingest.ids: generate)")
        batch.generated_ids = True
    if spec.timestamp_column not in frame.columns:
        if ingest.timestamps != "file_date":
            raise SourceError(f"landing file {file.name!r} has no timestamp column {spec.timestamp_column!r} "
                              "(ingest.timestamps: column); map it in ingest.columns, or set ingest.timestamps: "
                              "file_date")
        frame[spec.timestamp_column] = pd.Series(pd.Timestamp(day, tz="UTC"), index=frame.index)
        _note(batch, f"timestamps from the file date {day.isoformat()}T00:00:00Z (ingest.timestamps: file_date)")
        batch.timestamps_from_file_date = True
    else:
        frame[spec.timestamp_column] = _parsed_timestamps(frame[spec.timestamp_column])

    declared = set(spec.columns)
    extra = [str(c) for c in frame.columns if c not in declared]
    if extra and ingest.extra_columns == "ignore":
        frame = frame.drop(columns=extra)
        batch.dropped_columns = sorted(set(batch.dropped_columns) | set(extra))
        _note(batch, f"{file.name}: dropped extra columns {extra} (ingest.extra_columns: ignore)")
    elif extra:
        _note(batch, f"{file.name}: kept extra columns {extra} for validation to refuse "
                     "(ingest.extra_columns: quarantine)")

    categorical = [f.name for f in spec.categorical_features]
    if is_classification(spec.task):
        categorical.append(spec.target)
    for column in categorical:
        if column in frame.columns and not pd.api.types.is_string_dtype(frame[column]):
            frame[column] = category_keys_of(frame[column])  # strings are their own canonical text
    order = [c for c in spec.columns if c in frame.columns]
    return frame[order + [c for c in frame.columns if c not in declared]]


def generated_ids(day: dt.date, sha256: str, rows: int) -> list[str]:
    """``<date>-<sha256 prefix>-<row number>`` for each row of a file: the same bytes give the same ids."""
    prefix = f"{day.isoformat()}-{sha256[:ID_DIGEST_CHARS]}-"
    width = max(7, len(str(rows)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, rows + 1)]


def _rename(frame: pd.DataFrame, name: str, spec: DatasetSpec, ingest: IngestSettings, batch: Batch) -> None:
    if not ingest.columns:
        return
    declared = set(spec.columns)
    for source, target in ingest.columns.items():
        if target not in declared:
            raise SourceError(f"ingest.columns maps {source!r} to {target!r}, which the dataset does not declare; "
                              f"declared columns are {spec.columns}")
        if source not in frame.columns:
            raise SourceError(f"landing file {name!r} has no column {source!r} (ingest.columns maps it to "
                              f"{target!r}); its columns are {[str(c) for c in frame.columns]}")
        if target in frame.columns and target != source:
            raise SourceError(f"landing file {name!r} has both {source!r} and {target!r}, which ingest.columns "
                              f"maps {source!r} onto; drop one of them or the mapping")
    frame.rename(columns=ingest.columns, inplace=True)
    batch.renamed = {**batch.renamed, **ingest.columns}
    _note(batch, "renamed " + ", ".join(f"{s} -> {t}" for s, t in ingest.columns.items()) + " (ingest.columns)")


def _note(batch: Batch, line: str) -> None:
    if line not in batch.notes:
        batch.notes.append(line)


def _parsed_timestamps(values: pd.Series) -> pd.Series:
    """Text timestamps parsed as UTC (ISO 8601); kept as they came if any value does not parse, so that
    validation names the column instead of hiding the problem."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype) or not (
            pd.api.types.is_string_dtype(values.dtype) or values.dtype == object):
        return values
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    return parsed if parsed.notna().sum() == values.notna().sum() else values


def _read_csv(name: str, data: bytes, text_columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        return pd.read_csv(io.BytesIO(data), dtype=dict.fromkeys(text_columns, "str"))
    except pd.errors.EmptyDataError:
        raise SourceError(f"landing file {name!r} is empty (no header)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"landing file {name!r} is not valid CSV: {str(exc).splitlines()[0]}") from None


def _read_parquet(name: str, data: bytes) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(io.BytesIO(data)).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise SourceError(f"landing file {name!r} is truncated or not valid Parquet: {exc}") from None


def landing_zone(location: str, store_for_bucket) -> LandingZone:
    """A LandingZone for a local folder or ``s3://bucket/prefix`` (``store_for_bucket(bucket)``)."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://"):].partition("/")
        return LandingZone(prefix, store=store_for_bucket(bucket))
    return LandingZone(location)
