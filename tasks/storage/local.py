"""The local-directory backend, the embedded default: objects as files under ``MLCYCLE_HOME/store``.

Writes go to a temp file under ``.tmp/``, are fsynced and renamed into place (``os.replace``); exclusive
creates use ``os.link``, which fails when the key exists; a conditional replace compares the file's sha256
with the caller's tag and renames its new bytes into place under an exclusive ``flock`` on
``.tmp/conditional.lock`` (held for a read and a rename; the kernel releases it if the process dies). A
read-only or full disk is a transient :class:`~mlcycle.tasks.storage.base.StoreUnavailable`, as on S3 an
unreachable endpoint is.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlcycle.tasks.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    StoreError,
    StoreUnavailable,
    Tagged,
    check_key,
    check_object_key,
    sha256_bytes,
)

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

    @contextmanager
    def _conditional_lock(self) -> Iterator[None]:
        tmp = self.root / ".tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp / "conditional.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def read_tagged(self, key: str) -> Tagged:
        data = self.get_bytes(key)
        return Tagged(data, sha256_bytes(data))

    def replace_if(self, key: str, data: bytes, tag: str) -> bool:
        dest = self._path(key)
        with self._oserrors(key, "replace"), self._conditional_lock():
            try:
                current = dest.read_bytes()
            except FileNotFoundError:
                return False
            if sha256_bytes(current) != tag:
                return False  # it moved since it was read (even to the same bytes: another writer's)
            tmp = self._write_temp(data)
            try:
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            return True

    def get_bytes(self, key: str) -> bytes:
        with self._oserrors(key, "read"):
            return self._path(key).read_bytes()

    def download(self, key: str, dest: Path) -> None:
        with self._oserrors(key, "read"):
            data = self._path(key).read_bytes()
        Path(dest).write_bytes(data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def modified(self, key: str) -> dt.datetime:
        path = self._path(key)
        with self._oserrors(key, "stat"):
            try:
                return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
            except FileNotFoundError:
                raise ObjectNotFound(f"{self.uri(key)} does not exist (stat)") from None

    def stale_temporaries(self, older_than: dt.datetime) -> list[Path]:
        """Temporary files of writes that never finished (a killed process), older than ``older_than``. The
        conditional-write lock file is not one: deleting it under a holder would break its mutual exclusion."""
        tmp = self.root / ".tmp"
        if not tmp.is_dir():
            return []
        return sorted(p for p in tmp.iterdir() if p.is_file() and p.name != "conditional.lock"
                      and dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC) < older_than)

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
