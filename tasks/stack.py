"""The local stack: background processes that `mlcycle up` (and `make demo`) leave running.

Each service is one process started in its own session (so ``down`` can stop its whole process group),
with a pid file and a log under ``MLCYCLE_HOME/run/``. ``up`` is idempotent: a service whose pid file
names a live process that answers its health check is left alone. ``down`` stops exactly the processes
named by pid files (and nothing else), then removes the files.

Services:

* ``prefect-server``: the Prefect server on SQLite (``PREFECT_HOME`` under ``MLCYCLE_HOME/prefect``),
  UI and API on 127.0.0.1:4200 (``MLCYCLE_PREFECT_PORT``);
* ``prefect-worker``: a process worker for the project's work pool (``<project_name>-process``), started from the
  project root, with its health endpoint on 127.0.0.1:4201 (``MLCYCLE_WORKER_PORT``).

``up`` also creates the work pool and runs ``prefect deploy --all`` from the project root (the folder
holding prefect.yaml, whose names are templated on ``MLCYCLE_PROJECT_NAME``: tasks/settings/naming.py), so
every deployment of the project, with its schedule, exists on the server.

A flow command run without a Prefect API (no ``PREFECT_API_URL``, no stack) starts the ``prefect-server``
service alone (:func:`ensure_prefect_server`), once; the next commands reuse it and ``down`` stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from mlcycle.tasks.settings import Settings
from mlcycle.tasks.settings.naming import PROJECT_ENV

PREFECT_PORT_ENV = "MLCYCLE_PREFECT_PORT"
WORKER_PORT_ENV = "MLCYCLE_WORKER_PORT"


class StackError(RuntimeError):
    """A background service could not be started or stopped."""


@dataclass
class Service:
    name: str
    pid: int
    url: str
    log: str

    def alive(self) -> bool:
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a running process: ``down`` and ``up`` trust pid files only as far as this says.

    A zombie (exited, not yet reaped by its parent) still answers ``kill(pid, 0)`` but is not alive; psutil
    reads its state portably. A process that vanishes between the two checks (``NoSuchProcess``, which
    includes psutil's ``ZombieProcess``) is gone; one we may not inspect (``AccessDenied``) exists, as a
    ``PermissionError`` from ``kill`` already says.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def prefect_port() -> int:
    return int(os.environ.get(PREFECT_PORT_ENV, "4200"))


def prefect_api_url(port: int | None = None) -> str:
    return f"http://127.0.0.1:{port or prefect_port()}/api"


def stack_env(settings: Settings) -> dict[str, str]:
    """Environment for every stack process and for flows run against the stack."""
    env = dict(os.environ)
    env.update({
        "PREFECT_HOME": str((settings.home / "prefect").resolve()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "BENTOML_DO_NOT_TRACK": "true",
        "PREFECT_UI_API_URL": prefect_api_url(),
        PROJECT_ENV: settings.project_name,  # prefect.yaml's deployment and work pool names
    })
    return env


def _pidfile(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.json"


def read_service(settings: Settings, name: str) -> Service | None:
    path = _pidfile(settings, name)
    if not path.is_file():
        return None
    try:
        return Service(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def services(settings: Settings) -> list[Service]:
    if not settings.run_dir.is_dir():
        return []
    found = [read_service(settings, p.stem) for p in sorted(settings.run_dir.glob("*.json"))]
    return [s for s in found if s is not None]


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def start_service(settings: Settings, name: str, argv: list[str], url: str, health_url: str,
                  timeout: float = 90.0, env: dict[str, str] | None = None, cwd: Path | None = None) -> Service:
    """Start ``argv`` detached unless it already runs; wait until ``health_url`` answers 200."""
    current = read_service(settings, name)
    if current and current.alive() and healthy(health_url):
        return current
    if current and current.alive():
        stop_service(settings, name)
    if healthy(health_url):
        raise StackError(f"{name}: something not started by mlcycle already answers at {health_url}; "
                         f"stop it or choose another port ({PREFECT_PORT_ENV})")
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log = settings.run_dir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env or stack_env(settings), start_new_session=True, cwd=cwd)
    service = Service(name=name, pid=proc.pid, url=url, log=str(log))
    _pidfile(settings, name).write_text(json.dumps(asdict(service)))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _pidfile(settings, name).unlink(missing_ok=True)
            tail = log.read_text(errors="replace")[-800:]
            raise StackError(f"{name} exited with code {proc.returncode} while starting; log {log}:\n{tail}")
        if healthy(health_url):
            return service
        time.sleep(0.5)
    stop_service(settings, name)
    raise StackError(f"{name} did not become healthy at {health_url} within {timeout:.0f}s; see {log}")


def stop_service(settings: Settings, name: str, grace: float = 15.0) -> bool:
    """Stop the service's process group (TERM, then KILL after ``grace``); True if one was running."""
    service = read_service(settings, name)
    path = _pidfile(settings, name)
    if service is None:
        path.unlink(missing_ok=True)
        return False
    was_alive = service.alive()
    if was_alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and service.alive():
            time.sleep(0.2)
        if service.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return was_alive


