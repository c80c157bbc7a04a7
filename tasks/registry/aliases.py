"""Moving the champion alias: promote a version, roll back to the previous one, and the history of moves.

* **Atomic alias moves, no lock.** ``aliases/champion.json`` holds the champion *and* the previous
  champion, so both move in one object write, and that write is conditional (tasks/storage/base.py): the
  pointer is read with its tag, the move decided on what was read, and written only if the pointer is
  still those bytes (create-if-absent for the first promotion); if another move landed in between, the
  move is decided again on the new pointer. No lock object, so nothing to go stale or to be broken twice.
  :func:`promote` can insist that the champion is still the one the gate compared against
  (``expected_champion``), so a promotion never overrides a concurrent one by accident; re-deciding after a
  lost race re-checks it. :func:`rollback` swaps champion and previous (a second rollback undoes the first).
* **Verified targets.** A version becomes champion only after its metadata and model bytes pass their
  sha256 checks.
* **Every move is recorded** under ``aliases/history/`` (an :class:`~mlcycle.tasks.records.registry.AliasEvent`
  with its reason).

Reading the pointer (``read_alias``) and resolving ``champion`` / ``previous`` are in ``versions.py``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

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
    read_alias,  # noqa: F401 - re-exported: callers read the pointer where they move it
    record_bytes,
    resolve,
)
from mlcycle.tasks.storage import IntegrityError, ObjectNotFound, ObjectStore, get_verified, open_store

MAX_MOVE_ATTEMPTS = 50  # re-decisions after lost races before a move gives up (contention, not a fault)

_ANY: Any = object()


class ChampionChanged(RegistryError):
    """The champion moved since the gate compared against it; the promotion was not made."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _move(store: ObjectStore, name: str,
          decide: Callable[[AliasPointer | None], AliasPointer | None],
          ) -> tuple[AliasPointer | None, AliasPointer | None]:
    """Move the champion pointer by one conditional write: ``decide`` gets the pointer as read and returns the
    new one (None: nothing to move); re-decided on the new pointer whenever another move landed first.
    Returns (the pointer decided on, the pointer now stored)."""
    key = alias_key(name)
    for _ in range(MAX_MOVE_ATTEMPTS):
        try:
            seen = store.read_tagged(key)
        except ObjectNotFound:
            seen = None
        current = None if seen is None else _parse_pointer(store, key, seen.data)
        pointer = decide(current)
        if pointer is None:
            return current, current
        data = record_bytes(pointer)
        if store.create_exclusive(key, data) if seen is None else store.replace_if(key, data, seen.tag):
            return current, pointer
    raise RegistryError(f"model {name!r}: the champion pointer {store.uri(key)} moved {MAX_MOVE_ATTEMPTS} times "
                        "while this move was decided; retry")


def _parse_pointer(store: ObjectStore, key: str, data: bytes) -> AliasPointer:
    try:
        return AliasPointer.model_validate_json(data)
    except ValidationError:
        raise IntegrityError(f"{store.uri(key)} is corrupted: not an alias pointer") from None


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
    target = _verified_target(store, name, number)  # a sealed version's bytes never change: checked once

    def decide(current: AliasPointer | None) -> AliasPointer | None:
        now_champion = current.version if current else None
        if expected_champion is not _ANY and now_champion != expected_champion:
            raise ChampionChanged(
                f"model {name!r}: the champion is now v{now_champion}, not v{expected_champion} as when the gate "
                f"compared v{number} against it; v{number} was not promoted (promote it by hand if wanted)")
        if current is not None and current.version == number:
            return None
        previous = AliasTarget(**current.model_dump(include=set(AliasTarget.model_fields))) if current else None
        return AliasPointer(**target.model_dump(), set_at=_now(), reason=reason, previous=previous)

    before, pointer = _move(store, name, decide)
    if pointer is not before:
        _record(store, AliasEvent(action="promote", name=name, from_version=before.version if before else None,
                                  to_version=number, reason=reason, at=pointer.set_at))
    return pointer


def rollback(store: ObjectStore, name: str, *, reason: str = "rollback") -> AliasPointer:
    """Champion back to previous; the demoted champion becomes previous (so rollback again undoes it)."""

    def decide(current: AliasPointer | None) -> AliasPointer:
        if current is None or current.previous is None:
            raise ModelNotFound(f"model {name!r} has no previous champion to roll back to"
                                + ("" if current else " (nothing was promoted yet)"))
        target = _verified_target(store, name, current.previous.version)
        demoted = AliasTarget(**current.model_dump(include=set(AliasTarget.model_fields)))
        return AliasPointer(**target.model_dump(), set_at=_now(), reason=reason, previous=demoted)

    before, pointer = _move(store, name, decide)
    _record(store, AliasEvent(action="rollback", name=name, from_version=before.version, to_version=pointer.version,
                              reason=reason, at=pointer.set_at))
    return pointer


# --------------------------------------------------------------------------------------------------
# Prefect task: thin wrapper
# --------------------------------------------------------------------------------------------------


@task(name="promote-model", cache_policy=NO_CACHE)
def promote_task(settings, name: str, version: int, reason: str, expected_champion: int | None) -> AliasPointer:
    return promote(open_store(settings), name, version, reason=reason, expected_champion=expected_champion)
