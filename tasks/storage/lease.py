"""Leases: one holder at a time for long work (a rollout), through the store's conditional writes only.

A lease is one small object holding its holder's ``token``, ``owner``, ``pid``, ``host``, the process's start
time and ``expires_at``. The rules, each a single conditional write (tasks/storage/base.py), so no schedule
of readers and writers can give it two holders:

* **acquire**: create-if-absent. When the object exists it is taken over only if it is released, expired,
  or held by a process of this host that is gone (its pid missing, or reused by a process started later),
  and only by a replace-if-unchanged on the exact bytes read: of two waiters that saw the same stale lease,
  exactly one replaces it; the other's write fails, it reads the winner's fresh lease and waits or refuses.
  (The lock files this replaces broke a stale lock by *deleting* it, so the second waiter deleted the first
  one's fresh lock and both held it.)
* **renew**: while the work runs, a thread extends ``expires_at`` every ``ttl / 3`` by replace-if-unchanged
  on the bytes it last wrote. The ttl is short (minutes) and independent of how long the work takes: a
  60-minute image build keeps renewing, and its lock no longer goes stale under it. If a renewal finds the
  object changed, someone took the lease over (the holder was frozen past its expiry): :attr:`Lease.lost` is
  set and :meth:`Lease.check`, called before anything is committed, raises :class:`LeaseLost`.
* **release**: replace-if-unchanged with a released record. A holder never deletes or overwrites a lease
  that is no longer its own (the old ``finally: delete`` removed the next holder's lock).

Expiry compares wall clocks of different hosts: the ttl must be far above their skew (NTP keeps it in
milliseconds; the defaults are minutes). A holder that dies stops renewing: its lease is free after the ttl,
at once for a waiter on the same host that sees the process gone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from mlcycle.tasks.storage.base import ObjectNotFound, ObjectStore, StoreError, Tagged


class LeaseHeld(StoreError):
    """Another live holder has the lease."""


class LeaseLost(StoreError):
    """The lease was taken over while its holder was working (it could not renew in time)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _process_started(pid: int) -> float | None:
    """The start time of process ``pid`` on this host, None when there is no such (live) process."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


@dataclass
class Lease:
    """A held lease; ``lost`` is set by the renewal thread if another holder took it over."""

    store: ObjectStore
    key: str
    owner: str
    token: str
    ttl_seconds: float
    tag: str
    lost: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the lease is no longer this holder's (call before committing)."""
        if self.lost.is_set():
            raise LeaseLost(f"{self.store.uri(self.key)}: the lease of {self.owner!r} was taken over by another "
                            "holder while it worked (it could not renew within its ttl); nothing was committed")

    def record(self, *, released: bool = False) -> bytes:
        now = _now()
        return json.dumps({
            "token": self.token, "owner": self.owner, "pid": os.getpid(), "host": socket.gethostname(),
            "process_started": _process_started(os.getpid()), "renewed_at": now.isoformat(),
            "expires_at": (now if released else now + dt.timedelta(seconds=self.ttl_seconds)).isoformat(),
            "released": released,
        }, indent=1).encode()


def describe(held: dict) -> str:
    """The holder of a lease record, for an error message."""
    return (f"{held.get('owner')!r} (pid {held.get('pid')} on {held.get('host')}, lease until "
            f"{held.get('expires_at')})")


def is_free(held: dict, now: dt.datetime) -> bool:
    """Released, expired, unreadable, or held by a process of this host that is gone."""
    try:
        if held.get("released") or dt.datetime.fromisoformat(held["expires_at"]) <= now:
            return True
    except (KeyError, TypeError, ValueError):
        return True  # not a lease record: nobody can be holding it
    if held.get("host") == socket.gethostname():
        started = _process_started(int(held.get("pid") or 0))
        recorded = held.get("process_started")
        if started is None or (recorded is not None and abs(started - float(recorded)) > 1.0):
            return True
    return False


def _read(store: ObjectStore, key: str) -> tuple[Tagged, dict] | None:
    try:
        seen = store.read_tagged(key)
    except ObjectNotFound:
        return None
    try:
        held = json.loads(seen.data)
    except ValueError:
        held = {}
    return seen, held if isinstance(held, dict) else {}


def _confirm(lease: Lease, written: bytes) -> bool:
    """After a successful write: the tag of our bytes (read back), False if they are already replaced."""
    found = _read(lease.store, lease.key)
    if found is None or found[0].data != written:
        return False
    lease.tag = found[0].tag
    return True


def acquire(store: ObjectStore, key: str, owner: str, *, ttl_seconds: float, wait_seconds: float = 0.0,
            poll_seconds: float = 0.2) -> Lease:
    """Take the lease at ``key`` (waiting up to ``wait_seconds`` for a live holder), or raise :class:`LeaseHeld`."""
    lease = Lease(store=store, key=key, owner=owner, token=uuid.uuid4().hex, ttl_seconds=ttl_seconds, tag="")
    deadline = time.monotonic() + wait_seconds
    while True:
        mine = lease.record()
        found = _read(store, key)
        if found is None:
            if store.create_exclusive(key, mine) and _confirm(lease, mine):
                return lease
            continue  # another waiter created it first: read it and decide again
        seen, held = found
        if is_free(held, _now()):
            if store.replace_if(key, mine, seen.tag) and _confirm(lease, mine):
                return lease
            continue  # another waiter took it over first
        if time.monotonic() >= deadline:
            raise LeaseHeld(f"{store.uri(key)} is held by {describe(held)}; wait for it to finish")
        time.sleep(poll_seconds)


def renew(lease: Lease) -> bool:
    """Extend the lease by its ttl; False (and ``lost`` set) if it is no longer this holder's."""
    mine = lease.record()
    if lease.store.replace_if(lease.key, mine, lease.tag) and _confirm(lease, mine):
        return True
    lease.lost.set()
    return False


def release(lease: Lease) -> None:
    """Mark the lease released, only if it is still this holder's."""
    if not lease.lost.is_set():
        lease.store.replace_if(lease.key, lease.record(released=True), lease.tag)


@contextmanager
def leased(store: ObjectStore, key: str, owner: str, *, ttl_seconds: float,
           wait_seconds: float = 0.0) -> Iterator[Lease]:
    """Hold the lease for the block, renewed every ``ttl / 3`` in the background, released after it."""
    lease = acquire(store, key, owner, ttl_seconds=ttl_seconds, wait_seconds=wait_seconds)
    stop = threading.Event()

    def keep_renewing() -> None:
        while not stop.wait(ttl_seconds / 3):
            try:
                if not renew(lease):
                    return
            except StoreError:  # transient: the next tick tries again, well within the ttl
                continue

    thread = threading.Thread(target=keep_renewing, name=f"lease-{key}", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(StoreError):  # it expires after its ttl anyway
            release(lease)
