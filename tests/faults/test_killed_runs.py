"""Flow runs whose worker is SIGKILLed mid-run, then retried: the store ends as after a clean run.

Runs go the way production runs them: a deployment on a ``process`` work pool, executed by a real
``prefect worker`` (``--run-once``) whose flow-run process is its child. The worker is started in its
own session and the whole process group gets SIGKILL once the run has written part of its output:
nothing in the run gets to clean up. The kill point is made exact by the start-up hook in
``killpoint/sitecustomize.py`` (it freezes the flow-run process right after it stored a chosen key).

The re-run is what an operator does after a crash: the run is marked Crashed (what the worker would
report had it survived) and retried from Prefect (``AwaitingRetry``, the UI's Retry button), so the
*same* flow run executes again on a fresh worker. Ingest must leave the store equal to a clean run's;
training must end with exactly one version (the retry finishes the version its killed attempt
claimed) and nothing left under ``staging/``.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mlcycle.tasks.gc import gc
from mlcycle.tasks.storage import open_store
from tests.support.env import ROOT
from tests.support.faults import (
    CLEAN_DAY,
    FAST_FLOW_ENV,
    diff_fingerprints,
    flow_settings,
    store_fingerprint,
)
from tests.support.training import copy_template

pytestmark = [pytest.mark.flow, pytest.mark.slow]

MODEL = "loans-default"
HOOK_DIR = Path(__file__).parent / "killpoint"


@pytest.fixture(scope="module")
def work_pool(prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"faults-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    return name


def _deploy(flow, entrypoint: str, pool: str) -> str:
    """A deployment whose runs execute in this checkout (like prefect.yaml's, which has no pull section)."""
    source = flow.from_source(str(ROOT), entrypoint)
    return str(source.to_deployment(name=f"killed-{uuid.uuid4().hex[:8]}", work_pool_name=pool).apply())


def _worker_env(home: Path, pause_after: str | None, marker: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCYCLE_")}
    env.update({"MLCYCLE_HOME": str(home), "MLCYCLE_CONFIG": str(ROOT / "mlcycle.yaml"),
                "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": f"{HOOK_DIR}:{ROOT}",
                **{f"MLCYCLE_{k}": v for k, v in FAST_FLOW_ENV.items()}})
    if pause_after:
        env.update({"MLCYCLE_FAULTS_PAUSE_AFTER_KEY": pause_after, "MLCYCLE_FAULTS_PAUSED_MARKER": str(marker)})
    return env


def _start_worker(pool: str, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type",
                                 "process", "--run-once"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _kill_when_paused(worker: subprocess.Popen, marker: Path, log: Path, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            os.killpg(worker.pid, signal.SIGKILL) if worker.poll() is None else None
            raise AssertionError(f"the run never reached the kill point; worker log:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its flow-run process: no cleanup runs
    worker.wait(30)
    return marker.read_text()


def _retry_after_crash(flow_run_id) -> None:
    """What a watchdog and then an operator do: mark the dead run Crashed, then Retry it."""
    from prefect.client.orchestration import get_client
    from prefect.states import AwaitingRetry, Crashed

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Crashed(message="worker process was SIGKILLed"), force=True)
        client.set_flow_run_state(flow_run_id, AwaitingRetry(), force=True)


def _run_to_the_end(pool: str, env: dict, log: Path, flow_run_id):
    from prefect.client.orchestration import get_client

    worker = _start_worker(pool, env, log)
    try:
        worker.wait(300)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    assert run.state.is_completed(), f"{run.state}: {log.read_text()[-3000:]}"
    return run


def _killed_then_retried(flow, entrypoint: str, pool: str, home: Path, tmp_path: Path, pause_after: str,
                         parameters: dict):
    from prefect.deployments import run_deployment

    marker, log = tmp_path / "paused-at", tmp_path / "worker.log"
    deployment_id = _deploy(flow, entrypoint, pool)
    run = run_deployment(deployment_id, parameters=parameters, timeout=0)
    worker = _start_worker(pool, _worker_env(home, pause_after, marker), log)
    killed_at = _kill_when_paused(worker, marker, log)
    _retry_after_crash(run.id)
    final = _run_to_the_end(pool, _worker_env(home, None, marker), log, run.id)
    assert final.run_count >= 2  # the same flow run ran twice
    return killed_at, final


def _run_specific(key: str) -> bool:
    """Compared separately: a claim holds its run's id and random staging token; metadata.json holds the
    sha256 of evaluation.json and reference_profile.json, which record when they were made."""
    return key.endswith((".claim", "/metadata.json"))


def test_ingest_killed_after_its_raw_partition_then_retried_equals_a_clean_run(
        work_pool, tmp_path, clean_ingest):
    from mlcycle.flows.ingest import ingest_flow

    home = tmp_path / "home"
    with flow_settings(home) as settings:
        killed_at, _ = _killed_then_retried(ingest_flow, "flows/ingest.py:ingest_flow", work_pool, home, tmp_path,
                                            r"^raw/date=[0-9-]+/manifest\.json$", {"date": CLEAN_DAY})
        assert killed_at == f"raw/date={CLEAN_DAY}/manifest.json"
        fingerprint = store_fingerprint(open_store(settings))
    assert fingerprint == clean_ingest, diff_fingerprints(fingerprint, clean_ingest)


def test_training_killed_mid_registration_then_retried_registers_one_version_like_a_clean_run(
        work_pool, tmp_path, validated_template):
    from mlcycle.flows.train import train_flow
    from mlcycle.tasks.registry.versions import list_versions, load_metadata, load_model

    clean_home = tmp_path / "clean" / "home"
    copy_template(validated_template, clean_home)
    with flow_settings(clean_home) as settings:
        assert train_flow().version == 1
        clean = store_fingerprint(open_store(settings), f"models/{MODEL}/", exclude=_run_specific)
        reference = load_metadata(open_store(settings), MODEL, 1)

    home = tmp_path / "home"
    copy_template(validated_template, home)
    with flow_settings(home) as settings:
        store = open_store(settings)
        killed_at, _ = _killed_then_retried(train_flow, "flows/train.py:train_flow", work_pool, home, tmp_path,
                                            r"^models/[^/]+/\d+/model\.joblib$", {})
        assert killed_at == f"models/{MODEL}/1/model.joblib"
        assert [v.version for v in list_versions(store, MODEL)] == [1]
        assert store.list(f"models/{MODEL}/versions/") == [f"models/{MODEL}/versions/1.claim",
                                                           f"models/{MODEL}/versions/1.json"]
        assert store.list(f"models/{MODEL}/staging/") == []  # the killed attempt's staging was dropped
        assert load_model(store, MODEL, "champion").version == 1
        # the retry took the claim over and wrote its own folder, never where the killed attempt was writing
        registered = load_metadata(store, MODEL, 1).artifacts["model.joblib"].key
        assert registered == f"models/{MODEL}/1/attempt-1/model.joblib"
        swept = gc(store, dt.datetime.now(dt.UTC) + dt.timedelta(days=2), 24)  # the killed attempt's files
        assert f"models/{MODEL}/1/model.joblib" in swept.delete
        fingerprint = store_fingerprint(store, f"models/{MODEL}/", exclude=_run_specific)
        retried = load_metadata(store, MODEL, 1)
    assert fingerprint == clean, diff_fingerprints(fingerprint, clean)
    # the same model (byte for byte), trained on the same data, scored the same
    assert (retried.model_sha256, retried.params, retried.metrics) == (
        reference.model_sha256, reference.params, reference.metrics)
