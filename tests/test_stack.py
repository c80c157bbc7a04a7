"""The local stack end to end: `mlcycle up` (server, deployments, worker), a deployment run from the
command line as CI does it, idempotent `up`, and `down` stopping exactly what `up` started."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.env import ROOT, free_port

pytestmark = pytest.mark.slow
# every deployment of prefect.yaml, for a project
DEPLOYMENTS = ("ingest/{project}-daily", "backfill/{project}-range", "validate/{project}-revalidate",
               "train/{project}-on-demand", "package/{project}-on-demand", "rollout/{project}-on-demand",
               "rollout/{project}-rollback", "monitor/{project}-hourly")


def mlcycle(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlcycle.flows.cli", *args], capture_output=True, text=True, env=env,
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
        # the worker (which inherits this environment) polls for due runs every 2 s instead of 10
        "PREFECT_WORKER_QUERY_SECONDS": "2",
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
        for name in DEPLOYMENTS:
            deployment = client.read_deployment_by_name(name.format(project="mlcycle"))
            assert deployment.work_pool_name == "mlcycle-process" and "project:mlcycle" in deployment.tags
        daily = client.read_deployment_by_name("ingest/mlcycle-daily")
        assert [s.schedule.cron for s in daily.schedules] == ["30 0 * * *"]
        hourly = client.read_deployment_by_name("monitor/mlcycle-hourly")
        assert [s.schedule.cron for s in hourly.schedules] == ["5 * * * *"]
        assert client.read_deployment_by_name("train/mlcycle-on-demand").schedules == []


def test_a_second_project_deploys_beside_the_first_under_its_own_names(stack_env):
    """Two declarations on one Prefect server: each project's deployments, work pool and tag carry its name, a
    second `mlcycle up` changes nothing of the first's, and `mlcycle status` lists only its own schedules."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    assert mlcycle(stack_env, "up").returncode == 0
    api = f"http://127.0.0.1:{stack_env['MLCYCLE_PREFECT_PORT']}/api"
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        first = {n: client.read_deployment_by_name(n.format(project="mlcycle")).id for n in DEPLOYMENTS}
        wine = {**stack_env, "MLCYCLE_PROJECT_NAME": "wine"}
        try:
            up = mlcycle(wine, "up", "--json")
            assert up.returncode == 0, up.stderr[-2000:]
            assert json.loads(up.stdout)["work_pool"] == "wine-process"
            for name in DEPLOYMENTS:
                deployment = client.read_deployment_by_name(name.format(project="wine"))
                assert deployment.work_pool_name == "wine-process" and "project:wine" in deployment.tags
                assert client.read_deployment_by_name(name.format(project="mlcycle")).id == first[name]
            shown = [s["deployment"] for s in json.loads(mlcycle(wine, "status", "--json").stdout)["schedules"]]
            assert shown == ["ingest/wine-daily", "monitor/wine-hourly"]
            shown = [s["deployment"] for s in json.loads(mlcycle(stack_env, "status", "--json").stdout)["schedules"]]
            assert shown == ["ingest/mlcycle-daily", "monitor/mlcycle-hourly"]
        finally:  # no worker serves wine-process: its scheduled runs would only wait
            for name in DEPLOYMENTS:
                with contextlib.suppress(Exception):
                    client.delete_deployment(client.read_deployment_by_name(name.format(project="wine")).id)
            with contextlib.suppress(Exception):
                client.delete_work_pool("wine-process")


def test_ci_command_runs_a_deployment_to_completion(stack_env):
    """Exactly what CI does: `prefect deployment run <flow>/<deployment> --watch` against the API."""
    env = {**stack_env, "PREFECT_API_URL": f"http://127.0.0.1:{stack_env['MLCYCLE_PREFECT_PORT']}/api"}
    mlcycle(stack_env, "up")
    run = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "ingest/mlcycle-daily",
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


