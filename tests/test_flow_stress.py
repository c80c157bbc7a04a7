"""Whole commands racing on one home: 8 `mlcycle train` runs at once (each a real Prefect flow run, in its own
process, on the one server the first of them starts), while `mlcycle models promote` and `models rollback`
loop in other processes and three `mlcycle rollout` commands start together.

What must hold afterwards: the trained versions' numbers unique and dense; exactly one champion pointer;
no sealed version's bytes changed (hashed before, once its run ended, and at the end); every train run's
gate decision recorded with its version and every successful pointer move in the history; of the
rollouts that overlapped, the ones that lost the lease say so in one line, and what is live behind the
endpoint is what the deployment record says. Both store backends for the trainings and the pointer
moves; the rollouts on the local one (the packaged bentos live in the home's BentoML store).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.env import ROOT, S3_ACCESS_KEY, S3_SECRET_KEY, free_port
from tests.support.stress import NAME, reachable_hashes

pytestmark = pytest.mark.slow


def command_env(home, port: int, endpoint_port: int, store: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLCYCLE_"))}
    env.update({
        "MLCYCLE_HOME": str(home), "MLCYCLE_CONFIG": str(ROOT / "mlcycle.yaml"), "MLCYCLE_PREFECT_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
        "MLCYCLE_TRAINING__FAMILY": "logistic_regression", "MLCYCLE_TRAINING__N_ITER": "1",
        "MLCYCLE_TRAINING__N_JOBS": "1", "MLCYCLE_TRAINING__WINDOW_DAYS": "8", "MLCYCLE_GATE__BOOTSTRAP_SAMPLES": "200",
        "MLCYCLE_ROLLOUT__AFTER_PROMOTION": "false", "MLCYCLE_ROLLOUT__ENDPOINT_PORT": str(endpoint_port),
        "MLCYCLE_ROLLOUT__READINESS_TIMEOUT_SECONDS": "180", "MLCYCLE_ROLLOUT__DRAIN_SECONDS": "2",
        "MLCYCLE_SERVING__CANARY_ROWS": "60", "MLCYCLE_SERVING__LATENCY_REQUESTS": "5",
        "OMP_NUM_THREADS": "1", **{f"MLCYCLE_{k.upper()}": v for k, v in store.items()},
    })
    return env


def start(env, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlcycle.flows.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def mover_script(kind: str, moves: int, seed: int) -> list[str]:
    """A shell loop of `mlcycle models promote N` (random sealed N) or `models rollback`, each with its reason."""
    rng = random.Random(seed)
    lines = []
    for k in range(moves):
        reason = f"stress-{kind}-{seed}-{k}"
        args = ["models", "promote", str(rng.randint(1, 2)), "--reason", reason] if kind == "promote" else \
            ["models", "rollback", "--reason", reason]
        lines.append(args)
    return lines


def run_moves(env, kind: str, moves: int, seed: int) -> subprocess.Popen:
    program = ("import json, subprocess, sys\n"
               f"for args in {mover_script(kind, moves, seed)!r}:\n"
               "    p = subprocess.run([sys.executable, '-m', 'mlcycle.flows.cli', *args, '--json'],"
               " capture_output=True, text=True)\n"
               "    print(json.dumps({'reason': args[-1], 'code': p.returncode, 'out': p.stdout, 'err': p.stderr}),"
               " flush=True)\n")
    return subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


def wait_for_a_running_train(env, trains: list[subprocess.Popen], timeout: float = 600.0) -> None:
    """Until the stack's Prefect server (started by the first `mlcycle train`) shows a train flow run Running."""
    api = f"http://127.0.0.1:{env['MLCYCLE_PREFECT_PORT']}/api"
    running = {"flows": {"name": {"any_": ["train"]}}, "flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}},
               "limit": 1}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert any(p.poll() is None for p in trains), "every training ended before one was seen running"
        try:
            answer = httpx.post(f"{api}/flow_runs/filter", json=running, timeout=5)
        except httpx.HTTPError:  # the server is still starting
            answer = None
        if answer is not None and answer.status_code == 200 and answer.json():
            return
        time.sleep(0.2)
    raise AssertionError(f"no train flow run was running at {api} within {timeout:.0f}s")


