"""Partitions: one day of data in one zone, as Parquet plus a manifest written last.

Layout in the store::

    raw/date=YYYY-MM-DD/{data-<sha16>.parquet, manifest.json}         what arrived, as it arrived
    validated/date=YYYY-MM-DD/{data-<sha16>.parquet, manifest.json}   passed validation: trained on
    quarantine/date=YYYY-MM-DD/{data-<sha16>.parquet, manifest.json}  failed validation, kept
    validation/date=YYYY-MM-DD/<validation id>/{result.json, docs/}   GX result and Data Docs
    superseded/<zone>/date=YYYY-MM-DD/<sha12>/manifest.json           a batch replaced on purpose

Invariants:

* **Content-addressed data.** Data files are named by their sha256, so writing a new batch never
  touches the bytes the current manifest points to; switching is the single manifest write.
* **Manifest last.** A partition exists only once its ``manifest.json`` is written, after its data;
  readers look for the manifest first, so a crash mid-write leaves no visible partition.
* **Verified reads.** Reading a partition checks the data's sha256 against the manifest and refuses
  corrupted or tampered bytes with :class:`~mlcycle.tasks.storage.IntegrityError`. The manifest checks itself:
  ``manifest.json`` carries ``manifest_sha256``, the sha256 of its other fields in canonical JSON, so a
  flipped byte anywhere in it (a row count, a date, a key) is refused too, not just unparseable JSON.
* **Idempotent writes.** Writing the same bytes again is a no-op that returns the existing manifest,
  so a re-run leaves the store byte-identical. Writing *different* bytes over a partition is refused
  with :class:`PartitionConflict` unless ``replace=True``, which first moves the old partition under
  ``superseded/``: nothing stored is ever silently lost.
* **Deterministic bytes.** :func:`frame_to_parquet` writes the same bytes for the same frame, which is
  what makes re-ingesting a simulated date byte-identical.

Between tasks we pass a ``PartitionRef`` (key, sha256, rows), never DataFrames; it and the
``PartitionManifest`` are records (``tasks/records/data.py``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json

import pandas as pd

from mlcycle.tasks.records.data import PartitionManifest, PartitionRef
from mlcycle.tasks.storage import IntegrityError, ObjectNotFound, ObjectStore, get_verified, sha256_bytes

MANIFEST_FILE = "manifest.json"
MANIFEST_CHECKSUM = "manifest_sha256"  # the manifest's own checksum, a top-level field of its JSON


class PartitionConflict(RuntimeError):
    """A partition already holds different data for this date."""


class PartitionNotFound(LookupError):
    """No partition (no manifest) for this zone and date."""


def partition_prefix(zone: str, date: dt.date) -> str:
    return f"{zone}/date={date.isoformat()}/"


def manifest_key(zone: str, date: dt.date) -> str:
    return partition_prefix(zone, date) + MANIFEST_FILE


def data_key(zone: str, date: dt.date, sha256: str) -> str:
    """Content-addressed: a new batch never overwrites the bytes an existing manifest points to."""
    return partition_prefix(zone, date) + f"data-{sha256[:16]}.parquet"


def frame_to_parquet(frame: pd.DataFrame) -> tuple[bytes, str]:
    """Deterministic Parquet bytes for a frame, and the hash of its Arrow schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue(), arrow_schema_hash(table.schema)


def arrow_schema_hash(schema) -> str:
    fields = [(f.name, str(f.type), f.nullable) for f in schema]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def parquet_to_frame(data: bytes, columns: list[str] | None = None) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data), columns=columns).to_pandas()


def read_manifest(store: ObjectStore, zone: str, date: dt.date) -> PartitionManifest:
    key = manifest_key(zone, date)
    try:
        raw = store.get_bytes(key)
    except ObjectNotFound:
        raise PartitionNotFound(f"no {zone} partition for {date} ({store.uri(key)} does not exist)") from None
    return parse_manifest(raw, store.uri(key))


