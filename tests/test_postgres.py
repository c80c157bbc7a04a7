"""Prefect on PostgreSQL: `mlcycle up` with ``PREFECT_API_DATABASE_CONNECTION_URL`` set starts its server on
PostgreSQL instead of SQLite, a deployment runs to completion through the process worker, and the run's
rows are really in PostgreSQL (read back with psql). The stack runs with the Prefect API behind basic auth
(``PREFECT_SERVER_API_AUTH_STRING`` / ``PREFECT_API_AUTH_STRING``), wired through the environment exactly as
infra/docker-compose.yml wires its server, worker and clients.

The cluster is a throwaway one, made from Debian's PostgreSQL packages for this module:

    initdb (temp dir, TCP auth scram-sha-256) ─▶ pg_ctl start (127.0.0.1:<free port>, unix socket in the
    temp dir) ─▶ role + database ``prefect`` (random password) ─▶ ... tests ... ─▶ pg_ctl stop, rm -rf

PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` system user (the
Debian package creates it) and every server command runs through ``runuser -u postgres --``; as any
other user it runs as that user. The temp dir is made with ``mkdtemp`` under the system temp folder
(pytest's own tmp dirs are private to root, so the ``postgres`` user could not reach them).

Where the binaries come from: Debian's ``/usr/lib/postgresql/<major>/bin`` (the newest major), else
``initdb`` on PATH. Without them the tests skip on a developer machine and FAIL when
``REQUIRE_DOCKER_TESTS=1``: .ci/run sets it after installing the system packages the tests need
(docker.io, postgresql, docker-compose, ...), so in CI "not installed" is a broken CI, never a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.env import ROOT, free_port, unavailable

pytestmark = pytest.mark.slow

DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries are not installed (or cannot run as any user here)."""


def postgres_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``psql``: Debian's newest major, else PATH."""
    debian = sorted((p.parent for p in DEBIAN_PG_ROOT.glob("*/bin/initdb")),
                    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if debian:
        return debian[-1]
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresUnavailable("PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, no "
                              "initdb on PATH); install them with `apt-get install -y postgresql`")


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1; ``url`` is what Prefect's server is given."""

    bindir: Path
    root: Path
    port: int
    database: str = "prefect"
    user: str = "prefect"
    password: str = ""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, password: str | None = None) -> str:
        return (f"postgresql+asyncpg://{self.user}:{self.password if password is None else password}"
                f"@127.0.0.1:{self.port}/{self.database}")

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def run(self, tool: str, *args: str, timeout: float = 120) -> str:
        argv = self._as_owner([str(self.bindir / tool), *args])
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=self.root, timeout=timeout)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-1500:] if self.log.is_file() else ""
            raise RuntimeError(f"`{tool} {' '.join(args)}` failed ({proc.returncode}): "
                               f"{(proc.stdout + proc.stderr).strip()[-1500:]}\n{log}")
        return proc.stdout

    def psql(self, sql: str, database: str = "postgres") -> list[list[str]]:
        """Rows of ``sql`` run as the superuser over the cluster's unix socket (fields split on '|')."""
        out = self.run("psql", "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres",
                       "-d", database, "-v", "ON_ERROR_STOP=1", "-A", "-t", "-F", "|", "-c", sql)
        return [line.split("|") for line in out.splitlines() if line]

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth-local=trust",
                 "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
        (self.socket_dir).mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.socket_dir, "postgres", "postgres")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.socket_dir} "
                   "-c fsync=off")  # a throwaway cluster: durability buys nothing here
        self.run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                 "start")
        self.password = secrets.token_urlsafe(18)
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {self.database} OWNER {self.user}")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").is_file():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")


