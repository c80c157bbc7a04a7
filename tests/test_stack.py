"""The local stack end to end: `mlcycle up` (server, deployments, worker), a deployment run from the
command line as CI does it, idempotent `up`, and `down` stopping exactly what `up` started."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow


def mlcycle(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("stack") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLCYCLE_"))}
    env.update({
        "MLCYCLE_HOME": str(home), "MLCYCLE_CONFIG": str(ROOT / "mlcycle.yaml"),
        "MLCYCLE_PREFECT_PORT": str(free_port()), "MLCYCLE_WORKER_PORT": str(free_port()),
        "MLCYCLE_SIMULATOR__ROWS_PER_DAY": "300", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    })
    yield env
    mlcycle(env, "down")


def test_up_deploys_everything_and_is_idempotent(stack_env):
    first = mlcycle(stack_env, "up", "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    info = json.loads(first.stdout)
    pids = sorted(s["pid"] for s in info["services"])
    assert [s["name"] for s in info["services"]] == ["prefect-server", "prefect-worker"]
    again = mlcycle(stack_env, "up", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(s["pid"] for s in json.loads(again.stdout)["services"]) == pids  # nothing started twice

    api = f"http://127.0.0.1:{stack_env['MLCYCLE_PREFECT_PORT']}/api"
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        for name in ("ingest/daily", "backfill/range", "validate/revalidate", "train/on-demand",
                     "package/on-demand", "rollout/on-demand", "rollout/rollback", "monitor/hourly"):
            assert client.read_deployment_by_name(name).work_pool_name == "mlcycle-process"
        daily = client.read_deployment_by_name("ingest/daily")
        assert [s.schedule.cron for s in daily.schedules] == ["30 0 * * *"]
        hourly = client.read_deployment_by_name("monitor/hourly")
        assert [s.schedule.cron for s in hourly.schedules] == ["5 * * * *"]
        assert client.read_deployment_by_name("train/on-demand").schedules == []
        assert daily.work_pool_name == "mlcycle-process"


def test_ci_command_runs_a_deployment_to_completion(stack_env):
    """Exactly what CI does: `prefect deployment run <flow>/<deployment> --watch` against the API."""
    env = {**stack_env, "PREFECT_API_URL": f"http://127.0.0.1:{stack_env['MLCYCLE_PREFECT_PORT']}/api"}
    mlcycle(stack_env, "up")
    run = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "ingest/daily",
                          "--param", "date=2026-10-05", "--watch"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    assert "Completed" in run.stdout
    status = mlcycle(stack_env, "status", "--json")
    assert json.loads(status.stdout)["partitions"]["validated"] == 1


def test_down_stops_exactly_what_up_started(stack_env):
    import psutil

    mlcycle(stack_env, "up")
    services = json.loads(mlcycle(stack_env, "status", "--json").stdout)["services"]
    pids = [s["pid"] for s in services]
    assert pids and all(psutil.pid_exists(p) for p in pids)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        down = mlcycle(stack_env, "down", "--json")
        assert down.returncode == 0
        assert sorted(json.loads(down.stdout)["stopped"]) == ["prefect-server", "prefect-worker"]
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
        assert bystander.poll() is None  # an unrelated process is untouched
        assert json.loads(mlcycle(stack_env, "down", "--json").stdout)["stopped"] == []
    finally:
        bystander.kill()