def parse_manifest(raw: bytes, where: str) -> PartitionManifest:
    """A manifest's bytes -> the manifest, after checking its own ``manifest_sha256``."""
    try:
        fields = json.loads(raw)
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")
        recorded = fields.pop(MANIFEST_CHECKSUM, None)
        manifest = PartitionManifest.model_validate(fields)
    except ValueError as exc:
        raise IntegrityError(f"manifest {where} is corrupted: {str(exc).splitlines()[0]}") from None
    actual = _manifest_checksum(fields)
    if recorded != actual:
        found = f"records sha256 {recorded}" if isinstance(recorded, str) else f"has no {MANIFEST_CHECKSUM}"
        raise IntegrityError(f"manifest {where} is corrupted or was tampered with: its content has sha256 {actual} "
                             f"but it {found}")
    return manifest


def find_manifest(store: ObjectStore, zone: str, date: dt.date) -> PartitionManifest | None:
    try:
        return read_manifest(store, zone, date)
    except PartitionNotFound:
        return None


def read_partition_bytes(store: ObjectStore, ref: PartitionRef) -> bytes:
    return get_verified(store, ref.data_key, ref.data_sha256)


def read_partition(store: ObjectStore, ref: PartitionRef, columns: list[str] | None = None) -> pd.DataFrame:
    """The partition's frame, after verifying its sha256 against the reference."""
    return parquet_to_frame(read_partition_bytes(store, ref), columns=columns)


def list_partitions(store: ObjectStore, zone: str) -> list[dt.date]:
    """Dates that have a complete partition (a manifest) in ``zone``, ascending."""
    dates = []
    for key in store.list(f"{zone}/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST_FILE and parts[1].startswith("date="):
            try:
                dates.append(dt.date.fromisoformat(parts[1][5:]))
            except ValueError:
                continue
    return sorted(dates)


def write_partition(
    store: ObjectStore,
    manifest: PartitionManifest,
    data: bytes,
    *,
    replace: bool = False,
) -> PartitionManifest:
    """Write data then manifest; idempotent for identical data, refuses or supersedes different data.

    ``manifest.data_sha256``/``data_bytes`` must describe ``data``. Returns the manifest now in force
    (the pre-existing one when the data was already there).
    """
    if sha256_bytes(data) != manifest.data_sha256 or len(data) != manifest.data_bytes:
        raise ValueError("write_partition: manifest does not describe the data given")
    existing = _existing(store, manifest.zone, manifest.date)
    if existing is not None:
        if existing.data_sha256 == manifest.data_sha256 and _data_intact(store, existing):
            return existing
        if existing.data_sha256 != manifest.data_sha256:
            if not replace:
                raise PartitionConflict(
                    f"{manifest.zone}/date={manifest.date} already holds a different batch "
                    f"(sha256 {existing.data_sha256[:12]}, {existing.rows} rows) than the new one "
                    f"(sha256 {manifest.data_sha256[:12]}, {manifest.rows} rows); re-run with replace to "
                    "supersede it (the old batch is kept under superseded/)"
                )
            supersede(store, existing)
    store.put_bytes(manifest.data_key, data)
    store.put_bytes(manifest_key(manifest.zone, manifest.date), manifest_bytes(manifest))
    return manifest


def _existing(store: ObjectStore, zone: str, date: dt.date) -> PartitionManifest | None:
    try:
        return find_manifest(store, zone, date)
    except IntegrityError:  # a corrupted manifest is repaired by rewriting the partition
        return None


def _data_intact(store: ObjectStore, manifest: PartitionManifest) -> bool:
    try:
        get_verified(store, manifest.data_key, manifest.data_sha256)
        return True
    except (ObjectNotFound, IntegrityError):
        return False


def manifest_bytes(manifest: PartitionManifest) -> bytes:
    """Deterministic manifest bytes, sealed with ``manifest_sha256`` over the other fields."""
    fields = manifest.model_dump(mode="json")
    return json.dumps({**fields, MANIFEST_CHECKSUM: _manifest_checksum(fields)}, indent=2, sort_keys=True).encode()


def _manifest_checksum(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def supersede(store: ObjectStore, manifest: PartitionManifest) -> str:
    """Record a partition under ``superseded/`` before it is replaced; its data file stays where it is."""
    prefix = f"superseded/{manifest.zone}/date={manifest.date.isoformat()}/{manifest.data_sha256[:12]}/"
    store.put_bytes(prefix + MANIFEST_FILE, manifest_bytes(manifest))
    return prefix