@pytest.fixture(scope="module")
def postgres():
    try:
        bindir = postgres_bindir()
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root needs `runuser` (util-linux) to start PostgreSQL as "
                                      "the postgres user")
    except PostgresUnavailable as exc:
        unavailable(str(exc))
    root = Path(tempfile.mkdtemp(prefix="mlcycle-pg-"))
    os.chmod(root, 0o700)
    cluster = PostgresCluster(bindir=bindir, root=root, port=free_port())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def mlcycle(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlcycle.flows.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def stack_env(home: Path, database_url: str, auth_string: str | None = None) -> dict[str, str]:
    """A stack of its own (home, ports) whose Prefect server stores its state at ``database_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLCYCLE_"))}
    env.update({
        "MLCYCLE_HOME": str(home), "MLCYCLE_CONFIG": str(ROOT / "mlcycle.yaml"),
        "MLCYCLE_PREFECT_PORT": str(free_port()), "MLCYCLE_WORKER_PORT": str(free_port()),
        "MLCYCLE_SIMULATOR__ROWS_PER_DAY": "300", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1", "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
    })
    if auth_string:  # the server requires it; every client (CLI, worker, flow runs) sends it
        env.update({"PREFECT_SERVER_API_AUTH_STRING": auth_string, "PREFECT_API_AUTH_STRING": auth_string})
    return env


@pytest.fixture
def pg_stack(postgres, tmp_path):
    env = stack_env(tmp_path / "home", postgres.url(), auth_string=f"admin:{secrets.token_urlsafe(12)}")
    yield env
    mlcycle(env, "down")


def test_up_on_postgres_runs_a_deployment_and_the_run_is_stored_in_postgres(postgres, pg_stack):
    started = time.monotonic()
    up = mlcycle(pg_stack, "up", "--json")
    assert up.returncode == 0, up.stderr[-2000:]
    assert [s["name"] for s in json.loads(up.stdout)["services"]] == ["prefect-server", "prefect-worker"]

    # the API wants the credentials (its health check does not)
    api = f"http://127.0.0.1:{pg_stack['MLCYCLE_PREFECT_PORT']}/api"
    assert httpx.get(f"{api}/health", timeout=10).status_code == 200
    assert httpx.post(f"{api}/deployments/filter", json={}, timeout=10).status_code == 401

    # exactly what CI does against any Prefect API, here one backed by PostgreSQL
    run = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "ingest/mlcycle-daily",
                          "--param", "date=2026-10-05", "--watch", "--watch-timeout", "300"],
                         capture_output=True, text=True, env={**pg_stack, "PREFECT_API_URL": api}, timeout=360)
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    assert "Completed" in run.stdout
    status = json.loads(mlcycle(pg_stack, "status", "--json").stdout)
    assert status["partitions"]["validated"] == 1

    # the server's state is in PostgreSQL: the run, its deployment and its work pool are rows there ...
    rows = postgres.psql(
        "SELECT d.name, f.state_type, f.parameters->>'date', w.name FROM flow_run f "
        "JOIN deployment d ON d.id = f.deployment_id JOIN work_queue q ON q.id = f.work_queue_id "
        "JOIN work_pool w ON w.id = q.work_pool_id", database=postgres.database)
    assert ["mlcycle-daily", "COMPLETED", "2026-10-05", "mlcycle-process"] in rows, rows
    deployments = {r[0] for r in postgres.psql("SELECT name FROM deployment", database=postgres.database)}
    assert {"mlcycle-daily", "mlcycle-range", "mlcycle-on-demand", "mlcycle-hourly"} <= deployments
    # ... and no SQLite database was made next to the server's PREFECT_HOME
    prefect_home = Path(pg_stack["MLCYCLE_HOME"]) / "prefect"
    assert not list(prefect_home.rglob("*.db")), list(prefect_home.rglob("*.db"))

    # the database password and the API credentials are in no output and no log of the stack
    logs = "".join(p.read_text(errors="replace") for p in (Path(pg_stack["MLCYCLE_HOME"]) / "run").glob("*.log"))
    api_password = pg_stack["PREFECT_API_AUTH_STRING"].split(":", 1)[1]
    for text in (up.stdout, up.stderr, run.stdout, run.stderr, logs):
        assert postgres.password not in text and api_password not in text
    print(f"postgres stack: up + deployment run in {time.monotonic() - started:.1f}s")


def test_up_with_a_wrong_database_password_fails_naming_the_database(postgres, tmp_path):
    wrong = secrets.token_urlsafe(12)
    env = stack_env(tmp_path / "home", postgres.url(password=wrong))
    try:
        up = mlcycle(env, "up", timeout=180)
    finally:
        mlcycle(env, "down")
    assert up.returncode != 0
    assert "prefect-server exited" in up.stderr, up.stderr[-2000:]
    assert 'password authentication failed for user "prefect"' in up.stderr, up.stderr[-2000:]
    assert wrong not in up.stderr + up.stdout
