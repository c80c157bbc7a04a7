"""The inference log's write-ahead journal: an answered request is on local disk before its answer leaves.

The writer (tasks/inference_log.py) batches predictions in memory and uploads a Parquet part every few
seconds; a worker killed between two uploads (SIGKILL, the OOM killer, a crash in native code) would lose
what it had queued, although its clients got their answers. So ``submit`` first appends the request's
entry to this journal, and only then is the request answered:

* each writer owns **segments** ``<spill_dir>/journal/<UTC timestamp>-<writer id>-<n>.wal``, holding an
  exclusive ``flock`` on every segment it has not finished with. A record is one ``os.write`` of
  ``length | crc32 | payload`` (:func:`encode`): the kernel has it once the call returns, so it survives
  the death of the process (not a power cut: there is no fsync per request; the machine's own crash
  is the one loss this accepts, and says so);
* when the writer takes the queue to write a part it **rotates**: the taken entries are exactly the
  closed segment's records; the segment is deleted only after its parts are in the store or spilled
  (tasks.inference_log's spill folder), and the part keys derive from the segment's name
  (:func:`Segment.part_unique`), so writing them again after a crash overwrites the same objects with
  the same rows: **recovery is idempotent**, never a duplicate;
* a segment nobody holds a lock on belongs to a dead process: any writer sharing the spill folder (the
  backend's other worker within one flush interval, or the replacement worker when it starts) takes the
  lock, replays the records through the normal part writer and deletes the segment
  (:func:`orphan_segments`). A lock on a segment already deleted by another recoverer is let go (the
  inode check), so one orphan is replayed by one writer;
* a torn last record (the process died inside the write) is ignored: its request was never answered.
  A record that fails its checksum in the middle of a segment stops the replay there; the segment is
  moved to ``journal/corrupt/`` with a warning, never deleted, never retried in a loop.

Cost on the request path: one small JSON directory, the arrays' bytes and one ``write`` per request
(benchmarks/journal.py; figures in benchmarks/README.md). Pure Python + numpy; no Prefect, no BentoML
(the service imports it).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mlcycle.tasks.inference_rows import LogEntry

JOURNAL_DIR = "journal"
CORRUPT_DIR = "corrupt"
SUFFIX = ".wal"
_HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
_LENGTH = struct.Struct("<I")  # an entry's JSON directory length

logger = logging.getLogger("mlcycle.inference_log")


class JournalCorrupt(Exception):
    """A segment's record failed its checksum before the segment's end (not a torn last record)."""


def encode(entry: LogEntry) -> bytes:
    """One entry's record: a JSON directory (ids, request facts, each array's dtype, shape and size), then the
    arrays' bytes: numbers raw (``tobytes``), text as a JSON list. No pickle: a journal is replayed by
    another process and must never be able to run code."""
    directory, blobs = [], []
    for group, arrays in (("c", entry.columns), ("p", entry.predictions)):
        for name, values in arrays.items():
            values = np.asarray(values)
            blob = json.dumps(values.tolist()).encode() if values.dtype == object else values.tobytes()
            directory.append([group, name, "O" if values.dtype == object else values.dtype.str, list(values.shape),
                              len(blob)])
            blobs.append(blob)
    meta = json.dumps({"request_id": entry.request_id, "endpoint": entry.endpoint, "ts": entry.ts.isoformat(),
                       "traffic": entry.traffic, "ids": entry.ids, "arrays": directory},
                      separators=(",", ":")).encode()
    payload = b"".join([_LENGTH.pack(len(meta)), meta, *blobs])
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _record(obj: dict) -> bytes:
    payload = json.dumps(obj, separators=(",", ":")).encode()
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> LogEntry:
    (size,) = _LENGTH.unpack_from(payload, 0)
    offset = _LENGTH.size + size
    meta = json.loads(payload[_LENGTH.size:offset])
    arrays: dict[str, dict[str, np.ndarray]] = {"c": {}, "p": {}}
    for group, name, dtype, shape, nbytes in meta["arrays"]:
        blob = payload[offset:offset + nbytes]
        offset += nbytes
        arrays[group][name] = (np.array(json.loads(blob), dtype=object) if dtype == "O"
                               else np.frombuffer(blob, dtype=np.dtype(dtype)).copy()).reshape(shape)
    return LogEntry(request_id=meta["request_id"], endpoint=meta["endpoint"],
                    ts=dt.datetime.fromisoformat(meta["ts"]), columns=arrays["c"], ids=meta["ids"],
                    predictions=arrays["p"], traffic=meta["traffic"])


def read_records(data: bytes) -> tuple[dict | None, list[LogEntry], bool]:
    """(the segment's header, its entries, whether a torn last record was dropped). JournalCorrupt when a
    record before the end fails its checksum or does not parse. No header: the segment is empty."""
    header, entries, offset = None, [], 0
    while offset < len(data):
        if offset + _HEADER.size > len(data):
            return header, entries, True
        length, crc = _HEADER.unpack_from(data, offset)
        start, end = offset + _HEADER.size, offset + _HEADER.size + length
        if end > len(data):
            return header, entries, True  # the process died inside this write: never answered
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            raise JournalCorrupt(f"record at byte {offset} fails its checksum")
        try:
            if header is None:
                header = json.loads(payload)["writer"]
            else:
                entries.append(decode(payload))
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            raise JournalCorrupt(f"record at byte {offset} does not parse: {exc}") from exc
        offset = end
    return header, entries, False


class Journal:
    """A writer's segments: the one it appends to now, rotated when the writer takes its queue.

    ``header`` (what the writer logs: model, version, task, id column, feature specs) is each segment's
    first record, so a writer of another model version can replay a dead one's segment as it was meant.
    """

    def __init__(self, folder: Path, header: dict) -> None:
        self.folder, self.header = Path(folder), header
        self.writer_id = uuid.uuid4().hex[:12]
        self.current: Segment | None = None
        self._sequence = 0
        self._held: set[Path] = set()

    def append(self, record: bytes) -> None:
        """Append one encoded entry (:func:`encode`) to the current segment, opening one when needed."""
        if self.current is None:
            self._sequence += 1
            name = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}-{self.writer_id}-{self._sequence:06d}"
            segment = Segment.create(self.folder, name)
            segment.append(_record({"writer": self.header}))
            self.current = segment
            self._held.add(segment.path)
        self.current.append(record)

    def rotate(self) -> Segment | None:
        """The segment holding every entry appended so far (None if none); later entries go to a new one."""
        segment, self.current = self.current, None
        return segment

    def done(self, segment: Segment, *, written: bool) -> None:
        """``written``: its entries are in the store or spilled, delete it. Else let it go: it is an orphan
        now, and the next recovery (this writer's too) replays it."""
        self._held.discard(segment.path)
        segment.discard() if written else segment.release()

    def orphans(self) -> Iterator[Segment]:
        return orphan_segments(self.folder, self._held)

    def close(self) -> None:
        if self.current is not None and self.current.records <= 1:  # only its header: nothing to keep
            self.done(self.current, written=True)
            self.current = None


class Segment:
    """One locked journal file this process appends to (or recovers)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        self.records = 0

    @classmethod
    def create(cls, folder: Path, name: str) -> Segment:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(path, fd)

    @property
    def part_unique(self) -> str:
        """The unique tail of the part keys written from this segment: the same after a crash."""
        return self.path.stem

    def append(self, record: bytes) -> None:
        written = os.write(self.fd, record)
        if written != len(record):  # a regular file writes whole buffers unless the disk is full
            raise OSError(f"journal {self.path}: wrote {written} of {len(record)} bytes (disk full?)")
        self.records += 1

    def read(self) -> bytes:
        return self.path.read_bytes()

    def discard(self) -> None:
        """Delete the segment (its records are in the store or spilled), then release the lock."""
        self.path.unlink(missing_ok=True)
        self.release()

    def quarantine(self) -> Path:
        target = self.path.parent / CORRUPT_DIR / self.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, target)
        self.release()
        return target

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = -1


def orphan_segments(folder: Path, own: set[Path]) -> Iterator[Segment]:
    """Segments of dead processes, each locked for the caller (oldest first); none of ``own``."""
    if not folder.is_dir():
        return
    for path in sorted(folder.glob(f"*{SUFFIX}"), key=_mtime):
        if path in own:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its writer is alive
            os.close(fd)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # replayed and deleted by another writer between our open and our lock
            os.close(fd)
            continue
        yield Segment(path, fd)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
