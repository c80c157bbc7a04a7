"""The object store: one interface, two backends, and :func:`open_store` to pick the configured one.

``base.py`` holds the contract (the ``ObjectStore`` protocol, its errors, safe keys, sha256 helpers),
``local.py`` the ``LocalStore`` (the embedded default: files under ``MLCYCLE_HOME/store``), ``s3.py`` the
``MinioStore`` (S3 through the ``minio`` SDK, to MinIO or any S3 endpoint).

Clients live only here (the integration boundary); everything above takes an ``ObjectStore``. Every stage
imports from this face (``from mlcycle.tasks.storage import ObjectStore, open_store``), which re-exports
the public names of the three modules; they import one another directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlcycle.tasks.storage.base import (
    MAX_KEY_CHARS,
    MAX_SEGMENT_CHARS,
    ConditionalWritesUnsupported,
    IntegrityError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StoreAuthError,
    StoreError,
    StoreUnavailable,
    Tagged,
    UnsafeKey,
    browse_uri,
    check_key,
    check_object_key,
    check_segment,
    delete_prefix,
    get_verified,
    sha256_bytes,
    sha256_file,
)
from mlcycle.tasks.storage.local import LocalStore
from mlcycle.tasks.storage.s3 import MinioStore

if TYPE_CHECKING:
    from mlcycle.tasks.settings import Settings

__all__ = [
    "MAX_KEY_CHARS", "MAX_SEGMENT_CHARS", "ConditionalWritesUnsupported", "IntegrityError", "LocalStore", "MinioStore",
    "ObjectInfo", "ObjectNotFound", "ObjectStore", "StoreAuthError", "StoreError", "StoreUnavailable", "Tagged",
    "UnsafeKey", "browse_uri", "check_key",
    "check_object_key", "check_segment", "delete_prefix", "get_verified", "open_store", "sha256_bytes",
    "sha256_file",
]


def open_store(settings: Settings) -> ObjectStore:
    """The project's store: the backend the settings name (``MLCYCLE_STORE=local|minio``), its keys under
    the project's prefix (``Settings.store_scope``: a folder of the local store, a key prefix in S3)."""
    if settings.store == "local":
        return LocalStore(settings.store_root)
    return MinioStore.from_settings(settings, prefix=settings.store_scope)