@pytest.fixture(params=["local", "minio"])
def stress_home(request, rollout_models, tmp_path):
    """A copy of the rollout models' home (v1 champion, v2, their bentos, eight validated days), its store
    local or a bucket seeded with the same registry and days."""
    from tests.support.rollout import clone_home

    settings = clone_home(rollout_models, tmp_path / "home")
    store_env: dict[str, str] = {}
    if request.param == "minio":
        from mlcycle.tasks.storage import open_store

        server = request.getfixturevalue("s3_running")
        store_env = {"store": "minio", "s3_endpoint": server.endpoint, "s3_access_key": S3_ACCESS_KEY,
                     "s3_secret_key": S3_SECRET_KEY, "s3_bucket": f"flow-stress-{tmp_path.name[-12:].lower()}"
                     .replace("_", "-"), "s3_timeout_seconds": "5"}
        from tests.support.stress import open_shared_store

        _, bucket = open_shared_store(str(settings.home), {**store_env, "s3_timeout_seconds": 5.0})
        local = open_store(settings)
        for key in local.list(""):  # the registry and the validated days, object by object
            bucket.put_bytes(key, local.get_bytes(key))
    env = command_env(settings.home, free_port(), settings.rollout.endpoint_port, store_env)
    yield request.param, settings, env, store_env
    subprocess.run([sys.executable, "-m", "mlcycle.flows.cli", "down"], env=env, cwd=ROOT, capture_output=True,
                   timeout=120)


@pytest.mark.minio
def test_eight_train_runs_with_promotes_rollbacks_and_rollouts_keep_every_invariant(stress_home, rollout_models):
    from mlcycle.tasks.registry.versions import list_versions, load_evaluation, read_alias
    from mlcycle.tasks.rollout.orchestrate import read_current, teardown
    from mlcycle.tasks.storage import open_store
    from tests.support.stress import open_shared_store

    backend, settings, env, store_env = stress_home
    overrides = {**store_env, "s3_timeout_seconds": 5.0} if store_env else {}
    _, store = open_shared_store(str(settings.home), overrides)
    before = {v: reachable_hashes(store, v) for v in (1, 2)}
    setup_moves = len([k for k in store.list(f"models/{NAME}/aliases/") if "/history/" in k])

    trains = [start(env, "train", "--json") for _ in range(8)]
    movers = [run_moves(env, kind, 4, seed) for seed, kind in enumerate(["promote", "promote", "rollback",
                                                                           "rollback"])]
    rollouts = []
    if backend == "local":
        wait_for_a_running_train(env, trains)  # the rollouts overlap the trainings and each other
        rollouts = [start(env, "rollout", "--bento", bento.tag, "--target", "process", "--json")
                    for bento in (rollout_models.v1, rollout_models.v2, rollout_models.v1)]

    outcomes, hashes = [], {}
    for p in trains:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
        outcome = json.loads(out)
        outcomes.append(outcome)
        hashes[outcome["version"]] = reachable_hashes(store, outcome["version"])  # sealed once its run ended
    moves = []
    for p in movers:
        out, _ = p.communicate(timeout=900)
        moves += [json.loads(line) for line in out.splitlines()]

    numbers = sorted(o["version"] for o in outcomes)
    assert numbers == list(range(3, 11))  # unique and dense after the two set-up versions
    assert [v.version for v in list_versions(store, NAME)] == list(range(10, 0, -1))
    for outcome in outcomes:  # the gate's decision, as the run reported it, is the version's record
        decision = load_evaluation(store, NAME, outcome["version"]).decision
        assert decision.promote == outcome["decision"]["promote"]
        assert decision.summary == outcome["decision"]["summary"]
    aliases = store.list(f"models/{NAME}/aliases/")
    assert [k for k in aliases if "/history/" not in k] == [f"models/{NAME}/aliases/champion.json"]
    history = [json.loads(store.get_bytes(k)) for k in aliases if "/history/" in k]
    recorded = {h["reason"] for h in history}
    # a command that moved the pointer answers with its own reason (promoting the champion again moves nothing)
    moved = [m for m in moves if m["code"] == 0 and json.loads(m["out"])["reason"] == m["reason"]]
    assert moved and all(m["reason"] in recorded for m in moved), "a pointer move is missing from the history"
    assert len(history) == len(moved) + sum(o["promoted"] for o in outcomes) + setup_moves
    refused = [m for m in moves if m["code"] != 0]
    assert all(m["err"].count("\n") == 1 and "Traceback" not in m["err"] for m in refused), refused[:2]
    pointer = read_alias(store, NAME)
    assert 1 <= pointer.version <= 10
    for version, digest in [*before.items(), *hashes.items()]:
        assert reachable_hashes(store, version) == digest, f"v{version}'s sealed bytes changed"

    if rollouts:
        results = []
        for p in rollouts:
            out, err = p.communicate(timeout=900)
            results.append((p.returncode, out, err))
        won = [json.loads(out) for code, out, _ in results if code == 0]
        lost = [err for code, _, err in results if code != 0]
        assert won, [err[-1500:] for _, _, err in results]
        # the loser's error is one line naming the lease (beside the notice that the stack's server started)
        assert all("another rollout holds the lease" in e and "Traceback" not in e for e in lost), lost
        live = read_current(open_store(settings))
        assert live is not None and live.id in {w["id"] for w in won}
        answer = httpx.post(f"{live.endpoint_url}/predict", json=rollout_models.request, timeout=30).json()
        assert str(answer["model_version"]) == live.model_version
        teardown(settings)
