"""Fault injection for the faults suite: real outages at precise points, and store fingerprints.

Every fault here is real; only its *timing* is arranged by the tests:

* **S3 outage**: moto's S3 server (``s3_server`` of tests/conftest.py) is stopped, so the ``minio`` SDK
  gets connection refused; ``restore()`` starts it again on the same port with its objects.
* **Local store outage**: the store root becomes a read-only bind mount (``mount --bind`` then
  ``mount -o remount,ro,bind``), so every write fails with EROFS *for root too* (we run as root, so
  ``chmod`` would not stop anything); where mounting is not permitted, ``chattr -R +i`` (immutable),
  which stops root with EPERM. Reads keep working in both, as on a disk remounted read-only.
* **When**: :class:`OutageAt` wraps the store a flow opens and brings the outage up right after the
  write of a chosen key succeeded (the "Nth call" of the brief), so the *next* store call is the first
  to meet the dead server or the read-only disk.

:func:`store_fingerprint` is how "the store equals a clean run" is asserted: every key with a digest
of its bytes, after removing what legitimately differs between two clean runs of the same input
(measured by diffing two clean ingests of one date): the run's id and wall-clock times
(``flow_run_id``, ``ingested_at``, ``validated_at`` and the ``manifest_sha256`` that covers them),
Great Expectations' random ids and run times inside ``result.json``/``outcome.json``, and the store's
own location inside ``docs_uri``. Data Docs HTML pages are compared by key only (GX stamps them with
the build time). Data files, models and everything else are compared byte for byte. A leftover
object from an interrupted attempt shows up as an extra key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.env import S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, settings_env, unavailable

# --------------------------------------------------------------------------------------------------
# environment for flows (they read get_settings(), i.e. MLCYCLE_* variables)
# --------------------------------------------------------------------------------------------------

FAST_FLOW_ENV = {
    "SIMULATOR__ROWS_PER_DAY": "300",
    "TRAINING__FAMILY": "logistic_regression",
    "TRAINING__N_ITER": "2",
    "TRAINING__N_JOBS": "1",
    "TRAINING__WINDOW_DAYS": "8",
    "GATE__BOOTSTRAP_SAMPLES": "300",
    **{f"RETRIES__{stage}__DELAY_SECONDS": "0.2" for stage in ("INGEST", "TRAINING", "PACKAGING", "MONITORING")},
}


def s3_env(server: S3Server, bucket: str | None = None) -> dict[str, str]:
    return {"STORE": "minio", "S3_ENDPOINT": server.endpoint, "S3_ACCESS_KEY": S3_ACCESS_KEY,
            "S3_SECRET_KEY": S3_SECRET_KEY, "S3_BUCKET": bucket or f"f-{uuid.uuid4().hex[:12]}",
            "S3_TIMEOUT_SECONDS": "3"}


@contextmanager
def flow_settings(home: Path, **env: str) -> Iterator:
    """``get_settings()`` on ``home`` with MLCYCLE_* overrides (fast defaults), restored afterwards."""
    values = {"MLCYCLE_HOME": str(home), **{f"MLCYCLE_{k.upper()}": str(v) for k, v in
                                            {**FAST_FLOW_ENV, **env}.items()}}
    with settings_env(values) as settings:
        yield settings


# --------------------------------------------------------------------------------------------------
# outages
# --------------------------------------------------------------------------------------------------


class Outage:
    """A real outage of one store backend: ``begin()`` takes it down, ``restore()`` brings it back."""

    def __init__(self, settings, s3_server: S3Server | None) -> None:
        self.settings = settings
        self.s3_server = s3_server
        self.root = Path(settings.store_root)
        self.how: str | None = None
        self.injections = 0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.how is not None

    def begin(self) -> None:
        with self._lock:
            if self.how is not None:
                return
            self.injections += 1
            if self.settings.store == "minio":
                self.s3_server.stop()
                self.how = "s3-stopped"
            else:
                self.root.mkdir(parents=True, exist_ok=True)
                self.how = make_read_only(self.root)

    def restore(self) -> None:
        with self._lock:
            if self.how is None:
                return
            if self.how == "s3-stopped":
                self.s3_server.start()
            else:
                undo_read_only(self.root, self.how)
            self.how = None

    def restore_after(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self.restore)
        timer.daemon = True
        timer.start()
        return timer


def make_read_only(path: Path) -> str:
    """Make ``path`` unwritable even for root; returns how (for :func:`undo_read_only`)."""
    bind = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
    if bind.returncode == 0:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True, text=True)
        if ro.returncode == 0:
            return "ro-bind-mount"
        subprocess.run(["umount", str(path)], check=False)
    immutable = subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True, text=True)
    if immutable.returncode == 0:
        return "chattr-immutable"
    unavailable(f"cannot make {path} read-only for root here: mount said {bind.stderr.strip()!r}, chattr said "
                f"{immutable.stderr.strip()!r}")


def undo_read_only(path: Path, how: str) -> None:
    if how == "ro-bind-mount":
        for _ in range(50):  # a writer may hold the mount busy for a moment
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        subprocess.run(["umount", "-l", str(path)], check=True)
    elif how == "chattr-immutable":
        subprocess.run(["chattr", "-R", "-i", str(path)], check=True)


class OutageAt:
    """A store proxy that brings ``outage`` up right after a write whose key matches ``pattern``.

    The write itself succeeds (it is the last one before the fault); the proxy forwards every call
    unchanged, so the calls after it meet the real outage. Fires once per ``fired_on`` list, which
    every proxy of one run shares (each task opens its own store).
    """

    def __init__(self, inner, pattern: str, outage: Outage, fired_on: list[str],
                 restore_after: float | None = None) -> None:
        self.inner, self.pattern, self.outage = inner, re.compile(pattern), outage
        self.fired_on, self.restore_seconds = fired_on, restore_after

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _after(self, key: str) -> None:
        if not self.fired_on and self.pattern.search(key):
            self.fired_on.append(key)
            self.outage.begin()
            if self.restore_seconds is not None:
                self.outage.restore_after(self.restore_seconds)

    def put_bytes(self, key, data):
        info = self.inner.put_bytes(key, data)
        self._after(key)
        return info

    def put_file(self, key, path):
        info = self.inner.put_file(key, path)
        self._after(key)
        return info


@contextmanager
def outage_after_write(monkeypatch, outage: Outage, pattern: str, restore_after: float | None = None
                       ) -> Iterator[list[str]]:
    """Stores the flows open (``open_store``) bring ``outage`` up after the first write matching ``pattern``.

    Yields the list of keys it fired on (one at most), to assert the fault really happened.
    """
    from mlcycle.tasks import storage

    real_open = storage.open_store
    fired_on: list[str] = []

    def open_store(settings):
        return OutageAt(real_open(settings), pattern, outage, fired_on, restore_after)

    with monkeypatch.context() as m:
        for name, module in list(sys.modules.items()):
            if name.startswith("mlcycle.") and getattr(module, "open_store", None) is real_open:
                m.setattr(module, "open_store", open_store)
        yield fired_on


# --------------------------------------------------------------------------------------------------
# fingerprints
# --------------------------------------------------------------------------------------------------

# What differs between two clean runs of the same input: run ids, wall-clock times and durations, the
# hashes that cover them (a manifest's own checksum; a version's metadata.json hash in its seal and
# alias), the store's location in links, and which attempt of a registration sealed it (attempt-<k>/).
VOLATILE_FIELDS = {"flow_run_id", "ingested_at", "validated_at", "manifest_sha256", "docs_uri", "seconds",
                   "metadata_sha256", "report_uri"}
_RUN_STAMP = re.compile(r"\d{8}T\d{6}\.\d+Z(-[0-9a-f]{8})?")
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}| UTC)?")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


_ATTEMPT = re.compile(r"/attempt-\d+/")  # the folder a retried registration writes (tasks/registry/versions.py)


def _normalize_text(text: str) -> str:
    return _ATTEMPT.sub("/", _UUID.sub("<uuid>", _ISO_TIME.sub("<time>", _RUN_STAMP.sub("<run-time>", text))))


def _drop_volatile(value):
    if isinstance(value, dict):
        return {k: _drop_volatile(v) for k, v in value.items() if k not in VOLATILE_FIELDS}
    if isinstance(value, list):
        return [_drop_volatile(v) for v in value]
    return value


def object_digest(key: str, data: bytes) -> str:
    if "/docs/" in key and key.endswith(".html"):
        return "html page (build time inside)"
    if key.endswith(".json"):
        try:
            parsed = json.loads(data)
        except ValueError:
            return "invalid json " + hashlib.sha256(data).hexdigest()
        text = json.dumps(_drop_volatile(parsed), sort_keys=True)
        return "json " + hashlib.sha256(_normalize_text(text).encode()).hexdigest()
    return hashlib.sha256(data).hexdigest()


def store_fingerprint(store, prefix: str = "", exclude: Callable[[str], bool] = lambda key: False
                      ) -> list[tuple[str, str]]:
    """Sorted (normalized key, digest) of every object; a duplicate left by a failed attempt stays visible."""
    return sorted((_normalize_text(k), object_digest(k, store.get_bytes(k)))
                  for k in store.list(prefix) if not exclude(k))


def diff_fingerprints(a: list[tuple[str, str]], b: list[tuple[str, str]]) -> str:
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    return f"only in the first: {only_a}\nonly in the second: {only_b}"


# --------------------------------------------------------------------------------------------------
# Prefect helpers
# --------------------------------------------------------------------------------------------------


def task_runs_of(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def retried_tasks(flow_run_id) -> dict[str, int]:
    """Task name -> run count, for the tasks of a flow run that ran more than once (retries)."""
    return {t.name: t.run_count for t in task_runs_of(flow_run_id) if t.run_count > 1}


def copy_store(source, target) -> int:
    """Copy every object of one store into another (e.g. a local template into an S3 bucket)."""
    keys = source.list("")
    for key in keys:
        target.put_bytes(key, source.get_bytes(key))
    return len(keys)


def seed_store(template: Path, settings) -> None:
    """The validated template of tests/support/training.py in the store ``settings`` name."""
    from mlcycle.tasks.storage import LocalStore, open_store

    if settings.store == "local":
        shutil.copytree(template, settings.store_root)
    else:
        copy_store(LocalStore(template), open_store(settings))


CLEAN_DAY = "2026-10-02"


def utc(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
