"""Leases on both backends (local directory, S3 over HTTP): the schedules that gave the old lock files two
holders, replayed against tasks/storage/lease.py.

* two (eight) waiters see the same stale lock: the old code had each delete it and create its own, so the
  second deleted the first one's fresh lock; with a lease exactly one takes it over;
* a holder working past the stale age (a slow image build): the old lock went stale under it and its
  ``finally`` deleted the next holder's lock; a lease is renewed, and a release never touches another's;
* a holder killed with SIGKILL: its lease is free at once on the same host, after the ttl elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mlcycle.tasks.storage.lease import LeaseHeld, LeaseLost, acquire, leased, release, renew
from tests.support.concurrency import at_once
from tests.support.env import ROOT

KEY = "deployments/lock"


def stale_record(owner: str = "crashed") -> bytes:
    return json.dumps({"token": "old", "owner": owner, "pid": 1, "host": "elsewhere",
                       "expires_at": "2026-01-01T00:00:00+00:00", "released": False}).encode()


def holder(store) -> dict:
    return json.loads(store.get_bytes(KEY))


def test_of_eight_waiters_on_one_stale_lease_exactly_one_takes_it(store):
    store.put_bytes(KEY, stale_record())
    won, errors = at_once(8, lambda i: acquire(store, KEY, f"waiter {i}", ttl_seconds=60))
    refused = [str(exc) for exc in errors if isinstance(exc, LeaseHeld)]
    assert len(won) == 1 and len(refused) == 7
    assert holder(store)["owner"] == won[0].owner and holder(store)["token"] == won[0].token
    assert all(won[0].owner in message for message in refused)  # each refusal names who holds it


def test_work_longer_than_the_ttl_keeps_its_lease_and_a_waiter_is_refused(store):
    with leased(store, KEY, "slow build", ttl_seconds=3) as lease:
        first_expiry = holder(store)["expires_at"]
        time.sleep(4.5)  # past the ttl: the lease is renewed in the background every second
        with pytest.raises(LeaseHeld, match="slow build"):
            acquire(store, KEY, "next", ttl_seconds=3)
        assert holder(store)["token"] == lease.token and holder(store)["expires_at"] > first_expiry
        lease.check()  # still ours: nothing raised
    assert holder(store)["released"] is True
    acquire(store, KEY, "next", ttl_seconds=3)  # free once released


def test_a_holder_frozen_past_its_ttl_loses_the_lease_and_cannot_undo_the_next_one(store):
    frozen = acquire(store, KEY, "frozen", ttl_seconds=3)  # no renewal thread: as if the process stalled
    store.put_bytes(KEY, stale_record("frozen, expired"))  # its lease expired (time travel, not a sleep)
    successor = acquire(store, KEY, "successor", ttl_seconds=60)
    assert renew(frozen) is False and frozen.lost.is_set()
    with pytest.raises(LeaseLost, match="taken over"):
        frozen.check()
    release(frozen)  # the old `finally: delete` removed the next holder's lock here
    assert holder(store)["token"] == successor.token and holder(store)["released"] is False


def test_a_record_that_is_not_a_lease_is_taken_over(store):
    store.put_bytes(KEY, b"not json at all")
    lease = acquire(store, KEY, "next", ttl_seconds=60)
    assert holder(store)["token"] == lease.token


def test_a_pid_reused_by_a_later_process_does_not_hold_the_lease(store):
    """The record names this test's own pid, but a process start time that is not this process's."""
    record = json.loads(acquire(store, KEY, "reused", ttl_seconds=600).record())
    record["process_started"] -= 3600
    store.put_bytes(KEY, json.dumps(record).encode())
    assert holder(store)["host"] == socket.gethostname()
    acquire(store, KEY, "next", ttl_seconds=60)


HOLD = """
import sys, time
from mlcycle.tasks.settings import load_settings
from mlcycle.tasks.storage import open_store
from mlcycle.tasks.storage.lease import leased
settings = load_settings()
with leased(open_store(settings), "deployments/lock", "killed rollout", ttl_seconds=600):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_holder_killed_with_sigkill_frees_the_lease_at_once_on_its_host(store, backend_settings, tmp_path):
    env = {**os.environ, "MLCYCLE_HOME": str(backend_settings.home), "MLCYCLE_STORE": backend_settings.store}
    if backend_settings.store == "minio":
        env.update({"MLCYCLE_S3_ENDPOINT": backend_settings.s3_endpoint,
                    "MLCYCLE_S3_BUCKET": backend_settings.s3_bucket,
                    "MLCYCLE_S3_ACCESS_KEY": backend_settings.s3_access_key.get_secret_value(),
                    "MLCYCLE_S3_SECRET_KEY": backend_settings.s3_secret_key.get_secret_value()})
    child = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeld, match="killed rollout"):
            acquire(store, KEY, "next", ttl_seconds=60)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        lease = acquire(store, KEY, "next", ttl_seconds=60)  # 10 minutes of ttl left, yet free: its pid is gone
        assert holder(store)["token"] == lease.token
    finally:
        child.kill()
