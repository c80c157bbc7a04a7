"""The landing zone: CSV or Parquet files dropped under a prefix (a local folder or ``s3://bucket/prefix``).

One file, or one folder of files, per date with ``date=YYYY-MM-DD`` in its name. The files used are
named with their sha256 in the manifest, so a date already ingested from the same files is a no-op.
A file that cannot be read at all (empty, truncated, not CSV or Parquet) is refused with a
``SourceError`` naming it; anything readable is ingested as it arrived, for validation to judge.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pandas as pd

from mlcycle.tasks.settings import DatasetSpec
from mlcycle.tasks.sources import Batch, SourceError, SourceFile
from mlcycle.tasks.storage import ObjectStore, sha256_bytes


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

    def fetch(self, day: dt.date, spec: DatasetSpec) -> Batch:
        names = self.files_for(day)
        if not names:
            raise SourceError(
                f"no data for {day}: no CSV or Parquet file with 'date={day}' in its name under landing path "
                f"{self.location!r}"
            )
        frames, files = [], []
        for name in names:
            data = self._read(name)
            files.append(SourceFile(name=name, sha256=sha256_bytes(data), bytes=len(data)))
            frames.append(read_landing_file(name, data, spec))
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return Batch(frame=frame, kind="landing", files=files)


def read_landing_file(name: str, data: bytes, spec: DatasetSpec) -> pd.DataFrame:
    """Parse one landing file; refuse empty, truncated or corrupted files naming the file."""
    if not data:
        raise SourceError(f"landing file {name!r} is empty (0 bytes)")
    if name.lower().endswith(".csv"):
        frame = _read_csv(name, data, spec)
    else:
        frame = _read_parquet(name, data)
    if frame.empty:
        raise SourceError(f"landing file {name!r} has no rows (columns: {list(frame.columns)})")
    return frame


def _read_csv(name: str, data: bytes, spec: DatasetSpec) -> pd.DataFrame:
    categorical = {f.name: "str" for f in spec.categorical_features}
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype={spec.id_column: "str", **categorical})
    except pd.errors.EmptyDataError:
        raise SourceError(f"landing file {name!r} is empty (no header)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"landing file {name!r} is not valid CSV: {str(exc).splitlines()[0]}") from None
    if spec.timestamp_column in frame.columns:
        parsed = pd.to_datetime(frame[spec.timestamp_column], errors="coerce", utc=True, format="ISO8601")
        # Keep unparseable timestamps as they came, so validation names the column instead of hiding it.
        if parsed.notna().sum() == frame[spec.timestamp_column].notna().sum():
            frame[spec.timestamp_column] = parsed
    return frame


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
