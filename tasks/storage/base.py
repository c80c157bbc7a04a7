"""What every object store offers: the protocol, its errors, safe keys and checksums.

The contract both backends keep (tasks/storage/local.py, tasks/storage/s3.py; tested identically
against each, the MinIO one over HTTP):

* **Atomic objects.** A reader sees a whole object or none: the local store writes a temp file under
  ``.tmp/``, fsyncs it and ``os.replace``-s it into place; on S3 a PUT (single or multipart) becomes
  visible only when complete. Multi-object units (a partition, a model version) additionally write
  their manifest last, so a crash leaves no unit visible (see ``tasks.partitions``).
* **Conditional writes, the one concurrency primitive.** :meth:`ObjectStore.create_exclusive` writes a
  key only if it does not exist (``os.link`` locally, ``If-None-Match: *`` on S3);
  :meth:`ObjectStore.replace_if` replaces it only if it still holds what :meth:`ObjectStore.read_tagged`
  returned (its tag: the sha256 of the file locally, compared and renamed under an ``flock`` the kernel
  drops with a dead process; the ETag on S3, ``If-Match``). Version claims and seals, the champion
  pointer, leases (tasks/storage/lease.py) and the trigger ledger rest on these two and on nothing else:
  no lock file, no read-then-write. An S3 server that ignores the conditions would silently turn every one
  of them into last-writer-wins, so the S3 backend probes it before its first conditional write and
  refuses with :class:`ConditionalWritesUnsupported`. A refused condition is a lost race, even when the
  winner wrote the very same bytes (two monitors with one record must not both win); only on S3, a write
  whose first answer was lost (transport error, retried by the backend itself) and then refused counts as
  done if the object holds exactly its bytes: that was its own first attempt landing.
* **Safe keys.** Keys are relative, ``/``-separated, from a small alphabet; ``..``, absolute paths,
  backslashes and control characters are refused before any I/O (:func:`check_key`).
* **Errors that say what to do.** Every backend error becomes a :class:`StoreError` subclass naming
  the store and key: :class:`StoreUnavailable` (transient: unreachable, timeout, 5xx, read-only
  directory; the flows retry these, tasks/retry.py), :class:`StoreAuthError` (wrong credentials; never
  retried), :class:`ObjectNotFound`, and :class:`IntegrityError` for checksum mismatches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


class StoreError(RuntimeError):
    """Base of every object-store failure; the message names the store and the key."""


class StoreUnavailable(StoreError):
    """A transient fault (unreachable endpoint, timeout, 5xx, read-only or full disk): worth a retry."""


class StoreAuthError(StoreError):
    """Credentials rejected or access denied: retrying will not help."""


class ObjectNotFound(StoreError):
    """The key does not exist."""


class IntegrityError(StoreError):
    """Stored bytes do not match their recorded sha256: corrupted or tampered."""


class ConditionalWritesUnsupported(StoreError):
    """The S3 server accepted a write whose condition did not hold: it cannot be trusted with claims."""


class UnsafeKey(StoreError, ValueError):
    """A key (often built from user input) that could escape its prefix."""


# ASCII only (no lookalikes), whole-string match (``\Z``: ``$`` would also accept a trailing newline).
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*\Z")
MAX_KEY_CHARS = 1024  # S3's limit on a key
MAX_SEGMENT_CHARS = 255  # a file name's limit on Linux file systems (the local store)


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`UnsafeKey`."""
    if not isinstance(key, str) or not key:
        raise UnsafeKey(f"object key must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_CHARS or any(len(s) > MAX_SEGMENT_CHARS for s in key.split("/")):
        raise UnsafeKey(f"object key {key[:80]!r}... is too long: at most {MAX_KEY_CHARS} characters, "
                        f"{MAX_SEGMENT_CHARS} per segment")
    if key.startswith("/") or "\\" in key or "//" in key:
        raise UnsafeKey(f"object key {key!r} must be relative, '/'-separated, with no empty segment")
    for segment in key.rstrip("/").split("/"):
        if segment in (".", "..") or not _KEY_SEGMENT.match(segment):
            raise UnsafeKey(
                f"object key {key!r} has an unsafe segment {segment!r}: segments use letters, digits "
                "and ._=+- and cannot be '.' or '..'"
            )
    return key


def check_object_key(key: str) -> str:
    """:func:`check_key` for one object (not a listing prefix): it cannot end with ``/``."""
    if check_key(key).endswith("/"):
        raise UnsafeKey(f"object key {key!r} names a folder, not an object: it cannot end with '/'")
    return key


def check_segment(value: str, what: str) -> str:
    """Validate one user-supplied key segment (a model name, a version), naming it in the error."""
    if not isinstance(value, str) or not _KEY_SEGMENT.match(value) or value in (".", ".."):
        raise UnsafeKey(f"{what} {value!r} is not allowed: use letters, digits and ._=+- only")
    if len(value) > MAX_SEGMENT_CHARS:
        raise UnsafeKey(f"{what} {value[:80]!r}... is too long: at most {MAX_SEGMENT_CHARS} characters")
    return value


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Tagged:
    """An object's bytes and the tag that :meth:`ObjectStore.replace_if` compares against."""

    data: bytes
    tag: str


@runtime_checkable
class ObjectStore(Protocol):
    """What every backend offers. Keys are checked with :func:`check_key`."""

    description: str

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo: ...
    def put_file(self, key: str, path: Path) -> ObjectInfo: ...
    def create_exclusive(self, key: str, data: bytes) -> bool: ...
    def read_tagged(self, key: str) -> Tagged: ...
    def replace_if(self, key: str, data: bytes, tag: str) -> bool: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, dest: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def modified(self, key: str) -> dt.datetime: ...  # when the object was last written (UTC)
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def uri(self, key: str) -> str: ...
    def check(self) -> None: ...


def browse_uri(store: ObjectStore, key: str) -> str:
    """A link a person can open for ``key``: the HTTP URL of an S3 object (a browser cannot open ``s3://``),
    the ``file://`` URI of a local one. Reports and Prefect artifacts link their evidence through it.

    Duck-typed on ``http_url`` rather than ``isinstance(store, MinioStore)``: ``s3.py`` imports this module,
    so naming the class here would close an import cycle; a proxy that forwards to a store links as it does.
    """
    http_url = getattr(store, "http_url", None)
    return http_url(key) if http_url else store.uri(key)


def get_verified(store: ObjectStore, key: str, expected_sha256: str) -> bytes:
    """Read ``key`` and verify it against ``expected_sha256``; raise IntegrityError on mismatch."""
    data = store.get_bytes(key)
    actual = sha256_bytes(data)
    if actual != expected_sha256:
        raise IntegrityError(
            f"{store.uri(key)} is corrupted or was tampered with: sha256 {actual} does not match the "
            f"recorded {expected_sha256}"
        )
    return data


def delete_prefix(store: ObjectStore, prefix: str) -> int:
    keys = store.list(prefix)
    for key in keys:
        store.delete(key)
    return len(keys)
