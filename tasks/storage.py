"""The object store: one interface, two backends.

``LocalStore`` (the embedded default) keeps objects as files under ``MLCYCLE_HOME/store``;
``MinioStore`` talks S3 through the ``minio`` SDK to MinIO or any S3 endpoint.

Contract shared by both backends (and tested identically against each, the MinIO one over HTTP):

* **Atomic objects.** A reader sees a whole object or none: the local store writes a temp file under
  ``.tmp/``, fsyncs it and ``os.replace``-s it into place; on S3 a PUT (single or multipart) becomes
  visible only when complete. Multi-object units (a partition, a model version) additionally write
  their manifest last, so a crash leaves no unit visible (see ``tasks.partitions``).
* **Exclusive create.** :meth:`ObjectStore.create_exclusive` writes a key only if it does not exist
  (``os.link`` locally, ``If-None-Match: *`` on S3): the primitive behind never-repeating versions.
* **Safe keys.** Keys are relative, ``/``-separated, from a small alphabet; ``..``, absolute paths,
  backslashes and control characters are refused before any I/O (:func:`check_key`).
* **Errors that say what to do.** Every backend error becomes a :class:`StoreError` subclass naming
  the store and key: :class:`StoreUnavailable` (transient: unreachable, timeout, 5xx, read-only
  directory; Prefect retries these), :class:`StoreAuthError` (wrong credentials; never retried),
  :class:`ObjectNotFound`, and :class:`IntegrityError` for checksum mismatches.

Clients live only here (the integration boundary); everything above takes an ``ObjectStore``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mlcycle.tasks.settings import Settings


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


@runtime_checkable
class ObjectStore(Protocol):
    """What every backend offers. Keys are checked with :func:`check_key`."""

    description: str

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo: ...
    def put_file(self, key: str, path: Path) -> ObjectInfo: ...
    def create_exclusive(self, key: str, data: bytes) -> bool: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, dest: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def uri(self, key: str) -> str: ...
    def check(self) -> None: ...


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


# --------------------------------------------------------------------------------------------------
# Local directory backend
# --------------------------------------------------------------------------------------------------

_TRANSIENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EIO, errno.EDQUOT}


class LocalStore:
    """Objects as files under ``root``; temp files live in ``root/.tmp`` and are never listed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.description = f"local store at {self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_object_key(key)

    @contextmanager
    def _oserrors(self, key: str, action: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{self.uri(key)} does not exist ({action})") from exc
        except OSError as exc:
            cls = StoreUnavailable if exc.errno in _TRANSIENT_ERRNOS else StoreError
            raise cls(f"{self.description}: cannot {action} {key!r}: {exc.strerror or exc}") from exc

    def _temp_path(self) -> Path:
        tmp = self.root / ".tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{uuid.uuid4().hex}.part"

    def _write_temp(self, data: bytes) -> Path:
        tmp = self._temp_path()
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        dest = self._path(key)
        with self._oserrors(key, "write"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._write_temp(data)
            try:
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
        return ObjectInfo(key, len(data), sha256_bytes(data))

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        dest = self._path(key)
        h = hashlib.sha256()
        size = 0
        with self._oserrors(key, "write"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._temp_path()
            try:
                with open(path, "rb") as src, open(tmp, "wb") as out:
                    while block := src.read(1 << 20):
                        h.update(block)
                        size += len(block)
                        out.write(block)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
        return ObjectInfo(key, size, h.hexdigest())

    def create_exclusive(self, key: str, data: bytes) -> bool:
        dest = self._path(key)
        with self._oserrors(key, "create"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._write_temp(data)
            try:
                os.link(tmp, dest)  # atomic, fails if dest exists: complete content or nothing
                return True
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        with self._oserrors(key, "read"):
            return self._path(key).read_bytes()

    def download(self, key: str, dest: Path) -> None:
        with self._oserrors(key, "read"):
            data = self._path(key).read_bytes()
        Path(dest).write_bytes(data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if prefix:
            check_key(prefix)
        base = self.root / prefix if prefix.endswith("/") or not prefix else (self.root / prefix).parent
        if not base.is_dir():
            return []
        keys = []
        with self._oserrors(prefix, "list"):
            for dirpath, dirnames, filenames in os.walk(base):
                if Path(dirpath) == self.root:
                    dirnames[:] = [d for d in dirnames if d != ".tmp"]
                for name in filenames:
                    key = Path(dirpath, name).relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        with self._oserrors(key, "delete"):
            self._path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        from urllib.parse import quote

        # '=' and '+' are legal in a URI path: errors name date=2026-10-04/..., not date%3D2026-10-04/...
        return "file://" + quote(str(self.root / key), safe="/=+-._~")

    def check(self) -> None:
        with self._oserrors(".tmp", "write"):
            self.root.mkdir(parents=True, exist_ok=True)
            self._write_temp(b"").unlink()


# --------------------------------------------------------------------------------------------------
# S3 backend (MinIO in production, moto's S3 server in tests)
# --------------------------------------------------------------------------------------------------

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
               "ExpiredToken", "AuthorizationHeaderMalformed"}
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                    "XMinioServerNotInitialized"}


class MinioStore:
    """Objects in an S3 bucket through the ``minio`` SDK; the bucket is created on first use."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        timeout_seconds: float = 10.0,
        prefix: str = "",
    ) -> None:
        import urllib3
        from minio import Minio

        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.scheme = "https" if secure else "http"
        self.description = f"S3 bucket {bucket!r} at {self.scheme}://{endpoint}"
        # Fail fast: two quick urllib3 retries on connection errors and 5xx (as the AWS SDKs do);
        # Prefect owns the real retry policy with backoff.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout_seconds, 5.0), read=timeout_seconds),
            maxsize=16,
            retries=urllib3.Retry(total=2, backoff_factor=0.1, status_forcelist=[500, 502, 503, 504],
                                  raise_on_status=False),
        )
        self._client = Minio(
            endpoint, access_key=access_key or None, secret_key=secret_key or None,
            secure=secure, region=region, http_client=http,
        )
        self._bucket_ready = False

    def _k(self, key: str) -> str:
        return self.prefix + check_object_key(key)

    @contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        import urllib3.exceptions
        from minio.error import InvalidResponseError, S3Error, ServerError

        where = f"{self.description}: cannot {action} {key!r}"
        try:
            yield
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectNotFound(f"{self.uri(key)} does not exist ({action})") from None
            if exc.code in _AUTH_CODES:
                raise StoreAuthError(
                    f"{where}: credentials rejected ({exc.code}); check MLCYCLE_S3_ACCESS_KEY and "
                    "MLCYCLE_S3_SECRET_KEY"
                ) from None
            if exc.code == "NoSuchBucket":  # nothing was ever written there
                raise ObjectNotFound(f"{self.uri(key)} does not exist: bucket {self.bucket!r} does not exist "
                                     f"({action})") from None
            if exc.code in _TRANSIENT_CODES:
                raise StoreUnavailable(f"{where}: {exc.code} {exc.message}") from None
            raise StoreError(f"{where}: {exc.code} {exc.message}") from None
        except ServerError as exc:
            raise StoreUnavailable(f"{where}: server error HTTP {exc.status_code}") from None
        except InvalidResponseError as exc:
            if getattr(exc, "_code", 0) >= 500:
                raise StoreUnavailable(f"{where}: server error HTTP {exc._code}") from None
            raise StoreError(
                f"{where}: the endpoint did not answer like S3 (is MLCYCLE_S3_ENDPOINT right?): "
                f"{str(exc)[:200]}"
            ) from None
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise StoreUnavailable(f"{where}: endpoint unreachable: {str(reason)[:200]}") from None

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._errors("", "create bucket"):
            if not self._client.bucket_exists(self.bucket):
                from minio.error import S3Error

                try:
                    self._client.make_bucket(self.bucket)
                except S3Error as exc:  # another writer created it first
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        self._bucket_ready = True

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        k = self._k(key)
        self._ensure_bucket()
        digest = sha256_bytes(data)
        with self._errors(key, "write"):
            self._client.put_object(self.bucket, k, io.BytesIO(data), len(data),
                                    metadata={"sha256": digest})
        return ObjectInfo(key, len(data), digest)

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        k = self._k(key)
        self._ensure_bucket()
        digest = sha256_file(path)
        size = Path(path).stat().st_size
        with self._errors(key, "write"):
            self._client.fput_object(self.bucket, k, str(path), metadata={"sha256": digest})
        return ObjectInfo(key, size, digest)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        from minio.error import S3Error

        k = self._k(key)
        self._ensure_bucket()
        with self._errors(key, "create"):
            try:
                # The public put_object() turns unknown headers into x-amz-meta-*; the conditional
                # write needs the raw header, so call the SDK's PutObject primitive (minio 7.2.x).
                self._client._put_object(
                    self.bucket, k, data,
                    headers={"If-None-Match": "*", "Content-Type": "application/octet-stream"},
                )
                return True
            except S3Error as exc:
                if exc.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return False
                raise

    def get_bytes(self, key: str) -> bytes:
        k = self._k(key)
        with self._errors(key, "read"):
            response = self._client.get_object(self.bucket, k)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def download(self, key: str, dest: Path) -> None:
        k = self._k(key)
        with self._errors(key, "read"):
            self._client.fget_object(self.bucket, k, str(dest))

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        k = self._k(key)
        with self._errors(key, "stat"):
            try:
                self._client.stat_object(self.bucket, k)
                return True
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"):
                    return False
                raise

    def list(self, prefix: str = "") -> list[str]:
        if prefix:
            check_key(prefix)
        with self._errors(prefix, "list"):
            if not self._client.bucket_exists(self.bucket):
                return []
            names = [
                o.object_name
                for o in self._client.list_objects(self.bucket, prefix=self.prefix + prefix, recursive=True)
            ]
        return sorted(n[len(self.prefix):] for n in names if n and not n.endswith("/"))

    def delete(self, key: str) -> None:
        k = self._k(key)
        with self._errors(key, "delete"):
            self._client.remove_object(self.bucket, k)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def http_url(self, key: str) -> str:
        return f"{self.scheme}://{self.endpoint}/{self.bucket}/{self.prefix}{key}"

    def check(self) -> None:
        self._ensure_bucket()


def open_store(settings: Settings) -> ObjectStore:
    """The store the settings name (``MLCYCLE_STORE=local|minio``)."""
    if settings.store == "local":
        return LocalStore(settings.store_root)
    return MinioStore(
        settings.s3_endpoint,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
        settings.s3_bucket,
        secure=settings.s3_secure,
        region=settings.s3_region,
        timeout_seconds=settings.s3_timeout_seconds,
    )
