"""Moving the champion alias: promote a version, roll back to the previous one, and the history of moves.

* **Atomic alias moves.** ``aliases/champion.json`` holds the champion *and* the previous champion, so
  both move in one object write; moves are serialised by a lock object (exclusive create; a lock older
  than two minutes is considered abandoned). :func:`promote` can insist that the champion is still the
  one the gate compared against (``expected_champion``), so a promotion never overrides a concurrent one
  by accident. :func:`rollback` swaps champion and previous (a second rollback undoes the first).
* **Verified targets.** A version becomes champion only after its metadata and model bytes pass their
  sha256 checks.
* **Every move is recorded** under ``aliases/history/`` (an :class:`~mlcycle.tasks.records.registry.AliasEvent`
  with its reason).

Reading the pointer (``read_alias``) and resolving ``champion`` / ``previous`` are in ``versions.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from mlcycle.tasks.lazy_task import NO_CACHE, task
from mlcycle.tasks.records.registry import AliasEvent, AliasPointer, AliasTarget
from mlcycle.tasks.registry.versions import (
    MODEL_FILE,
    ModelNotFound,
    Ref,
    RegistryError,
    alias_key,
    load_metadata,
    model_root,
    parse_version,
    read_alias,
    record_bytes,
    resolve,
)
from mlcycle.tasks.storage import ObjectNotFound, ObjectStore, get_verified, open_store

LOCK_STALE_SECONDS = 120.0

_ANY: Any = object()


class ChampionChanged(RegistryError):
    """The champion moved since the gate compared against it; the promotion was not made."""


def _lock_key(name: str) -> str:
    return f"{model_root(name)}aliases/champion.lock"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextmanager
def _alias_lock(store: ObjectStore, name: str, timeout: float = 30.0) -> Iterator[None]:
    key = _lock_key(name)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    while not store.create_exclusive(key, json.dumps({"token": token, "at": _now().isoformat()}).encode()):
        try:
            held_at = dt.datetime.fromisoformat(json.loads(store.get_bytes(key))["at"])
            age = (_now() - held_at).total_seconds()
        except ObjectNotFound:
            continue
        except (ValueError, KeyError, TypeError):
            age = float("inf")
        if age > LOCK_STALE_SECONDS:  # its holder died: break it
            store.delete(key)
            continue
        if time.monotonic() > deadline:
            raise RegistryError(f"the aliases of model {name!r} are locked by another promotion since "
                                f"{held_at:%Y-%m-%d %H:%M:%S} UTC ({store.uri(key)}); retry later")
        time.sleep(0.05)
    try:
        yield
    finally:
        with suppress(Exception):
            if json.loads(store.get_bytes(key)).get("token") == token:
                store.delete(key)


def _verified_target(store: ObjectStore, name: str, version: int) -> AliasTarget:
    """The target for an alias, after checking the version's metadata and model bytes are intact."""
    target = resolve(store, name, version)
    metadata = load_metadata(store, name, version)
    get_verified(store, metadata.artifacts[MODEL_FILE].key, metadata.model_sha256)
    return target


def _record(store: ObjectStore, event: AliasEvent) -> None:
    stamp = event.at.strftime("%Y%m%dT%H%M%S.%fZ")
    store.put_bytes(f"{model_root(event.name)}aliases/history/{stamp}-{uuid.uuid4().hex[:8]}.json", record_bytes(event))


def promote(store: ObjectStore, name: str, version: Ref, *, reason: str,
            expected_champion: int | None = _ANY) -> AliasPointer:
    """Make ``version`` the champion (the current one becomes previous), after verifying its files.

    With ``expected_champion`` (a version, or None for "no champion"), refuse with
    :class:`ChampionChanged` if the champion is no longer that one.
    """
    number = parse_version(version)
    with _alias_lock(store, name):
        current = read_alias(store, name)
        now_champion = current.version if current else None
        if expected_champion is not _ANY and now_champion != expected_champion:
            raise ChampionChanged(
                f"model {name!r}: the champion is now v{now_champion}, not v{expected_champion} as when the gate "
                f"compared v{number} against it; v{number} was not promoted (promote it by hand if wanted)")
        target = _verified_target(store, name, number)
        if current is not None and current.version == number:
            return current
        previous = AliasTarget(**current.model_dump(include=set(AliasTarget.model_fields))) if current else None
        pointer = AliasPointer(**target.model_dump(), set_at=_now(), reason=reason, previous=previous)
        store.put_bytes(alias_key(name), record_bytes(pointer))
    _record(store, AliasEvent(action="promote", name=name, from_version=now_champion, to_version=number,
                              reason=reason, at=pointer.set_at))
    return pointer


def rollback(store: ObjectStore, name: str, *, reason: str = "rollback") -> AliasPointer:
    """Champion back to previous; the demoted champion becomes previous (so rollback again undoes it)."""
    with _alias_lock(store, name):
        current = read_alias(store, name)
        if current is None or current.previous is None:
            raise ModelNotFound(f"model {name!r} has no previous champion to roll back to"
                                + ("" if current else " (nothing was promoted yet)"))
        target = _verified_target(store, name, current.previous.version)
        demoted = AliasTarget(**current.model_dump(include=set(AliasTarget.model_fields)))
        pointer = AliasPointer(**target.model_dump(), set_at=_now(), reason=reason, previous=demoted)
        store.put_bytes(alias_key(name), record_bytes(pointer))
    _record(store, AliasEvent(action="rollback", name=name, from_version=demoted.version, to_version=target.version,
                              reason=reason, at=pointer.set_at))
    return pointer


# --------------------------------------------------------------------------------------------------
# Prefect task: thin wrapper
# --------------------------------------------------------------------------------------------------


@task(name="promote-model", cache_policy=NO_CACHE)
def promote_task(settings, name: str, version: int, reason: str, expected_champion: int | None) -> AliasPointer:
    return promote(open_store(settings), name, version, reason=reason, expected_champion=expected_champion)
