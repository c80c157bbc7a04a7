"""The test environment's shared helpers: the repo root, system tools CI requires, ports, an S3 server,
settings on a temp home, the CLI run in-process.

Fixtures built on these live in tests/conftest.py; test modules import the helpers from here, never from
a conftest or another test module (tests/test_architecture.py checks it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlcycle.tasks.serving.process import free_port  # one port finder: the one serving uses

ROOT = Path(__file__).resolve().parents[2]


S3_ACCESS_KEY = "mlcycle-test-access"


S3_SECRET_KEY = "mlcycle-test-secret-value-9f3a"  # noqa: S105 - a throwaway value for moto only


# .ci/run installs every system tool the tests need (Docker engine, nginx, PostgreSQL, compose, Chromium)
# and sets REQUIRE_DOCKER_TESTS=1: there a missing tool FAILS its tests. On a developer machine without
# the tool they are skipped, with the package to install named.
REQUIRE_SYSTEM_TOOLS = os.environ.get("REQUIRE_DOCKER_TESTS") == "1"


def unavailable(reason: str) -> None:
    """A system tool a test needs is missing: fail where CI requires it, skip on a developer machine."""
    if not REQUIRE_SYSTEM_TOOLS:
        pytest.skip(reason)  # a developer machine without the tool; CI (REQUIRE_DOCKER_TESTS=1) fails instead
    pytest.fail(f"REQUIRE_DOCKER_TESTS=1 but {reason}")


def _atomic_moto_server(port: int):
    """moto's threaded S3 server with its writes serialised.

    moto checks ``If-None-Match`` / ``If-Match`` and then stores the object without a lock, so two PUTs that
    arrive together can both pass the check (seen: six threads all "created" one trigger slot). MinIO and
    S3 make the check and the write one atomic step; serialising writes in front of moto's WSGI app gives
    the tests that guarantee. Reads stay concurrent. What this does not model: a server that ignores the
    conditions altogether (tests/support/s3proxy.py does, and mlcycle refuses it at start).
    """
    import threading

    from moto.moto_server.threaded_moto_server import MotoRequestHandler, make_server
    from moto.server import DomainDispatcherApplication, ThreadedMotoServer, create_backend_app

    class AtomicMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            writes = threading.Lock()

            def serialised(environ, start_response):
                if environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
                    return app(environ, start_response)
                with writes:
                    return list(app(environ, start_response))

            self._server = make_server(self._ip_address, self._port, serialised, True,
                                       request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return AtomicMotoServer(ip_address="127.0.0.1", port=port, verbose=False)


class S3Server:
    """moto's S3 server on 127.0.0.1 (writes atomic, as on MinIO); ``stop()``/``start()`` keep the port and
    the stored objects."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = _atomic_moto_server(self.port)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None


def make_settings(home: Path, **overrides):
    from mlcycle.tasks.settings import load_settings

    return load_settings(home=home, **overrides)


def minio_overrides(server: S3Server, bucket: str | None = None) -> dict:
    from pydantic import SecretStr

    return dict(store="minio", s3_endpoint=server.endpoint, s3_access_key=SecretStr(S3_ACCESS_KEY),
                s3_secret_key=SecretStr(S3_SECRET_KEY), s3_bucket=bucket or f"t-{uuid.uuid4().hex[:12]}",
                s3_timeout_seconds=3.0)


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
