"""Child processes for the registry stress test (tests/test_registry_stress.py): real, separate interpreters
(``spawn``) on one store, each opening its own store client from the settings it is given."""

from __future__ import annotations

import random
from pathlib import Path

NAME = "loans-default"


def open_shared_store(home: str, overrides: dict):
    from pydantic import SecretStr

    from mlcycle.tasks.storage import open_store
    from tests.support.env import make_settings

    secret = {k: SecretStr(v) for k, v in overrides.items() if k.endswith("_key")}
    settings = make_settings(Path(home), **{**overrides, **secret})
    return settings, open_store(settings)


def reachable_hashes(store, version: int) -> dict[str, str]:
    """sha256 of the objects a sealed version reaches: the seal, its metadata, every artifact."""
    from mlcycle.tasks.gc import reachable_keys
    from mlcycle.tasks.storage import sha256_bytes

    keys = reachable_keys(store, NAME, version)
    assert keys is not None, f"v{version} does not verify"
    return {key: sha256_bytes(store.get_bytes(key)) for key in sorted(keys)}


def register_one(home: str, overrides: dict, start) -> tuple[int, dict[str, str]]:
    from tests.support.registry import fitted_model, register_fitted

    settings, store = open_shared_store(home, overrides)
    fitted = fitted_model(settings, rows=300)
    start.wait(60)
    version = register_fitted(store, fitted).version
    return version, reachable_hashes(store, version)


def move_champion(home: str, overrides: dict, start, kind: str, moves: int, seed: int) -> int:
    """``moves`` promotions of random sealed versions, or rollbacks; how many really moved the pointer."""
    from mlcycle.tasks.registry.aliases import promote, rollback
    from mlcycle.tasks.registry.versions import sealed_versions

    _, store = open_shared_store(home, overrides)
    rng = random.Random(seed)
    start.wait(60)
    moved = 0
    for k in range(moves):
        if kind == "rollback":
            rollback(store, NAME, reason=f"stress rollback {seed}-{k}")
            moved += 1
        else:
            reason = f"stress promote {seed}-{k}"
            moved += promote(store, NAME, rng.choice(sealed_versions(store, NAME)), reason=reason).reason == reason
    return moved
