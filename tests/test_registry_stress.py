"""Real processes racing on one registry (both backends): 8 registrations at once while 2 processes promote
random versions and 2 roll back, all through the conditional writes of tasks/storage (no lock anywhere).

What must hold: version numbers unique and dense, exactly one champion pointer (no lock object), no sealed
version's bytes ever change (hashed by the process that registered it, and again at the end), every move of
the pointer recorded in the history. A store whose server ignores conditional writes is refused at the first
claim, by the CLI too, in one line.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import pytest

from mlcycle.tasks.registry.aliases import promote
from mlcycle.tasks.registry.versions import list_versions, read_alias
from mlcycle.tasks.storage import open_store
from tests.support.env import S3_ACCESS_KEY, S3_SECRET_KEY, make_settings, minio_overrides, run_cli
from tests.support.registry import fitted_model, register_fitted
from tests.support.stress import NAME, move_champion, reachable_hashes, register_one

pytestmark = pytest.mark.slow


@pytest.fixture(params=["local", "minio"])
def shared(request, tmp_path):
    """(home, plain overrides a child process can rebuild its settings from)."""
    overrides: dict = {}
    if request.param == "minio":
        server = request.getfixturevalue("s3_running")
        overrides = {"store": "minio", "s3_endpoint": server.endpoint, "s3_access_key": S3_ACCESS_KEY,
                     "s3_secret_key": S3_SECRET_KEY, "s3_bucket": f"stress-{tmp_path.name[-20:].lower()}"
                     .replace("_", "-"), "s3_timeout_seconds": 5.0}
    return str(tmp_path / "home"), overrides


@pytest.mark.minio
def test_eight_registrations_and_champion_moves_in_real_processes_keep_every_invariant(shared):
    home, overrides = shared
    from tests.support.stress import open_shared_store

    settings, store = open_shared_store(home, overrides)
    fitted = fitted_model(settings, rows=300)
    for _ in range(2):
        register_fitted(store, fitted)
    promote(store, NAME, 1, reason="setup")
    promote(store, NAME, 2, reason="setup")  # so a rollback has a previous champion from the start
    before = {v: reachable_hashes(store, v) for v in (1, 2)}

    context = mp.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(12, mp_context=context) as pool:
        start = manager.Event()
        registrations = [pool.submit(register_one, home, overrides, start) for _ in range(8)]
        movers = [pool.submit(move_champion, home, overrides, start, kind, 6, seed)
                  for seed, kind in enumerate(["promote", "promote", "rollback", "rollback"])]
        start.set()
        registered = [f.result(timeout=300) for f in registrations]
        moved = sum(f.result(timeout=300) for f in movers)

    numbers = sorted(v for v, _ in registered)
    assert numbers == list(range(3, 11))  # unique and dense after the two set-up versions
    assert [v.version for v in list_versions(store, NAME)] == list(range(10, 0, -1))
    assert [k for k in store.list(f"models/{NAME}/versions/")] == sorted(
        [f"models/{NAME}/versions/{n}.{ext}" for n in range(1, 11) for ext in ("claim", "json")])
    aliases = store.list(f"models/{NAME}/aliases/")
    assert [k for k in aliases if "/history/" not in k] == [f"models/{NAME}/aliases/champion.json"]
    pointer = read_alias(store, NAME)
    assert 1 <= pointer.version <= 10 and pointer.previous is not None
    history = [k for k in aliases if "/history/" in k]
    assert len(history) == 2 + moved  # every move recorded, none lost
    for version, hashes in [*registered, *before.items()]:
        assert reachable_hashes(store, version) == hashes, f"v{version}'s sealed bytes changed"


def test_a_store_that_ignores_conditional_writes_is_refused_at_the_first_claim(
        s3_running, tmp_path, monkeypatch, capsys):
    from tests.support.s3proxy import IgnoresConditions

    proxy = IgnoresConditions(s3_running)
    try:
        env = {"MLCYCLE_HOME": str(tmp_path / "home"), "MLCYCLE_STORE": "minio", "MLCYCLE_S3_ENDPOINT": proxy.endpoint,
               "MLCYCLE_S3_ACCESS_KEY": S3_ACCESS_KEY, "MLCYCLE_S3_SECRET_KEY": S3_SECRET_KEY,
               "MLCYCLE_S3_BUCKET": "ignores-conditions-cli"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        direct = make_settings(tmp_path / "home", **{**minio_overrides(s3_running, "ignores-conditions-cli")})
        register_fitted(open_store(direct), fitted_model(direct, rows=300))  # v1, through the real server
        code, out, err = run_cli(monkeypatch, capsys, "models", "promote", "1")
        assert code == 1 and out == ""
        assert err.count("\n") == 1 and "does not honour conditional writes" in err, err
        assert "Traceback" not in err
        assert read_alias(open_store(direct), NAME) is None  # nothing was promoted through it
    finally:
        proxy.stop()
