"""Shared fixtures: settings on a temp home, both store backends, a real S3 server, one Prefect harness.

* ``settings`` -- settings from the repo's mlcycle.yaml with ``home`` in a temp dir (local store).
* ``store`` -- parametrized over ``local`` and ``minio``; the MinIO backend talks HTTP to moto's S3
  server on 127.0.0.1 (a fresh bucket per test), so the same test runs against both.
* ``s3_server`` -- that moto server (session-scoped), restartable on the same port for outage tests.
* ``prefect_harness`` -- ONE session-scoped ``prefect_test_harness`` (it costs ~15 s to start).
* ``env_settings`` -- sets MLCYCLE_* for code that reads ``get_settings()`` (flows, CLI).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["MLCYCLE_CONFIG"] = str(ROOT / "mlcycle.yaml")
for _key in [k for k in os.environ if k.startswith("MLCYCLE_") and k != "MLCYCLE_CONFIG"]:
    del os.environ[_key]

S3_ACCESS_KEY = "mlcycle-test-access"
S3_SECRET_KEY = "mlcycle-test-secret-value-9f3a"  # noqa: S105 - a throwaway value for moto only


# .ci/run installs every system tool the tests need (Docker engine, nginx, PostgreSQL, compose, Chromium)
# and sets REQUIRE_DOCKER_TESTS=1: there a missing tool FAILS its tests. On a developer machine without
# the tool they are skipped, with the package to install named.
REQUIRE_SYSTEM_TOOLS = os.environ.get("REQUIRE_DOCKER_TESTS") == "1"


def unavailable(reason: str) -> None:
    """A system tool a test needs is missing: fail where CI requires it, skip on a developer machine."""
    if REQUIRE_SYSTEM_TOOLS:
        pytest.fail(f"REQUIRE_DOCKER_TESTS=1 but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's S3 server on 127.0.0.1; ``stop()``/``start()`` keep the port and the stored objects."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_running(s3_server):
    """The S3 server, guaranteed up at the start of the test (outage tests stop it)."""
    if not s3_server.running:
        s3_server.start()
    yield s3_server
    if not s3_server.running:
        s3_server.start()


def make_settings(home: Path, **overrides):
    from mlcycle.tasks.settings import load_settings

    return load_settings(home=home, **overrides)


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "home")


def minio_overrides(server: S3Server, bucket: str | None = None) -> dict:
    from pydantic import SecretStr

    return dict(store="minio", s3_endpoint=server.endpoint, s3_access_key=SecretStr(S3_ACCESS_KEY),
                s3_secret_key=SecretStr(S3_SECRET_KEY), s3_bucket=bucket or f"t-{uuid.uuid4().hex[:12]}",
                s3_timeout_seconds=3.0)


@pytest.fixture(params=["local", "minio"])
def backend_settings(request, tmp_path):
    """Settings for each store backend (the same test runs against both)."""
    if request.param == "local":
        return make_settings(tmp_path / "home")
    server = request.getfixturevalue("s3_running")
    return make_settings(tmp_path / "home", **minio_overrides(server))


@pytest.fixture
def store(backend_settings):
    from mlcycle.tasks.storage import open_store

    return open_store(backend_settings)


@pytest.fixture
def env_settings(monkeypatch, tmp_path):
    """Point get_settings() (flows, CLI) at a temp home; returns a function to add MLCYCLE_* overrides."""
    from mlcycle.tasks.settings import get_settings

    def apply(**env: str):
        monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path / "home"))
        for key, value in env.items():
            monkeypatch.setenv(f"MLCYCLE_{key.upper()}", str(value))
        get_settings.cache_clear()
        return get_settings()

    yield apply
    get_settings.cache_clear()


def minio_env(server: S3Server, bucket: str | None = None) -> dict[str, str]:
    return {"store": "minio", "s3_endpoint": server.endpoint, "s3_access_key": S3_ACCESS_KEY,
            "s3_secret_key": S3_SECRET_KEY, "s3_bucket": bucket or f"t-{uuid.uuid4().hex[:12]}",
            "s3_timeout_seconds": "3"}


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `mlcycle ARGS` in-process through the console entry point: (exit code, stdout, stderr)."""
    import sys

    from mlcycle.flows.cli import main

    monkeypatch.setattr(sys, "argv", ["mlcycle", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


@contextmanager
def settings_env(env: dict[str, str], unset: tuple[str, ...] = ()) -> Iterator:
    """``get_settings()`` under these environment variables (for module-scoped fixtures, which cannot use
    ``monkeypatch``); the environment and the settings cache are restored afterwards."""
    from mlcycle.tasks.settings import get_settings

    with pytest.MonkeyPatch.context() as mp:
        for key in unset:
            mp.delenv(key, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        get_settings.cache_clear()
        try:
            yield get_settings()
        finally:
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def validated_template(tmp_path_factory):
    """Validated partitions written once per module, copied into each training test's home."""
    from tests.support.training import make_validated_template

    return make_validated_template(tmp_path_factory.mktemp("validated"))


@pytest.fixture
def train_env(tmp_path, validated_template):
    from tests.support.training import copy_train_env

    return copy_train_env(tmp_path, validated_template)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