def scheduled_runs(client, deployment_name: str) -> list:
    """The runs the server's scheduler created for a deployment (never one started by hand)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment = client.read_deployment_by_name(deployment_name)
    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    return [r for r in runs if r.auto_scheduled]


def test_schedules_fire_by_themselves_and_the_worker_completes_the_run(stack_env):
    """Nobody starts a run: the server's scheduler creates them from the deployments' schedules, the worker
    picks the due one up and the flow completes. Under SQLAlchemy 2.1 the scheduler crashed at every loop
    (`Can't evaluate bulk DML statement`) and created no run at all."""
    import datetime as dt
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.settings import PREFECT_API_URL, temporary_settings

    assert mlcycle(stack_env, "up").returncode == 0
    api = f"http://127.0.0.1:{stack_env['MLCYCLE_PREFECT_PORT']}/api"
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        # the declared cron schedules have their next runs in the API, at the declared times
        deadline = time.monotonic() + 90
        upcoming: dict[str, list] = {}
        while time.monotonic() < deadline:
            upcoming = {name: [r for r in scheduled_runs(client, name) if r.state_type.value == "SCHEDULED"]
                        for name in ("ingest/mlcycle-daily", "monitor/mlcycle-hourly")}
            if all(upcoming.values()):
                break
            time.sleep(2)
        assert all(upcoming.values()), f"the scheduler created no run for {[n for n, r in upcoming.items() if not r]}"
        now = dt.datetime.now(dt.UTC)
        daily = sorted(r.expected_start_time for r in upcoming["ingest/mlcycle-daily"])
        hourly = sorted(r.expected_start_time for r in upcoming["monitor/mlcycle-hourly"])
        assert all((t.hour, t.minute) == (0, 30) for t in daily) and daily[0] > now
        assert all(t.minute == 5 for t in hourly) and hourly[0] > now
        assert len(hourly) >= 3 and hourly[1] - hourly[0] == dt.timedelta(hours=1)

        # monitor/mlcycle-hourly brought forward: an extra 10-second interval schedule; wait for a run of it to end
        monitor = client.read_deployment_by_name("monitor/mlcycle-hourly")
        extra = client.create_deployment_schedules(monitor.id, [(IntervalSchedule(interval=dt.timedelta(seconds=10)),
                                                                 True)])
        try:
            completed, states = None, set()
            deadline = time.monotonic() + 240
            while completed is None and time.monotonic() < deadline:
                runs = scheduled_runs(client, "monitor/mlcycle-hourly")  # the cron's runs are in the future
                states = {r.state_name for r in runs}
                completed = next((r for r in runs if r.state is not None and r.state.is_completed()), None)
                failed = [r for r in runs if r.state is not None and r.state.is_failed()]
                assert not failed, f"a scheduled monitor run failed: {failed[0].state.message}"
                time.sleep(2)
        finally:
            client.delete_deployment_schedule(monitor.id, extra[0].id)
        assert completed is not None, f"no scheduled monitor/mlcycle-hourly run completed within 240 s (saw {states})"
        assert completed.work_pool_name == "mlcycle-process" and completed.auto_scheduled

    # `mlcycle status` shows what the scheduler did: next run of each schedule, the last scheduled run's state
    deadline = time.monotonic() + 60  # deleting the extra schedule deleted the future runs; they come back
    while True:
        status = mlcycle(stack_env, "status", "--json")
        assert status.returncode == 0, status.stderr[-2000:]
        assert "temporary server" not in status.stderr  # it asked the stack's server, not an ephemeral one
        shown = {s["deployment"]: s for s in json.loads(status.stdout)["schedules"]}
        if all(s["next_run"] for s in shown.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert set(shown) == {"ingest/mlcycle-daily", "monitor/mlcycle-hourly"}
    assert all(s["next_run"] and s["active"] and s["problem"] is None for s in shown.values()), shown
    # CANCEL_NEW may drop a later one
    assert shown["monitor/mlcycle-hourly"]["last_state"] in ("Completed", "Cancelled")
    assert shown["ingest/mlcycle-daily"]["schedules"] == ["cron 30 0 * * * (UTC)"]
    human = mlcycle(stack_env, "status").stdout
    assert re.search(r"monitor/mlcycle-hourly .*cron 5 \* \* \* \* \(UTC\): next \d{4}-\d\d-\d\d \d\d:05 UTC",
                     human), human
    from tests.support.logs import (
        SQLITE_HEARTBEAT_RACE,
        SQLITE_QUEUE_POLL_LOCK,
        assert_work_queues_ready,
        assert_workers_online,
        unexpected_problems,
    )

    assert_workers_online(f"http://127.0.0.1:{stack_env['MLCYCLE_PREFECT_PORT']}/api")
    assert_work_queues_ready(f"http://127.0.0.1:{stack_env['MLCYCLE_PREFECT_PORT']}/api")
    left = unexpected_problems(Path(stack_env["MLCYCLE_HOME"]) / "run",
                               [SQLITE_HEARTBEAT_RACE, SQLITE_QUEUE_POLL_LOCK])
    assert not left, "problems in the stack's logs:\n" + "\n\n".join(str(p)[:3000] for p in left[:5])


def test_flow_commands_start_the_stacks_server_once_and_reuse_it(tmp_path):
    """No PREFECT_API_URL, no `mlcycle up`: the first flow command starts the stack's Prefect server in the
    background (saying so on stderr), the next one reuses it, commands that run no flow never start it, and
    `mlcycle down` stops it."""
    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLCYCLE_"))}
    env.update({"MLCYCLE_HOME": str(tmp_path / "home"), "MLCYCLE_CONFIG": str(ROOT / "mlcycle.yaml"),
                "MLCYCLE_PREFECT_PORT": str(free_port()), "MLCYCLE_SIMULATOR__ROWS_PER_DAY": "200",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
    try:
        status = json.loads(mlcycle(env, "status", "--json").stdout)
        assert status["services"] == [] and status["schedules"] is None  # status reads, never starts
        first = mlcycle(env, "ingest", "--date", "2026-10-01", "--json")
        assert first.returncode == 0, first.stderr[-2000:]
        assert json.loads(first.stdout)["zone"] == "validated"
        assert "starting the stack's Prefect server in the background" in first.stderr
        assert "`mlcycle down` stops it" in first.stderr and "temporary server" not in first.stderr
        (server,) = json.loads(mlcycle(env, "status", "--json").stdout)["services"]
        assert server["name"] == "prefect-server" and server["alive"]

        second = mlcycle(env, "ingest", "--date", "2026-10-02")
        assert second.returncode == 0, second.stderr[-2000:]
        assert second.stderr == ""  # reused: nothing started, and Prefect's console is quiet
        (again,) = json.loads(mlcycle(env, "status", "--json").stdout)["services"]
        assert again["pid"] == server["pid"]
    finally:
        down = mlcycle(env, "down", "--json")
    assert json.loads(down.stdout)["stopped"] == ["prefect-server"]
    assert not (psutil.pid_exists(server["pid"]) and psutil.Process(server["pid"]).status() != "zombie")