def start_prefect_server(settings: Settings) -> Service:
    port = prefect_port()
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    (settings.home / "prefect").mkdir(parents=True, exist_ok=True)
    return start_service(settings, "prefect-server", argv, url=f"http://127.0.0.1:{port}",
                         health_url=f"{prefect_api_url(port)}/health")


def running_prefect_api(settings: Settings) -> str | None:
    """The API URL of the stack's Prefect server when it runs (its pid file names a live, healthy process)."""
    server = read_service(settings, "prefect-server")
    url = prefect_api_url()
    return url if server is not None and server.alive() and healthy(f"{url}/health") else None


def ensure_prefect_server(settings: Settings) -> tuple[Service, bool]:
    """The stack's Prefect server, started in the background unless it already runs; (service, started).

    What a flow command without ``PREFECT_API_URL`` runs against: the server ``mlcycle up`` would start (same
    pid file, same SQLite under ``MLCYCLE_HOME/prefect``), started once and reused by the next commands,
    instead of a temporary server per command. Concurrent commands start it once: the check and the start
    hold an exclusive ``flock`` on ``run/prefect-server.lock``, which the kernel releases if the holder dies.
    """
    import fcntl

    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.run_dir / "prefect-server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = read_service(settings, "prefect-server")
        if current is not None and running_prefect_api(settings):
            return current, False
        return start_prefect_server(settings), True


def worker_port() -> int:
    return int(os.environ.get(WORKER_PORT_ENV, "4201"))


def _prefect_cli(settings: Settings, *args: str, cwd: Path | None = None, timeout: float = 300) -> str:
    env = stack_env(settings) | {"PREFECT_API_URL": prefect_api_url()}
    proc = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-1500:]
        raise StackError(f"`prefect {' '.join(args)}` failed with exit code {proc.returncode}:\n{tail}")
    return proc.stdout


def project_root() -> Path:
    """The checkout `up` deploys from: the working directory, which must hold prefect.yaml."""
    root = Path.cwd()
    if not (root / "prefect.yaml").is_file():
        raise StackError(f"no prefect.yaml in {root}: run `mlcycle up` from the repository root")
    return root


def deploy_all(settings: Settings) -> str:
    """Create the work pool (idempotent) and (re)deploy every deployment of prefect.yaml."""
    root = project_root()
    _prefect_cli(settings, "work-pool", "create", settings.work_pool, "--type", "process", "--overwrite")
    return _prefect_cli(settings, "deploy", "--all", cwd=root)


def start_worker(settings: Settings) -> Service:
    port = worker_port()
    argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", settings.work_pool, "--type", "process",
            "--name", f"mlcycle-worker-{port}", "--with-healthcheck"]
    env = stack_env(settings) | {
        "PREFECT_API_URL": prefect_api_url(),
        "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
        "PREFECT_WORKER_WEBSERVER_PORT": str(port),
    }
    return start_service(settings, "prefect-worker", argv, url=f"pool {settings.work_pool}",
                         health_url=f"http://127.0.0.1:{port}/health", env=env, cwd=project_root())


def up(settings: Settings) -> list[Service]:
    """Server, deployments, worker: idempotent (running healthy services are left alone)."""
    server = start_prefect_server(settings)
    deploy_all(settings)
    worker = start_worker(settings)
    return [server, worker]


def down(settings: Settings) -> list[str]:
    """Stop everything the stack started (newest first); return the names stopped."""
    stopped = []
    for service in reversed(services(settings)):
        if stop_service(settings, service.name):
            stopped.append(service.name)
    return stopped
